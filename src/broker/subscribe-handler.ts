import type * as grpc from "@grpc/grpc-js";
import type { SubscribeRequest__Output } from "../generated/sluice/v1/SubscribeRequest.js";
import { encodeFrame } from "../proto/index.js";
import { type Subject, SubjectKind, Topic } from "../state/events/index.js";
import { IndexAheadError, type Subscription } from "../stream/index.js";
import type { ConnectionLimit } from "./connection-limit.js";
import { type BrokerDeps, metadataToken } from "./context.js";
import { InvalidArgumentError } from "./errors.js";
import { toGrpcStatus } from "./status.js";

const TOPICS: Record<string, Topic> = {
  TOPIC_SERVICE_HEALTH: Topic.ServiceHealth,
  TOPIC_SERVICE_LIST: Topic.ServiceList,
  TOPIC_KV: Topic.KV,
};

export function topicFromWire(t: string): Topic {
  const topic = TOPICS[t];
  if (!topic) throw new InvalidArgumentError("topic", `unknown or unspecified topic ${t}`);
  return topic;
}

export function subjectFromWire(req: SubscribeRequest__Output): Subject {
  switch (req.subject) {
    case "key":
      return { kind: SubjectKind.Key, key: req.key ?? "" };
    case "prefix":
      return { kind: SubjectKind.Prefix, prefix: req.prefix ?? "" };
    case "wildcard":
      if (!req.wildcard) throw new InvalidArgumentError("wildcard", "must be true when set");
      return { kind: SubjectKind.Wildcard };
    default:
      throw new InvalidArgumentError("subject", "one of key, prefix or wildcard is required");
  }
}

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
      const topic = topicFromWire(req.topic);
      const subject = subjectFromWire(req);
      const index = Number(req.index ?? 0);
      const token = req.token || metadataToken(call.metadata);
      // Resolve first: an unknown token is refused before anything else is revealed.
      await deps.enforcer.resolve(token);
      if (index > deps.publisher.index) {
        const abort = new AbortController();
        onCancel = () => abort.abort();
        if (cancelled) abort.abort();
        const reached = await deps.publisher.whenIndex(index, waitMs, abort.signal);
        onCancel = undefined;
        if (!reached) throw new IndexAheadError(index, deps.publisher.index);
      }
      limit.acquire(peer);
      counted = true;
      sub = await deps.enforcer.subscribe({ topic, subject, index }, token);
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
