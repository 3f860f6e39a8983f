import {
  DEFAULT_HANDLERS,
  type Event,
  type Subject,
  SubjectKind,
  type Topic,
  type TopicHandler,
} from "../state/events/index.js";
import type { Commit, Index, StateRoot, Store } from "../state/index.js";
import {
  IndexAheadError,
  InvalidSubjectError,
  ShuttingDownError,
  SnapshotFailedError,
  SubscriptionForceClosedError,
  TooManySubscriptionsError,
} from "./errors.js";
import { type CachedSnapshot, SnapshotCache, type SnapshotCacheOptions } from "./snapshot-cache.js";
import { SubjectStream } from "./subject-stream.js";
import { type EventFilter, Subscription, type SubscriptionHost } from "./subscription.js";
import { type HistoryEntry, type HistoryLimits, TopicHistory } from "./topic-history.js";

export interface SubscribeRequest {
  readonly topic: Topic;
  readonly subject: Subject;
  /** 0 (or absent): snapshot then live. Above 0: resume after that index. */
  readonly index?: number;
  /** The token's secret: force-closing by token finds the subscription through it. */
  readonly token?: string;
  /** Per-event visibility (ACL); absent means every event is visible. */
  readonly filter?: EventFilter;
}

/** Sees each commit before the publisher dispatches it. */
export type CommitHook = (commit: Commit, before: StateRoot, after: StateRoot) => void;

export interface PublisherOptions {
  readonly handlers?: ReadonlyMap<Topic, TopicHandler>;
  /** Bounds of each topic's history ring (default 100,000 events and 64 MiB). */
  readonly history?: Partial<HistoryLimits>;
  readonly snapshotCache?: SnapshotCacheOptions;
  /** Idle time after which a caught-up subscriber is told the current index (default 10 s, at least 100 ms). */
  readonly progressIntervalMs?: number;
  /** Most events in one frame, whole commits excepted (default 4,096). */
  readonly maxFrameEvents?: number;
  /**
   * Most estimated bytes in one catch-up frame, whole commits excepted (default 1 MiB): a
   * lagging reader of big values gets several frames, not one larger than a client takes.
   */
  readonly maxFrameBytes?: number;
  /** Most open subscriptions per token (default unlimited). */
  readonly maxSubscriptionsPerToken?: number;
  /** Clock in milliseconds (monotonic); tests pass their own. */
  readonly now?: () => number;
}

/** Counters the metrics endpoint reads. */
export interface PublisherMetrics {
  commitsPublished: number;
  eventsPublished: number;
  eventsDelivered: number;
  snapshotBuilds: number;
  snapshotCacheHits: number;
  resets: number;
  forceCloses: number;
  subscriptions: Record<Topic, number>;
}

/** The streams of one topic, by subject. */
class TopicSubjects {
  readonly exact = new Map<string, SubjectStream>();
  readonly prefixes = new Map<string, SubjectStream>();
  /** Distinct prefix lengths with a stream, so matching a key costs one lookup per length. */
  prefixLengths: number[] = [];
  wildcard: SubjectStream | undefined;

  get empty(): boolean {
    return this.exact.size === 0 && this.prefixes.size === 0 && this.wildcard === undefined;
  }

  recomputeLengths(): void {
    this.prefixLengths = [...new Set([...this.prefixes.keys()].map((p) => p.length))].sort((a, b) => a - b);
  }
}

const streamId = (topic: Topic, s: Subject): string =>
  s.kind === SubjectKind.Wildcard
    ? `${topic}\u0000*`
    : s.kind === SubjectKind.Key
      ? `${topic}\u0000k\u0000${s.key}`
      : `${topic}\u0000p\u0000${s.prefix}`;

function addStream(entry: HistoryEntry, stream: SubjectStream): void {
  if (entry.streams) entry.streams.push(stream);
  else entry.streams = [stream];
}

function matches(s: Subject, eventSubject: string): boolean {
  switch (s.kind) {
    case SubjectKind.Key:
      return eventSubject === s.key;
    case SubjectKind.Prefix:
      return eventSubject.startsWith(s.prefix);
    case SubjectKind.Wildcard:
      return true;
    default: {
      const never: never = s;
      return never;
    }
  }
}

