/**
 * Suite `publisher`: the EventPublisher's costs, in one process, on an in-memory Store (no
 * disk, so what varies is the publisher).
 *
 *   npm run bench -- publisher [--only memory,dispatch,delivery,herd] [--rounds 3] [--repeat 3]
 *
 * - memory: RSS and heap per idle subscription (100,000 of them on distinct KV keys, after gc).
 * - dispatch: commits/s of single-key kv.set transactions with 0, 1,000 and 100,000 idle
 *   subscriptions on other keys, and the time spent in `publish` per commit; the levels are
 *   visited up and down in alternate rounds so that drift falls on all of them.
 * - delivery: events delivered/s to 1,000 readers of one key through the public Subscription
 *   API, the writer committing in bursts; next to it, plain async iteration of as many items
 *   by 1,000 `for await` loops.
 * - herd: 10,000 subscribers joining one ServiceHealth subject of 1,000 instances at index 0:
 *   time until all have EndOfSnapshot, and snapshot builds.
 */
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { type Subject, SubjectKind, Topic } from "../src/state/events/index.js";
import { type Op, Store } from "../src/state/index.js";
import { EventPublisher, FrameKind, type Subscription } from "../src/stream/index.js";
import { CpuMeter } from "./lib/cpu.js";
import { choiceListFlag, FlagError, type FlagValues, intListFlag, numberFlag } from "./lib/flags.js";
import { runLoad } from "./lib/load.js";
import { describeSource, sourceState } from "./lib/source.js";
import { fmtFixed, fmtInt, fmtMs, fmtRatio, median, percentile, table } from "./lib/stats.js";
import {
  asyncIterationBaseline,
  type BaselineResult,
  type DeliveryResult,
  GcMeter,
  gcFunction,
  IdleSubscribers,
  type MemoryReading,
  memoryAfterGc,
  runDelivery,
  settle,
  waitUntil,
} from "./lib/stream.js";
import type { Suite, SuiteContext } from "./lib/suite.js";

const PARTS = ["memory", "dispatch", "delivery", "herd"] as const;
type Part = (typeof PARTS)[number];

/** Targets (issue 3). */
const DISPATCH_MIN_RATIO = 0.9;
const DELIVERY_MIN_PER_SEC = 5_000_000;
const HERD_MAX_BUILDS = 1;

const HOT_KEY = "hot/key";
const HERD_SERVICE = "web";
const INSTANCES_PER_NODE = 10;

interface Config {
  readonly parts: readonly Part[];
  readonly idle: readonly number[];
  readonly writers: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly rounds: number;
  readonly progressMs: number;
  readonly keys: number;
  readonly subscribers: number;
  readonly bursts: readonly number[];
  readonly deliveryMs: number;
  readonly repeat: number;
  readonly herd: number;
  readonly herdInstances: number;
  readonly herdRepeat: number;
  readonly herdSpreadMs: number;
  readonly memorySubs: number;
  readonly valueBytes: number;
}

function config(flags: FlagValues): Config {
  const progressMs = numberFlag(flags, "progress-ms", { min: 100 })!;
  const herdInstances = numberFlag(flags, "herd-instances", { min: 1, integer: true })!;
  if (herdInstances > 4096) throw new FlagError("herd-instances", "at most 4096 (one snapshot frame)");
  return {
    parts: choiceListFlag(flags, "only", PARTS)!,
    idle: intListFlag(flags, "idle")!,
    writers: numberFlag(flags, "writers", { min: 1, integer: true })!,
    warmupMs: numberFlag(flags, "warmup", { min: 0 })! * 1000,
    durationMs: numberFlag(flags, "duration", { min: 0.1 })! * 1000,
    rounds: numberFlag(flags, "rounds", { min: 1, integer: true })!,
    progressMs,
    keys: numberFlag(flags, "keys", { min: 1, integer: true })!,
    subscribers: numberFlag(flags, "subscribers", { min: 1, integer: true })!,
    bursts: intListFlag(flags, "bursts")!,
    deliveryMs: numberFlag(flags, "delivery-duration", { min: 0.1 })! * 1000,
    repeat: numberFlag(flags, "repeat", { min: 1, integer: true })!,
    herd: numberFlag(flags, "herd", { min: 1, integer: true })!,
    herdInstances,
    herdRepeat: numberFlag(flags, "herd-repeat", { min: 1, integer: true })!,
    herdSpreadMs: numberFlag(flags, "herd-spread", { min: 0 })!,
    memorySubs: numberFlag(flags, "memory-subs", { min: 1, integer: true })!,
    valueBytes: numberFlag(flags, "value-bytes", { min: 0, integer: true })!,
  };
}

