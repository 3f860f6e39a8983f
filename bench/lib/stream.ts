/*
 * Shared by the `publisher` and `acl` suites: garbage collection on demand, memory readings,
 * idle subscribers, delivery runs through the public Subscription API, and the plain
 * async-iteration baseline they are compared with.
 */
import { PerformanceObserver } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { Store } from "../../src/state/index.js";
import { type Frame, FrameKind, type Subscription } from "../../src/stream/index.js";
import { CpuMeter } from "./cpu.js";

/** One turn of the event loop (every queued microtask runs first). */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

let gcFn: (() => void) | null | undefined;

/**
 * A full-GC function: `global.gc` when node runs with `--expose-gc`, otherwise one obtained
 * at run time (`v8.setFlagsFromString("--expose-gc")`, then `gc` from a fresh context);
 * undefined if neither works.
 */
export function gcFunction(): (() => void) | undefined {
  if (gcFn === undefined) {
    const g = (globalThis as { gc?: unknown }).gc;
    if (typeof g === "function") gcFn = g as () => void;
    else {
      try {
        setFlagsFromString("--expose-gc");
        const f = runInNewContext("gc") as unknown;
        gcFn = typeof f === "function" ? (f as () => void) : null;
      } catch {
        gcFn = null;
      }
    }
  }
  return gcFn ?? undefined;
}

/** Full collections with event-loop turns between them, so that a measurement starts clean. */
export async function settle(rounds = 3): Promise<void> {
  const gc = gcFunction();
  for (let i = 0; i < rounds; i++) {
    gc?.();
    await turn();
  }
}

/**
 * Garbage-collection pauses of the main thread, summed from `gc` performance entries
 * (delivered a little after the fact, so read them after a turn of the event loop).
 */
export class GcMeter {
  private ms = 0;
  private count = 0;
  private readonly observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      this.ms += e.duration;
      this.count++;
    }
  });

  constructor() {
    this.observer.observe({ entryTypes: ["gc"] });
  }

  /** Milliseconds of GC pause and number of collections so far. */
  read(): { ms: number; count: number } {
    return { ms: this.ms, count: this.count };
  }

  stop(): void {
    this.observer.disconnect();
  }
}

export interface MemoryReading {
  readonly rss: number;
  readonly heapUsed: number;
  readonly external: number;
}

/** RSS, heap and external bytes after {@link settle}. */
export async function memoryAfterGc(): Promise<MemoryReading> {
  await settle(4);
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external };
}

/** Waits (turn by turn) until `done()` holds; throws after `timeoutMs` or when `signal` aborts. */
export async function waitUntil(
  done: () => boolean,
  what: string,
  signal: AbortSignal,
  timeoutMs = 120_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    signal.throwIfAborted();
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await turn();
  }
}

/** Frames the idle subscribers read after their snapshot, by kind. */
export interface IdleCounters {
  /** Progress frames (what an idle subscriber is expected to get). */
  progress: number;
  /** Event frames (none expected: the writers touch other keys). */
  eventFrames: number;
  /** Reads that threw. */
  errors: number;
}

/**
 * A population of idle subscriptions, each read by a `for await` loop that blocks in `next()`
 * once it has read its (empty) snapshot. `open(i)` makes the i-th subscription.
 */
export class IdleSubscribers {
  private readonly subs: Subscription[] = [];
  private readonly loops: (Promise<void> | undefined)[] = [];
  private ready = 0;
  readonly counters: IdleCounters = { progress: 0, eventFrames: 0, errors: 0 };

  constructor(
    private readonly open: (i: number) => Subscription,
    private readonly signal: AbortSignal,
  ) {}

  get count(): number {
    return this.subs.length;
  }

  /** Subscribes up to `n` subscriptions without reading them. */
  subscribe(n: number): void {
    while (this.subs.length < n) {
      this.subs.push(this.open(this.subs.length));
      this.loops.push(undefined);
    }
  }

  /** Starts a reader on every unread subscription and waits until each is blocked in `next()`. */
  async read(): Promise<void> {
    const target = this.ready + this.loops.filter((l) => l === undefined).length;
    for (let i = 0; i < this.subs.length; i++) {
      if (this.loops[i] === undefined) this.loops[i] = this.consume(this.subs[i]!);
    }
    await waitUntil(() => this.ready >= target, "idle subscribers to read their snapshots", this.signal);
    await turn();
  }

