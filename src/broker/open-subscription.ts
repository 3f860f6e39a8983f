import type { SubscribeRequest__Output } from "../generated/sluice/v1/SubscribeRequest.js";
import { type Subject, SubjectKind, Topic } from "../state/events/index.js";
import { IndexAheadError, type Subscription } from "../stream/index.js";
import type { BrokerDeps } from "./context.js";
import { InvalidArgumentError } from "./errors.js";

/*
 * Opening a subscription from a wire SubscribeRequest: the one path of Subscribe streams,
 * Watch subscriptions and component-broker subscriptions.
 */

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
 * Parses the request's topic and subject, resolves the token (an unknown one is refused
 * before anything else is revealed), waits up to `waitMs` for an index ahead of the store
 * (IndexAheadError after that), then opens the ACL-filtered subscription. `waitSignal` is
 * asked for a signal only when there is a wait — an AbortController per call would cost
 * every idle subscription its memory — and aborting it stops the wait.
 */
export async function openSubscription(
  deps: Pick<BrokerDeps, "enforcer" | "publisher">,
  req: SubscribeRequest__Output,
  token: string | undefined,
  waitMs: number,
  waitSignal?: () => AbortSignal,
): Promise<Subscription> {
  const topic = topicFromWire(req.topic);
  const subject = subjectFromWire(req);
  const index = Number(req.index ?? 0);
  await deps.enforcer.resolve(token);
  const publisher = deps.publisher;
  if (index > publisher.index) {
    const reached = await publisher.whenIndex(index, waitMs, waitSignal?.());
    if (!reached) throw new IndexAheadError(index, publisher.index);
  }
  return deps.enforcer.subscribe({ topic, subject, index }, token);
}