const key = (k: string): Subject => ({ kind: SubjectKind.Key, key: k });

/** A store and its publisher, both closed by the suite's cleanup (or earlier by `close`). */
async function openPublisher(
  ctx: SuiteContext,
  opts: { progressIntervalMs?: number } = {},
): Promise<{ store: Store; pub: EventPublisher; close: () => Promise<void> }> {
  const store = await Store.open({ inMemory: true });
  const pub = EventPublisher.attach(store, opts);
  // The cleanup holds the parts only until they are closed, so that a closed set-up's memory
  // is not kept alive into later measurements.
  let open: { pub: EventPublisher; store: Store } | undefined = { pub, store };
  const close = async () => {
    const parts = open;
    if (!parts) return;
    open = undefined;
    parts.pub.shutdown();
    await parts.store.close();
  };
  ctx.defer(close);
  return { store, pub, close };
}

const idleOpener = (pub: EventPublisher, tag: string) => (i: number) =>
  pub.subscribe({ topic: Topic.KV, subject: key(`idle/${tag}/${i}`), index: 0 });

// ---------------------------------------------------------------------------------------------
// memory

interface MemoryResult {
  readonly subscriptions: number;
  readonly gc: boolean;
  readonly before: MemoryReading;
  /** Subscribed, never read. */
  readonly subscribed: MemoryReading;
  /** Snapshot read, each blocked in `next()` under a `for await` loop. */
  readonly idle: MemoryReading;
  /** After unsubscribing them all. */
  readonly after: MemoryReading;
  readonly perSubscribed: { readonly rss: number; readonly heap: number };
  readonly perIdle: { readonly rss: number; readonly heap: number };
  readonly leftAfter: { readonly rss: number; readonly heap: number };
}

async function runMemory(ctx: SuiteContext, c: Config): Promise<MemoryResult> {
  const gc = gcFunction() !== undefined;
  ctx.log(
    `[memory] ${fmtInt(c.memorySubs)} KV subscriptions on distinct keys, one publisher; ` +
      `readings after ${gc ? "full gc" : "NO gc (gc unavailable: readings are noisy)"}`,
  );
  const { pub, close } = await openPublisher(ctx);
  const idle = new IdleSubscribers(idleOpener(pub, "m"), ctx.signal);
  const before = await memoryAfterGc();
  idle.subscribe(c.memorySubs);
  const subscribed = await memoryAfterGc();
  ctx.progress(`memory: ${fmtInt(idle.count)} subscribed (not read)`);
  await idle.read();
  const idleMem = await memoryAfterGc();
  ctx.progress(`memory: ${fmtInt(idle.count)} read their snapshot and wait in next()`);
  await idle.resize(0);
  const after = await memoryAfterGc();
  await close();
  const per = (m: MemoryReading) => ({
    rss: (m.rss - before.rss) / c.memorySubs,
    heap: (m.heapUsed - before.heapUsed) / c.memorySubs,
  });
  const r: MemoryResult = {
    subscriptions: c.memorySubs,
    gc,
    before,
    subscribed,
    idle: idleMem,
    after,
    perSubscribed: per(subscribed),
    perIdle: per(idleMem),
    leftAfter: { rss: after.rss - before.rss, heap: after.heapUsed - before.heapUsed },
  };
  ctx.log(
    `[memory] per subscription: subscribed ${fmtInt(r.perSubscribed.heap)} B heap / ${fmtInt(r.perSubscribed.rss)} B RSS; ` +
      `idle in next() ${fmtInt(r.perIdle.heap)} B heap / ${fmtInt(r.perIdle.rss)} B RSS; ` +
      `after unsubscribing all: heap ${fmtInt(r.leftAfter.heap / 1024)} KiB above the start`,
  );
  return r;
}

// ---------------------------------------------------------------------------------------------
// dispatch

interface DispatchRun {
  readonly round: number;
  readonly idle: number;
  readonly commitsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Mean wall time inside `publisher.publish` per commit, in µs. */
  readonly publishUs: number;
  /** Progress frames the idle subscribers read during the window. */
  readonly progressFrames: number;
  readonly cpuCores: number;
  /** CPU time of the process per commit, in µs (less sensitive than commits/s to a busy machine). */
  readonly cpuUsPerCommit: number;
  /** Main-thread GC pauses in the window, ms, and their share of the window. */
  readonly gcMs: number;
  readonly gcShare: number;
}

