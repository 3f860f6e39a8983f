import { produce } from "immer";
import { CasFailedError, ConflictError, MissingReferenceError, ValidationError } from "./errors.js";
import { deepFreeze } from "./freeze.js";
import {
  instanceOwnChecks,
  nodeChecks,
  nodeServices,
  rolesUsingPolicy,
  tokensUsingPolicy,
  tokensUsingRole,
} from "./queries.js";
import { checkKey, type MutableRoot, serviceKey, writeRow } from "./schema.js";
import type {
  ACLRoleRow,
  ACLTokenRow,
  AccessorID,
  AnyRow,
  Change,
  CheckRow,
  Index,
  Op,
  SecretID,
  TableName,
  TableRows,
  Txn,
} from "./types.js";

/**
 * The transaction engine: turns operations into row changes on a mutable root (an immer
 * draft of the state root). It reads the root as left by earlier operations of the same
 * transaction, so a node registered in op 0 is there for a service in op 1.
 */
class TxnApplier {
  constructor(
    private readonly root: MutableRoot,
    private readonly index: Index,
    /** Every change made so far, in order: the commit's record, and the undo list on failure. */
    readonly changes: Change[],
  ) {}

  private put<T extends TableName>(table: T, key: string, after: TableRows[T] | undefined): void {
    const before = (this.root[table] as { get(k: string): TableRows[T] | undefined }).get(key);
    if (before === undefined && after === undefined) return;
    if (after !== undefined) deepFreeze(after);
    const op = before === undefined ? "insert" : after === undefined ? "delete" : "update";
    writeRow(this.root, table, key, after);
    this.changes.push({ table, op, key, before, after } as Change);
  }

  /** Adds the indexes to a row literal made for this write (no copy: it is ours alone). */
  private stamp<R extends AnyRow>(row: Omit<R, "CreateIndex" | "ModifyIndex">, before: R | undefined): R {
    const r = row as Record<string, unknown>;
    r.CreateIndex = before?.CreateIndex ?? this.index;
    r.ModifyIndex = this.index;
    return row as R;
  }

  private cas(table: TableName, key: string, expected: number | undefined, row: AnyRow | undefined): void {
    if (expected === undefined) return;
    const actual = row?.ModifyIndex ?? 0;
    if (actual !== expected) throw new CasFailedError(table, key, expected, actual);
  }

