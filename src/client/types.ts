import type { ACLPolicy__Output } from "../generated/sluice/v1/ACLPolicy.js";
import type { ACLToken__Output } from "../generated/sluice/v1/ACLToken.js";
import type { Check__Output } from "../generated/sluice/v1/Check.js";
import type { KVEntry__Output } from "../generated/sluice/v1/KVEntry.js";
import type { Node__Output } from "../generated/sluice/v1/Node.js";
import type { Service__Output } from "../generated/sluice/v1/Service.js";

/*
 * The SDK's contracts. Row shapes are the generated wire types (`npm run gen`), never copies;
 * this file only names them and adds what the wire leaves implicit (brands, unions).
 */

/** A commit index of the store. Not a count: only the server hands them out. */
export type Index = number & { readonly __brand: "sluice.Index" };
/** A token's public identifier (safe to log and list). */
export type AccessorId = string & { readonly __brand: "sluice.AccessorId" };
/** A token's secret: what a client presents as its token. */
export type SecretId = string & { readonly __brand: "sluice.SecretId" };

export const asIndex = (n: number): Index => n as Index;
export const asAccessorId = (s: string): AccessorId => s as AccessorId;
export const asSecretId = (s: string): SecretId => s as SecretId;

/** A catalog node, as the wire carries it. */
export type Node = Node__Output;
/** A service instance registered on a node. */
export type Service = Service__Output;
/** A health check (node-level when `service_id` is empty). */
export type Check = Check__Output;
/** A key/value entry; `value` is raw bytes (a Buffer, which is a Uint8Array). */
export type KVEntry = KVEntry__Output;
export type ACLPolicy = ACLPolicy__Output;
/** An ACL token; `secret_id` is empty in listings. */
export type ACLToken = Omit<ACLToken__Output, "accessor_id" | "secret_id"> & {
  readonly accessor_id: AccessorId;
  readonly secret_id: SecretId | "";
};

/** One service instance with its node and checks (Consul's CheckServiceNode). */
export interface ServiceInstance {
  readonly node: Node;
  readonly service: Service;
  /** The node's node-level checks, then the instance's own. */
  readonly checks: readonly Check[];
}

/** Topics of the change stream; values mirror the server's topic names. */
export const Topic = { ServiceHealth: "ServiceHealth", ServiceList: "ServiceList", KV: "KV" } as const;
export type Topic = (typeof Topic)[keyof typeof Topic];

/**
 * What a subscription follows within its topic: one key (a service name for ServiceHealth,
 * a key for KV), every key under a prefix (KV), or everything (ServiceList, KV).
 */
export type Subject = { readonly key: string } | { readonly prefix: string } | { readonly wildcard: true };

export interface SubscribeRequest {
  readonly topic: Topic;
  readonly subject: Subject;
  /** 0 or absent: a snapshot, then live events. Above 0: resume after this index. */
  readonly index?: number;
}

/** Register/deregister of a service instance. */
export interface ServiceHealthUpdate {
  readonly op: "register" | "deregister";
  readonly node: Node;
  readonly service: Service;
  readonly checks: readonly Check[];
}

/** A service name appeared (its first instance) or went away (its last). */
export interface ServiceListUpdate {
  readonly op: "register" | "deregister";
  /** Lower-cased service name. */
  readonly name: string;
}

/** A key set, or deleted (with the entry as it was). */
export interface KVUpdate {
  readonly op: "set" | "delete";
  readonly entry: KVEntry;
}

/** One decoded change event; `index` is its commit's (the snapshot's, inside a snapshot). */
export type StreamEvent =
  | {
      readonly topic: typeof Topic.ServiceHealth;
      readonly index: Index;
      readonly payload: ServiceHealthUpdate;
    }
  | { readonly topic: typeof Topic.ServiceList; readonly index: Index; readonly payload: ServiceListUpdate }
  | { readonly topic: typeof Topic.KV; readonly index: Index; readonly payload: KVUpdate };