interface DispatchLevel {
  readonly idle: number;
  readonly commitsPerSec: number;
  readonly publishUs: number;
  /** Median over rounds of commits/s at this level over commits/s with none in the same round. */
  readonly ratio: number;
  readonly ratioMin: number;
  readonly ratioMax: number;
  readonly publishRatio: number;
  readonly cpuUsPerCommit: number;
  /** Median over rounds of CPU µs/commit with none over CPU µs/commit at this level (commits per CPU-second, relative). */
  readonly cpuRatio: number;
  readonly gcShare: number;
}

async function runDispatch(
  ctx: SuiteContext,
  c: Config,
  value: Uint8Array,
): Promise<{ runs: DispatchRun[]; levels: DispatchLevel[] }> {
  const levels = [0, ...c.idle.filter((n) => n > 0)];
  ctx.log(
    `[dispatch] Store inMemory; ${c.writers} writers loop await commit(kv.set) over ${fmtInt(c.keys)} keys; ` +
      `idle subscriptions on other keys: ${levels.map(fmtInt).join(", ")}; ${c.rounds} rounds (levels up, then down), ` +
      `warm-up ${c.warmupMs / 1000} s + ${c.durationMs / 1000} s each; progress interval ${c.progressMs} ms`,
  );
  const { store, pub, close } = await openPublisher(ctx, { progressIntervalMs: c.progressMs });
  // Time spent in publish: the store's listener calls `pub.publish`, so wrapping it here sees every commit.
  let publishMs = 0;
  let published = 0;
  const publish = pub.publish.bind(pub);
  pub.publish = (commit, before, after) => {
    const t = performance.now();
    publish(commit, before, after);
    publishMs += performance.now() - t;
    published++;
  };
  const keys = Array.from({ length: c.keys }, (_, i) => `w/${i}`);
  for (let i = 0; i < keys.length; i += 128) {
    await store.commit(keys.slice(i, i + 128).map((k): Op => ({ op: "kv.set", key: k, value })));
  }
  const idle = new IdleSubscribers(idleOpener(pub, "d"), ctx.signal);
  const runs: DispatchRun[] = [];
  const gc = new GcMeter();
  try {
    for (let round = 1; round <= c.rounds; round++) {
      const order = round % 2 === 1 ? levels : [...levels].reverse();
      for (const level of order) {
        ctx.signal.throwIfAborted();
        const t0 = performance.now();
        await idle.resize(level);
        if (level > 0 || round > 1)
          ctx.progress(
            `dispatch: ${fmtInt(level)} idle subscriptions ready in ${fmtMs(performance.now() - t0)}`,
          );
        await settle();
        // What the measured window saw: publish time, commits published, progress frames read.
        const win = { publishMs: 0, published: 0, progress: 0, gcMs: 0 };
        const cpu = new CpuMeter();
        const label = `dispatch r${round} idle=${fmtInt(level)}`;
        const r = await runLoad({
          writers: c.writers,
          warmupMs: c.warmupMs,
          durationMs: c.durationMs,
          signal: ctx.signal,
          op: (w, seq) => store.commit([{ op: "kv.set", key: keys[(w * 7919 + seq) % keys.length]!, value }]),
          onWindow: (open) => {
            const sign = open ? -1 : 1;
            win.publishMs += sign * publishMs;
            win.published += sign * published;
            win.progress += sign * idle.counters.progress;
            win.gcMs += sign * gc.read().ms;
            if (open) cpu.start();
            else cpu.stop();
          },
          onProgress: (p) =>
            ctx.progress(
              `${label} ${p.phase} ${(p.elapsedMs / 1000).toFixed(1)} s: ${fmtInt(p.ops)} commits, ${fmtInt(
                p.elapsedMs > 0 ? (p.ops * 1000) / p.elapsedMs : 0,
              )}/s`,
            ),
        });
        const run: DispatchRun = {
          round,
          idle: level,
          commitsPerSec: r.opsPerSec,
          p50Ms: r.latencyMs.p50,
          p99Ms: r.latencyMs.p99,
          publishUs: win.published > 0 ? (win.publishMs * 1000) / win.published : Number.NaN,
          progressFrames: win.progress,
          cpuCores: cpu.own,
          cpuUsPerCommit: (cpu.own / r.opsPerSec) * 1e6,
          gcMs: win.gcMs,
          gcShare: win.gcMs / r.elapsedMs,
        };
        runs.push(run);
        ctx.log(
          `[${label}] ${fmtInt(run.commitsPerSec)} commits/s, publish ${fmtFixed(run.publishUs, 2)} µs/commit, ` +
            `p50 ${fmtMs(run.p50Ms)} p99 ${fmtMs(run.p99Ms)}, progress frames ${fmtInt(run.progressFrames)}, ` +
            `CPU ${fmtFixed(run.cpuCores, 2)} cores = ${fmtFixed(run.cpuUsPerCommit, 2)} µs/commit, ` +
            `GC ${fmtMs(run.gcMs)} (${fmtFixed(run.gcShare * 100)} %)`,
        );
      }
    }
    await idle.resize(0);
  } finally {
    gc.stop();
    await close();
  }
  if (idle.counters.eventFrames > 0 || idle.counters.errors > 0) {
    throw new Error(
      `idle subscribers read ${idle.counters.eventFrames} event frames and ${idle.counters.errors} errors (expected none)`,
    );
  }
  const out: DispatchLevel[] = levels.map((level) => {
    const mine = runs.filter((r) => r.idle === level);
    const ratios: number[] = [];
    const pubRatios: number[] = [];
    const cpuRatios: number[] = [];
    for (const r of mine) {
      const base = runs.find((b) => b.idle === 0 && b.round === r.round);
      if (base) {
        ratios.push(r.commitsPerSec / base.commitsPerSec);
        pubRatios.push(r.publishUs / base.publishUs);
        cpuRatios.push(base.cpuUsPerCommit / r.cpuUsPerCommit);
      }
    }
    return {
      idle: level,
      commitsPerSec: median(mine.map((r) => r.commitsPerSec)),
      publishUs: median(mine.map((r) => r.publishUs)),
      ratio: median(ratios),
      ratioMin: Math.min(...ratios),
      ratioMax: Math.max(...ratios),
      publishRatio: median(pubRatios),
      cpuUsPerCommit: median(mine.map((r) => r.cpuUsPerCommit)),
      cpuRatio: median(cpuRatios),
      gcShare: median(mine.map((r) => r.gcShare)),
    };
  });
  return { runs, levels: out };
}

