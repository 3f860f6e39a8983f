/*
 * A latency histogram that many processes fill and one merges: microsecond buckets, exact
 * below 2,048 µs, then 128 buckets per doubling (0.55 % wide) up to ~2 hours. Plain arrays
 * of counts, so it crosses an IPC channel as JSON and merges by addition.
 */
import type { LatencySummary } from "./stats.js";

const LINEAR = 2048;
const PER_DOUBLING = 128;
const BUCKETS = LINEAR + PER_DOUBLING * 22;

function bucketOf(us: number): number {
  if (us < LINEAR) return us < 0 ? 0 : Math.floor(us);
  const i = LINEAR + Math.floor(Math.log2(us / LINEAR) * PER_DOUBLING);
  return i < BUCKETS ? i : BUCKETS - 1;
}

/** The middle of a bucket, in µs. */
function midpointOf(i: number): number {
  if (i < LINEAR) return i + 0.5;
  return LINEAR * 2 ** ((i - LINEAR + 0.5) / PER_DOUBLING);
}

/** What a histogram sends over IPC: non-empty buckets only. */
export interface HistogramData {
  readonly buckets: readonly [index: number, count: number][];
  readonly count: number;
  /** Sum and maximum of the recorded values, in µs. */
  readonly sumUs: number;
  readonly maxUs: number;
}

export class Histogram {
  private counts = new Float64Array(BUCKETS);
  count = 0;
  sumUs = 0;
  maxUs = 0;

  /** Records one value in microseconds. */
  record(us: number): void {
    this.counts[bucketOf(us)]!++;
    this.count++;
    this.sumUs += us;
    if (us > this.maxUs) this.maxUs = us;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sumUs = 0;
    this.maxUs = 0;
  }

  toData(): HistogramData {
    const buckets: [number, number][] = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i]! > 0) buckets.push([i, this.counts[i]!]);
    return { buckets, count: this.count, sumUs: this.sumUs, maxUs: this.maxUs };
  }

  merge(d: HistogramData): void {
    for (const [i, n] of d.buckets) this.counts[i]! += n;
    this.count += d.count;
    this.sumUs += d.sumUs;
    if (d.maxUs > this.maxUs) this.maxUs = d.maxUs;
  }

  /** The p-th percentile (0..100) in µs, nearest rank on buckets; NaN when empty. */
  percentileUs(p: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return Math.min(midpointOf(i), this.maxUs);
    }
    return this.maxUs;
  }

  /** Summary in milliseconds, in the shape the other suites use. */
  summaryMs(): LatencySummary {
    return {
      count: this.count,
      mean: this.count === 0 ? Number.NaN : this.sumUs / this.count / 1000,
      p50: this.percentileUs(50) / 1000,
      p90: this.percentileUs(90) / 1000,
      p99: this.percentileUs(99) / 1000,
      max: this.count === 0 ? Number.NaN : this.maxUs / 1000,
    };
  }
}
