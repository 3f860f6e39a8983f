import { ValidationError } from "./errors.js";
import { CheckStatus, type Op, type Txn } from "./types.js";

/** Limits of the store's input, Consul's where Consul has one. */
export const LIMITS = {
  maxOpsPerTxn: 128,
  maxNameLength: 256,
  maxKeyBytes: 1024,
  maxValueBytes: 512 * 1024,
  maxTags: 64,
  maxMetaPairs: 64,
  maxMetaKeyLength: 128,
  maxMetaValueLength: 512,
  maxCheckOutputBytes: 64 * 1024,
  maxRulesBytes: 64 * 1024,
  maxDescriptionLength: 1024,
  maxLinks: 256,
} as const;

const STATUSES = new Set<string>(Object.values(CheckStatus));
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what is refused
const CONTROL = /[\u0000-\u001f\u007f]/;
const META_KEY = /^[A-Za-z0-9_-]+$/;
const ACL_NAME = /^[A-Za-z0-9_-]{1,128}$/;
const ACL_ID = /^[A-Za-z0-9_-]{1,128}$/;
const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8");

const fail = (field: string, reason: string): never => {
  throw new ValidationError(field, reason);
};

function str(
  v: unknown,
  field: string,
  opts: { optional?: boolean; empty?: boolean; max?: number } = {},
): void {
  if (v === undefined && opts.optional) return;
  if (typeof v !== "string") fail(field, "must be a string");
  const s = v as string;
  if (!opts.empty && s.length === 0) fail(field, "must not be empty");
  if (s.length > (opts.max ?? LIMITS.maxNameLength))
    fail(field, `is longer than ${opts.max ?? LIMITS.maxNameLength}`);
  if (s.includes("\u0000")) fail(field, "must not contain NUL");
}

function name(v: unknown, field: string, optional = false): void {
  str(v, field, { optional });
  if (typeof v === "string" && CONTROL.test(v)) fail(field, "must not contain control characters");
}

function aclId(v: unknown, field: string): void {
  if (typeof v !== "string" || !ACL_ID.test(v)) fail(field, "must be 1-128 letters, digits, '-' or '_'");
}

function int(v: unknown, field: string, min: number, max: number, optional = true): void {
  if (v === undefined && optional) return;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    fail(field, `must be an integer from ${min} to ${max}`);
  }
}

function stringMap(v: unknown, field: string): void {
  if (v === undefined) return;
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(field, "must be an object of strings");
  const entries = Object.entries(v as object);
  if (entries.length > LIMITS.maxMetaPairs) fail(field, `has more than ${LIMITS.maxMetaPairs} pairs`);
  for (const [k, val] of entries) {
    if (!META_KEY.test(k) || k.length > LIMITS.maxMetaKeyLength) {
      fail(`${field}.${k}`, `key must be 1-${LIMITS.maxMetaKeyLength} letters, digits, '-' or '_'`);
    }
    str(val, `${field}.${k}`, { empty: true, max: LIMITS.maxMetaValueLength });
  }
}

function stringList(v: unknown, field: string, max: number, each: (s: unknown, f: string) => void): void {
  if (v === undefined) return;
  if (!Array.isArray(v)) fail(field, "must be a list");
  const list = v as unknown[];
  if (list.length > max) fail(field, `has more than ${max} entries`);
  for (const [i, s] of list.entries()) each(s, `${field}[${i}]`);
}

function kvKey(v: unknown, field: string, allowEmpty = false): void {
  if (typeof v !== "string") {
    fail(field, "must be a string");
    return;
  }
  if (!allowEmpty && v.length === 0) fail(field, "must not be empty");
  if (v.startsWith("/")) fail(field, "must not begin with '/'");
  if (v.includes("\u0000")) fail(field, "must not contain NUL");
  if (utf8Length(v) > LIMITS.maxKeyBytes) fail(field, `is longer than ${LIMITS.maxKeyBytes} bytes`);
}

function status(v: unknown, field: string, optional = false): void {
  if (v === undefined && optional) return;
  if (typeof v !== "string" || !STATUSES.has(v)) fail(field, `must be one of ${[...STATUSES].join(", ")}`);
}

const cas = (v: unknown, field: string): void => int(v, field, 0, Number.MAX_SAFE_INTEGER);

function obj(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(field, "must be an object");
  return v as Record<string, unknown>;
}

