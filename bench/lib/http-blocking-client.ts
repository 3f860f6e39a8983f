/*
 * One client process of the `http` suite: N Consul-style blocking-query loops, each on its own
 * keep-alive HTTP/1.1 connection (node:http, one Agent with no socket cap), each doing
 *
 *   GET <path>?index=<last X-Consul-Index>&wait=<wait>   → remember X-Consul-Index → again
 *
 * as Consul's own clients (and `consul watch`) do. Inside a measured window it records, per
 * response, the index it answered, the index the client asked with and the time the body
 * was complete (process.hrtime: CLOCK_MONOTONIC, the same clock as the writer's in the bench
 * process). The writer's change table (index → issue and acknowledgement times) arrives with
 * `collect`, and turns those records into change-to-response latencies and missed changes.
 */
import http from "node:http";
import { PerformanceObserver } from "node:perf_hooks";
import { serve } from "./child.js";
import { Histogram, type HistogramData } from "./histogram.js";
import { Samples } from "./stats.js";

export interface BlockingOpenRequest {
  readonly host: string;
  readonly port: number;
  /** The read, without query string: `/v1/health/service/web`. */
  readonly path: string;
  /** Consul duration for `?wait=` (e.g. "60s"). */
  readonly wait: string;
  readonly clients: number;
  /** Clients started per 10 ms while opening (so that the accept queue is not flooded). */
  readonly ramp: number;
}

export interface OpenResult {
  /** Time from the first request until every client had its first (non-blocking) answer. */
  readonly ms: number;
  /** Index every client then held (the lowest of them). */
  readonly minIndex: number;
}

/**
 * The writer's changes, ascending by commit index: when the writer issued each, when the
 * server's store published it (durable, handed to the publisher), and when the writer had the
 * acknowledgement (ns, CLOCK_MONOTONIC).
 */
export interface ChangeTable {
  readonly indexes: readonly number[];
  readonly issueNs: readonly number[];
  readonly commitNs: readonly number[];
  readonly ackNs: readonly number[];
}

export interface BlockingWindow {
  /** 200 responses whose body completed inside the window. */
  readonly responses: number;
  readonly windowMs: number;
  /** Change-to-response latency: from the change's commit in the server (durable, published). */
  readonly fromCommit: HistogramData;
  /** The same from the change's acknowledgement to the writer (negative counted as 0). */
  readonly fromAck: HistogramData;
  /** The same from the moment the writer issued the change. */
  readonly fromIssue: HistogramData;
  /** Responses complete before the writer saw the acknowledgement. */
  readonly beforeAck: number;
  /**
   * Changes a client never saw: the writer's changes strictly between the index a client asked
   * with and the index it was answered with (allowed by Consul's semantics: a blocking query
   * answers with the latest state, not every step).
   */
  readonly missed: number;
  /** Answers at the asked index (the wait ran out) and below it (index went back: a reset). */
  readonly timeouts: number;
  readonly backwards: number;
  /** Answered indexes that are not in the change table (a change by someone else). */
  readonly unknown: number;
  /** Responses per client inside the window. */
  readonly perClient: {
    readonly min: number;
    readonly median: number;
    readonly max: number;
    readonly zero: number;
  };
  readonly gcMs: number;
  readonly gcMaxMs: number;
}

export interface ClientTotals {
  readonly responses: number;
  readonly errors: number;
  readonly non200: number;
  readonly firstError?: string;
  /** Requests that went out on a new connection (not a reused keep-alive socket). */
  readonly connections: number;
  readonly blocked: number;
}

const hrNs = () => Number(process.hrtime.bigint());

let agent: http.Agent | undefined;
let closing = false;
let windowOpen = false;
let windowStart = 0;
let windowMs = 0;
const rIndex = new Samples();
const rPrev = new Samples();
const rRecv = new Samples();
let perClient = new Uint32Array(0);
let responses = 0;
let errors = 0;
let non200 = 0;
let connections = 0;
let inFlight = 0;
let firstError: string | undefined;
let gcMs = 0;
let gcMaxMs = 0;
new PerformanceObserver((list) => {
  if (!windowOpen) return;
  for (const e of list.getEntries()) {
    gcMs += e.duration;
    if (e.duration > gcMaxMs) gcMaxMs = e.duration;
  }
}).observe({ entryTypes: ["gc"] });

function fail(what: string): void {
  errors++;
  firstError ??= what;
}

