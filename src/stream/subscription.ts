import type { Event, Subject, Topic } from "../state/events/index.js";
import type { Index } from "../state/index.js";
import { kvFrameSubjects } from "./frame-subjects.js";
import { type Frame, FrameKind } from "./frames.js";
import type { CachedSnapshot } from "./snapshot-cache.js";
import type { StreamNode, SubjectStream, Waiter } from "./subject-stream.js";
import { estimateBytes } from "./topic-history.js";

/**
 * Decides, per event, whether the subscriber may see it (the ACL layer supplies one).
 * `allowsKeys`, when present, decides a whole frame of KV events at once: true when every
 * key of the set is readable (the filter memoizes by the set's interned id).
 */
export type EventFilter = ((event: Event) => boolean) & {
  readonly allowsKeys?: (setId: number, keys: readonly string[]) => boolean;
};

/** What a subscription needs from its publisher. */
export interface SubscriptionHost {
  /** Index of the last commit published. */
  readonly index: Index;
  readonly progressIntervalMs: number;
  readonly maxFrameEvents: number;
  readonly maxFrameBytes: number;
  now(): number;
  /** A snapshot of the subscription's subject (cached or fresh); throws SnapshotFailedError. */
  snapshotFor(sub: Subscription): CachedSnapshot;
  /** Makes the stream hold every matching commit above `index` (backfilling from history). */
  ensureCovered(stream: SubjectStream, index: number): void;
  /** Whether the topic history still holds every commit above `index`. */
  covers(topic: Topic, index: number): boolean;
  release(sub: Subscription): void;
  markWaiting(sub: Subscription, waiting: boolean): void;
  countReset(): void;
  countDelivered(events: number): void;
}

enum Mode {
  /** Send a snapshot, then go live. */
  Snapshot = 0,
  /** Send NewSnapshotToFollow, then a snapshot, then go live. */
  Reset = 1,
  Live = 2,
}

/**
 * One subscriber's view of a subject: an AsyncIterable of {@link Frame}s. The frame logic is
 * a state machine over `poll(now)`; `next()` only adds waiting. Breaking out of a
 * `for await` loop unsubscribes.
 */
export class Subscription implements AsyncIterableIterator<Frame>, Waiter {
  private mode: Mode;
  /** Sequence number of the next stream node to read. */
  private cursor = 0;
  /** The last index the subscriber was told (by a frame or progress). */
  private sentIndex: number;
  private lastSentAt: number;
  private outbox: Frame[] = [];
  private error: Error | undefined;
  private finished = false;
  private resolveWait: (() => void) | undefined;

  constructor(
    private readonly host: SubscriptionHost,
    readonly topic: Topic,
    readonly subject: Subject,
    readonly stream: SubjectStream,
    /** The token's secret, for force-closing; undefined when ACLs are off. */
    readonly token: string | undefined,
    private readonly filter: EventFilter | undefined,
    index: number,
  ) {
    this.sentIndex = index;
    this.lastSentAt = host.now();
    if (index === 0) this.mode = Mode.Snapshot;
    else if (host.covers(topic, index)) {
      host.ensureCovered(stream, index);
      this.cursor = stream.seqAfter(index);
      this.mode = Mode.Live;
    } else this.mode = Mode.Reset;
  }

  /** Whether the subscription ended (unsubscribed, force-closed or shut down). */
  get closed(): boolean {
    return this.finished || this.error !== undefined;
  }

  /** The last index the subscriber was told. */
  get index(): number {
    return this.sentIndex;
  }

  /**
   * The next frame, if one is ready at `now`; throws the closing error of a force-closed or
   * shut-down subscription. Pure apart from moving this subscription's own cursor.
   */
  poll(now: number): Frame | undefined {
    if (this.error) throw this.error;
    if (this.finished) return undefined;
    const queued = this.outbox.shift();
    if (queued) return queued;
    if (this.mode !== Mode.Live) return this.startSnapshot(now);
    const nodes = this.stream.nodes;
    if (this.cursor < nodes.base) {
      // The next event left the history while we were away: start over from a snapshot.
      this.host.countReset();
      this.mode = Mode.Reset;
      return this.startSnapshot(now);
    }
    while (this.cursor < nodes.end) {
      const frame = this.takeEvents(now);
      if (frame) return frame;
    }
    if (this.host.index > this.sentIndex && now - this.lastSentAt >= this.host.progressIntervalMs) {
      this.sentIndex = this.host.index;
      this.lastSentAt = now;
      return { kind: FrameKind.Progress, index: this.host.index };
    }
    return undefined;
  }

  /** Whether a waiting subscriber is due a progress frame at `now`. */
  progressDue(now: number): boolean {
    return this.host.index > this.sentIndex && now - this.lastSentAt >= this.host.progressIntervalMs;
  }