function dispatchTable(levels: readonly DispatchLevel[], runs: readonly DispatchRun[]): string {
  return table(
    [
      "idle subscriptions",
      "commits/s",
      "vs 0 (median)",
      "ratio range",
      "CPU µs/commit",
      "per CPU-s vs 0",
      "publish µs/commit",
      "publish vs 0",
      "GC share",
      "per round (commits/s)",
    ],
    levels.map((l) => [
      fmtInt(l.idle),
      fmtInt(l.commitsPerSec),
      fmtRatio(l.ratio),
      `${fmtRatio(l.ratioMin)}–${fmtRatio(l.ratioMax)}`,
      fmtFixed(l.cpuUsPerCommit, 2),
      fmtRatio(l.cpuRatio),
      fmtFixed(l.publishUs, 2),
      fmtRatio(l.publishRatio),
      `${fmtFixed(l.gcShare * 100)} %`,
      runs
        .filter((r) => r.idle === l.idle)
        .map((r) => fmtInt(r.commitsPerSec))
        .join(" · "),
    ]),
  );
}

// ---------------------------------------------------------------------------------------------
// delivery

interface DeliveryPair {
  readonly rep: number;
  readonly delivery: DeliveryResult;
  readonly baseline: BaselineResult;
  readonly ratio: number;
}

interface DeliveryRow {
  readonly burst: number;
  readonly runs: readonly DeliveryPair[];
  readonly deliveriesPerSec: number;
  readonly deliveriesPerSecExWriter: number;
  readonly baselinePerSec: number;
  readonly ratio: number;
  readonly ratioExWriter: number;
  readonly eventsPerFrame: number;
  readonly writerShare: number;
  readonly cpuCores: number;
}

