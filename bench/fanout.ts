/**
 * Suite `fanout`: change delivery to many subscribers over gRPC on loopback, Sluice against
 * etcd 3.4 with the same shape in the same run.
 *
 *   npm run bench -- fanout [--subscribers 100,1000,10000] [--per-key 10] [--writers 64] [--repeat 3]
 *                           [--sluice-rpc watch|subscribe] [--layout together|spread]
 *
 * Shape, for each subscriber count N, repeated as pairs (Sluice then etcd, etcd then Sluice
 * in the next pair, so that a drift of the shared machine falls on both):
 * - The server runs in its own process: Sluice as a forked `SluiceServer`
 *   (`lib/sluice-server-child.ts`; durable store in the run's temp directory, fsync always,
 *   like etcd; `--sluice-store memory` for --dev), etcd as a single member started by
 *   `lib/etcd.ts`. Before subscribing, every key is written once.
 * - N subscribers on K = ceil(N / per-key) KV keys, each key with `per-key` subscribers,
 *   spread over `--clients` subscriber processes (`lib/fanout-client.ts`) of `--channels`
 *   HTTP/2 connections each; a process's subscribers are split into groups of
 *   `--etcd-watchers-per-stream` that share one multiplexed stream. `--layout together`
 *   (subscriber i watches key i mod K) puts the subscribers of a key in the same group;
 *   `--layout spread` (key floor(i / per-key)) puts each in a different group, so that no
 *   system can send an event once for several of them. Both systems get the same layout.
 *   Sluice: one `Watch` stream per group, one subscription (id) per subscriber
 *   (`--sluice-rpc subscribe`: one `Subscribe` stream per subscriber instead), grpc-js
 *   clients built from the .proto. etcd: one `etcd3` watcher per subscriber, one watch
 *   stream (one `Etcd3` client) per group.
 * - idle memory: server RSS with no subscription, then with N idle ones (Sluice: after full
 *   collections in the server process, plus heapUsed; etcd: VmRSS, no collection forced);
 *   the difference over N.
 * - throughput: `--writers` closed-loop writers in this process put to the keys in turn
 *   (Sluice: puts pipelined on one `KV.Write` stream, the puts of one event-loop turn in one
 *   message; `--sluice-writes unary`: a `KV.Put` call each; etcd: `put`, a unary call each,
 *   the only write API etcd has); the value carries its send time (CLOCK_MONOTONIC ns, the
 *   same clock in every process). After a warm-up, each subscriber process counts the
 *   events it receives in its own window: the sum of their rates is delivered events/s.
 *   The writers then stop and every expected event must arrive (drain; missing, duplicate
 *   or out-of-order events are reported).
 * - latency: an open-loop writer puts `--latency-rate` puts/s (the same offered load for
 *   both systems, well below either one's capacity) and the subscriber processes record
 *   put-to-receive latency: send time in the value against their clock on arrival.
 * - cost: CPU of the server, the subscriber processes and the writer process in each window
 *   (/proc), hence CPU µs per delivered event; for Sluice also the server's event-loop
 *   utilization and GC pauses.
 */
import { readdirSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { Etcd3 } from "etcd3";
import { SluiceClient } from "../src/client/index.js";
import type { KVClient } from "../src/generated/sluice/v1/KV.js";
import { sluiceV1 } from "../src/proto/index.js";
import { Helper } from "./lib/child.js";
import { processCpuSeconds } from "./lib/cpu.js";
import { type EtcdServer, startEtcd } from "./lib/etcd.js";
import type { OpenRequest, SluiceRpc, System, Totals, WindowResult } from "./lib/fanout-client.js";
import { choiceListFlag, type FlagValues, intListFlag, numberFlag } from "./lib/flags.js";
import { Histogram } from "./lib/histogram.js";
import { type KernelThreadsCpu, kernelThreadsCpu, kernelThreadsDelta } from "./lib/kernel-threads.js";
import type { ServerMemory, ServerWindow } from "./lib/sluice-server-child.js";
import { describeSource, sourceState } from "./lib/source.js";
import {
  bursts,
  fmtFixed,
  fmtInt,
  fmtMs,
  fmtRatio,
  type LatencySummary,
  median,
  Samples,
  summarize,
  table,
} from "./lib/stats.js";
import type { Suite, SuiteContext } from "./lib/suite.js";

const SYSTEMS = ["sluice", "etcd"] as const;
const RPCS = ["watch", "subscribe"] as const;
const WRITES = ["stream", "unary"] as const;
const LAYOUTS = ["together", "spread"] as const;
type Layout = (typeof LAYOUTS)[number];
const STORES = ["durable", "memory"] as const;
type Store = (typeof STORES)[number];

/** Targets (issue 5). */
const TARGET_RATIO = 3;
const TARGET_RATIO_AT = 1000;
const TARGET_BYTES_PER_SUB = 10 * 1024;
const TARGET_BYTES_AT = 10_000;

const CLIENT_MODULE = fileURLToPath(new URL("./lib/fanout-client.ts", import.meta.url));
const SERVER_MODULE = fileURLToPath(new URL("./lib/sluice-server-child.ts", import.meta.url));

interface Config {
  readonly systems: readonly System[];
  readonly subscribers: readonly number[];
  readonly perKey: number;
  readonly writers: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly latencyRate: number;
  readonly latencyMs: number;
  readonly valueBytes: number;
  readonly clients: number;
  readonly channels: number;
  readonly etcdWatchersPerStream: number;
  readonly sluiceRpc: SluiceRpc;
  readonly sluiceWrites: (typeof WRITES)[number];
  readonly layout: Layout;
  readonly sluiceStore: Store;
  readonly idleSettleMs: number;
  readonly drainTimeoutMs: number;
  readonly cpuProf: string | undefined;
  readonly repeat: number;
  readonly sluiceNodeFlags: readonly string[];
}

function config(flags: FlagValues): Config {
  const store = choiceListFlag(flags, "sluice-store", STORES)!;
  const cpuProf = flags["cpu-prof"];
  return {
    systems: choiceListFlag(flags, "only", SYSTEMS)!,
    subscribers: intListFlag(flags, "subscribers")!,
    perKey: numberFlag(flags, "per-key", { min: 1, integer: true })!,
    writers: numberFlag(flags, "writers", { min: 1, integer: true })!,
    warmupMs: numberFlag(flags, "warmup", { min: 0 })! * 1000,
    durationMs: numberFlag(flags, "duration", { min: 0.5 })! * 1000,
    latencyRate: numberFlag(flags, "latency-rate", { min: 1 })!,
    latencyMs: numberFlag(flags, "latency-duration", { min: 0.5 })! * 1000,
    valueBytes: numberFlag(flags, "value-bytes", { min: 8, integer: true })!,
    clients: numberFlag(flags, "clients", { min: 1, integer: true })!,
    channels: numberFlag(flags, "channels", { min: 1, integer: true })!,
    etcdWatchersPerStream: numberFlag(flags, "etcd-watchers-per-stream", { min: 1, integer: true })!,
    sluiceRpc: choiceListFlag(flags, "sluice-rpc", RPCS)!.at(-1)!,
    layout: choiceListFlag(flags, "layout", LAYOUTS)!.at(-1)!,
    sluiceWrites: choiceListFlag(flags, "sluice-writes", WRITES)!.at(-1)!,
    sluiceStore: store[store.length - 1]!,
    idleSettleMs: numberFlag(flags, "idle-settle", { min: 0 })! * 1000,
    drainTimeoutMs: numberFlag(flags, "drain-timeout", { min: 1 })! * 1000,
    repeat: numberFlag(flags, "repeat", { min: 1, integer: true })!,
    sluiceNodeFlags: String(flags["sluice-node-flags"] ?? "")
      .split(/\s+/)
      .filter((f) => f !== ""),
    cpuProf: typeof cpuProf === "string" && cpuProf !== "" ? cpuProf : undefined,
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A put slower than this (to its acknowledgement) counts as slow, for the burst report. */
const SLOW_PUT_MS = 5;
/** Slow puts further apart than this start a new burst. */
const SLOW_PUT_GAP_MS = 50;

/** A value of `bytes` bytes whose first 8 hold the send time (CLOCK_MONOTONIC ns, LE). */
function stampedValue(bytes: number): Buffer {
  const buf = Buffer.alloc(bytes, 0x61);
  const ns = Number(process.hrtime.bigint());
  buf.writeUInt32LE(ns % 4294967296, 0);
  buf.writeUInt32LE(Math.floor(ns / 4294967296), 4);
  return buf;
}

/** VmRSS of a process in bytes (Linux /proc), NaN when unreadable. */
function vmRss(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** The server under test, as the suite drives it. */
interface Target {
  readonly system: System;
  readonly pid: number;
  /** Where subscribers connect (Sluice host:port, etcd client URL). */
  readonly address: string;
  /** Server memory; Sluice after full collections in the server process. */
  memory(): Promise<{ rss: number; heapUsed?: number }>;
  /** Sluice: the server's event loop and GC pauses since the previous call. */
  window?(): Promise<ServerWindow>;
  /** One write of `value` to `key`. */
  put(key: string, value: Buffer): Promise<unknown>;
  stop(): Promise<void>;
}

async function startSluice(ctx: SuiteContext, c: Config, n: number): Promise<Target> {
  const dir = c.sluiceStore === "durable" ? ctx.tempDir(`sluice-n${n}`) : undefined;
  const overrides = dir
    ? { dataDir: dir, dev: false, fsync: "always", shutdownGraceMs: 2000 }
    : { dev: true, shutdownGraceMs: 2000 };
  const flags = ["--expose-gc", ...c.sluiceNodeFlags];
  if (c.cpuProf)
    // One directory per run: the main thread's profile is the largest file in it (tsx's
    // loader thread writes one too).
    flags.push("--cpu-prof", `--cpu-prof-dir=${join(c.cpuProf, `sluice-n${n}-${Date.now()}`)}`);
  const server = Helper.fork(`sluice server (n=${n})`, SERVER_MODULE, flags, [JSON.stringify(overrides)]);
  let kv: KVClient | undefined;
  try {
    const port = await server.call<number>("port");
    const address = `127.0.0.1:${port}`;
    ctx.log(
      `[sluice n=${n}] server pid ${server.pid} on ${address}, ${dir ? `store in ${dir} (fsync always)` : "in-memory store (--dev)"}`,
    );
    kv = new sluiceV1.KV(address, grpc.credentials.createInsecure());
    const client = kv;
    // The SDK's pipelined writer: the puts of one event-loop turn go out in one KV.Write message.
    const sdk = c.sluiceWrites === "stream" ? new SluiceClient({ address }) : undefined;
    const writes = sdk?.kvStore.writer();
    return {
      system: "sluice",
      pid: server.pid,
      address,
      memory: () => server.call<ServerMemory>("memory"),
      window: () => server.call<ServerWindow>("window"),
      put: (key, value) =>
        writes
          ? writes.put(key, value)
          : new Promise((resolve, reject) =>
              client.Put({ key, value }, (err, res) => (err ? reject(err) : resolve(res))),
            ),
      stop: async () => {
        await writes?.close();
        sdk?.close();
        client.close();
        await server.stop();
        if (dir) ctx.removeDir(dir);
      },
    };
  } catch (err) {
    kv?.close();
    await server.stop();
    throw err;
  }
}

async function startEtcdTarget(ctx: SuiteContext, n: number): Promise<Target> {
  const dir = ctx.tempDir(`etcd-n${n}`);
  const server: EtcdServer = await startEtcd({
    dataDir: dir,
    keepData: ctx.keep,
    log: (l) => ctx.log(`[etcd n=${n}] ${l}`),
  });
  const client = new Etcd3({ hosts: server.clientUrl });
  return {
    system: "etcd",
    pid: server.pid,
    address: server.clientUrl,
    memory: async () => ({ rss: vmRss(server.pid) }),
    put: (key, value) => client.put(key).value(value).exec(),
    stop: async () => {
      client.close();
      await server.stop();
    },
  };
}

/**
 * Time all threads of a process spent on a CPU and waiting in the run queue for one, in ms
 * (Linux /proc/<pid>/task/<tid>/schedstat; NaN where unreadable).
 */
function threadsSchedMs(pid: number): { run: number; wait: number } {
  try {
    let run = 0;
    let wait = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const [r, w] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ").map(Number);
        run += r ?? 0;
        wait += w ?? 0;
      } catch {
        // the thread ended meanwhile
      }
    }
    return { run: run / 1e6, wait: wait / 1e6 };
  } catch {
    return { run: Number.NaN, wait: Number.NaN };
  }
}

/** CPU seconds of the server, the subscriber processes and this process (writers). */
class CpuSplit {
  private t0 = 0;
  private s0 = 0;
  private c0 = 0;
  private o0 = 0;
  constructor(
    private readonly server: number,
    private readonly clients: readonly number[],
  ) {}
  private read(): [number, number, number] {
    const u = process.cpuUsage();
    return [
      processCpuSeconds(this.server),
      this.clients.reduce((a, pid) => a + processCpuSeconds(pid), 0),
      (u.user + u.system) / 1e6,
    ];
  }
  start(): void {
    this.t0 = performance.now();
    [this.s0, this.c0, this.o0] = this.read();
  }
  /** Cores used since start: server, subscriber processes, this process. */
  stop(): Cores {
    const secs = (performance.now() - this.t0) / 1000;
    const [s, cl, o] = this.read();
    return { server: (s - this.s0) / secs, clients: (cl - this.c0) / secs, writer: (o - this.o0) / secs };
  }
}

interface Cores {
  readonly server: number;
  readonly clients: number;
  readonly writer: number;
}

interface Phase {
  /** Acknowledged writes inside the window (as seen by the writer) and their rate. */
  readonly commits: number;
  readonly commitsPerSec: number;
  /** Events received by all subscribers inside their windows, and the summed rate. */
  readonly delivered: number;
  readonly deliveredPerSec: number;
  /** Events per stream message (Sluice frames batch commits; etcd batches per response). */
  readonly eventsPerMessage: number;
  /** Put-to-receive latency of the events received in the window, ms. */
  readonly latencyMs: LatencySummary;
  readonly cores: Cores;
  /** Sluice: the server's event-loop utilization and GC pauses in the window. */
  readonly server?: ServerWindow;
  /** Longest GC pause in any subscriber process during the window, ms. */
  readonly subscriberGcMaxMs: number;
  /** Put latency as the writers saw it (issue to acknowledgement), ms. */
  readonly putLatencyMs: LatencySummary;
  /** Time from the writers' stop to the last expected event arriving. */
  readonly drainMs: number;
  /** What `kdamond` kernel threads ran in the window (see bench/lib/kernel-threads.ts). */
  readonly kdamond: KernelThreadsCpu;
  /** Puts slower than SLOW_PUT_MS to their acknowledgement, and the bursts they came in. */
  readonly slowPuts: { readonly count: number; readonly bursts: number; readonly medianSpacingMs: number };
}

interface RunResult {
  readonly system: System;
  readonly subscribers: number;
  readonly keys: number;
  readonly openMs: number;
  readonly idle: {
    readonly rssBefore: number;
    readonly rssIdle: number;
    readonly bytesPerSub: number;
    readonly heapBytesPerSub?: number;
  };
  readonly throughput: Phase;
  readonly latency: Phase & { readonly offeredPerSec: number };
  /** Expected events (acknowledged puts × subscribers of their key) minus received. */
  readonly missing: number;
  readonly totals: Totals;
}

/** The subscriber processes of one run. */
class Subscribers {
  private constructor(readonly helpers: readonly Helper[]) {}

  static async open(c: Config, t: Target, keyOf: (i: number) => string, n: number): Promise<Subscribers> {
    const procs = Math.min(c.clients, n);
    const helpers = Array.from({ length: procs }, (_, p) =>
      Helper.fork(`subscriber process ${p + 1}/${procs}`, CLIENT_MODULE),
    );
    const subs = new Subscribers(helpers);
    try {
      await Promise.all(
        helpers.map((h, p) => {
          const keys: string[] = [];
          for (let i = p; i < n; i += procs) keys.push(keyOf(i));
          const req: OpenRequest = {
            system: t.system,
            address: t.system === "sluice" ? t.address : t.address.replace(/^http:\/\//, ""),
            keys,
            channels: c.channels,
            watchersPerStream: c.etcdWatchersPerStream,
            sluiceRpc: c.sluiceRpc,
          };
          return h.call("open", req);
        }),
      );
    } catch (err) {
      await subs.close();
      throw err;
    }
    return subs;
  }

  get pids(): number[] {
    return this.helpers.map((h) => h.pid);
  }

  async reset(): Promise<void> {
    await Promise.all(this.helpers.map((h) => h.call("reset")));
  }

  async collect(): Promise<{
    delivered: number;
    perSec: number;
    messages: number;
    hist: Histogram;
    gcMaxMs: number;
  }> {
    const rs = await Promise.all(this.helpers.map((h) => h.call<WindowResult>("collect")));
    const hist = new Histogram();
    let delivered = 0;
    let perSec = 0;
    let messages = 0;
    let gcMaxMs = 0;
    for (const r of rs) {
      gcMaxMs = Math.max(gcMaxMs, r.gcMaxMs);
      hist.merge(r.latency);
      delivered += r.events;
      messages += r.messages;
      perSec += (r.events * 1000) / r.windowMs;
    }
    return { delivered, perSec, messages, hist, gcMaxMs };
  }

  async totals(): Promise<Totals> {
    const ts = await Promise.all(this.helpers.map((h) => h.call<Totals>("totals")));
    return ts.reduce((a, t) => ({
      events: a.events + t.events,
      disorder: a.disorder + t.disorder,
      resets: a.resets + t.resets,
      progress: a.progress + t.progress,
      errors: a.errors + t.errors,
      firstError: a.firstError ?? t.firstError,
    }));
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.helpers.map((h) => h.call("close")));
    await Promise.all(this.helpers.map((h) => h.stop()));
  }
}

async function runOne(ctx: SuiteContext, c: Config, system: System, n: number): Promise<RunResult> {
  const label = `[${system} n=${fmtInt(n)}]`;
  const keys = Math.ceil(n / c.perKey);
  const keyName = (k: number) => `fanout/${k}`;
  // Which key subscriber i watches (see the layouts above).
  const keyOf =
    c.layout === "together" ? (i: number) => i % keys : (i: number) => Math.floor(i / c.perKey) % keys;
  const subsOfKey = new Float64Array(keys);
  for (let i = 0; i < n; i++) subsOfKey[keyOf(i)]!++;

  const t = system === "sluice" ? await startSluice(ctx, c, n) : await startEtcdTarget(ctx, n);
  let subs: Subscribers | undefined;
  try {
    // Create the keys first, so that every subscriber starts from the same non-empty state.
    for (let k = 0; k < keys; k++) await t.put(keyName(k), stampedValue(c.valueBytes));
    await sleep(500);
    const before = await t.memory();

    ctx.log(
      `${label} opening ${fmtInt(n)} subscriptions on ${fmtInt(keys)} keys (${c.perKey} per key) from ` +
        `${Math.min(c.clients, n)} processes × ${c.channels} connections, layout ${c.layout}` +
        (system === "etcd"
          ? `, ${c.etcdWatchersPerStream} watchers per watch stream`
          : c.sluiceRpc === "watch"
            ? `, ${c.etcdWatchersPerStream} subscriptions per Watch stream`
            : ", one Subscribe stream each"),
    );
    const o0 = performance.now();
    subs = await Subscribers.open(c, t, (i) => keyName(keyOf(i)), n);
    const openMs = performance.now() - o0;
    await sleep(c.idleSettleMs);
    const idleMem = await t.memory();
    const idle = {
      rssBefore: before.rss,
      rssIdle: idleMem.rss,
      bytesPerSub: (idleMem.rss - before.rss) / n,
      heapBytesPerSub:
        before.heapUsed !== undefined && idleMem.heapUsed !== undefined
          ? (idleMem.heapUsed - before.heapUsed) / n
          : undefined,
    };
    ctx.log(
      `${label} all subscribed in ${fmtMs(openMs)}; server RSS ${fmtMiB(before.rss)} → ${fmtMiB(idleMem.rss)} ` +
        `= ${fmtBytes(idle.bytesPerSub)} per idle subscription` +
        (idle.heapBytesPerSub !== undefined ? ` (heap ${fmtBytes(idle.heapBytesPerSub)})` : ""),
    );

    let expected = 0;
    let nextKey = 0;
    const putLatency = new Samples();
    /** When (performance.now) each put slower than SLOW_PUT_MS was issued, in the window. */
    const slowPutAt: number[] = [];
    let timingPuts = false;
    const put = async () => {
      const k = nextKey;
      nextKey = (nextKey + 1) % keys;
      const p0 = performance.now();
      await t.put(keyName(k), stampedValue(c.valueBytes));
      if (timingPuts) {
        const ms = performance.now() - p0;
        putLatency.push(ms);
        if (ms > SLOW_PUT_MS) slowPutAt.push(p0);
      }
      expected += subsOfKey[k]!;
    };
    /** Opens a measured window: subscriber counters, CPU, event loop, put latency. */
    let sched0 = threadsSchedMs(t.pid);
    let kd0 = kernelThreadsCpu();
    const openWindow = async () => {
      await subs!.reset();
      await t.window?.();
      sched0 = threadsSchedMs(t.pid);
      kd0 = kernelThreadsCpu();
      cpu.start();
      putLatency.clear();
      slowPutAt.length = 0;
      timingPuts = true;
    };
    const closeWindow = async () => {
      timingPuts = false;
      const win = await subs!.collect();
      const cores = cpu.stop();
      const s1 = threadsSchedMs(t.pid);
      const sched = { run: s1.run - sched0.run, wait: s1.wait - sched0.wait };
      const kdamond = kernelThreadsDelta(kd0, kernelThreadsCpu());
      const server = await t.window?.();
      const slow = bursts(
        slowPutAt.sort((a, b) => a - b),
        SLOW_PUT_GAP_MS,
      );
      const slowPuts = { count: slowPutAt.length, bursts: slow.count, medianSpacingMs: slow.medianSpacingMs };
      return { win, cores, server, sched, kdamond, slowPuts, putLatencyMs: summarize(putLatency.view()) };
    };
    const base = (await subs.totals()).events;
    const drain = async (): Promise<number> => {
      const d0 = performance.now();
      for (;;) {
        const tot = await subs!.totals();
        if (tot.events - base >= expected) return performance.now() - d0;
        if (performance.now() - d0 > c.drainTimeoutMs) {
          ctx.log(`${label} drain timed out: ${fmtInt(expected - (tot.events - base))} events missing`);
          return Number.NaN;
        }
        await sleep(20);
      }
    };
    const cpu = new CpuSplit(t.pid, subs.pids);

    // Throughput: closed-loop writers.
    ctx.log(
      `${label} throughput: ${c.writers} closed-loop writers, warm-up ${c.warmupMs / 1000} s, measure ${c.durationMs / 1000} s`,
    );
    let running = true;
    let acked = 0;
    let failure: unknown;
    const loops = Array.from({ length: c.writers }, async () => {
      while (running) {
        try {
          await put();
          acked++;
        } catch (err) {
          failure ??= err;
          running = false;
        }
      }
    });
    const ticker = setInterval(() => ctx.progress(`${label} ${fmtInt(acked)} puts acknowledged`), 1000);
    let tp: Phase;
    try {
      await sleep(c.warmupMs);
      await openWindow();
      const a0 = acked;
      const w0 = performance.now();
      await sleep(c.durationMs);
      const { win, cores, server, putLatencyMs, kdamond, slowPuts } = await closeWindow();
      const commits = acked - a0;
      const wMs = performance.now() - w0;
      running = false;
      await Promise.all(loops);
      if (failure) throw failure;
      const drainMs = await drain();
      tp = {
        commits,
        commitsPerSec: (commits * 1000) / wMs,
        delivered: win.delivered,
        deliveredPerSec: win.perSec,
        eventsPerMessage: win.messages > 0 ? win.delivered / win.messages : Number.NaN,
        latencyMs: win.hist.summaryMs(),
        cores,
        server,
        subscriberGcMaxMs: win.gcMaxMs,
        putLatencyMs,
        drainMs,
        kdamond,
        slowPuts,
      };
    } finally {
      running = false;
      clearInterval(ticker);
      await Promise.all(loops);
    }
    ctx.log(
      `${label} throughput: ${fmtInt(tp.commitsPerSec)} puts/s → ${fmtInt(tp.deliveredPerSec)} events/s delivered ` +
        `(${fmtFixed(tp.eventsPerMessage, 2)} events/message), latency p50 ${fmtMs(tp.latencyMs.p50)} ` +
        `p99 ${fmtMs(tp.latencyMs.p99)} (put acknowledged p50 ${fmtMs(tp.putLatencyMs.p50)} p99 ${fmtMs(tp.putLatencyMs.p99)}); ` +
        `${fmtServer(tp.server)}CPU server ${fmtFixed(tp.cores.server, 2)} + subscribers ` +
        `${fmtFixed(tp.cores.clients, 2)} + writers ${fmtFixed(tp.cores.writer, 2)}; drained in ${fmtMs(tp.drainMs)}`,
    );

    // Latency: open-loop writer at a fixed rate.
    ctx.log(`${label} latency: ${fmtInt(c.latencyRate)} puts/s open loop for ${c.latencyMs / 1000} s`);
    const lat = await openLoop(c, put, openWindow);
    const {
      win: lwin,
      cores: lcores,
      server: lServer,
      sched: lSched,
      putLatencyMs: lPut,
      kdamond: lKdamond,
      slowPuts: lSlow,
    } = await closeWindow();
    const ldrain = await drain();
    const latency = {
      offeredPerSec: c.latencyRate,
      commits: lat.commits,
      commitsPerSec: (lat.commits * 1000) / lat.ms,
      delivered: lwin.delivered,
      deliveredPerSec: lwin.perSec,
      eventsPerMessage: lwin.messages > 0 ? lwin.delivered / lwin.messages : Number.NaN,
      latencyMs: lwin.hist.summaryMs(),
      cores: lcores,
      server: lServer,
      subscriberGcMaxMs: lwin.gcMaxMs,
      putLatencyMs: lPut,
      drainMs: ldrain,
      kdamond: lKdamond,
      slowPuts: lSlow,
    };
    ctx.log(
      `${label} latency: ${fmtInt(latency.commitsPerSec)} puts/s → ${fmtInt(latency.deliveredPerSec)} events/s, ` +
        `p50 ${fmtMs(latency.latencyMs.p50)} p90 ${fmtMs(latency.latencyMs.p90)} p99 ${fmtMs(latency.latencyMs.p99)} ` +
        `max ${fmtMs(latency.latencyMs.max)} (put acknowledged p50 ${fmtMs(latency.putLatencyMs.p50)} p99 ${fmtMs(latency.putLatencyMs.p99)}); ` +
        `${fmtServer(latency.server)}longest subscriber GC ${fmtMs(latency.subscriberGcMaxMs)}; CPU server ${fmtFixed(lcores.server, 2)} + subscribers ` +
        `${fmtFixed(lcores.clients, 2)} + writer ${fmtFixed(lcores.writer, 2)}; ` +
        `server threads ran ${fmtMs(lSched.run)} and waited ${fmtMs(lSched.wait)} for a CPU; ` +
        `puts over ${SLOW_PUT_MS} ms: ${lSlow.count} in ${lSlow.bursts} bursts, median ${fmtMs(lSlow.medianSpacingMs)} apart; ` +
        (lKdamond.threads > 0
          ? `kernel kdamond ran ${fmtMs(lKdamond.runMs)} in ${fmtInt(lKdamond.slices)} slices`
          : "no kdamond kernel thread"),
    );

    const totals = await subs.totals();
    const missing = expected - (totals.events - base);
    if (totals.disorder || totals.resets || totals.errors || missing) {
      ctx.log(
        `${label} WARNING: ${fmtInt(missing)} events missing, ${totals.disorder} out of order, ` +
          `${totals.resets} resets, ${totals.errors} errors${totals.firstError ? ` (${totals.firstError})` : ""}`,
      );
    }
    return { system, subscribers: n, keys, openMs, idle, throughput: tp, latency, missing, totals };
  } finally {
    await subs?.close();
    await t.stop();
  }
}

/**
 * Puts at `rate`/s without waiting for acknowledgements (up to 10,000 in flight), for
 * `latencyMs` after a 0.5 s warm-up; `onWindow` runs as the measured part begins.
 */
async function openLoop(
  c: Config,
  put: () => Promise<void>,
  onWindow: () => Promise<void>,
): Promise<{ commits: number; ms: number }> {
  const warmMs = 500;
  let issued = 0;
  let acked = 0;
  let inFlight = 0;
  let failure: unknown;
  const pending = new Set<Promise<void>>();
  const t0 = performance.now();
  let wStart = Number.POSITIVE_INFINITY;
  let wAcked0 = 0;
  let windowing: Promise<void> | undefined;
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const now = performance.now();
      if (failure || now - t0 >= warmMs + c.latencyMs) {
        clearInterval(tick);
        resolve();
        return;
      }
      if (windowing === undefined && now - t0 >= warmMs) {
        windowing = onWindow().then(() => {
          wStart = performance.now();
          wAcked0 = acked;
        });
      }
      const due = Math.floor(((now - t0) / 1000) * c.latencyRate);
      while (issued < due && inFlight < 10_000) {
        issued++;
        inFlight++;
        const p = put().then(
          () => {
            inFlight--;
            acked++;
          },
          (err) => {
            inFlight--;
            failure ??= err;
          },
        );
        pending.add(p);
        void p.finally(() => pending.delete(p));
      }
    }, 2);
  });
  await windowing;
  const ms = performance.now() - wStart;
  const commits = acked - wAcked0;
  await Promise.all(pending);
  if (failure) throw failure;
  return { commits, ms };
}

