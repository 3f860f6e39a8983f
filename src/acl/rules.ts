import { parse as parseHcl } from "@cdktf/hcl2json";
import { PolicyRulesError } from "./errors.js";

/** Resources whose rules name a segment (an exact name or a prefix). */
export const SEGMENTED = ["service", "node", "key", "component"] as const;
export type SegmentedResource = (typeof SEGMENTED)[number];
/** Resources with one global access level. */
export const GLOBAL = ["acl", "operator"] as const;
export type GlobalResource = (typeof GLOBAL)[number];
export type Resource = SegmentedResource | GlobalResource;

/** Access levels, weakest first. `list` is for keys and implies `read`; `write` implies both. */
export const Access = { Deny: "deny", Read: "read", List: "list", Write: "write" } as const;
export type Access = (typeof Access)[keyof typeof Access];
export const ACCESS_RANK: Readonly<Record<Access, number>> = { deny: 0, read: 1, list: 2, write: 3 };

export interface SegmentRule {
  readonly resource: SegmentedResource;
  readonly match: "exact" | "prefix";
  readonly segment: string;
  readonly access: Access;
}

export interface GlobalRule {
  readonly resource: GlobalResource;
  readonly access: Access;
}

/** A parsed policy: its rules in Sluice's own terms. */
export interface PolicyRules {
  readonly segments: readonly SegmentRule[];
  readonly globals: readonly GlobalRule[];
}

const ACCESS_VALUES = new Set<string>(Object.values(Access));
const RESOURCE_KEYS = new Map<string, { resource: SegmentedResource; match: "exact" | "prefix" }>(
  SEGMENTED.flatMap((r) => [
    [r, { resource: r, match: "exact" as const }],
    [`${r}_prefix`, { resource: r, match: "prefix" as const }],
  ]),
);

function fail(reason: string): never {
  throw new PolicyRulesError(reason, undefined, undefined);
}

function accessOf(v: unknown, where: string, resource: string): Access {
  if (typeof v !== "string" || !ACCESS_VALUES.has(v)) {
    fail(`${where}: policy must be one of deny, read, list, write (got ${JSON.stringify(v)})`);
  }
  if (v === "list" && resource !== "key") fail(`${where}: "list" applies to keys only`);
  return v as Access;
}

/** Turns the JSON form (or HCL turned into JSON) into rules, checking every field. */
export function rulesFromJson(doc: unknown): PolicyRules {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) fail("the rules must be an object");
  const segments: SegmentRule[] = [];
  const globals: GlobalRule[] = [];
  for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
    if (k === "acl" || k === "operator") {
      globals.push({ resource: k, access: accessOf(v, k, k) });
      continue;
    }
    const kind = RESOURCE_KEYS.get(k);
    if (!kind) fail(`unknown resource "${k}"`);
    if (typeof v !== "object" || v === null || Array.isArray(v))
      fail(`${k}: must map names to { policy = ... }`);
    for (const [segment, body] of Object.entries(v as Record<string, unknown>)) {
      // HCL blocks arrive as a list of bodies; the JSON form gives one object.
      const bodies = Array.isArray(body) ? body : [body];
      for (const b of bodies) {
        if (typeof b !== "object" || b === null) fail(`${k} "${segment}": must be a block with a policy`);
        const keys = Object.keys(b);
        const unknown = keys.find((x) => x !== "policy" && x !== "intentions");
        if (unknown) fail(`${k} "${segment}": unknown field "${unknown}"`);
        if (!("policy" in b)) fail(`${k} "${segment}": policy is required`);
        segments.push({
          resource: kind.resource,
          match: kind.match,
          segment,
          access: accessOf((b as { policy: unknown }).policy, `${k} "${segment}"`, kind.resource),
        });
      }
    }
  }
  return { segments, globals };
}

const HCL_DIAG = /:(\d+),(\d+)(?:-[\d,]+)?: ([^\]]+)/;

/**
 * Parses a rule document written in HCL (Consul's rule language) or its JSON equivalent.
 * Throws {@link PolicyRulesError} with the line and reason.
 */
export async function parseRules(text: string): Promise<PolicyRules> {
  const trimmed = text.trim();
  if (trimmed === "") return { segments: [], globals: [] };
  if (trimmed.startsWith("{")) {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      const pos = /position (\d+)/.exec(String((err as Error).message));
      // Without a position the parser ran off the end: the fault is on the last line.
      const upTo = pos ? text.slice(0, Number(pos[1])) : text.trimEnd();
      throw new PolicyRulesError(
        `malformed JSON: ${(err as Error).message}`,
        upTo.split("\n").length,
        undefined,
        {
          cause: err,
        },
      );
    }
    try {
      return rulesFromJson(doc);
    } catch (err) {
      throw locate(err, text);
    }
  }
  let json: unknown;
  try {
    json = await parseHcl("policy.hcl", text);
  } catch (err) {
    const m = HCL_DIAG.exec(String((err as Error).message));
    if (m) throw new PolicyRulesError(m[3]!.trim(), Number(m[1]), Number(m[2]), { cause: err });
    throw new PolicyRulesError(String((err as Error).message), undefined, undefined, { cause: err });
  }
  try {
    return rulesFromJson(json);
  } catch (err) {
    throw locate(err, text);
  }
}

/** Points a semantic error at the line of the block it is about (HCL to JSON loses positions). */
function locate(err: unknown, text: string): unknown {
  if (!(err instanceof PolicyRulesError) || err.line !== undefined) return err;
  const m = /^(?:unknown resource "([^"]+)"|([a-z_]+)(?: "([^"]*)")?:)/.exec(err.reason);
  if (!m) return err;
  const key = m[1] ?? m[2]!;
  const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const re = new RegExp(`^\\s*"?${esc(key)}"?\\b${m[3] !== undefined ? `\\s*:?\\s*"${esc(m[3])}"` : ""}`);
  const lines = text.split("\n");
  const candidates = lines.flatMap((l, i) => (re.test(l) ? [i] : []));
  // With several blocks of the same label, the one holding the bad value is meant.
  const bad = /\(got ("(?:[^"\\]|\\.)*")\)$/.exec(err.reason)?.[1];
  const holds = (i: number): boolean => {
    if (bad === undefined) return true;
    for (let j = i; j < lines.length; j++) {
      if (j > i && re.test(lines[j]!)) return false;
      if (lines[j]!.includes(bad)) return true;
    }
    return false;
  };
  const i = candidates.find(holds) ?? candidates[0];
  return i === undefined ? err : new PolicyRulesError(err.reason, i + 1, undefined, { cause: err.cause });
}

/** The rules of Consul's built-in global-management policy. */
export const GLOBAL_MANAGEMENT_RULES = `acl = "write"
operator = "write"
service_prefix "" { policy = "write" }
node_prefix "" { policy = "write" }
key_prefix "" { policy = "write" }
component_prefix "" { policy = "write" }
`;