async function runDeliveries(ctx: SuiteContext, c: Config, value: Uint8Array): Promise<DeliveryRow[]> {
  ctx.log(
    `[delivery] ${fmtInt(c.subscribers)} subscribers on KV "${HOT_KEY}" (half for await, half next()), ` +
      `writer bursts of ${c.bursts.join(", ")} commits for ${c.deliveryMs / 1000} s; ` +
      `baseline: as many async-generator items to ${fmtInt(c.subscribers)} for-await loops; ${c.repeat} repeats`,
  );
  const { store, pub, close } = await openPublisher(ctx);
  await store.commit([{ op: "kv.set", key: HOT_KEY, value }]);
  const pairs = new Map<number, DeliveryPair[]>(c.bursts.map((b) => [b, []]));
  try {
    for (let rep = 1; rep <= c.repeat; rep++) {
      for (const burst of c.bursts) {
        const label = `delivery r${rep} burst=${burst}`;
        const delivery = await runDelivery({
          store,
          key: HOT_KEY,
          value,
          subscribers: c.subscribers,
          open: () => pub.subscribe({ topic: Topic.KV, subject: key(HOT_KEY), index: 0 }),
          burst,
          durationMs: c.deliveryMs,
          signal: ctx.signal,
          onProgress: (ms, commits) =>
            ctx.progress(`${label}: ${(ms / 1000).toFixed(1)} s, ${fmtInt(commits)} commits`),
        });
        if (delivery.missing !== 0 || delivery.disorder !== 0) {
          throw new Error(
            `${label}: ${delivery.missing} deliveries missing, ${delivery.disorder} out of order (expected 0)`,
          );
        }
        const sample = pub.state.index;
        const baseline = await asyncIterationBaseline(c.subscribers, delivery.commits, { index: sample });
        const ratio = delivery.deliveriesPerSec / baseline.itemsPerSec;
        pairs.get(burst)!.push({ rep, delivery, baseline, ratio });
        ctx.log(
          `[${label}] ${fmtInt(delivery.deliveriesPerSec)} deliveries/s (${fmtInt(delivery.deliveries)} in ${fmtMs(delivery.elapsedMs)}, ` +
            `${fmtFixed(delivery.eventsPerFrame)} events/frame, CPU ${fmtFixed(delivery.cpuCores, 2)}); ` +
            `writer alone ${fmtMs(delivery.writerMs)} -> ${fmtInt(delivery.deliveriesPerSecExWriter)}/s without it; ` +
            `async iteration ${fmtInt(baseline.itemsPerSec)} items/s; ratio ${fmtRatio(ratio)}`,
        );
      }
    }
  } finally {
    await close();
  }
  return c.bursts.map((burst) => {
    const runs = pairs.get(burst)!;
    const med = (f: (p: DeliveryPair) => number) => median(runs.map(f));
    return {
      burst,
      runs,
      deliveriesPerSec: med((p) => p.delivery.deliveriesPerSec),
      deliveriesPerSecExWriter: med((p) => p.delivery.deliveriesPerSecExWriter),
      baselinePerSec: med((p) => p.baseline.itemsPerSec),
      ratio: med((p) => p.ratio),
      ratioExWriter: med((p) => p.delivery.deliveriesPerSecExWriter / p.baseline.itemsPerSec),
      eventsPerFrame: med((p) => p.delivery.eventsPerFrame),
      writerShare: med((p) => p.delivery.writerMs / p.delivery.elapsedMs),
      cpuCores: med((p) => p.delivery.cpuCores),
    };
  });
}

function deliveryTable(rows: readonly DeliveryRow[]): string {
  return table(
    [
      "commits per burst",
      "events/frame",
      "deliveries/s",
      "writer share",
      "deliveries/s without writer",
      "async iteration items/s",
      "ratio",
      "ratio without writer",
      "CPU cores",
    ],
    rows.map((r) => [
      String(r.burst),
      fmtFixed(r.eventsPerFrame),
      fmtInt(r.deliveriesPerSec),
      `${fmtFixed(r.writerShare * 100, 0)} %`,
      fmtInt(r.deliveriesPerSecExWriter),
      fmtInt(r.baselinePerSec),
      fmtRatio(r.ratio),
      fmtRatio(r.ratioExWriter),
      fmtFixed(r.cpuCores, 2),
    ]),
  );
}

// ---------------------------------------------------------------------------------------------
// herd

interface HerdRun {
  readonly rep: number;
  readonly subscribers: number;
  readonly totalMs: number;
  readonly snapshotBuilds: number;
  readonly cacheHits: number;
  readonly firstEosMs: number;
  readonly p50EosMs: number;
  readonly p99EosMs: number;
  /** Subscribers whose snapshot held exactly the service's instances. */
  readonly complete: number;
  readonly snapshotEvents: number;
}

