import type { Topic } from "../state/events/index.js";

/** The subscription's token lost access or changed: the client must reset its view and resubscribe. */
export class SubscriptionForceClosedError extends Error {
  override readonly name = "SubscriptionForceClosedError";
  constructor(
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`subscription closed by the server: client must reset state and resubscribe (${reason})`, options);
  }
}

/** The server is shutting down: the client keeps its view and resumes elsewhere or later with its index. */
export class ShuttingDownError extends Error {
  override readonly name = "ShuttingDownError";
  constructor(options?: ErrorOptions) {
    super("server is shutting down: resume with your last index", options);
  }
}

/** The subscription's topic and subject do not fit together (a wildcard where none is allowed, say). */
export class InvalidSubjectError extends Error {
  override readonly name = "InvalidSubjectError";
  constructor(
    readonly topic: string,
    readonly subjectKind: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`invalid subject for topic ${topic}: ${reason}`, options);
  }
}

/** The requested resume index is ahead of every commit the server has seen. */
export class IndexAheadError extends Error {
  override readonly name = "IndexAheadError";
  constructor(
    readonly requested: number,
    readonly current: number,
    options?: ErrorOptions,
  ) {
    super(`index ${requested} is ahead of the current index ${current}`, options);
  }
}

/** Building a snapshot failed; the subscriber gets this instead of a hang. */
export class SnapshotFailedError extends Error {
  override readonly name = "SnapshotFailedError";
  constructor(
    readonly topic: Topic,
    readonly subject: string,
    options?: ErrorOptions,
  ) {
    super(`building the snapshot of ${topic} "${subject}" failed: ${String(options?.cause)}`, options);
  }
}

/** Too many subscriptions for one token or connection. */
export class TooManySubscriptionsError extends Error {
  override readonly name = "TooManySubscriptionsError";
  constructor(
    readonly limit: number,
    readonly scope: "token" | "connection",
    options?: ErrorOptions,
  ) {
    super(`more than ${limit} subscriptions for one ${scope}`, options);
  }
}