/**
 * Serves each subscriber a snapshot of its topic and subject, then every later commit's
 * matching events, from a per-topic history ring; see docs/ARCHITECTURE.md. Publishing costs
 * one node per (commit, subscribed subject) and never waits for a subscriber.
 */
export class EventPublisher implements SubscriptionHost {
  private root: StateRoot;
  private readonly handlers: ReadonlyMap<Topic, TopicHandler>;
  private readonly histories = new Map<Topic, TopicHistory>();
  private readonly subjects = new Map<Topic, TopicSubjects>();
  private readonly cache: SnapshotCache;
  private readonly byToken = new Map<string, Set<Subscription>>();
  private readonly all = new Set<Subscription>();
  private readonly waiting = new Set<Subscription>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private detach: (() => void) | undefined;
  readonly progressIntervalMs: number;
  readonly maxFrameEvents: number;
  readonly maxFrameBytes: number;
  private readonly maxPerToken: number;
  readonly now: () => number;
  readonly metrics: PublisherMetrics;
  /** Streams touched by the commit being published (reused between commits). */
  private readonly touched: SubjectStream[] = [];
  private readonly batches = new Map<SubjectStream, Event[]>();
  private readonly hooks: CommitHook[] = [];
  private indexWaiters: { index: number; resolve: (reached: boolean) => void; reject: (e: Error) => void }[] =
    [];

  constructor(root: StateRoot, opts: PublisherOptions = {}) {
    this.root = root;
    this.handlers = opts.handlers ?? DEFAULT_HANDLERS;
    this.now = opts.now ?? performance.now.bind(performance);
    this.progressIntervalMs = Math.max(100, opts.progressIntervalMs ?? 10_000);
    this.maxFrameEvents = opts.maxFrameEvents ?? 4096;
    this.maxFrameBytes = opts.maxFrameBytes ?? 1024 * 1024;
    this.maxPerToken = opts.maxSubscriptionsPerToken ?? Number.POSITIVE_INFINITY;
    this.cache = new SnapshotCache(opts.snapshotCache, this.now);
    const limits: HistoryLimits = {
      maxEvents: opts.history?.maxEvents ?? 100_000,
      maxBytes: opts.history?.maxBytes ?? 64 * 1024 * 1024,
    };
    const subscriptions = {} as Record<Topic, number>;
    for (const t of this.handlers.keys()) {
      this.histories.set(t, new TopicHistory(limits, root.index));
      this.subjects.set(t, new TopicSubjects());
      subscriptions[t] = 0;
    }
    this.metrics = {
      commitsPublished: 0,
      eventsPublished: 0,
      eventsDelivered: 0,
      snapshotBuilds: 0,
      snapshotCacheHits: 0,
      resets: 0,
      forceCloses: 0,
      subscriptions,
    };
  }

  /**
   * A publisher fed by a store: its history is refilled from the commits the store recovered
   * from its log (so clients resume across a restart), then every durable commit follows.
   */
  static attach(store: Store, opts: PublisherOptions = {}): EventPublisher {
    const recovered: [Commit, StateRoot, StateRoot][] = [];
    store.replayRecovered((c, before, after) => {
      recovered.push([c, before, after]);
    });
    recovered.reverse();
    const start = recovered[0]?.[1] ?? store.root;
    const pub = new EventPublisher(start, opts);
    for (const [c, before, after] of recovered) pub.publish(c, before, after);
    if (pub.index !== store.index) {
      throw new Error(`publisher history ends at ${pub.index} but the store is at ${store.index}`);
    }
    pub.detach = store.onCommit((c, before, after) => pub.publish(c, before, after));
    return pub;
  }

  /** Index of the last commit published. */
  get index(): Index {
    return this.root.index;
  }

  /** The root as of the last commit published. */
  get state(): StateRoot {
    return this.root;
  }