/** `instances` instances of one service, 10 per node, each node with a node-level check. */
async function buildService(store: Store, name: string, instances: number): Promise<void> {
  const nodes = Math.ceil(instances / INSTANCES_PER_NODE);
  let txn: Op[] = [];
  const pending: Promise<unknown>[] = [];
  for (let n = 0; n < nodes; n++) {
    if (txn.length + 2 + INSTANCES_PER_NODE > 128) {
      pending.push(store.commit(txn));
      txn = [];
    }
    const node = `node-${n}`;
    txn.push({ op: "node.register", node: { Node: node, Address: `10.0.${n >> 8}.${n & 255}` } });
    txn.push({
      op: "check.register",
      check: { Node: node, CheckID: "serfHealth", Name: "Serf Health Status", Status: "passing" },
    });
    for (let k = 0; k < INSTANCES_PER_NODE; k++) {
      const j = n * INSTANCES_PER_NODE + k;
      if (j >= instances) break;
      txn.push({
        op: "service.register",
        service: { Node: node, ID: `${name}-${j}`, Service: name, Port: 8000 + k },
      });
    }
  }
  if (txn.length > 0) pending.push(store.commit(txn));
  await Promise.all(pending);
}

async function runHerd(ctx: SuiteContext, c: Config): Promise<HerdRun[]> {
  ctx.log(
    `[herd] ServiceHealth "${HERD_SERVICE}" with ${fmtInt(c.herdInstances)} instances ` +
      `(${INSTANCES_PER_NODE} per node, one node check each); ${fmtInt(c.herd)} subscribers join at index 0 ` +
      `${c.herdSpreadMs > 0 ? `spread over ${c.herdSpreadMs} ms` : "at once"}; snapshot cache TTL 10 s (default); ` +
      `${c.herdRepeat} herds`,
  );
  const { store, pub, close } = await openPublisher(ctx);
  const runs: HerdRun[] = [];
  try {
    await buildService(store, HERD_SERVICE, c.herdInstances);
    for (let rep = 1; rep <= c.herdRepeat; rep++) {
      ctx.signal.throwIfAborted();
      if (pub.stats().cachedSnapshots !== 0) throw new Error("a snapshot is still cached before the herd");
      await settle();
      const builds0 = pub.metrics.snapshotBuilds;
      const hits0 = pub.metrics.snapshotCacheHits;
      const eos = new Float64Array(c.herd);
      let done = 0;
      let complete = 0;
      let events = 0;
      const subs: Subscription[] = [];
      const loops: Promise<void>[] = [];
      let failure: unknown;
      const t0 = performance.now();
      const reader = async (sub: Subscription, i: number): Promise<void> => {
        let n = 0;
        try {
          // Stays subscribed after EndOfSnapshot: leaving would drop the cached snapshot.
          for await (const f of sub) {
            if (f.kind === FrameKind.Snapshot) n += f.events.length;
            else if (f.kind === FrameKind.EndOfSnapshot) {
              eos[i] = performance.now() - t0;
              events += n;
              if (n === c.herdInstances) complete++;
              done++;
            }
          }
        } catch (err) {
          failure ??= err;
          done++;
        }
      };
      const batch = c.herdSpreadMs > 0 ? Math.max(1, Math.ceil(c.herd / (c.herdSpreadMs / 10))) : c.herd;
      for (let i = 0; i < c.herd; i++) {
        if (i > 0 && i % batch === 0) await sleep(10);
        const sub = pub.subscribe({ topic: Topic.ServiceHealth, subject: key(HERD_SERVICE), index: 0 });
        subs.push(sub);
        loops.push(reader(sub, i));
      }
      await waitUntil(() => done >= c.herd, "the herd's EndOfSnapshot frames", ctx.signal);
      const totalMs = performance.now() - t0;
      for (const s of subs) s.unsubscribe();
      await Promise.all(loops);
      if (failure) throw failure;
      const sorted = Float64Array.from(eos).sort();
      const run: HerdRun = {
        rep,
        subscribers: c.herd,
        totalMs,
        snapshotBuilds: pub.metrics.snapshotBuilds - builds0,
        cacheHits: pub.metrics.snapshotCacheHits - hits0,
        firstEosMs: sorted[0]!,
        p50EosMs: percentile(sorted, 50),
        p99EosMs: percentile(sorted, 99),
        complete,
        snapshotEvents: events,
      };
      runs.push(run);
      ctx.log(
        `[herd ${rep}] all ${fmtInt(c.herd)} at EndOfSnapshot after ${fmtMs(totalMs)} ` +
          `(first ${fmtMs(run.firstEosMs)}, p50 ${fmtMs(run.p50EosMs)}, p99 ${fmtMs(run.p99EosMs)}); ` +
          `snapshot builds ${run.snapshotBuilds}, cache hits ${fmtInt(run.cacheHits)}; ` +
          `${fmtInt(complete)} complete snapshots of ${fmtInt(c.herdInstances)} instances`,
      );
    }
  } finally {
    await close();
  }
  return runs;
}

