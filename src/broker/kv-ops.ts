import type * as grpc from "@grpc/grpc-js";
import { authorizeTxn } from "../acl/index.js";
import type { DeleteRequest__Output } from "../generated/sluice/v1/DeleteRequest.js";
import type { PutRequest__Output } from "../generated/sluice/v1/PutRequest.js";
import type { Op } from "../state/index.js";
import { type BrokerDeps, resolveCall } from "./context.js";

/* KV writes as transactions: shared by the unary calls and the Write stream. */

/** The transaction of a KV.Put request. */
export function putOp(req: PutRequest__Output): Op {
  return {
    op: "kv.set",
    key: req.key,
    value: new Uint8Array(req.value),
    flags: Number(req.flags),
    ...(req.cas !== undefined && req.cas !== null ? { cas: Number(req.cas) } : {}),
  };
}

/** The transaction of a KV.Delete request. */
export function deleteOp(req: DeleteRequest__Output): Op {
  const cas = req.cas !== undefined && req.cas !== null ? { cas: Number(req.cas) } : {};
  return req.recurse ? { op: "kv.deleteTree", prefix: req.key } : { op: "kv.delete", key: req.key, ...cas };
}

/**
 * Authorizes a write transaction for a call's token and hands it to the store; the store
 * has queued it when this resolves (so calls made in order commit in order), and `durable`
 * resolves with its index once it is on disk. Wrapped, so that awaiting this does not wait
 * for the disk.
 */
export async function submitFor(
  deps: BrokerDeps,
  md: grpc.Metadata,
  txn: Op[],
): Promise<{ readonly durable: Promise<number> }> {
  const { authorizer } = await resolveCall(deps, md);
  authorizeTxn(authorizer, deps.store.root, txn);
  return { durable: deps.store.commit(txn).then((c) => c.index) };
}

/** Commits one write transaction for a call's token: resolved, authorized, durable. */
export async function commitFor(deps: BrokerDeps, md: grpc.Metadata, txn: Op[]): Promise<{ index: number }> {
  return { index: await (await submitFor(deps, md, txn)).durable };
}