  /**
   * Runs `hook` for every commit before its events are dispatched: the ACL layer closes the
   * streams a commit revokes here, so no event of that commit reaches them.
   */
  beforePublish(hook: CommitHook): () => void {
    this.hooks.push(hook);
    return () => {
      const i = this.hooks.indexOf(hook);
      if (i >= 0) this.hooks.splice(i, 1);
    };
  }

  /** Takes one commit: records its events in each topic's history and hands them to the subscribed subjects. */
  publish(commit: Commit, before: StateRoot, after: StateRoot): void {
    for (const hook of this.hooks) hook(commit, before, after);
    this.root = after;
    this.metrics.commitsPublished++;
    if (this.indexWaiters.length > 0) this.wakeIndexWaiters();
    for (const [topic, handler] of this.handlers) {
      const events = handler.eventsOf(commit, before, after);
      if (events.length === 0) continue;
      this.metrics.eventsPublished += events.length;
      const entry = this.histories.get(topic)!.append(commit.index, events);
      const subs = this.subjects.get(topic)!;
      if (subs.empty) continue;
      if (events.length === 1) {
        // The common case: every matching stream shares the commit's event array.
        const e = events[0]!;
        this.forEachStream(subs, e.subject, (s) => {
          s.append({ index: commit.index, events });
          addStream(entry, s);
        });
        continue;
      }
      for (const e of events) {
        this.forEachStream(subs, e.subject, (s) => {
          const batch = this.batches.get(s);
          if (batch) batch.push(e);
          else {
            this.batches.set(s, [e]);
            this.touched.push(s);
          }
        });
      }
      for (const s of this.touched) {
        const batch = this.batches.get(s)!;
        s.append({ index: commit.index, events: batch.length === events.length ? events : batch });
        addStream(entry, s);
      }
      this.touched.length = 0;
      this.batches.clear();
    }
  }

  private forEachStream(subs: TopicSubjects, key: string, f: (s: SubjectStream) => void): void {
    const exact = subs.exact.get(key);
    if (exact) f(exact);
    for (const len of subs.prefixLengths) {
      if (len > key.length) break;
      const p = subs.prefixes.get(key.slice(0, len));
      if (p) f(p);
    }
    if (subs.wildcard) f(subs.wildcard);
  }

  /**
   * Opens a subscription. Throws at once, before any frame, for a bad topic or subject
   * ({@link InvalidSubjectError}), an index ahead of the store ({@link IndexAheadError}),
   * or too many subscriptions for the token.
   */
  subscribe(req: SubscribeRequest): Subscription {
    if (this.stopped) throw new ShuttingDownError();
    const handler = this.handlers.get(req.topic);
    if (!handler) throw new InvalidSubjectError(String(req.topic), "-", "unknown topic");
    const subject = this.normalize(handler, req.subject);
    const index = req.index ?? 0;
    if (!Number.isSafeInteger(index) || index < 0) {
      throw new InvalidSubjectError(
        handler.topic,
        subject.kind,
        `index must be a non-negative integer, got ${index}`,
      );
    }
    if (index > this.index) throw new IndexAheadError(index, this.index);
    const tokenSubs = req.token === undefined ? undefined : this.byToken.get(req.token);
    if (tokenSubs && tokenSubs.size >= this.maxPerToken)
      throw new TooManySubscriptionsError(this.maxPerToken, "token");

    const stream = this.streamFor(handler.topic, subject);
    const sub = new Subscription(this, handler.topic, subject, stream, req.token, req.filter, index);
    stream.subscribers.add(sub);
    this.all.add(sub);
    this.metrics.subscriptions[handler.topic]++;
    if (req.token !== undefined) {
      if (tokenSubs) tokenSubs.add(sub);
      else this.byToken.set(req.token, new Set([sub]));
    }
    this.ensureTimer();
    return sub;
  }