// ---------------------------------------------------------------------------------------------

async function run(ctx: SuiteContext, flags: FlagValues): Promise<unknown> {
  const c = config(flags);
  const has = (p: Part) => c.parts.includes(p);
  const value = new Uint8Array(randomBytes(c.valueBytes));
  const source = sourceState();
  ctx.log(describeSource(source));
  ctx.log(
    `publisher suite: ${c.parts.join(", ")}; kv.set of ${c.valueBytes}-byte values; gc ${
      gcFunction() ? "available" : "unavailable"
    }`,
  );

  const memory = has("memory") ? await runMemory(ctx, c) : undefined;

  let dispatch: { runs: DispatchRun[]; levels: DispatchLevel[] } | undefined;
  if (has("dispatch")) {
    dispatch = await runDispatch(ctx, c, value);
    ctx.log(
      `\nDispatch: commits/s (Store inMemory, ${c.writers} writers, single-key kv.set) with idle ` +
        `subscriptions on keys the commits do not touch; medians of ${c.rounds} rounds\n`,
    );
    ctx.log(dispatchTable(dispatch.levels, dispatch.runs));
  }

  let delivery: DeliveryRow[] | undefined;
  if (has("delivery")) {
    delivery = await runDeliveries(ctx, c, value);
    ctx.log(
      `\nDelivery: events delivered/s to ${fmtInt(c.subscribers)} subscribers of one key through ` +
        `Subscription (for await / next()); medians of ${c.repeat}\n`,
    );
    ctx.log(deliveryTable(delivery));
  }

  const herd = has("herd") ? await runHerd(ctx, c) : undefined;
  if (herd) {
    ctx.log(
      `\nHerd: ${fmtInt(c.herd)} subscribers, ServiceHealth subject of ${fmtInt(c.herdInstances)} instances\n`,
    );
    ctx.log(
      table(
        ["herd", "all EndOfSnapshot", "first", "p50", "p99", "snapshot builds", "cache hits", "complete"],
        herd.map((h) => [
          String(h.rep),
          fmtMs(h.totalMs),
          fmtMs(h.firstEosMs),
          fmtMs(h.p50EosMs),
          fmtMs(h.p99EosMs),
          String(h.snapshotBuilds),
          fmtInt(h.cacheHits),
          `${fmtInt(h.complete)}/${fmtInt(h.subscribers)}`,
        ]),
      ),
    );
  }

  if (memory) {
    ctx.log(`\nMemory per idle subscription (${fmtInt(memory.subscriptions)} on distinct keys)\n`);
    ctx.log(
      table(
        ["state", "heap B/sub", "RSS B/sub"],
        [
          ["subscribed, not read", fmtInt(memory.perSubscribed.heap), fmtInt(memory.perSubscribed.rss)],
          ["idle in next() (for await)", fmtInt(memory.perIdle.heap), fmtInt(memory.perIdle.rss)],
        ],
      ),
    );
  }

  // Targets.
  const targets: Record<string, unknown> = {};
  ctx.log("");
  if (dispatch) {
    const worst = dispatch.levels.filter((l) => l.idle > 0).reduce((a, b) => (b.ratio < a.ratio ? b : a));
    const met = dispatch.levels.every((l) => l.idle === 0 || l.ratio >= DISPATCH_MIN_RATIO);
    const cpuWorst = Math.min(...dispatch.levels.map((l) => l.cpuRatio));
    const cpuMet = cpuWorst >= DISPATCH_MIN_RATIO;
    targets.dispatch = {
      minRatio: DISPATCH_MIN_RATIO,
      worstIdle: worst.idle,
      worstRatio: worst.ratio,
      met,
      worstCpuRatio: cpuWorst,
      cpuMet,
    };
    ctx.log(
      `target: commits/s with idle subscriptions within 10% of none: worst ${fmtRatio(worst.ratio)} at ` +
        `${fmtInt(worst.idle)} -> ${met ? "MET" : "MISSED"} (per CPU-second: worst ${fmtRatio(cpuWorst)} -> ` +
        `${cpuMet ? "met" : "missed"})`,
    );
  }
  if (delivery) {
    const best = delivery.reduce((a, b) => (b.deliveriesPerSec > a.deliveriesPerSec ? b : a));
    const largest = delivery.reduce((a, b) => (b.burst > a.burst ? b : a));
    const met = largest.deliveriesPerSec >= DELIVERY_MIN_PER_SEC;
    targets.delivery = {
      required: DELIVERY_MIN_PER_SEC,
      burst: largest.burst,
      deliveriesPerSec: largest.deliveriesPerSec,
      deliveriesPerSecExWriter: largest.deliveriesPerSecExWriter,
      bestBurst: best.burst,
      met,
      metExWriter: largest.deliveriesPerSecExWriter >= DELIVERY_MIN_PER_SEC,
    };
    ctx.log(
      `target: >= ${fmtInt(DELIVERY_MIN_PER_SEC)} deliveries/s to ${fmtInt(c.subscribers)} subscribers (bursts of ${largest.burst}): ` +
        `${fmtInt(largest.deliveriesPerSec)}/s with the writer, ${fmtInt(largest.deliveriesPerSecExWriter)}/s without -> ` +
        `${met ? "MET" : largest.deliveriesPerSecExWriter >= DELIVERY_MIN_PER_SEC ? "MET only without the writer's time" : "MISSED"}`,
    );
  }
  if (herd) {
    const maxBuilds = Math.max(...herd.map((h) => h.snapshotBuilds));
    const met = maxBuilds <= HERD_MAX_BUILDS;
    targets.herd = { maxBuilds, totalMs: median(herd.map((h) => h.totalMs)), met };
    ctx.log(
      `target: one snapshot build per herd: ${herd.map((h) => h.snapshotBuilds).join(", ")} builds; ` +
        `median time ${fmtMs(median(herd.map((h) => h.totalMs)))} -> ${met ? "MET" : "MISSED"}`,
    );
  }

  return { source, config: c, memory, dispatch, delivery, herd, targets };
}

