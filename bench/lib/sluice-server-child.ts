/*
 * A Sluice server in its own process, for suites that measure the server apart from its
 * clients (RSS, CPU, event loop, GC pauses, profiles). Forked through `Helper.fork`; run with
 * --expose-gc so that memory readings are taken after full collections.
 *
 *   argv[2]: JSON of Partial<ServerConfig> laid over DEFAULTS (gRPC and HTTP on 127.0.0.1:0)
 */
import { constants, PerformanceObserver, performance as perf } from "node:perf_hooks";
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

let elu = perf.eventLoopUtilization();
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
const turn = () => new Promise((r) => setImmediate(r));

serve({
  port: () => server.grpcPort,
  index: () => server.store.index,
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
    const w = { eventLoop, gcCount, gcMs, gcMaxMs, gcMaxKind, gcMajorCount, gcMajorMs };
    elu = now;
    gcCount = 0;
    gcMs = 0;
    gcMaxMs = 0;
    gcMaxKind = "";
    gcMajorCount = 0;
    gcMajorMs = 0;
    return w;
  },
  /** Writes a heap snapshot (for looking into the memory per subscription). */
  heapSnapshot: (path: string) => writeHeapSnapshot(path),
  exit: () => server.stop(),
});
