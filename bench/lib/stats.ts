/*
 * Small numeric helpers for benchmark output: percentiles over samples, and the formatting
 * of rates, durations and plain-text tables.
 */

/** Latency summary in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

/** The p-th percentile (0..100) of ascending-sorted samples, nearest-rank; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Sorts a copy of the samples and summarises them. */
export function summarize(samples: ArrayLike<number>): LatencySummary {
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length === 0 ? Number.NaN : sorted[sorted.length - 1]!,
  };
}

/** Median of samples (for repeated rounds of a micro-benchmark). */
export function median(samples: readonly number[]): number {
  const s = [...samples].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** An append-only buffer of float samples that does not box numbers. */
export class Samples {
  private buf = new Float64Array(1024);
  private n = 0;

  push(v: number): void {
    if (this.n === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.n++] = v;
  }

  get length(): number {
    return this.n;
  }

  clear(): void {
    this.n = 0;
  }

  view(): Float64Array {
    return this.buf.subarray(0, this.n);
  }
}

const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** 12345.6 → "12,346". */
export function fmtInt(n: number): string {
  return Number.isFinite(n) ? intFmt.format(n) : "-";
}

/** A number with `digits` decimals, or "-" when not finite. */
export function fmtFixed(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "-";
}

/** A ratio: "12.3x". */
export function fmtRatio(n: number): string {
  if (!Number.isFinite(n)) return "-";
  return `${n >= 10 ? n.toFixed(1) : n.toFixed(2)}x`;
}

/** Milliseconds with a unit that keeps 3 significant-ish digits: "850 ns", "1.24 µs", "3.1 ms". */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  if (ms < 0.001) return `${(ms * 1e6).toFixed(0)} ns`;
  if (ms < 1) return `${(ms * 1e3).toFixed(ms < 0.01 ? 2 : 1)} µs`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export type Align = "left" | "right";

/**
 * Renders rows as a Markdown table whose columns are padded to line up in a terminal too;
 * the same text goes to the console and into docs.
 */
export function table(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  align?: Align[],
): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const al = (i: number): Align => align?.[i] ?? (i === 0 ? "left" : "right");
  const cell = (s: string, i: number) => (al(i) === "left" ? s.padEnd(widths[i]!) : s.padStart(widths[i]!));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => cell(c, i)).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (al(i) === "left" ? `:${"-".repeat(w + 1)}` : `${"-".repeat(w + 1)}:`)).join("|")}|`;
  return [line(header), rule, ...rows.map((r) => line(header.map((_, i) => r[i] ?? "")))].join("\n");
}

/**
 * Groups event times (ms, ascending) into bursts: a gap longer than `gapMs` starts a new one.
 * Slow puts that come in a few bursts at a steady spacing point at something periodic on the
 * machine, not at the code under test.
 */
export function bursts(times: readonly number[], gapMs: number): { count: number; medianSpacingMs: number } {
  if (times.length === 0) return { count: 0, medianSpacingMs: Number.NaN };
  const starts = [times[0]!];
  for (let i = 1; i < times.length; i++) if (times[i]! - times[i - 1]! > gapMs) starts.push(times[i]!);
  const spacing = starts.slice(1).map((t, i) => t - starts[i]!);
  return { count: starts.length, medianSpacingMs: spacing.length > 0 ? median(spacing) : Number.NaN };
}