export const suite: Suite = {
  flags: {
    only: {
      type: "string",
      description: `parts to run, some of ${PARTS.join(",")}`,
      default: PARTS.join(","),
    },
    idle: {
      type: "string",
      description: "dispatch: idle subscription counts compared with none",
      default: "1000,100000",
    },
    writers: { type: "string", description: "dispatch: concurrent async writers", default: "16" },
    warmup: { type: "string", description: "dispatch: warm-up seconds per window", default: "1" },
    duration: { type: "string", description: "dispatch: measured seconds per window", default: "3" },
    rounds: {
      type: "string",
      description: "dispatch: rounds over the levels (median reported)",
      default: "3",
    },
    "progress-ms": {
      type: "string",
      description: "dispatch: the publisher's progress interval (idle readers get Progress frames)",
      default: "10000",
    },
    keys: {
      type: "string",
      description: "dispatch: distinct keys the writers cycle through",
      default: "1000",
    },
    subscribers: { type: "string", description: "delivery: subscribers of the one key", default: "1000" },
    bursts: {
      type: "string",
      description: "delivery: commits per writer burst, comma-separated",
      default: "1,10,100",
    },
    "delivery-duration": { type: "string", description: "delivery: seconds the writer runs", default: "2" },
    repeat: {
      type: "string",
      description: "delivery: repeats per burst size (median reported)",
      default: "3",
    },
    herd: { type: "string", description: "herd: subscribers joining", default: "10000" },
    "herd-instances": { type: "string", description: "herd: instances of the service", default: "1000" },
    "herd-repeat": { type: "string", description: "herd: herds run one after another", default: "3" },
    "herd-spread": { type: "string", description: "herd: milliseconds over which they join", default: "0" },
    "memory-subs": { type: "string", description: "memory: idle subscriptions", default: "100000" },
    "value-bytes": { type: "string", description: "size of each written value", default: "64" },
  },
  run,
};
