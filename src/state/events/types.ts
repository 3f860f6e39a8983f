import type { StateRoot } from "../schema.js";
import type { CheckRow, Commit, Index, KVRow, NodeRow, ServiceRow } from "../types.js";

/** Topics of the change stream. Wire codes mirror `sluice.v1.Topic`. */
export const Topic = {
  ServiceHealth: "ServiceHealth",
  ServiceList: "ServiceList",
  KV: "KV",
} as const;
export type Topic = (typeof Topic)[keyof typeof Topic];
export const TOPICS: readonly Topic[] = [Topic.ServiceHealth, Topic.ServiceList, Topic.KV];

/** Each topic's name in lower snake case, as HTTP paths and NATS subjects spell it. */
export const TOPIC_NAMES: Readonly<Record<Topic, string>> = {
  ServiceHealth: "service_health",
  ServiceList: "service_list",
  KV: "kv",
};

/** How a subscription names its subject. */
export const SubjectKind = { Key: "key", Prefix: "prefix", Wildcard: "wildcard" } as const;
export type SubjectKind = (typeof SubjectKind)[keyof typeof SubjectKind];

export type Subject =
  | { readonly kind: typeof SubjectKind.Key; readonly key: string }
  | { readonly kind: typeof SubjectKind.Prefix; readonly prefix: string }
  | { readonly kind: typeof SubjectKind.Wildcard };

/** Consul's CheckServiceNode, as a register or deregister of one service instance. */
export interface ServiceHealthPayload {
  readonly op: "register" | "deregister";
  readonly node: NodeRow;
  readonly service: ServiceRow;
  /** The node's node-level checks, then the instance's own checks. */
  readonly checks: readonly CheckRow[];
}

/** A service name's first instance appeared (register) or its last one went (deregister). */
export interface ServiceListPayload {
  readonly op: "register" | "deregister";
  /** The service name as its first instance registered it (the subject is its lower-case form). */
  readonly name: string;
}

export interface KVPayload {
  readonly op: "set" | "delete";
  /** The entry as set, or as it was before the delete. */
  readonly entry: KVRow;
}

interface EventBase {
  /** Index of the commit that produced the event (the snapshot's index for snapshot events). */
  readonly index: Index;
  /** The event's subject key: lower-case service name, or KV key. */
  readonly subject: string;
  /**
   * Wire encoding of the event, computed once by the first writer that needs it and then
   * shared by every subscriber that receives the event (see `encodedOnce`).
   */
  encoded?: Uint8Array;
}

export type Event =
  | (EventBase & { readonly topic: typeof Topic.ServiceHealth; readonly payload: ServiceHealthPayload })
  | (EventBase & { readonly topic: typeof Topic.ServiceList; readonly payload: ServiceListPayload })
  | (EventBase & { readonly topic: typeof Topic.KV; readonly payload: KVPayload });

/** The encoding of an event, computed once and cached on it. */
export function encodedOnce(event: Event, encode: (e: Event) => Uint8Array): Uint8Array {
  if (event.encoded === undefined) event.encoded = encode(event);
  return event.encoded;
}

/**
 * What a topic contributes to the stream: which subjects it allows, the events of a commit,
 * and a snapshot of a subject at a root.
 */
export interface TopicHandler {
  readonly topic: Topic;
  readonly allows: ReadonlySet<SubjectKind>;
  /** Canonical form of a key subject (ServiceHealth lower-cases it). */
  normalizeKey(key: string): string;
  /** The topic's events for one commit, given the roots just before and after it. */
  eventsOf(commit: Commit, before: StateRoot, after: StateRoot): Event[];
  /** Every event that makes up the subject's state at `root` (each with `root.index`). */
  snapshot(subject: Subject, root: StateRoot): Event[];
}
