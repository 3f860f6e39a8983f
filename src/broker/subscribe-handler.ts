import type * as grpc from "@grpc/grpc-js";
import type { SubscribeRequest__Output } from "../generated/sluice/v1/SubscribeRequest.js";
import { encodeFrame } from "../proto/index.js";
import type { Subscription } from "../stream/index.js";
import type { ConnectionLimit } from "./connection-limit.js";
import { type BrokerDeps, metadataToken } from "./context.js";
import { openSubscription } from "./open-subscription.js";
import { toGrpcStatus } from "./status.js";

/**
 * Subscribe: validates, waits briefly for an index ahead of the store, opens an ACL-filtered
 * subscription, and writes its frames as pre-encoded bytes, honouring back-pressure. A
 * client that goes away frees its subscription; the stream ends with the status that maps
 * the subscription's closing error.
 */
export function makeSubscribeHandler(deps: BrokerDeps, limit: ConnectionLimit) {
  const waitMs = deps.indexAheadWaitMs ?? 3000;

  return async (call: grpc.ServerWritableStream<SubscribeRequest__Output, Uint8Array>): Promise<void> => {
    const req = call.request;
    const peer = call.getPeer();
    // No AbortController per call: with 10,000 idle subscriptions its EventTarget was a good
    // part of each one's memory. A flag and one 'cancelled' listener do the same.
    let cancelled = false;
    let sub: Subscription | undefined;
    let onCancel: (() => void) | undefined;
    call.once("cancelled", () => {
      cancelled = true;
      sub?.unsubscribe();
      onCancel?.();
    });
    let counted = false;
    try {
      // Counted from the start, as a Watch subscription is (the same limit covers both).
      limit.acquire(peer);
      counted = true;
      sub = await openSubscription(deps, req, req.token || metadataToken(call.metadata), waitMs, () => {
        const abort = new AbortController();
        onCancel = () => abort.abort();
        if (cancelled) abort.abort();
        return abort.signal;
      });
      onCancel = undefined;
      if (cancelled) sub.unsubscribe();
      for await (const frame of sub) {
        if (!call.write(encodeFrame(frame))) {
          await new Promise<void>((resolve) => {
            if (cancelled) return resolve();
            onCancel = resolve;
            call.once("drain", () => {
              onCancel = undefined;
              resolve();
            });
          });
          if (cancelled) break;
        }
      }
      if (!cancelled) call.end();
    } catch (err) {
      if (!cancelled) call.emit("error", toGrpcStatus(err));
    } finally {
      if (counted) limit.release(peer);
    }
  };
}