  private takeEvents(now: number): Frame | undefined {
    const nodes = this.stream.nodes;
    const first = nodes.at(this.cursor)!;
    let end = this.cursor + 1;
    let count = first.events.length;
    let last = first;
    // Whole commits only; a lagging reader gets several in one frame, up to the limits.
    if (end < nodes.end) {
      let bytes = nodeBytes(first);
      while (end < nodes.end) {
        const n = nodes.at(end)!;
        if (count + n.events.length > this.host.maxFrameEvents) break;
        const b = nodeBytes(n);
        if (bytes + b > this.host.maxFrameBytes) break;
        count += n.events.length;
        bytes += b;
        last = n;
        end++;
      }
    }
    const whole = end === this.cursor + 1;
    let events = whole ? first.events : this.stream.concat(this.cursor, end);
    this.cursor = end;
    if (this.filter) events = applyFilter(events, this.filter);
    if (events.length === 0) return undefined;
    this.sentIndex = last.index;
    this.lastSentAt = now;
    this.host.countDelivered(events.length);
    if (whole && events === first.events) {
      first.frame ??= { kind: FrameKind.Events, index: first.index, events };
      return first.frame;
    }
    return { kind: FrameKind.Events, index: last.index, events };
  }

  private startSnapshot(now: number): Frame {
    const reset = this.mode === Mode.Reset;
    const snap = this.host.snapshotFor(this);
    this.host.ensureCovered(this.stream, snap.index);
    this.cursor = this.stream.seqAfter(snap.index);
    this.mode = Mode.Live;
    const index = Math.max(1, snap.index) as Index;
    const out: Frame[] = [];
    if (reset) out.push({ kind: FrameKind.NewSnapshotToFollow });
    const events = this.filter ? applyFilter(snap.events, this.filter) : snap.events;
    // Parts of at most maxFrameEvents events and maxFrameBytes (estimated; one event always).
    const per = this.host.maxFrameEvents;
    const maxBytes = this.host.maxFrameBytes;
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < events.length; i++) {
      const b = estimateBytes(events[i]!);
      if (i > start && (i - start >= per || bytes + b > maxBytes)) {
        out.push({ kind: FrameKind.Snapshot, index, events: events.slice(start, i) });
        start = i;
        bytes = 0;
      }
      bytes += b;
    }
    if (start === 0 && events.length > 0) out.push({ kind: FrameKind.Snapshot, index, events });
    else if (start < events.length)
      out.push({ kind: FrameKind.Snapshot, index, events: events.slice(start) });
    out.push({ kind: FrameKind.EndOfSnapshot, index });
    this.host.countDelivered(events.length);
    this.sentIndex = index;
    this.lastSentAt = now;
    this.outbox = out;
    return this.outbox.shift()!;
  }

  async next(): Promise<IteratorResult<Frame>> {
    for (;;) {
      const frame = this.poll(this.host.now());
      if (frame !== undefined) return { value: frame, done: false };
      if (this.finished) return { value: undefined, done: true };
      await new Promise<void>((resolve) => {
        this.resolveWait = resolve;
        this.stream.addWaiter(this);
        this.host.markWaiting(this, true);
      });
    }
  }

  /**
   * The callback form of a blocked `next()`, for consumers that multiplex many subscriptions
   * (the Watch stream): `ready` is called once, when `poll` may have a frame or the
   * subscription ended (then `poll` returns undefined or throws). Call it again after
   * polling until undefined. One callback per subscription, no promise per frame.
   */
  notify(ready: () => void): void {
    if (this.error) {
      ready(); // poll throws the closing error
      return;
    }
    if (this.finished) return; // unsubscribed by its consumer: nothing more to read
    this.resolveWait = ready;
    this.stream.addWaiter(this);
    this.host.markWaiting(this, true);
  }

  /** Wakes a blocked `next()` (or a `notify` callback) so that it polls again. */
  wake(): void {
    const r = this.resolveWait;
    if (r === undefined) return;
    this.resolveWait = undefined;
    this.stream.removeWaiter(this);
    this.host.markWaiting(this, false);
    r();
  }

  /** Ends the subscription: a blocked or later read finishes (`done`). Idempotent. */
  unsubscribe(): void {
    if (this.closed) return;
    this.finished = true;
    this.outbox = [];
    this.host.release(this);
    this.wake();
  }

  /** Ends the subscription with an error that a blocked or later read throws. */
  closeWithError(err: Error): void {
    if (this.closed) return;
    this.error = err;
    this.outbox = [];
    this.host.release(this);
    this.wake();
  }

  async return(): Promise<IteratorResult<Frame>> {
    this.unsubscribe();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** A stream node's estimated bytes, computed once and kept on the (shared) node. */
function nodeBytes(n: StreamNode): number {
  if (n.bytes === undefined) {
    let b = 0;
    for (const e of n.events) b += estimateBytes(e);
    n.bytes = b;
  }
  return n.bytes;
}

/**
 * Whether every event of a (shared) frame is a KV event on one key: then one decision covers
 * the frame, since a KV event's visibility depends on its key alone. Computed once per
 * array and shared by every subscriber that reads it (a lagging reader of a hot key gets
 * exactly such frames).
 */
function applyFilter(events: readonly Event[], filter: EventFilter): readonly Event[] {
  if (events.length > 1) {
    // A frame of KV events is decided by its set of keys (computed once per frame, shared):
    // one key, one check; all keys readable, the shared array as it is.
    const set = kvFrameSubjects(events);
    if (set !== null) {
      if (set.subjects.length === 1) return filter(events[0]!) ? events : [];
      if (filter.allowsKeys?.(set.id, set.subjects)) return events;
    }
  }
  let i = 0;
  while (i < events.length && filter(events[i]!)) i++;
  if (i === events.length) return events; // all visible: share the array
  const out = events.slice(0, i);
  for (i++; i < events.length; i++) if (filter(events[i]!)) out.push(events[i]!);
  return out;
}
