import type { Event } from "../state/events/index.js";
import {
  type Frame,
  FrameKind,
  ShuttingDownError,
  type Subscription,
  SubscriptionForceClosedError,
} from "../stream/index.js";
import { checkServiceNodeJson, kvJson } from "./consul-json.js";
import type { SseEvent, SseWriter } from "./sse-writer.js";
import { toHttpStatus } from "./status.js";
import { topicName } from "./stream-request.js";

/*
 * How stream frames read as Server-Sent Events (the contract is in docs/ARCHITECTURE.md):
 *
 *   update        data {index, snapshot, events: [{index, topic, op, key, row}]}
 *                 id: the index for live events; none for snapshot parts
 *   snapshot-end  data {index}                 id: index
 *   progress      data {index}                 id: index
 *   reset         data {reason}                id: "" (the client forgets its resume index)
 *   closed        data {reason, error, resume} id: "" unless resume is true
 *
 * Rows are Consul's JSON shapes (DirEntry with the value in base64, CheckServiceNode, and
 * `{Name}` for the service list). A notification channel's events carry `subscription` (its
 * id, `kv:key:a`) and no `id:` field: a channel is not resumable.
 */

/** The JSON of one change event, computed once per event and shared by every stream that sends it. */
const eventJsonCache = new WeakMap<Event, string>();

export function eventJson(e: Event): string {
  let s = eventJsonCache.get(e);
  if (s === undefined) {
    s = JSON.stringify({
      index: e.index,
      topic: topicName(e.topic),
      op: e.payload.op,
      key: e.subject,
      row: rowOf(e),
    });
    eventJsonCache.set(e, s);
  }
  return s;
}

function rowOf(e: Event): unknown {
  switch (e.topic) {
    case "KV":
      return kvJson(e.payload.entry);
    case "ServiceHealth":
      return checkServiceNodeJson(e.payload);
    case "ServiceList":
      return { Name: e.payload.name };
    default: {
      const never: never = e;
      return never;
    }
  }
}

/** How a frame's event is labelled: with a channel's subscription id, and whether ids are sent. */
export interface FrameLabels {
  /** The subscription a channel event belongs to; absent on `/v1/stream`. */
  readonly subscription?: string;
  /** Whether events carry `id:` (resume points); false on notification channels. */
  readonly resumable: boolean;
}

/** `{"subscription":…,` or `{`: the head of every data object. */
function head(labels: FrameLabels): string {
  return labels.subscription === undefined ? "{" : `{"subscription":${JSON.stringify(labels.subscription)},`;
}

/** The SSE event of one frame. */
export function frameEvent(frame: Frame, labels: FrameLabels): SseEvent {
  const h = head(labels);
  const id = (index: number): { id?: string } => (labels.resumable ? { id: String(index) } : {});
  switch (frame.kind) {
    case FrameKind.Snapshot:
    case FrameKind.Events: {
      const snapshot = frame.kind === FrameKind.Snapshot;
      let events = "";
      for (const e of frame.events) events += events === "" ? eventJson(e) : `,${eventJson(e)}`;
      return {
        event: "update",
        data: `${h}"index":${frame.index},"snapshot":${snapshot},"events":[${events}]}`,
        // A snapshot part is no resume point: a client cut off mid-snapshot must get all of it again.
        ...(snapshot ? {} : id(frame.index)),
      };
    }
    case FrameKind.EndOfSnapshot:
      return { event: "snapshot-end", data: `${h}"index":${frame.index}}`, ...id(frame.index) };
    case FrameKind.Progress:
      return { event: "progress", data: `${h}"index":${frame.index}}`, ...id(frame.index) };
    case FrameKind.NewSnapshotToFollow:
      return {
        event: "reset",
        data: `${h}"reason":"index-too-old"}`,
        ...(labels.resumable ? { id: "" } : {}),
      };
    default: {
      const never: never = frame;
      return never;
    }
  }
}

/**
 * The last event of a stream that the server ends. `resume` says whether the client may
 * reconnect with its last event ID (shutdown: yes; a force close after an ACL change: no,
 * its view must be rebuilt, so the event also clears the ID).
 */
export function closedEvent(
  cause: { readonly reason: string; readonly error?: unknown },
  labels: FrameLabels,
): SseEvent {
  const err = cause.error;
  // A channel is not resumable; a stream is, after a shutdown (the history outlives it).
  const resume = labels.resumable && err instanceof ShuttingDownError;
  const body: Record<string, unknown> = { reason: cause.reason, resume };
  if (err instanceof Error) body.error = err.name;
  return {
    event: "closed",
    data: `${head(labels)}${JSON.stringify(body).slice(1)}`,
    ...(labels.resumable && !resume ? { id: "" } : {}),
  };
}

/** Why a subscription's closing error ended a stream, in words a client can show. */
export function closeReason(err: unknown): string {
  if (err instanceof SubscriptionForceClosedError) return err.reason;
  if (err instanceof ShuttingDownError) return "server shutting down";
  return toHttpStatus(err).body.error;
}

/**
 * Writes a subscription's frames to a writer until the subscription ends. Returns its closing
 * error (force close, shutdown, snapshot failure), or undefined when it was unsubscribed or
 * the client went away. Unsubscribes in every case.
 */
export async function pumpFrames(
  sub: Subscription,
  writer: SseWriter,
  labels: FrameLabels,
): Promise<unknown> {
  try {
    for (;;) {
      const r = await sub.next();
      if (r.done) return undefined;
      if (!(await writer.send(frameEvent(r.value, labels)))) return undefined;
    }
  } catch (err) {
    return err;
  } finally {
    sub.unsubscribe();
  }
}
