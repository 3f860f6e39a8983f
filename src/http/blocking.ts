import { BadRequestError } from "./errors.js";
import { has, param, parseGoDuration, type QueryParams } from "./query-params.js";

/** Consul's blocking-query bounds: 5 minutes unless told, never more than 10. */
export const DEFAULT_WAIT_MS = 5 * 60_000;
export const MAX_WAIT_MS = 10 * 60_000;
/** Consul adds up to wait/16 of random jitter so that synchronized clients spread out. */
export const JITTER_FRACTION = 16;

/**
 * A read's blocking parameters. `minIndex` 0 means "answer at once"; otherwise the read
 * waits until its result's index differs from `minIndex` or `waitMs` runs out.
 */
export interface BlockingQuery {
  readonly minIndex: number;
  /** The wait, capped and with jitter added. */
  readonly waitMs: number;
}

/**
 * Reads `?index=` and `?wait=` as Consul does (`wait` is a Go duration; 0 or absent means the
 * default) and refuses malformed values with a 400. Also refuses `?stale` with `?consistent`.
 * `random` is in [0, 1) (Math.random; tests pass their own).
 */
export function parseBlocking(query: QueryParams, random: () => number): BlockingQuery {
  if (has(query, "stale") && has(query, "consistent")) {
    throw new BadRequestError("consistent", "cannot specify ?stale with ?consistent, conflicting semantics");
  }
  const rawIndex = param(query, "index");
  let minIndex = 0;
  if (rawIndex !== undefined && rawIndex !== "") {
    minIndex = /^\d+$/.test(rawIndex) ? Number(rawIndex) : Number.NaN;
    if (!Number.isSafeInteger(minIndex))
      throw new BadRequestError("index", `Invalid index: "${rawIndex}" (want a non-negative integer)`);
  }
  const rawWait = param(query, "wait");
  let waitMs = DEFAULT_WAIT_MS;
  if (rawWait !== undefined && rawWait !== "") {
    const ms = parseGoDuration(rawWait);
    if (ms === undefined || ms < 0)
      throw new BadRequestError(
        "wait",
        `Invalid wait time: "${rawWait}" (want a duration such as 30s or 5m)`,
      );
    if (ms > 0) waitMs = Math.min(ms, MAX_WAIT_MS);
  }
  return { minIndex, waitMs: waitMs + Math.floor(random() * (waitMs / JITTER_FRACTION)) };
}

/** Whether a result at `index` answers a query for `minIndex` now (changed, or index reset). */
export function answersNow(q: BlockingQuery, index: number): boolean {
  return q.minIndex === 0 || index !== q.minIndex;
}