  apply(op: Op, at: string): void {
    const root = this.root;
    switch (op.op) {
      case "node.register": {
        const n = op.node;
        const before = root.nodes.get(n.Node);
        this.cas("nodes", n.Node, op.cas, before);
        const id = n.ID ?? before?.ID ?? "";
        if (id !== "") {
          const owner = root.idx.nodesById.get(id);
          if (owner !== undefined && owner !== n.Node) throw new ConflictError("nodes", "ID", id);
        }
        const row = this.stamp<TableRows["nodes"]>(
          {
            ID: id,
            Node: n.Node,
            Address: n.Address,
            Datacenter: n.Datacenter ?? before?.Datacenter ?? "dc1",
            TaggedAddresses: { ...(n.TaggedAddresses ?? {}) },
            Meta: { ...(n.Meta ?? {}) },
          },
          before,
        );
        if (!sameContent(before, row)) this.put("nodes", n.Node, row);
        return;
      }
      case "node.deregister": {
        const before = root.nodes.get(op.node);
        this.cas("nodes", op.node, op.cas, before);
        if (!before) return;
        for (const c of [...nodeChecks(root, op.node)])
          this.put("checks", checkKey(c.Node, c.CheckID), undefined);
        for (const s of [...nodeServices(root, op.node)])
          this.put("services", serviceKey(s.Node, s.ID), undefined);
        this.put("nodes", op.node, undefined);
        return;
      }
      case "service.register": {
        const s = op.service;
        if (!root.nodes.get(s.Node)) throw new MissingReferenceError("nodes", s.Node, `${at}.service.Node`);
        const key = serviceKey(s.Node, s.ID);
        const before = root.services.get(key);
        this.cas("services", key, op.cas, before);
        const row = this.stamp<TableRows["services"]>(
          {
            Node: s.Node,
            ID: s.ID,
            Service: s.Service,
            Tags: [...(s.Tags ?? [])],
            Address: s.Address ?? "",
            Port: s.Port ?? 0,
            Meta: { ...(s.Meta ?? {}) },
            Kind: s.Kind ?? "",
          },
          before,
        );
        if (sameContent(before, row)) return;
        this.put("services", key, row);
        if (before && before.Service !== row.Service) {
          // A rename on the same ID carries the instance's checks along.
          for (const c of [...instanceOwnChecks(root, s.Node, s.ID)]) {
            this.put(
              "checks",
              checkKey(c.Node, c.CheckID),
              produce(c, (d) => {
                d.ServiceName = row.Service;
                d.ModifyIndex = this.index;
              }),
            );
          }
        }
        return;
      }
      case "service.deregister": {
        const key = serviceKey(op.node, op.serviceId);
        if (!root.services.get(key)) return;
        for (const c of [...instanceOwnChecks(root, op.node, op.serviceId)]) {
          this.put("checks", checkKey(c.Node, c.CheckID), undefined);
        }
        this.put("services", key, undefined);
        return;
      }
      case "check.register": {
        const c = op.check;
        if (!root.nodes.get(c.Node)) throw new MissingReferenceError("nodes", c.Node, `${at}.check.Node`);
        const serviceId = c.ServiceID ?? "";
        let serviceName = "";
        if (serviceId !== "") {
          const svc = root.services.get(serviceKey(c.Node, serviceId));
          if (!svc)
            throw new MissingReferenceError(
              "services",
              serviceKey(c.Node, serviceId),
              `${at}.check.ServiceID`,
            );
          serviceName = svc.Service;
        }
        const key = checkKey(c.Node, c.CheckID);
        const before = root.checks.get(key);
        this.cas("checks", key, op.cas, before);
        const row = this.stamp<CheckRow>(
          {
            Node: c.Node,
            CheckID: c.CheckID,
            Name: c.Name ?? c.CheckID,
            Status: c.Status ?? "critical",
            Notes: c.Notes ?? "",
            Output: c.Output ?? "",
            ServiceID: serviceId,
            ServiceName: serviceName,
          },
          before,
        );
        if (!sameContent(before, row)) this.put("checks", key, row);
        return;
      }
      case "check.deregister":
        this.put("checks", checkKey(op.node, op.checkId), undefined);
        return;
      case "check.status": {
        const key = checkKey(op.node, op.checkId);
        const before = root.checks.get(key);
        if (!before) throw new MissingReferenceError("checks", key, `${at}.checkId`);
        const output = op.output ?? before.Output;
        if (before.Status === op.status && before.Output === output) return;
        this.put(
          "checks",
          key,
          produce(before, (d) => {
            d.Status = op.status;
            d.Output = output;
            d.ModifyIndex = this.index;
          }),
        );
        return;
      }
      case "kv.set": {
        const before = root.kv.get(op.key);
        this.cas("kv", op.key, op.cas, before);
        const row = this.stamp<TableRows["kv"]>(
          {
            Key: op.key,
            // The store's private copy of the transaction: no need to copy the bytes again.
            Value: op.value,
            Flags: op.flags ?? 0,
            LockIndex: before?.LockIndex ?? 0,
          },
          before,
        );
        this.put("kv", op.key, row);
        return;
      }
      case "kv.delete": {
        const before = root.kv.get(op.key);
        this.cas("kv", op.key, op.cas, before);
        this.put("kv", op.key, undefined);
        return;
      }
      case "kv.deleteTree":
        for (const [key] of [...root.kv.prefix(op.prefix)]) this.put("kv", key, undefined);
        return;
      case "acl.token.upsert": {
        const t = op.token;
        const before = root.aclTokens.get(t.AccessorID);
        if (before && op.createOnly) throw new ConflictError("aclTokens", "AccessorID", t.AccessorID);
        if (before && before.SecretID !== t.SecretID) {
          throw new ValidationError(`${at}.token.SecretID`, "a token's secret cannot change");
        }
        const owner = root.idx.tokensBySecret.get(t.SecretID);
        if (owner !== undefined && owner !== t.AccessorID)
          throw new ConflictError("aclTokens", "SecretID", "(redacted)");
        const policies = unique(t.Policies ?? []);
        const roles = unique(t.Roles ?? []);
        policies.forEach((p, i) => {
          if (!root.aclPolicies.get(p))
            throw new MissingReferenceError("aclPolicies", p, `${at}.token.Policies[${i}]`);
        });
        roles.forEach((r, i) => {
          if (!root.aclRoles.get(r))
            throw new MissingReferenceError("aclRoles", r, `${at}.token.Roles[${i}]`);
        });
        const row = this.stamp<ACLTokenRow>(
          {
            AccessorID: t.AccessorID as AccessorID,
            SecretID: t.SecretID as SecretID,
            Description: t.Description ?? "",
            Policies: policies,
            Roles: roles,
            ExpirationTime: t.ExpirationTime ?? null,
            Local: t.Local ?? false,
          },
          before,
        );
        this.put("aclTokens", t.AccessorID, row);
        return;
      }
      case "acl.token.delete":
        this.put("aclTokens", op.accessorId, undefined);
        return;
      case "acl.policy.upsert": {
        const p = op.policy;
        const owner = root.idx.policiesByName.get(p.Name);
        if (owner !== undefined && owner !== p.ID) throw new ConflictError("aclPolicies", "Name", p.Name);
        const before = root.aclPolicies.get(p.ID);
        if (before && op.createOnly) throw new ConflictError("aclPolicies", "ID", p.ID);
        this.put(
          "aclPolicies",
          p.ID,
          this.stamp<TableRows["aclPolicies"]>(
            { ID: p.ID, Name: p.Name, Description: p.Description ?? "", Rules: p.Rules },
            before,
          ),
        );
        return;
      }
      case "acl.policy.delete": {
        if (!root.aclPolicies.get(op.id)) return;
        // Unlink the policy from its tokens and roles, found through the indexes.
        for (const accessor of [...tokensUsingPolicy(root, op.id)]) {
          const t = root.aclTokens.get(accessor)!;
          this.put("aclTokens", accessor, this.relink(t, "Policies", op.id));
        }
        for (const roleId of [...rolesUsingPolicy(root, op.id)]) {
          const r = root.aclRoles.get(roleId)!;
          this.put("aclRoles", roleId, this.relink(r, "Policies", op.id));
        }
        this.put("aclPolicies", op.id, undefined);
        return;
      }
      case "acl.role.upsert": {
        const r = op.role;
        const owner = root.idx.rolesByName.get(r.Name);
        if (owner !== undefined && owner !== r.ID) throw new ConflictError("aclRoles", "Name", r.Name);
        const policies = unique(r.Policies ?? []);
        policies.forEach((p, i) => {
          if (!root.aclPolicies.get(p))
            throw new MissingReferenceError("aclPolicies", p, `${at}.role.Policies[${i}]`);
        });
        const before = root.aclRoles.get(r.ID);
        this.put(
          "aclRoles",
          r.ID,
          this.stamp<ACLRoleRow>(
            { ID: r.ID, Name: r.Name, Description: r.Description ?? "", Policies: policies },
            before,
          ),
        );
        return;
      }
      case "acl.role.delete": {
        if (!root.aclRoles.get(op.id)) return;
        for (const accessor of [...tokensUsingRole(root, op.id)]) {
          const t = root.aclTokens.get(accessor)!;
          this.put("aclTokens", accessor, this.relink(t, "Roles", op.id));
        }
        this.put("aclRoles", op.id, undefined);
        return;
      }
      default: {
        const never: never = op;
        throw new ValidationError(`${at}.op`, `unknown operation ${JSON.stringify(never)}`);
      }
    }
  }

