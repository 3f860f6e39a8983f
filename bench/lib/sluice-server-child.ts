/*
 * A Sluice server in its own process, for suites that measure the server apart from its
 * clients (RSS, CPU, event loop, GC pauses, profiles). Forked through `Helper.fork`; run with
 * --expose-gc so that memory readings are taken after full collections.
 *
 *   argv[2]: JSON of Partial<ServerConfig> laid over DEFAULTS (gRPC and HTTP on 127.0.0.1:0)
 */
import { readFileSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { constants, monitorEventLoopDelay, PerformanceObserver, performance as perf } from "node:perf_hooks";
import { writeHeapSnapshot } from "node:v8";
import pino from "pino";
import { DEFAULTS, type ServerConfig, SluiceServer } from "../../src/server/index.js";
import { serve } from "./child.js";

export interface ServerMemory {
  readonly rss: number;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly arrayBuffers: number;
}

/** When commits were published in the server process (CLOCK_MONOTONIC ns, process.hrtime). */
export interface CommitTimes {
  readonly indexes: readonly number[];
  readonly ns: readonly number[];
}

/** What the server's main thread did between two `window` calls. */
export interface ServerWindow {
  /** Event-loop utilization, 0..1. */
  readonly eventLoop: number;
  /** Garbage-collection pauses: count, total and longest, in ms. */
  readonly gcCount: number;
  readonly gcMs: number;
  readonly gcMaxMs: number;
  /** Kind of the longest pause (major = mark-compact, minor = scavenge, …). */
  readonly gcMaxKind: string;
  /** Major (mark-compact) collections and their total pause, ms. */
  readonly gcMajorCount: number;
  readonly gcMajorMs: number;
  /** Event-loop delay (how late a 1 ms timer fired), p99 and max, ms. */
  readonly loopDelayP99Ms: number;
  readonly loopDelayMaxMs: number;
  /**
   * The main thread's time on a CPU and waiting in the run queue for one (Linux
   * /proc/self/task/<pid>/schedstat), ms; NaN where unreadable.
   */
  readonly mainRunMs: number;
  readonly mainWaitMs: number;
}

const overrides = JSON.parse(process.argv[2] ?? "{}") as Partial<ServerConfig>;
const config: ServerConfig = {
  ...DEFAULTS,
  grpcAddr: "127.0.0.1:0",
  httpAddr: "127.0.0.1:0",
  logLevel: "warn",
  ...overrides,
};
const server = await SluiceServer.start(config, pino({ level: config.logLevel }, pino.destination(2)));

/** [run, wait] ns of the main thread so far. */
function schedstat(): [number, number] {
  try {
    const [run, wait] = readFileSync(`/proc/self/task/${process.pid}/schedstat`, "utf8")
      .split(" ")
      .map(Number);
    return [run ?? Number.NaN, wait ?? Number.NaN];
  } catch {
    return [Number.NaN, Number.NaN];
  }
}
let sched = schedstat();
let elu = perf.eventLoopUtilization();
const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();
let gcCount = 0;
let gcMs = 0;
let gcMaxMs = 0;
let gcMaxKind = "";
let gcMajorCount = 0;
let gcMajorMs = 0;
const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
  [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weak callbacks",
};
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as { detail?: { kind?: number } }).detail?.kind ?? -1;
    gcCount++;
    gcMs += e.duration;
    if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
      gcMajorCount++;
      gcMajorMs += e.duration;
    }
    if (e.duration > gcMaxMs) {
      gcMaxMs = e.duration;
      gcMaxKind = GC_KINDS[kind] ?? String(kind);
    }
  }
}).observe({ entryTypes: ["gc"] });
const gc = (globalThis as { gc?: () => void }).gc;

// When each commit became durable and was handed to the publisher (listeners run in the order
// they were added, the publisher's first): CLOCK_MONOTONIC ns, comparable across processes.
// Recorded only after `recordCommitTimes`, so that suites that do not ask pay nothing.
const commitIndexes: number[] = [];
const commitNs: number[] = [];
let recordingCommits = false;
const turn = () => new Promise((r) => setImmediate(r));
let profiler: Session | undefined;

serve({
  port: () => server.grpcPort,
  /** The HTTP API's port (the Consul-compatible API; `httpAddr` defaults to 127.0.0.1:0 here). */
  httpPort: () => server.httpPort,
  index: () => server.store.index,
  /** Starts recording when each commit is published (see `commitTimes`). Idempotent. */
  recordCommitTimes: () => {
    if (recordingCommits) return;
    recordingCommits = true;
    server.store.onCommit((commit) => {
      commitIndexes.push(commit.index);
      commitNs.push(Number(process.hrtime.bigint()));
    });
  },
  /** Commits at or after index `from`: their indexes and when they were published (hrtime ns). */
  commitTimes: (from: number): CommitTimes => {
    let i = commitIndexes.length;
    while (i > 0 && commitIndexes[i - 1]! >= from) i--;
    return { indexes: commitIndexes.slice(i), ns: commitNs.slice(i) };
  },
  /** Memory after full collections (several, with event-loop turns between them). */
  memory: async (): Promise<ServerMemory> => {
    for (let i = 0; i < 4; i++) {
      gc?.();
      await turn();
    }
    const m = process.memoryUsage();
    return {
      rss: m.rss,
      heapUsed: m.heapUsed,
      heapTotal: m.heapTotal,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
    };
  },
  /** Event loop and GC since the previous call. */
  window: async (): Promise<ServerWindow> => {
    await turn(); // GC entries arrive a little after the fact
    const now = perf.eventLoopUtilization();
    const eventLoop = perf.eventLoopUtilization(now, elu).utilization;
    const schedNow = schedstat();
    const w = {
      eventLoop,
      gcCount,
      gcMs,
      gcMaxMs,
      gcMaxKind,
      gcMajorCount,
      gcMajorMs,
      loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
      loopDelayMaxMs: loopDelay.max / 1e6,
      mainRunMs: (schedNow[0] - sched[0]) / 1e6,
      mainWaitMs: (schedNow[1] - sched[1]) / 1e6,
    };
    sched = schedNow;
    loopDelay.reset();
    elu = now;
    gcCount = 0;
    gcMs = 0;
    gcMaxMs = 0;
    gcMaxKind = "";
    gcMajorCount = 0;
    gcMajorMs = 0;
    return w;
  },
  /**
   * Starts V8's sampling heap profiler, keeping the samples of objects collected since (what
   * the process allocates, garbage included, not only what survives).
   */
  startAllocationSampling: async (intervalBytes = 32 * 1024) => {
    profiler ??= new Session();
    profiler.connect();
    await profiler.post("HeapProfiler.startSampling", {
      samplingInterval: intervalBytes,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  },
  /** Stops it and writes the profile (a .heapprofile for Chrome DevTools) to `path`. */
  stopAllocationSampling: async (path: string) => {
    if (!profiler) throw new Error("allocation sampling was not started");
    const { profile } = await profiler.post("HeapProfiler.stopSampling");
    profiler.disconnect();
    writeFileSync(path, JSON.stringify(profile));
  },
  /** Writes a heap snapshot (for looking into the memory per subscription). */
  heapSnapshot: (path: string) => writeHeapSnapshot(path),
  exit: () => server.stop(),
});