/** One client's loop; `onFirst` runs once, at its first answer. */
function startClient(o: BlockingOpenRequest, id: number, onFirst: (index: number) => void): void {
  let last = 0;
  let first = true;
  const next = (): void => {
    if (closing) return;
    const path = last === 0 ? o.path : `${o.path}?index=${last}&wait=${o.wait}`;
    inFlight++;
    const req = http.request(
      { agent, host: o.host, port: o.port, path, method: "GET", headers: { accept: "application/json" } },
      (res) => {
        const index = Number(res.headers["x-consul-index"]);
        const ok = res.statusCode === 200 && Number.isSafeInteger(index);
        res.on("end", () => {
          inFlight--;
          const now = hrNs();
          if (!ok) {
            non200++;
            firstError ??= `HTTP ${res.statusCode} for ${path}`;
            setTimeout(next, 100);
            return;
          }
          responses++;
          if (windowOpen) {
            rIndex.push(index);
            rPrev.push(last);
            rRecv.push(now);
            perClient[id]!++;
          }
          last = index;
          if (first) {
            first = false;
            onFirst(index);
          }
          next();
        });
        res.resume();
      },
    );
    req.on("socket", () => {
      if (!req.reusedSocket) connections++;
    });
    req.on("error", (err) => {
      inFlight--;
      if (closing) return;
      fail(`${path}: ${err.message}`);
      setTimeout(next, 100);
    });
    req.end();
  };
  next();
}

/** Index of the first element of ascending `a` greater than `x`. */
function upperBound(a: readonly number[], x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

serve({
  open: (o: BlockingOpenRequest): Promise<OpenResult> => {
    if (agent) throw new Error("already open");
    closing = false;
    // One connection per client: no cap on sockets, and every idle one kept for reuse.
    agent = new http.Agent({
      keepAlive: true,
      maxSockets: Number.POSITIVE_INFINITY,
      maxFreeSockets: o.clients,
    });
    perClient = new Uint32Array(o.clients);
    const t0 = performance.now();
    return new Promise((resolve) => {
      let answered = 0;
      let minIndex = Number.POSITIVE_INFINITY;
      const onFirst = (index: number) => {
        minIndex = Math.min(minIndex, index);
        if (++answered === o.clients) resolve({ ms: performance.now() - t0, minIndex });
      };
      let started = 0;
      const batch = (): void => {
        const end = Math.min(o.clients, started + o.ramp);
        for (; started < end; started++) startClient(o, started, onFirst);
        if (started < o.clients) setTimeout(batch, 10);
      };
      batch();
    });
  },
  reset: () => {
    rIndex.clear();
    rPrev.clear();
    rRecv.clear();
    perClient.fill(0);
    gcMs = 0;
    gcMaxMs = 0;
    windowStart = performance.now();
    windowOpen = true;
  },
  /** Closes the window: responses from now on are not recorded. */
  end: () => {
    if (windowOpen) windowMs = performance.now() - windowStart;
    windowOpen = false;
  },
  /** Responses so far (for progress lines). */
  count: () => responses,
  /** Evaluates the closed window against the writer's changes (all acknowledged by now). */
  collect: (changes: ChangeTable): BlockingWindow => {
    if (windowOpen) throw new Error("collect before end");
    const fromCommit = new Histogram();
    const fromAck = new Histogram();
    const fromIssue = new Histogram();
    let beforeAck = 0;
    let missed = 0;
    let timeouts = 0;
    let backwards = 0;
    let unknown = 0;
    const idx = rIndex.view();
    const prev = rPrev.view();
    const recv = rRecv.view();
    const at = new Map<number, number>();
    for (const [i, ix] of changes.indexes.entries()) at.set(ix, i);
    for (let i = 0; i < idx.length; i++) {
      const index = idx[i]!;
      const asked = prev[i]!;
      if (index === asked) timeouts++;
      else if (index < asked) backwards++;
      else missed += Math.max(0, upperBound(changes.indexes, index - 1) - upperBound(changes.indexes, asked));
      const j = at.get(index);
      if (j === undefined) {
        unknown++;
        continue;
      }
      fromCommit.record((recv[i]! - changes.commitNs[j]!) / 1000);
      const ackUs = (recv[i]! - changes.ackNs[j]!) / 1000;
      if (ackUs < 0) beforeAck++;
      fromAck.record(Math.max(0, ackUs));
      fromIssue.record((recv[i]! - changes.issueNs[j]!) / 1000);
    }
    const sorted = Uint32Array.from(perClient).sort();
    let zero = 0;
    for (const n of sorted) if (n === 0) zero++;
    return {
      responses: idx.length,
      windowMs,
      fromCommit: fromCommit.toData(),
      fromAck: fromAck.toData(),
      fromIssue: fromIssue.toData(),
      beforeAck,
      missed,
      timeouts,
      backwards,
      unknown,
      perClient: {
        min: sorted[0] ?? 0,
        median: sorted[sorted.length >> 1] ?? 0,
        max: sorted[sorted.length - 1] ?? 0,
        zero,
      },
      gcMs,
      gcMaxMs,
    };
  },
  totals: (): ClientTotals => ({ responses, errors, non200, firstError, connections, blocked: inFlight }),
  close: () => {
    closing = true;
    windowOpen = false;
    agent?.destroy();
    agent = undefined;
  },
});