  /** Grows (subscribe and read) or shrinks (unsubscribe the newest) to `n` subscriptions. */
  async resize(n: number): Promise<void> {
    if (n > this.subs.length) {
      this.subscribe(n);
      await this.read();
      return;
    }
    const gone = this.subs.splice(n);
    const loops = this.loops.splice(n);
    for (const s of gone) s.unsubscribe();
    await Promise.all(loops);
    this.ready -= loops.filter((l) => l !== undefined).length;
  }

  private async consume(sub: Subscription): Promise<void> {
    try {
      for await (const f of sub) {
        if (f.kind === FrameKind.EndOfSnapshot) this.ready++;
        else if (f.kind === FrameKind.Progress) this.counters.progress++;
        else if (f.kind === FrameKind.Events) this.counters.eventFrames++;
      }
    } catch {
      this.counters.errors++;
    }
  }
}

export interface DeliveryOptions {
  readonly store: Store;
  /** The KV key the writer sets and every subscriber watches. */
  readonly key: string;
  /**
   * With n > 1 the writer cycles through n keys `${key}/0` … `${key}/${n-1}` (subscribers
   * must then watch a prefix that covers them), so frames mix keys. Default 1: `key` only.
   */
  readonly keys?: number;
  readonly value: Uint8Array;
  readonly subscribers: number;
  /** Opens the i-th subscription (index 0, on `key`). */
  readonly open: (i: number) => Subscription | Promise<Subscription>;
  /** Commits issued together before awaiting them: they are published in one go. */
  readonly burst: number;
  /** The writer keeps issuing bursts for this long. */
  readonly durationMs: number;
  readonly signal: AbortSignal;
  /** About once a second while the writer runs. */
  readonly onProgress?: (elapsedMs: number, commits: number) => void;
}

export interface DeliveryResult {
  readonly subscribers: number;
  readonly burst: number;
  readonly bursts: number;
  readonly commits: number;
  /** Events received by all subscribers in the window (one event per commit each). */
  readonly deliveries: number;
  readonly frames: number;
  readonly eventsPerFrame: number;
  /** From the first burst to the last subscriber holding the last commit. */
  readonly elapsedMs: number;
  readonly deliveriesPerSec: number;
  /** The same bursts with nobody subscribed to the key: the writer's (store + publish) own time. */
  readonly writerMs: number;
  /** deliveries / (elapsed − writer): the rate of the delivery path alone (an estimate). */
  readonly deliveriesPerSecExWriter: number;
  /** CPU cores the process used over the window (GC threads can take it above 1). */
  readonly cpuCores: number;
  /** Deliveries expected (commits × subscribers) but not received; 0 unless something is wrong. */
  readonly missing: number;
  /** Events received out of index order or twice; 0 unless something is wrong. */
  readonly disorder: number;
}

class Consumer {
  last = 0;
  events = 0;
  frames = 0;
  disorder = 0;
  arrived = -1;
  error: unknown;
}

interface Shared {
  target: number;
  caught: number;
  ready: number;
  counting: boolean;
}

function arrive(c: Consumer, sh: Shared): void {
  if (c.last >= sh.target && c.arrived !== sh.target) {
    c.arrived = sh.target;
    sh.caught++;
  }
}

function onFrame(c: Consumer, sh: Shared, f: Frame): void {
  if (f.kind === FrameKind.Events) {
    for (const e of f.events) {
      if (e.index <= c.last) c.disorder++;
      c.last = e.index;
    }
    if (sh.counting) {
      c.events += f.events.length;
      c.frames++;
    }
    arrive(c, sh);
  } else if (f.kind === FrameKind.EndOfSnapshot) {
    c.last = f.index;
    sh.ready++;
  }
}

/** Half the readers use `for await`, the other half call `next()` themselves. */
async function consume(sub: Subscription, c: Consumer, sh: Shared, forAwait: boolean): Promise<void> {
  try {
    if (forAwait) {
      for await (const f of sub) onFrame(c, sh, f);
    } else {
      for (;;) {
        const r = await sub.next();
        if (r.done) break;
        onFrame(c, sh, r.value);
      }
    }
  } catch (err) {
    c.error = err;
  }
}

async function burstOnce(
  store: Store,
  key: string,
  value: Uint8Array,
  burst: number,
  keys = 1,
): Promise<void> {
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < burst; i++) {
    pending.push(store.commit([{ op: "kv.set", key: keys > 1 ? `${key}/${i % keys}` : key, value }]));
  }
  await Promise.all(pending);
}

