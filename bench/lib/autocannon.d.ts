/*
 * The part of autocannon's programmatic API (v9) the `http` suite uses; the package ships no
 * types and @types/autocannon is not a dependency.
 */
declare module "autocannon" {
  namespace autocannon {
    interface Options {
      url: string;
      connections?: number;
      duration?: number;
      pipelining?: number;
      method?: string;
      headers?: Record<string, string>;
      body?: string | Buffer;
      timeout?: number;
      workers?: number;
      /** A run before the measured one, on the same connections' settings; not counted. */
      warmup?: { connections?: number; duration?: number };
    }

    /** Percentiles and moments of one measure (latency in ms, requests and bytes per second). */
    interface Histogram {
      average: number;
      mean: number;
      stddev: number;
      min: number;
      max: number;
      total: number;
      p50: number;
      p90: number;
      p97_5: number;
      p99: number;
      p99_9: number;
    }

    interface Result {
      url: string;
      connections: number;
      duration: number;
      errors: number;
      timeouts: number;
      non2xx: number;
      resets: number;
      "2xx": number;
      latency: Histogram & { totalCount: number };
      requests: Histogram & { sent: number };
      throughput: Histogram;
      start: Date;
      finish: Date;
    }

    /** A running test: a thenable of its result that also emits `tick` once a second. */
    interface Tracker extends PromiseLike<Result> {
      on(event: "tick", listener: (t: { counter: number; bytes: number }) => void): this;
      stop(): void;
    }
  }

  function autocannon(opts: autocannon.Options): autocannon.Tracker;
  export default autocannon;
}
