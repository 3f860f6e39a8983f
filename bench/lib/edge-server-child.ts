/*
 * A Sluice writer (with the JetStream bridge) or edge in its own process, for the `edge`
 * suite. Forked through `Helper.fork`; it answers requests from the moment it runs, and
 * `ready` resolves once `SluiceServer.start` has (for an edge: after its catch-up).
 *
 *   argv[2]: JSON of Partial<ServerConfig> laid over DEFAULTS (gRPC and HTTP on 127.0.0.1:0);
 *            `edge: true` makes it an edge.
 *
 * Times are CLOCK_MONOTONIC nanoseconds (process.hrtime), comparable across the processes of
 * the machine. The server logs at info level into this process, which keeps the lines the
 * suite reads (bridge established, snapshot loaded, edge caught up, …) and passes warnings
 * and errors on to stderr.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import pino from "pino";
import { DEFAULTS, type ServerConfig, SluiceServer } from "../../src/server/index.js";
import { serve } from "./child.js";

/** What `ready` answers. */
export interface ServerReady {
  readonly role: "writer" | "edge";
  readonly pid: number;
  readonly grpcPort: number;
  readonly httpPort: number;
  /** `SluiceServer.start` from call to resolution, ms (an edge: snapshot load plus catch-up). */
  readonly startMs: number;
  /** When it was called and when it resolved (hrtime ns). */
  readonly startNs: number;
  readonly readyNs: number;
  readonly index: number;
  /** Edge: index of the snapshot it loaded from JetStream. */
  readonly snapshotIndex?: number;
}

/** The bridge as seen in the writer. */
export interface BridgeState {
  readonly index: number;
  readonly publishedIndex: number;
  readonly lag: number;
}

/** What `watchBridge` measured: the bridge working off its outbox to `target`. */
export interface BridgeWatch {
  readonly target: number;
  /** publishedIndex when the watch began. */
  readonly fromIndex: number;
  /** First time the published index moved past `fromIndex`, and when it reached `target` (ns). */
  readonly firstAckNs: number;
  readonly doneNs: number;
  readonly reached: boolean;
  readonly publishedIndex: number;
}

/** A log line of interest, with when it was written (hrtime ns). */
export interface LogNote {
  readonly ns: number;
  readonly msg: string;
  readonly fields: Readonly<Record<string, unknown>>;
}

/** When commits were applied in this process (hrtime ns), from `store.onCommit`. */
export interface CommitTimes {
  readonly indexes: readonly number[];
  readonly ns: readonly number[];
}

const overrides = JSON.parse(process.argv[2] ?? "{}") as Partial<ServerConfig>;
const config: ServerConfig = {
  ...DEFAULTS,
  grpcAddr: "127.0.0.1:0",
  httpAddr: "127.0.0.1:0",
  logLevel: "info",
  ...overrides,
};
const hrNs = () => Number(process.hrtime.bigint());
const ROLE = config.edge ? "edge" : "writer";

const NOTES = new Set([
  "connected to NATS",
  "created the JetStream stream",
  "JetStream bridge established",
  "stored a state snapshot in JetStream",
  "JetStream bridge caught up",
  "JetStream bridge is behind: commits wait in the outbox",
  "loaded the writer's snapshot from JetStream",
  "replaying the writer's log from JetStream",
  "edge caught up with the writer's log",
  "Sluice server started",
]);
const notes: LogNote[] = [];
const destination = {
  write(line: string): void {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      process.stderr.write(line);
      return;
    }
    const msg = String(o.msg ?? "");
    const { level, time: _t, pid: _p, hostname: _h, msg: _m, ...fields } = o;
    if (NOTES.has(msg)) notes.push({ ns: hrNs(), msg, fields });
    if (Number(level) >= 40) {
      const what = Number(level) >= 50 ? "ERROR" : "warn";
      process.stderr.write(`  [${ROLE} pid ${process.pid}] ${what}: ${msg} ${JSON.stringify(fields)}\n`);
    }
  },
};
const logger = pino({ level: config.logLevel }, destination);