  private relink<R extends ACLTokenRow | ACLRoleRow>(row: R, field: "Policies" | "Roles", remove: string): R {
    return produce(row, (d) => {
      const links = d as unknown as Record<string, string[]>;
      links[field] = (links[field] ?? []).filter((x) => x !== remove);
      d.ModifyIndex = this.index;
    });
  }
}

function unique(list: readonly string[]): string[] {
  return [...new Set(list)];
}

/** Whether two rows hold the same content, ignoring their indexes. */
function sameContent(a: AnyRow | undefined, b: AnyRow): boolean {
  if (a === undefined) return false;
  for (const k of Object.keys(b)) {
    if (k === "CreateIndex" || k === "ModifyIndex") continue;
    if (
      !deepEqual((a as unknown as Record<string, unknown>)[k], (b as unknown as Record<string, unknown>)[k])
    ) {
      return false;
    }
  }
  return true;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/**
 * Applies a transaction to a mutable root (an immer draft) at `index` and returns its
 * changes. It throws on the first failing operation; the caller drops the draft, so a
 * failed transaction changes nothing.
 */
export function applyTxn(root: MutableRoot, txn: Txn, index: Index): Change[] {
  const applier = new TxnApplier(root, index, []);
  for (const [i, op] of txn.entries()) applier.apply(op, `ops[${i}]`);
  return applier.changes;
}

/** Reverts changes, newest first. */
export function undo(root: MutableRoot, changes: readonly Change[]): void {
  for (let i = changes.length - 1; i >= 0; i--) {
    const c = changes[i]!;
    writeRow(root, c.table, c.key, c.before);
  }
}

/** Replays a logged commit's changes (after-images) onto a mutable root. */
export function redo(root: MutableRoot, changes: readonly Change[]): void {
  for (const c of changes) writeRow(root, c.table, c.key, c.after);
}
