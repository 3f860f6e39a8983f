import { authorizeTxn, requirePermission } from "../acl/index.js";
import type { KVHandlers } from "../generated/sluice/v1/KV.js";
import { kvToWire } from "../proto/index.js";
import { type Op, queries } from "../state/index.js";
import { type BrokerDeps, resolveCall, unary } from "./context.js";

/** sluice.v1.KV: put (with CAS), get, list and delete (recursive, CAS), ACL-checked. */
export function kvService(deps: BrokerDeps): KVHandlers {
  const commit = async (md: Parameters<typeof resolveCall>[1], txn: Op[]) => {
    const { authorizer } = await resolveCall(deps, md);
    authorizeTxn(authorizer, deps.store.root, txn);
    return { index: (await deps.store.commit(txn)).index };
  };
  return {
    Put: unary(async (req, call) =>
      commit(call.metadata, [
        {
          op: "kv.set",
          key: req.key,
          value: new Uint8Array(req.value),
          flags: Number(req.flags),
          ...(req.cas !== undefined && req.cas !== null ? { cas: Number(req.cas) } : {}),
        },
      ]),
    ),
    Get: unary(async (req, call) => {
      const { authorizer } = await resolveCall(deps, call.metadata);
      requirePermission(authorizer, "key", req.key, "read");
      const root = deps.publisher.state;
      const row = queries.kvGet(root, req.key);
      return { index: root.index, entry: row ? kvToWire(row) : null };
    }),
    List: unary(async (req, call) => {
      const { authorizer } = await resolveCall(deps, call.metadata);
      if (req.keys_only) requirePermission(authorizer, "key", req.prefix, "list");
      const root = deps.publisher.state;
      const entries = [];
      for (const row of queries.kvList(root, req.prefix)) {
        if (!authorizer.allows("key", row.Key, "read")) continue;
        const e = kvToWire(row);
        entries.push(req.keys_only ? { ...e, value: new Uint8Array() } : e);
      }
      return { index: root.index, entries };
    }),
    Delete: unary(async (req, call) => {
      const cas = req.cas !== undefined && req.cas !== null ? { cas: Number(req.cas) } : {};
      const op: Op = req.recurse
        ? { op: "kv.deleteTree", prefix: req.key }
        : { op: "kv.delete", key: req.key, ...cas };
      return commit(call.metadata, [op]);
    }),
  };
}
