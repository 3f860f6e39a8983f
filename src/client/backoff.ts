/** How retries of a broken stream are spaced. */
export interface BackoffPolicy {
  /** Delay before the second retry, in ms; the first retry is immediate. */
  readonly initialMs: number;
  /** Longest delay, in ms. */
  readonly maxMs: number;
  /** Growth per failure. */
  readonly multiplier: number;
  /**
   * Fraction of the delay that is random, in [0, 1]: the delay lies in
   * [base × (1 − jitter), base], so jittered delays never pass `maxMs`.
   */
  readonly jitter: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 200, maxMs: 60_000, multiplier: 2, jitter: 0.2 };

/** Consecutive failures and when the next attempt may start (ms on the caller's clock). */
export interface BackoffState {
  readonly failures: number;
  readonly retryAt: number;
}

export const INITIAL_BACKOFF: BackoffState = { failures: 0, retryAt: 0 };

/**
 * The delay after the `failures`-th consecutive failure: 0 after the first, then
 * `initialMs` doubling (by `multiplier`) up to `maxMs`, less up to `jitter` of it.
 * `random` is in [0, 1).
 */
export function backoffDelay(
  failures: number,
  random: number,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
): number {
  if (failures <= 1) return 0;
  // Cap the exponent first so that long outages cannot overflow to Infinity.
  const steps = Math.min(failures - 2, 1024);
  const base = Math.min(policy.maxMs, policy.initialMs * policy.multiplier ** steps);
  const r = Math.min(Math.max(random, 0), 1);
  return Math.round(base * (1 - policy.jitter * r));
}

/** A failure at `now`: one more consecutive failure, and the time the next attempt may start. */
export function backoffFailure(
  state: BackoffState,
  now: number,
  random: number,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
): BackoffState {
  const failures = state.failures + 1;
  return { failures, retryAt: now + backoffDelay(failures, random, policy) };
}

/** A success (the stream delivered a frame): the next failure retries at once again. */
export function backoffSuccess(): BackoffState {
  return INITIAL_BACKOFF;
}

/** Rejects a policy that would spin or never retry. */
export function validatePolicy(policy: BackoffPolicy): BackoffPolicy {
  const ok =
    Number.isFinite(policy.initialMs) &&
    policy.initialMs > 0 &&
    Number.isFinite(policy.maxMs) &&
    policy.maxMs >= policy.initialMs &&
    policy.multiplier >= 1 &&
    policy.jitter >= 0 &&
    policy.jitter <= 1;
  if (!ok) throw new RangeError(`invalid backoff policy ${JSON.stringify(policy)}`);
  return policy;
}
