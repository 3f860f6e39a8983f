import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type BackoffState,
  backoffDelay,
  backoffFailure,
  backoffSuccess,
  DEFAULT_BACKOFF,
  INITIAL_BACKOFF,
} from "../../src/client/index.js";

/*
 * The retry spacing of views as a pure state machine: the clock and the randomness are
 * inputs, so no test sleeps.
 */

/** Fails `n` times in a row at `now` with a fixed random draw; returns each state. */
function failures(
  n: number,
  random: number,
  start: BackoffState = INITIAL_BACKOFF,
  now = 1_000,
): BackoffState[] {
  const out: BackoffState[] = [];
  let s = start;
  for (let i = 0; i < n; i++) {
    s = backoffFailure(s, now, random);
    out.push(s);
  }
  return out;
}

describe("backoff", () => {
  it("retries the first failure at once", () => {
    const s = backoffFailure(INITIAL_BACKOFF, 5_000, 0.99);
    expect(s).toEqual({ failures: 1, retryAt: 5_000 });
  });

  it("then waits 200 ms, doubling, up to 60 s (no jitter drawn)", () => {
    const delays = failures(14, 0).map((s) => s.retryAt - 1_000);
    expect(delays).toEqual([
      0, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 60_000, 60_000, 60_000, 60_000,
    ]);
  });

  it("keeps jittered delays within [80%, 100%] of the base and never above the cap", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 10_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (n, r) => {
          const base = Math.min(60_000, 200 * 2 ** Math.min(n - 2, 1024));
          const d = backoffDelay(n, r);
          expect(d).toBeGreaterThanOrEqual(Math.floor(base * (1 - DEFAULT_BACKOFF.jitter)));
          expect(d).toBeLessThanOrEqual(base);
          expect(d).toBeLessThanOrEqual(DEFAULT_BACKOFF.maxMs);
        },
      ),
    );
  });

  it("spreads retries: different draws give different delays", () => {
    expect(backoffDelay(3, 0)).toBe(400);
    expect(backoffDelay(3, 0.5)).toBe(360);
    expect(backoffDelay(3, 0.999)).toBe(320);
  });

  it("measures delays from the time of the failure it is given", () => {
    const s1 = backoffFailure(INITIAL_BACKOFF, 0, 0);
    const s2 = backoffFailure(s1, 10_000, 0);
    const s3 = backoffFailure(s2, 20_000, 0);
    expect([s1.retryAt, s2.retryAt, s3.retryAt]).toEqual([0, 10_200, 20_400]);
  });

  it("resets on success: the next failure retries at once and the growth starts over", () => {
    const deep = failures(20, 0).at(-1)!;
    expect(deep.retryAt - 1_000).toBe(60_000);
    const after = failures(3, 0, backoffSuccess(), 2_000).map((s) => s.retryAt - 2_000);
    expect(after).toEqual([0, 200, 400]);
  });

  it("survives very long outages without overflowing", () => {
    expect(backoffDelay(Number.MAX_SAFE_INTEGER, 0)).toBe(60_000);
    expect(backoffDelay(1e6, 0.5)).toBe(54_000);
  });

  it("follows a custom policy", () => {
    const policy = { initialMs: 10, maxMs: 35, multiplier: 3, jitter: 0 };
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, 0.7, policy))).toEqual([0, 10, 30, 35, 35]);
  });
});
