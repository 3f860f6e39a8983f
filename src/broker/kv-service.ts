import { requirePermission } from "../acl/index.js";
import type { KVHandlers } from "../generated/sluice/v1/KV.js";
import { kvToWire } from "../proto/index.js";
import { queries } from "../state/index.js";
import { type BrokerDeps, resolveCall, unary } from "./context.js";
import { commitFor, deleteOp, putOp } from "./kv-ops.js";
import { makeWriteHandler } from "./write-stream.js";

/**
 * sluice.v1.KV: put (with CAS), get, list and delete (recursive, CAS), ACL-checked, and the
 * pipelined Write stream (`writes`, made by `makeWriteHandler`, whose `shutdown` ends them).
 */
export function kvService(deps: BrokerDeps, writes = makeWriteHandler(deps)): KVHandlers {
  return {
    Put: unary(async (req, call) => commitFor(deps, call.metadata, [putOp(req)])),
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
    Delete: unary(async (req, call) => commitFor(deps, call.metadata, [deleteOp(req)])),
    Write: writes.handler,
  };
}