let server: SluiceServer | undefined;
const commitIndexes: number[] = [];
const commitNs: number[] = [];
const started = (async (): Promise<ServerReady> => {
  const startNs = hrNs();
  const t0 = performance.now();
  const s = await SluiceServer.start(config, logger);
  const startMs = performance.now() - t0;
  const readyNs = hrNs();
  server = s;
  s.store.onCommit((commit) => {
    commitIndexes.push(commit.index);
    commitNs.push(hrNs());
  });
  return {
    role: s.replica ? "edge" : "writer",
    pid: process.pid,
    grpcPort: s.grpcPort,
    httpPort: s.httpPort,
    startMs,
    startNs,
    readyNs,
    index: s.store.index,
    ...(s.replica ? { snapshotIndex: s.replica.snapshotIndex } : {}),
  };
})();
// A failed start is reported through `ready`; keep the process alive for it.
started.catch(() => {});

const running = (): SluiceServer => {
  if (!server) throw new Error("server not started yet");
  return server;
};
const bridgeOf = () => {
  const b = running().bridge;
  if (!b) throw new Error("not a writer with --nats");
  return b;
};

interface Watch {
  readonly target: number;
  readonly from: number;
  firstAckNs: number;
  doneNs: number;
  timer?: NodeJS.Timeout;
}
let watch: Watch | undefined;
let profiler: Session | undefined;

serve({
  ready: () => started,
  /** Notes so far (log lines of interest), from `from` on. */
  notes: (from = 0): LogNote[] => notes.slice(from),
  index: () => running().store.index,
  bridge: (): BridgeState => {
    const b = bridgeOf();
    return { index: running().store.index, publishedIndex: b.publishedIndex, lag: b.lag };
  },
  /**
   * Starts watching the bridge (every 2 ms) until its published index reaches `target`;
   * `waitBridge` then answers with the times.
   */
  watchBridge: (target: number) => {
    const b = bridgeOf();
    if (watch) clearInterval(watch.timer);
    const from = b.publishedIndex;
    const w: Watch = { target, from, firstAckNs: 0, doneNs: 0 };
    w.timer = setInterval(() => {
      const p = b.publishedIndex;
      if (w.firstAckNs === 0 && p > w.from) w.firstAckNs = hrNs();
      if (p >= w.target) {
        w.doneNs = hrNs();
        clearInterval(w.timer);
      }
    }, 2);
    watch = w;
    return { fromIndex: from };
  },
  /**
   * Waits (up to `timeoutMs`) for the watch started by `watchBridge` to reach its target; the
   * watch goes on after a timeout, so this can be called again.
   */
  waitBridge: async (timeoutMs: number): Promise<BridgeWatch> => {
    const w = watch;
    if (!w) throw new Error("watchBridge first");
    const b = bridgeOf();
    const t0 = performance.now();
    while (w.doneNs === 0 && performance.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 5));
    return {
      target: w.target,
      fromIndex: w.from,
      firstAckNs: w.firstAckNs,
      doneNs: w.doneNs,
      reached: w.doneNs > 0,
      publishedIndex: b.publishedIndex,
    };
  },
  /** Edge: how far behind the writer it is. */
  replica: () => {
    const r = running().replica;
    if (!r) throw new Error("not an edge");
    return { snapshotIndex: r.snapshotIndex, ...r.lag() };
  },
  /** Commits at or after index `from`: their indexes and when they were applied here (ns). */
  commitTimes: (from: number): CommitTimes => {
    let i = commitIndexes.length;
    while (i > 0 && commitIndexes[i - 1]! >= from) i--;
    return { indexes: commitIndexes.slice(i), ns: commitNs.slice(i) };
  },
  /** Starts V8's sampling profiler in this process (100 µs interval). */
  profileStart: async () => {
    profiler = new Session();
    profiler.connect();
    await profiler.post("Profiler.enable");
    await profiler.post("Profiler.setSamplingInterval", { interval: 100 });
    await profiler.post("Profiler.start");
  },
  /** Stops it and writes the profile (a .cpuprofile, Chrome DevTools format) to `path`. */
  profileStop: async (path: string) => {
    if (!profiler) throw new Error("profileStart first");
    const { profile } = await profiler.post("Profiler.stop");
    profiler.disconnect();
    profiler = undefined;
    writeFileSync(path, JSON.stringify(profile));
    return path;
  },
  exit: async () => {
    await server?.stop();
  },
});
