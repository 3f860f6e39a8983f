/** The EventPublisher and its subscriptions. Public face. */

export * from "./errors.js";
export {
  type CommitHook,
  EventPublisher,
  type PublisherMetrics,
  type PublisherOptions,
  type SubscribeRequest,
} from "./event-publisher.js";
export { type Frame, FrameKind } from "./frames.js";
export { type EventFilter, Subscription } from "./subscription.js";