  private normalize(handler: TopicHandler, s: Subject | undefined): Subject {
    const topic = handler.topic;
    if (!s || typeof s !== "object") throw new InvalidSubjectError(topic, "-", "a subject is required");
    if (!handler.allows.has(s.kind)) {
      throw new InvalidSubjectError(
        topic,
        String(s.kind),
        `topic ${topic} does not allow ${String(s.kind)} subjects`,
      );
    }
    switch (s.kind) {
      case SubjectKind.Key:
        if (typeof s.key !== "string" || s.key.length === 0) {
          throw new InvalidSubjectError(topic, s.kind, "key must be a non-empty string");
        }
        return { kind: s.kind, key: handler.normalizeKey(s.key) };
      case SubjectKind.Prefix:
        if (typeof s.prefix !== "string" || s.prefix.length === 0) {
          throw new InvalidSubjectError(
            topic,
            s.kind,
            "prefix must be a non-empty string (use the wildcard for all)",
          );
        }
        return { kind: s.kind, prefix: handler.normalizeKey(s.prefix) };
      case SubjectKind.Wildcard:
        return s;
      default:
        throw new InvalidSubjectError(topic, String((s as { kind: unknown }).kind), "unknown subject kind");
    }
  }

  private streamFor(topic: Topic, subject: Subject): SubjectStream {
    const subs = this.subjects.get(topic)!;
    const id = streamId(topic, subject);
    let stream: SubjectStream | undefined;
    switch (subject.kind) {
      case SubjectKind.Key:
        stream = subs.exact.get(subject.key);
        if (!stream) {
          stream = new SubjectStream(id, topic, subject, this.index);
          subs.exact.set(subject.key, stream);
        }
        break;
      case SubjectKind.Prefix:
        stream = subs.prefixes.get(subject.prefix);
        if (!stream) {
          stream = new SubjectStream(id, topic, subject, this.index);
          subs.prefixes.set(subject.prefix, stream);
          subs.recomputeLengths();
        }
        break;
      case SubjectKind.Wildcard:
        stream = subs.wildcard ??= new SubjectStream(id, topic, subject, this.index);
        break;
    }
    return stream;
  }