/**
 * Delivery through the public API: `subscribers` readers on one KV key, a writer that
 * commits `burst` single-key transactions at a time (so a reader gets them as one
 * multi-commit frame), for `durationMs`; the clock stops when every reader holds the last
 * commit. The same bursts are then timed with no reader, to tell the writer's share.
 */
export async function runDelivery(o: DeliveryOptions): Promise<DeliveryResult> {
  const sh: Shared = { target: Number.POSITIVE_INFINITY, caught: 0, ready: 0, counting: false };
  const consumers = Array.from({ length: o.subscribers }, () => new Consumer());
  const subs: Subscription[] = [];
  const loops: Promise<void>[] = [];
  try {
    for (let i = 0; i < o.subscribers; i++) {
      const sub = await o.open(i);
      subs.push(sub);
      loops.push(consume(sub, consumers[i]!, sh, i % 2 === 0));
    }
    await waitUntil(() => sh.ready >= o.subscribers, "subscribers to read their snapshots", o.signal);
    await settle();

    const cpu = new CpuMeter();
    sh.counting = true;
    cpu.start();
    const t0 = performance.now();
    let bursts = 0;
    let lastReport = t0;
    while (performance.now() - t0 < o.durationMs) {
      o.signal.throwIfAborted();
      await burstOnce(o.store, o.key, o.value, o.burst, o.keys);
      bursts++;
      const now = performance.now();
      if (o.onProgress && now - lastReport >= 1000) {
        lastReport = now;
        o.onProgress(now - t0, bursts * o.burst);
      }
    }
    sh.target = o.store.index;
    for (const c of consumers) arrive(c, sh);
    await waitUntil(() => sh.caught >= o.subscribers, "subscribers to catch up", o.signal);
    const elapsedMs = performance.now() - t0;
    cpu.stop();
    sh.counting = false;

    const failed = consumers.find((c) => c.error !== undefined);
    if (failed) throw failed.error;
    let deliveries = 0;
    let frames = 0;
    let disorder = 0;
    for (const c of consumers) {
      deliveries += c.events;
      frames += c.frames;
      disorder += c.disorder;
    }
    const commits = bursts * o.burst;
    for (const s of subs) s.unsubscribe();
    await Promise.all(loops);
    subs.length = 0;

    // The writer alone: the same bursts, nobody subscribed to the key.
    await settle();
    const w0 = performance.now();
    for (let b = 0; b < bursts; b++) await burstOnce(o.store, o.key, o.value, o.burst, o.keys);
    const writerMs = performance.now() - w0;

    return {
      subscribers: o.subscribers,
      burst: o.burst,
      bursts,
      commits,
      deliveries,
      frames,
      eventsPerFrame: frames > 0 ? deliveries / frames : Number.NaN,
      elapsedMs,
      deliveriesPerSec: (deliveries * 1000) / elapsedMs,
      writerMs,
      deliveriesPerSecExWriter:
        elapsedMs > writerMs ? (deliveries * 1000) / (elapsedMs - writerMs) : Number.NaN,
      cpuCores: cpu.own,
      missing: commits * o.subscribers - deliveries,
      disorder,
    };
  } finally {
    for (const s of subs) s.unsubscribe();
    await Promise.all(loops);
  }
}

export interface BaselineResult {
  readonly consumers: number;
  readonly itemsPerConsumer: number;
  readonly items: number;
  readonly elapsedMs: number;
  readonly itemsPerSec: number;
  readonly cpuCores: number;
}

/**
 * Plain async iteration: `consumers` concurrent `for await` loops, each over its own async
 * generator yielding `itemsPerConsumer` items one at a time. The yardstick for delivery rates.
 */
export async function asyncIterationBaseline(
  consumers: number,
  itemsPerConsumer: number,
  item: unknown,
): Promise<BaselineResult> {
  async function* source(n: number): AsyncGenerator<unknown> {
    for (let i = 0; i < n; i++) yield item;
  }
  let items = 0;
  await settle();
  const cpu = new CpuMeter();
  cpu.start();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: consumers }, async () => {
      let k = 0;
      for await (const _x of source(itemsPerConsumer)) k++;
      items += k;
    }),
  );
  const elapsedMs = performance.now() - t0;
  cpu.stop();
  return {
    consumers,
    itemsPerConsumer,
    items,
    elapsedMs,
    itemsPerSec: (items * 1000) / elapsedMs,
    cpuCores: cpu.own,
  };
}