/** Checks one operation's shape, names and sizes. Throws {@link ValidationError}. */
export function validateOp(op: Op, at: string): void {
  const o = obj(op, at) as unknown as Op;
  switch (o.op) {
    case "node.register": {
      const n = obj(o.node, `${at}.node`);
      name(n.Node, `${at}.node.Node`);
      name(n.ID, `${at}.node.ID`, true);
      str(n.Address, `${at}.node.Address`, { empty: true });
      name(n.Datacenter, `${at}.node.Datacenter`, true);
      stringMap(n.TaggedAddresses, `${at}.node.TaggedAddresses`);
      stringMap(n.Meta, `${at}.node.Meta`);
      cas(o.cas, `${at}.cas`);
      return;
    }
    case "node.deregister":
      name(o.node, `${at}.node`);
      cas(o.cas, `${at}.cas`);
      return;
    case "service.register": {
      const s = obj(o.service, `${at}.service`);
      name(s.Node, `${at}.service.Node`);
      name(s.ID, `${at}.service.ID`);
      name(s.Service, `${at}.service.Service`);
      stringList(s.Tags, `${at}.service.Tags`, LIMITS.maxTags, (t, f) => str(t, f));
      str(s.Address, `${at}.service.Address`, { optional: true, empty: true });
      int(s.Port, `${at}.service.Port`, 0, 65535);
      stringMap(s.Meta, `${at}.service.Meta`);
      str(s.Kind, `${at}.service.Kind`, { optional: true, empty: true, max: 64 });
      cas(o.cas, `${at}.cas`);
      return;
    }
    case "service.deregister":
      name(o.node, `${at}.node`);
      name(o.serviceId, `${at}.serviceId`);
      return;
    case "check.register": {
      const c = obj(o.check, `${at}.check`);
      name(c.Node, `${at}.check.Node`);
      name(c.CheckID, `${at}.check.CheckID`);
      name(c.Name, `${at}.check.Name`, true);
      status(c.Status, `${at}.check.Status`, true);
      str(c.Notes, `${at}.check.Notes`, { optional: true, empty: true, max: LIMITS.maxDescriptionLength });
      str(c.Output, `${at}.check.Output`, { optional: true, empty: true, max: LIMITS.maxCheckOutputBytes });
      if (c.ServiceID !== undefined && c.ServiceID !== "") name(c.ServiceID, `${at}.check.ServiceID`);
      cas(o.cas, `${at}.cas`);
      return;
    }
    case "check.deregister":
      name(o.node, `${at}.node`);
      name(o.checkId, `${at}.checkId`);
      return;
    case "check.status":
      name(o.node, `${at}.node`);
      name(o.checkId, `${at}.checkId`);
      status(o.status, `${at}.status`);
      str(o.output, `${at}.output`, { optional: true, empty: true, max: LIMITS.maxCheckOutputBytes });
      return;
    case "kv.set":
      kvKey(o.key, `${at}.key`);
      if (!(o.value instanceof Uint8Array)) fail(`${at}.value`, "must be bytes");
      if (o.value.byteLength > LIMITS.maxValueBytes) {
        fail(`${at}.value`, `is ${o.value.byteLength} bytes, over the ${LIMITS.maxValueBytes}-byte limit`);
      }
      int(o.flags, `${at}.flags`, 0, Number.MAX_SAFE_INTEGER);
      cas(o.cas, `${at}.cas`);
      return;
    case "kv.delete":
      kvKey(o.key, `${at}.key`);
      cas(o.cas, `${at}.cas`);
      return;
    case "kv.deleteTree":
      kvKey(o.prefix, `${at}.prefix`, true);
      return;
    case "acl.token.upsert": {
      const t = obj(o.token, `${at}.token`);
      aclId(t.AccessorID, `${at}.token.AccessorID`);
      aclId(t.SecretID, `${at}.token.SecretID`);
      str(t.Description, `${at}.token.Description`, {
        optional: true,
        empty: true,
        max: LIMITS.maxDescriptionLength,
      });
      stringList(t.Policies, `${at}.token.Policies`, LIMITS.maxLinks, aclId);
      stringList(t.Roles, `${at}.token.Roles`, LIMITS.maxLinks, aclId);
      if (t.ExpirationTime !== undefined && t.ExpirationTime !== null) {
        int(t.ExpirationTime, `${at}.token.ExpirationTime`, 0, Number.MAX_SAFE_INTEGER, false);
      }
      if (t.Local !== undefined && typeof t.Local !== "boolean")
        fail(`${at}.token.Local`, "must be a boolean");
      return;
    }
    case "acl.token.delete":
      aclId(o.accessorId, `${at}.accessorId`);
      return;
    case "acl.policy.upsert": {
      const p = obj(o.policy, `${at}.policy`);
      aclId(p.ID, `${at}.policy.ID`);
      if (typeof p.Name !== "string" || !ACL_NAME.test(p.Name)) {
        fail(`${at}.policy.Name`, "must be 1-128 letters, digits, '-' or '_'");
      }
      str(p.Description, `${at}.policy.Description`, {
        optional: true,
        empty: true,
        max: LIMITS.maxDescriptionLength,
      });
      str(p.Rules, `${at}.policy.Rules`, { empty: true, max: LIMITS.maxRulesBytes });
      if (utf8Length(p.Rules as string) > LIMITS.maxRulesBytes) {
        fail(`${at}.policy.Rules`, `is over ${LIMITS.maxRulesBytes} bytes`);
      }
      return;
    }
    case "acl.policy.delete":
      aclId(o.id, `${at}.id`);
      return;
    case "acl.role.upsert": {
      const r = obj(o.role, `${at}.role`);
      aclId(r.ID, `${at}.role.ID`);
      if (typeof r.Name !== "string" || !ACL_NAME.test(r.Name)) {
        fail(`${at}.role.Name`, "must be 1-128 letters, digits, '-' or '_'");
      }
      str(r.Description, `${at}.role.Description`, {
        optional: true,
        empty: true,
        max: LIMITS.maxDescriptionLength,
      });
      stringList(r.Policies, `${at}.role.Policies`, LIMITS.maxLinks, aclId);
      return;
    }
    case "acl.role.delete":
      aclId(o.id, `${at}.id`);
      return;
    default:
      fail(`${at}.op`, `unknown operation "${String((o as { op: unknown }).op)}"`);
  }
}

/** Checks a whole transaction before it reaches the store. Throws {@link ValidationError}. */
export function validateTxn(txn: Txn): void {
  if (!Array.isArray(txn)) fail("ops", "must be a list of operations");
  if (txn.length === 0) fail("ops", "must hold at least one operation");
  if (txn.length > LIMITS.maxOpsPerTxn) fail("ops", `holds more than ${LIMITS.maxOpsPerTxn} operations`);
  for (const [i, op] of txn.entries()) validateOp(op, `ops[${i}]`);
}