  /**
   * Resolves true once a commit at or above `index` is published, or false after `timeoutMs`
   * (or when `signal` aborts). Used to hold a client that resumes ahead of this server.
   */
  whenIndex(index: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    // Rejects with ShuttingDownError if the publisher shuts down meanwhile.
    if (this.index >= index) return Promise.resolve(true);
    if (this.stopped) return Promise.reject(new ShuttingDownError());
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const entry = {
        index,
        resolve: (reached: boolean) => {
          done();
          resolve(reached);
        },
        reject: (e: Error) => {
          done();
          reject(e);
        },
      };
      const drop = (): void => {
        this.indexWaiters = this.indexWaiters.filter((w) => w !== entry);
        entry.resolve(false);
      };
      const onAbort = (): void => drop();
      const timer = setTimeout(drop, timeoutMs);
      timer.unref();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.indexWaiters.push(entry);
    });
  }

  private wakeIndexWaiters(): void {
    const ready = this.indexWaiters.filter((w) => w.index <= this.index);
    if (ready.length === 0) return;
    this.indexWaiters = this.indexWaiters.filter((w) => w.index > this.index);
    for (const w of ready) w.resolve(true);
  }

  // ---- SubscriptionHost ----

  covers(topic: Topic, index: number): boolean {
    return index >= this.histories.get(topic)!.coveredFrom;
  }

  ensureCovered(stream: SubjectStream, index: number): void {
    if (index >= stream.coveredFrom) return;
    const history = this.histories.get(stream.topic)!;
    const from = Math.max(index, history.coveredFrom);
    const nodes = [];
    for (let seq = history.seqAfter(from); seq < history.entries.end; seq++) {
      const entry = history.entries.at(seq)!;
      if (entry.index > stream.coveredFrom) break;
      const events = entry.events.filter((e) => matches(stream.subject, e.subject));
      if (events.length === 0) continue;
      nodes.push({
        index: entry.index,
        events: events.length === entry.events.length ? entry.events : events,
      });
      addStream(entry, stream);
    }
    stream.nodes.prepend(nodes);
    stream.coveredFrom = from;
  }

  snapshotFor(sub: Subscription): CachedSnapshot {
    const history = this.histories.get(sub.topic)!;
    const hit = this.cache.get(sub.stream.id, history.coveredFrom);
    if (hit) {
      this.metrics.snapshotCacheHits++;
      return hit;
    }
    const handler = this.handlers.get(sub.topic)!;
    let events: Event[];
    try {
      events = handler.snapshot(sub.subject, this.root);
    } catch (err) {
      const label = sub.subject.kind === SubjectKind.Wildcard ? "*" : sub.stream.id;
      throw new SnapshotFailedError(sub.topic, label, { cause: err });
    }
    this.metrics.snapshotBuilds++;
    const snap: CachedSnapshot = Object.freeze({ index: this.root.index, events: Object.freeze(events) });
    this.cache.set(sub.stream.id, snap);
    return snap;
  }

  release(sub: Subscription): void {
    if (!this.all.delete(sub)) return;
    this.metrics.subscriptions[sub.topic]--;
    this.waiting.delete(sub);
    if (sub.token !== undefined) {
      const set = this.byToken.get(sub.token);
      set?.delete(sub);
      if (set && set.size === 0) this.byToken.delete(sub.token);
    }
    const stream = sub.stream;
    stream.subscribers.delete(sub);
    stream.removeWaiter(sub);
    if (stream.subscribers.size > 0) return;
    // The last subscriber left: drop the stream, its nodes and its cached snapshot.
    stream.dead = true;
    this.cache.delete(stream.id);
    const subs = this.subjects.get(sub.topic)!;
    switch (sub.subject.kind) {
      case SubjectKind.Key:
        subs.exact.delete(sub.subject.key);
        break;
      case SubjectKind.Prefix:
        subs.prefixes.delete(sub.subject.prefix);
        subs.recomputeLengths();
        break;
      case SubjectKind.Wildcard:
        subs.wildcard = undefined;
        break;
    }
  }

  markWaiting(sub: Subscription, waiting: boolean): void {
    if (waiting) this.waiting.add(sub);
    else this.waiting.delete(sub);
  }

  countReset(): void {
    this.metrics.resets++;
  }

  countDelivered(events: number): void {
    this.metrics.eventsDelivered += events;
  }

  // ---- progress ----

  private ensureTimer(): void {
    if (this.timer || this.stopped) return;
    const period = Math.max(25, Math.floor(this.progressIntervalMs / 4));
    this.timer = setInterval(() => this.tick(this.now()), period);
    this.timer.unref();
  }

  /** Wakes waiting subscribers that are due a progress frame at `now`. */
  tick(now: number): void {
    for (const sub of this.waiting) if (sub.progressDue(now)) sub.wake();
  }

  // ---- closing ----

  /**
   * Force-closes every subscription of a token: their reads throw
   * {@link SubscriptionForceClosedError}. Returns how many were closed.
   */
  closeToken(token: string, reason = "token changed or deleted"): number {
    const set = this.byToken.get(token);
    if (!set) return 0;
    const subs = [...set];
    // One error for all: building 10,000 stack traces was most of the cost of a close.
    const err = new SubscriptionForceClosedError(reason);
    for (const sub of subs) sub.closeWithError(err);
    this.metrics.forceCloses += subs.length;
    return subs.length;
  }

  /** Number of open subscriptions. */
  get subscriptionCount(): number {
    return this.all.size;
  }

  /** Tokens with open subscriptions. */
  tokens(): IterableIterator<string> {
    return this.byToken.keys();
  }

  /** Ends every subscription with {@link ShuttingDownError} and stops taking commits. */
  shutdown(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.detach?.();
    if (this.timer) clearInterval(this.timer);
    for (const sub of [...this.all]) sub.closeWithError(new ShuttingDownError());
    for (const w of this.indexWaiters.splice(0)) w.reject(new ShuttingDownError());
  }

  /** Sizes, for tests and metrics. */
  stats(): { historyEvents: number; streams: number; cachedSnapshots: number } {
    let historyEvents = 0;
    let streams = 0;
    for (const h of this.histories.values()) historyEvents += h.eventCount;
    for (const s of this.subjects.values()) streams += s.exact.size + s.prefixes.size + (s.wildcard ? 1 : 0);
    return { historyEvents, streams, cachedSnapshots: this.cache.size };
  }
}