const fmtServer = (w: ServerWindow | undefined) =>
  w === undefined
    ? ""
    : `server event loop ${fmtFixed(w.eventLoop * 100, 0)} % busy, GC ${w.gcCount} pauses ${fmtMs(w.gcMs)} ` +
      `(${w.gcMajorCount} major ${fmtMs(w.gcMajorMs)}; longest ${fmtMs(w.gcMaxMs)} ${w.gcMaxKind}), ` +
      `event-loop delay p99 ${fmtMs(w.loopDelayP99Ms)} max ${fmtMs(w.loopDelayMaxMs)}, ` +
      `main thread ran ${fmtMs(w.mainRunMs)} and waited ${fmtMs(w.mainWaitMs)} for a CPU; `;
const fmtMiB = (b: number) => (Number.isFinite(b) ? `${(b / 2 ** 20).toFixed(1)} MiB` : "-");
const fmtBytes = (b: number) =>
  !Number.isFinite(b) ? "-" : Math.abs(b) >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b.toFixed(0)} B`;

/** Medians over the repeats of one system at one subscriber count. */
interface Summary {
  readonly commitsPerSec: number;
  readonly deliveredPerSec: number;
  readonly eventsPerMessage: number;
  readonly satP50Ms: number;
  readonly satP99Ms: number;
  readonly cores: Cores;
  readonly fixedP50Ms: number;
  readonly fixedP99Ms: number;
  readonly fixedCores: Cores;
  readonly bytesPerSub: number;
  readonly heapBytesPerSub: number;
  readonly openMs: number;
  /** CPU per delivered event in the throughput window (µs): server, subscriber processes. */
  readonly serverUsPerEvent: number;
  readonly clientUsPerEvent: number;
  /** CPU of the writer process per acknowledged put (µs). */
  readonly writerUsPerPut: number;
}

function summarizeRuns(runs: readonly RunResult[]): Summary | undefined {
  if (runs.length === 0) return undefined;
  const med = (f: (r: RunResult) => number | undefined) =>
    median(runs.map(f).filter((x): x is number => x !== undefined && Number.isFinite(x)));
  return {
    commitsPerSec: med((r) => r.throughput.commitsPerSec),
    deliveredPerSec: med((r) => r.throughput.deliveredPerSec),
    eventsPerMessage: med((r) => r.throughput.eventsPerMessage),
    satP50Ms: med((r) => r.throughput.latencyMs.p50),
    satP99Ms: med((r) => r.throughput.latencyMs.p99),
    cores: {
      server: med((r) => r.throughput.cores.server),
      clients: med((r) => r.throughput.cores.clients),
      writer: med((r) => r.throughput.cores.writer),
    },
    fixedP50Ms: med((r) => r.latency.latencyMs.p50),
    fixedP99Ms: med((r) => r.latency.latencyMs.p99),
    fixedCores: {
      server: med((r) => r.latency.cores.server),
      clients: med((r) => r.latency.cores.clients),
      writer: med((r) => r.latency.cores.writer),
    },
    bytesPerSub: med((r) => r.idle.bytesPerSub),
    heapBytesPerSub: med((r) => r.idle.heapBytesPerSub),
    openMs: med((r) => r.openMs),
    serverUsPerEvent: med((r) => (r.throughput.cores.server * 1e6) / r.throughput.deliveredPerSec),
    clientUsPerEvent: med((r) => (r.throughput.cores.clients * 1e6) / r.throughput.deliveredPerSec),
    writerUsPerPut: med((r) => (r.throughput.cores.writer * 1e6) / r.throughput.commitsPerSec),
  };
}

/** Median of paired ratios and their range. */
interface Ratio {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

function ratioOf(xs: readonly number[]): Ratio | undefined {
  const ok = xs.filter((x) => Number.isFinite(x));
  if (ok.length === 0) return undefined;
  return { median: median(ok), min: Math.min(...ok), max: Math.max(...ok) };
}

interface Row {
  readonly subscribers: number;
  readonly runs: readonly { rep: number; sluice?: RunResult; etcd?: RunResult }[];
  readonly sluice?: Summary;
  readonly etcd?: Summary;
  /** Sluice over etcd, per pair: delivered events/s, p99 at the fixed rate, RSS per idle subscription. */
  readonly delivered?: Ratio;
  readonly fixedP99?: Ratio;
  readonly memory?: Ratio;
}

function makeRow(subscribers: number, runs: Row["runs"]): Row {
  const paired = runs.filter((r) => r.sluice && r.etcd);
  const ratios = (f: (x: RunResult) => number) => ratioOf(paired.map((p) => f(p.sluice!) / f(p.etcd!)));
  return {
    subscribers,
    runs,
    sluice: summarizeRuns(runs.flatMap((r) => (r.sluice ? [r.sluice] : []))),
    etcd: summarizeRuns(runs.flatMap((r) => (r.etcd ? [r.etcd] : []))),
    delivered: ratios((x) => x.throughput.deliveredPerSec),
    fixedP99: ratios((x) => x.latency.latencyMs.p99),
    memory: ratios((x) => x.idle.bytesPerSub),
  };
}

const fmtCores = (c: Cores) =>
  `${fmtFixed(c.server, 2)} + ${fmtFixed(c.clients, 2)} + ${fmtFixed(c.writer, 2)}`;
const fmtRange = (r: Ratio | undefined) =>
  r === undefined ? "-" : `${fmtRatio(r.median)} (${fmtRatio(r.min)}–${fmtRatio(r.max)})`;

function resultTable(rows: readonly Row[]): string {
  const lines = rows.flatMap((r) =>
    SYSTEMS.flatMap((system) => {
      const m = r[system];
      return m ? [{ subscribers: r.subscribers, system, m }] : [];
    }),
  );
  return table(
    [
      "subscribers",
      "system",
      "puts/s",
      "delivered events/s",
      "events/msg",
      "p50 / p99 saturated",
      "CPU srv + subs + writers",
      "CPU µs/event srv · subs",
      "p50 / p99 at fixed rate",
      "RSS / idle sub",
      "heap / idle sub",
    ],
    lines.map(({ subscribers, system, m }) => [
      fmtInt(subscribers),
      system,
      fmtInt(m.commitsPerSec),
      fmtInt(m.deliveredPerSec),
      fmtFixed(m.eventsPerMessage, 2),
      `${fmtMs(m.satP50Ms)} / ${fmtMs(m.satP99Ms)}`,
      fmtCores(m.cores),
      `${fmtFixed(m.serverUsPerEvent)} · ${fmtFixed(m.clientUsPerEvent)}`,
      `${fmtMs(m.fixedP50Ms)} / ${fmtMs(m.fixedP99Ms)}`,
      fmtBytes(m.bytesPerSub),
      fmtBytes(m.heapBytesPerSub),
    ]),
    ["right", "left"],
  );
}

function ratioTable(rows: readonly Row[]): string {
  return table(
    [
      "subscribers",
      "delivered events/s Sluice/etcd",
      "p99 at fixed rate Sluice/etcd",
      "RSS per idle sub Sluice/etcd",
    ],
    rows
      .filter((r) => r.delivered)
      .map((r) => [fmtInt(r.subscribers), fmtRange(r.delivered), fmtRange(r.fixedP99), fmtRange(r.memory)]),
  );
}

async function run(ctx: SuiteContext, flags: FlagValues): Promise<unknown> {
  const c = config(flags);
  const source = sourceState();
  ctx.log(describeSource(source));
  ctx.log(
    `fanout suite: ${c.systems.join(", ")}; subscribers ${c.subscribers.map(fmtInt).join(", ")}, ${c.perKey} per key; ` +
      `${c.writers} writers; ${c.valueBytes}-byte values; Sluice store ${c.sluiceStore}; ` +
      `${c.clients} subscriber processes × ${c.channels} connections; Sluice ${c.sluiceRpc === "watch" ? "Watch" : "Subscribe"} streams, ` +
      `${c.sluiceWrites === "stream" ? "KV.Write stream" : "unary KV.Put"} writes; ` +
      `layout ${c.layout}; ${c.repeat} repeat(s)`,
  );
  if (c.cpuProf) ctx.log(`Sluice server CPU profiles go to ${c.cpuProf}`);
  const rows: Row[] = [];
  for (const n of c.subscribers) {
    const runs: { rep: number; sluice?: RunResult; etcd?: RunResult }[] = [];
    for (let rep = 1; rep <= c.repeat; rep++) {
      if (c.repeat > 1)
        ctx.log(`--- ${fmtInt(n)} subscribers, repeat ${rep}/${c.repeat} (load ${loadavg()[0]!.toFixed(2)})`);
      const pair: { rep: number; sluice?: RunResult; etcd?: RunResult } = { rep };
      // Alternate which system goes first, so that a drift in the machine falls on both.
      const order = rep % 2 === 1 ? c.systems : [...c.systems].reverse();
      for (const system of order) {
        ctx.signal.throwIfAborted();
        pair[system] = await runOne(ctx, c, system, n);
      }
      if (pair.sluice && pair.etcd) {
        ctx.log(
          `[n=${fmtInt(n)}] delivered events/s Sluice/etcd ${fmtRatio(pair.sluice.throughput.deliveredPerSec / pair.etcd.throughput.deliveredPerSec)}, ` +
            `p99 at ${fmtInt(c.latencyRate)} puts/s ${fmtMs(pair.sluice.latency.latencyMs.p99)} vs ${fmtMs(pair.etcd.latency.latencyMs.p99)}`,
        );
      }
      runs.push(pair);
    }
    rows.push(makeRow(n, runs));
  }

  ctx.log(
    `\nFan-out over gRPC on loopback: ${c.perKey} subscribers per key (layout ${c.layout}), Sluice ${c.sluiceRpc === "watch" ? "Watch" : "Subscribe"} streams, ${c.writers} closed-loop writers ` +
      `(saturated = latency under that load), fixed rate = ${fmtInt(c.latencyRate)} puts/s open loop` +
      (c.repeat > 1 ? `; medians of ${c.repeat} runs` : "") +
      "\n",
  );
  ctx.log(resultTable(rows));
  if (c.systems.length === 2) {
    ctx.log("");
    ctx.log(ratioTable(rows));
  }

  const at = (n: number) => rows.find((r) => r.subscribers === n);
  const rAt = at(TARGET_RATIO_AT)?.delivered;
  const p99 = rows
    .filter((r) => r.sluice && r.etcd)
    .map((r) => ({
      subscribers: r.subscribers,
      sluiceMs: r.sluice!.fixedP99Ms,
      etcdMs: r.etcd!.fixedP99Ms,
      met: r.sluice!.fixedP99Ms <= r.etcd!.fixedP99Ms,
    }));
  const mem = at(TARGET_BYTES_AT)?.sluice?.bytesPerSub;
  const targets = {
    deliveredRatio:
      rAt === undefined
        ? undefined
        : { subscribers: TARGET_RATIO_AT, required: TARGET_RATIO, ...rAt, met: rAt.median >= TARGET_RATIO },
    p99,
    memory:
      mem === undefined
        ? undefined
        : {
            subscribers: TARGET_BYTES_AT,
            requiredBytes: TARGET_BYTES_PER_SUB,
            bytes: mem,
            met: mem < TARGET_BYTES_PER_SUB,
          },
  };
  ctx.log("");
  const verdict = (met: boolean) => (met ? "MET" : "MISSED");
  if (targets.deliveredRatio) {
    ctx.log(
      `target: delivered events/s >= ${TARGET_RATIO}x etcd at ${fmtInt(TARGET_RATIO_AT)} subscribers: ` +
        `${fmtRange(rAt)} -> ${verdict(targets.deliveredRatio.met)}`,
    );
  }
  for (const p of p99) {
    ctx.log(
      `target: p99 no worse than etcd at ${fmtInt(p.subscribers)} subscribers (${fmtInt(c.latencyRate)} puts/s): ` +
        `${fmtMs(p.sluiceMs)} vs ${fmtMs(p.etcdMs)} -> ${verdict(p.met)}`,
    );
  }
  if (targets.memory) {
    ctx.log(
      `target: < 10 KiB server memory per idle subscription at ${fmtInt(TARGET_BYTES_AT)}: ` +
        `${fmtBytes(targets.memory.bytes)} -> ${verdict(targets.memory.met)}`,
    );
  }
  return { config: c, source, rows, targets };
}

export const suite: Suite = {
  flags: {
    subscribers: {
      type: "string",
      description: "subscriber counts, comma-separated",
      default: "100,1000,10000",
    },
    "per-key": {
      type: "string",
      description: "subscribers per key (keys = subscribers / this)",
      default: "10",
    },
    writers: { type: "string", description: "closed-loop writers in the throughput phase", default: "64" },
    warmup: { type: "string", description: "seconds of writing before the throughput window", default: "2" },
    duration: { type: "string", description: "seconds of the throughput window", default: "5" },
    "latency-rate": { type: "string", description: "puts/s of the open-loop latency phase", default: "500" },
    "latency-duration": { type: "string", description: "seconds of the latency phase", default: "5" },
    "value-bytes": { type: "string", description: "value size (first 8 bytes: send time)", default: "64" },
    clients: { type: "string", description: "subscriber processes", default: "2" },
    channels: { type: "string", description: "HTTP/2 connections per subscriber process", default: "2" },
    "etcd-watchers-per-stream": {
      type: "string",
      description:
        "subscribers sharing one stream: etcd watch stream (one etcd3 client each), Sluice Watch stream",
      default: "100",
    },
    "sluice-rpc": {
      type: "string",
      description: "Sluice subscriptions: watch (multiplexed Watch streams) or subscribe (a stream each)",
      default: "watch",
    },
    "sluice-writes": {
      type: "string",
      description:
        "Sluice writers: stream (puts pipelined on KV.Write streams) or unary (one KV.Put call each)",
      default: "stream",
    },
    layout: {
      type: "string",
      description: "together (a key's subscribers share a stream) or spread (each on another stream)",
      default: "together",
    },
    "sluice-store": {
      type: "string",
      description: `Sluice store: durable (data dir, fsync always) or memory (--dev)`,
      default: "durable",
    },
    "idle-settle": { type: "string", description: "seconds idle before the memory reading", default: "2" },
    "drain-timeout": {
      type: "string",
      description: "seconds to wait for every event to arrive",
      default: "60",
    },
    repeat: {
      type: "string",
      description: "paired Sluice+etcd runs per subscriber count (medians)",
      default: "3",
    },
    only: {
      type: "string",
      description: `systems to run, some of ${SYSTEMS.join(",")}`,
      default: "sluice,etcd",
    },
    "sluice-node-flags": {
      type: "string",
      description: 'extra node flags for the Sluice server process, e.g. "--max-semi-space-size=64"',
    },
    "cpu-prof": { type: "string", description: "directory for a --cpu-prof profile of each Sluice server" },
  },
  run,
};