/** Kinds of stream frames, as the server's publisher names them. */
export const FrameKind = {
  Snapshot: "snapshot",
  EndOfSnapshot: "endOfSnapshot",
  NewSnapshotToFollow: "newSnapshotToFollow",
  Events: "events",
  Progress: "progress",
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/**
 * What `SluiceClient.subscribe` yields.
 *
 * - `snapshot`: part of the subject's state at `index`; several may come before `endOfSnapshot`.
 * - `endOfSnapshot`: the snapshot is whole; the view is the state at `index`.
 * - `newSnapshotToFollow`: the exact continuation of a resume cannot be served; drop the
 *   view, a fresh snapshot follows.
 * - `events`: one or more whole commits in index order; `index` is the last one's.
 * - `progress`: nothing for this subject up to `index`; resume from there.
 */
export type Frame =
  | {
      readonly kind: typeof FrameKind.Snapshot;
      readonly index: Index;
      readonly events: readonly StreamEvent[];
    }
  | { readonly kind: typeof FrameKind.EndOfSnapshot; readonly index: Index }
  | { readonly kind: typeof FrameKind.NewSnapshotToFollow }
  | { readonly kind: typeof FrameKind.Events; readonly index: Index; readonly events: readonly StreamEvent[] }
  | { readonly kind: typeof FrameKind.Progress; readonly index: Index };

/** A materialized view's state after a change: the index it reflects and the view itself. */
export interface ViewUpdate<V> {
  readonly index: Index;
  readonly value: V;
}

/** Counters of a materialized view's life, for monitoring and tests. */
export interface ViewStats {
  /** Complete snapshots applied (the first one included). */
  snapshots: number;
  /** Streams opened (the first one included). */
  subscriptions: number;
  /** Streams opened with a resume index. */
  resumes: number;
  /** Streams that ended in an error the view recovered from. */
  retries: number;
  /** Events applied outside snapshots. */
  eventsApplied: number;
  /** Events at or below the view's index, ignored (a server resending what the view has). */
  duplicatesSkipped: number;
}

/** Told before each retry, e.g. to log a lost connection. */
export interface RetryNotice {
  /** The error that ended the stream. */
  readonly error: Error;
  /** Consecutive failures so far (1 on the first). */
  readonly attempt: number;
  readonly delayMs: number;
  /** Whether the view will rebuild from a fresh snapshot (force-closed, or an index the server lacks). */
  readonly reset: boolean;
  /** The index the next subscription resumes from (0: snapshot). */
  readonly resumeIndex: number;
}

export interface ViewOptions {
  /** Stops the view, like `close()`. */
  readonly signal?: AbortSignal;
  /** Called before each retry. */
  readonly onRetry?: (notice: RetryNotice) => void;
}

export interface ServiceHealthViewOptions extends ViewOptions {
  /** Only instances whose checks all pass. */
  readonly passingOnly?: boolean;
  /** Only instances carrying this tag. */
  readonly tag?: string;
}

export interface WaitOptions {
  /**
   * How long to wait, in ms. When it runs out the current state is returned (as a Consul
   * blocking query does), or, if the view has none yet, a `WaitTimeoutError` is thrown.
   */
  readonly timeout?: number;
  readonly signal?: AbortSignal;
}

/** A live, always-consistent projection of one subject of the change stream. */
export interface MaterializedView<V> extends AsyncIterable<ViewUpdate<V>> {
  /** The latest state, or undefined before the first snapshot. Throws the error that stopped the view. */
  get(): ViewUpdate<V> | undefined;
  /** Resolves once the view's index (moved by events and progress) is above `index`. */
  waitForIndexAbove(index: number, options?: WaitOptions): Promise<ViewUpdate<V>>;
  /** Ends the stream; iterators finish, waits reject. */
  close(): void;
  readonly closed: boolean;
  readonly stats: Readonly<ViewStats>;
}
