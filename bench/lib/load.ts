import { type LatencySummary, Samples, summarize } from "./stats.js";

/** A closed-loop load: `writers` async loops, each awaiting one operation at a time. */
export interface LoadOptions {
  readonly writers: number;
  /** Time the loops run before measuring starts (they keep running across the switch). */
  readonly warmupMs: number;
  /** Length of the measured window; ignored when `maxOps` is given. */
  readonly durationMs: number;
  /** End the measured window after this many completed operations instead of after a time. */
  readonly maxOps?: number;
  /** One operation; `seq` counts the writer's own operations from 0. */
  readonly op: (writer: number, seq: number) => Promise<unknown>;
  /** Called as the measured window opens and closes (e.g. to count fsyncs inside it). */
  readonly onWindow?: (open: boolean) => void;
  /** Called about once a second. */
  readonly onProgress?: (p: LoadProgress) => void;
  readonly signal?: AbortSignal;
}

export interface LoadProgress {
  readonly phase: "warmup" | "measure";
  /** Milliseconds into the phase. */
  readonly elapsedMs: number;
  /** Operations completed in the phase so far. */
  readonly ops: number;
}

export interface LoadResult {
  readonly writers: number;
  /** Operations completed inside the measured window. */
  readonly ops: number;
  readonly elapsedMs: number;
  readonly opsPerSec: number;
  /** Per-operation latency of the operations completed inside the window, in ms. */
  readonly latencyMs: LatencySummary;
}

/**
 * Runs the loops: warm-up, then a measured window that counts completions between its
 * opening and closing instants. The loops never pause at the switch, so the window sees a
 * steady state; operations in flight when it closes finish but are not counted.
 */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  let phase: "warmup" | "measure" | "done" = "warmup";
  const start = performance.now();
  let windowStart = Number.POSITIVE_INFINITY;
  let windowEnd = Number.POSITIVE_INFINITY;
  let warmOps = 0;
  let ops = 0;
  const latency = new Samples();
  let failure: unknown;

  const openWindow = (now: number) => {
    phase = "measure";
    windowStart = now;
    o.onWindow?.(true);
  };
  const closeWindow = (now: number) => {
    if (phase === "done") return;
    if (phase === "measure") o.onWindow?.(false);
    phase = "done";
    windowEnd = now;
  };
  if (o.warmupMs <= 0) openWindow(start);

  const onAbort = () => closeWindow(performance.now());
  o.signal?.addEventListener("abort", onAbort, { once: true });
  const ticker = setInterval(() => {
    if (phase === "done") return;
    const now = performance.now();
    o.onProgress?.(
      phase === "warmup"
        ? { phase, elapsedMs: now - start, ops: warmOps }
        : { phase, elapsedMs: now - windowStart, ops },
    );
  }, 1000);
  ticker.unref();

  // Read through a function: TypeScript would otherwise keep `phase` narrowed across awaits.
  const currentPhase = () => phase;
  const loop = async (w: number): Promise<void> => {
    let seq = 0;
    while (phase !== "done") {
      const t0 = performance.now();
      try {
        await o.op(w, seq++);
      } catch (err) {
        failure ??= err;
        closeWindow(performance.now());
        return;
      }
      const t1 = performance.now();
      const p = currentPhase();
      if (p === "warmup") {
        warmOps++;
        if (t1 - start >= o.warmupMs) openWindow(t1);
      } else if (p === "measure") {
        ops++;
        latency.push(t1 - t0);
        if (o.maxOps !== undefined ? ops >= o.maxOps : t1 - windowStart >= o.durationMs) closeWindow(t1);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.writers }, (_, w) => loop(w)));
  } finally {
    clearInterval(ticker);
    o.signal?.removeEventListener("abort", onAbort);
  }
  if (failure !== undefined) throw failure;
  o.signal?.throwIfAborted();
  const elapsedMs = windowEnd - windowStart;
  return {
    writers: o.writers,
    ops,
    elapsedMs,
    opsPerSec: elapsedMs > 0 ? (ops * 1000) / elapsedMs : Number.NaN,
    latencyMs: summarize(latency.view()),
  };
}
