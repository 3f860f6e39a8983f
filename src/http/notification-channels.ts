import { BadRequestError, ChannelOwnerError, NotFoundError, QuotaExceededError } from "./errors.js";

/** Per-token quotas and lifetimes of notification channels. */
export interface ChannelLimits {
  /** Open channels per token (default 16). */
  readonly maxChannelsPerToken: number;
  /** Subscriptions per token, across its channels (default 256). */
  readonly maxSubscriptionsPerToken: number;
  /** Lifetime of a channel whose request names none (default 24 h). */
  readonly defaultExpiresMs: number;
  /** Longest lifetime a request may ask for (default 24 h). */
  readonly maxExpiresMs: number;
}

const DAY_MS = 24 * 60 * 60 * 1000;

export const DEFAULT_CHANNEL_LIMITS: ChannelLimits = {
  maxChannelsPerToken: 16,
  maxSubscriptionsPerToken: 256,
  defaultExpiresMs: DAY_MS,
  maxExpiresMs: DAY_MS,
};

/** What the registry knows of one channel. */
export interface ChannelRecord {
  readonly id: string;
  /** The key of the token that opened it (the resolved secret; "anonymous" without one). */
  readonly owner: string;
  /** When it expires, on the registry's clock (ms, monotonic). */
  readonly expiresAt: number;
  /** Ids of its subscriptions (`kv:key:a`). */
  readonly subscriptions: ReadonlySet<string>;
}

interface MutableRecord extends ChannelRecord {
  readonly subscriptions: Set<string>;
}

interface Usage {
  channels: number;
  subscriptions: number;
}

/**
 * The bookkeeping of notification channels: which exist, who owns them, when they expire,
 * which subscriptions each holds, and what every token uses of its quotas. Pure: time comes
 * in as `now`, ids from the caller, and nothing here opens or closes a stream (the routes
 * do, and tell the registry).
 */
export class ChannelRegistry {
  readonly limits: ChannelLimits;
  private readonly channels = new Map<string, MutableRecord>();
  private readonly usage = new Map<string, Usage>();

  constructor(limits: Partial<ChannelLimits> = {}) {
    this.limits = { ...DEFAULT_CHANNEL_LIMITS, ...limits };
  }

  /**
   * A request's lifetime in ms: the default when absent; refused (BadRequestError on
   * `field`) when not positive or above the maximum.
   */
  lifetime(requestedMs: number | undefined, field = "expiresIn"): number {
    if (requestedMs === undefined) return this.limits.defaultExpiresMs;
    if (!(requestedMs > 0)) throw new BadRequestError(field, "must be a positive duration");
    if (requestedMs > this.limits.maxExpiresMs)
      throw new BadRequestError(field, `must be at most ${this.limits.maxExpiresMs} ms`);
    return requestedMs;
  }

  /**
   * Opens a channel for `owner` with the given subscriptions (duplicates count once), or
   * throws QuotaExceededError and records nothing.
   */
  open(
    id: string,
    owner: string,
    subscriptionIds: readonly string[],
    expiresMs: number,
    now: number,
  ): ChannelRecord {
    if (this.channels.has(id)) throw new Error(`channel id ${id} is taken`);
    const subs = new Set(subscriptionIds);
    const u = this.usageOf(owner);
    if (u.channels >= this.limits.maxChannelsPerToken)
      throw new QuotaExceededError("channels", this.limits.maxChannelsPerToken, u.channels);
    if (u.subscriptions + subs.size > this.limits.maxSubscriptionsPerToken)
      throw new QuotaExceededError("subscriptions", this.limits.maxSubscriptionsPerToken, u.subscriptions);
    const record: MutableRecord = { id, owner, expiresAt: now + expiresMs, subscriptions: subs };
    this.channels.set(id, record);
    u.channels++;
    u.subscriptions += subs.size;
    this.usage.set(owner, u);
    return record;
  }

  /**
   * The channel `id` for a change by `owner` at `now`: NotFoundError when there is none (or
   * it has expired), ChannelOwnerError when another token opened it.
   */
  lookup(id: string, owner: string, now: number): ChannelRecord {
    const record = this.channels.get(id);
    if (!record || now >= record.expiresAt) throw new NotFoundError("notification channel", id);
    if (record.owner !== owner) throw new ChannelOwnerError(id);
    return record;
  }

  /**
   * Adds a subscription to a channel: true when added, false when the channel had it already
   * (adding is idempotent). Throws QuotaExceededError, or NotFoundError for a channel gone.
   */
  add(id: string, subscriptionId: string): boolean {
    const record = this.channels.get(id);
    if (!record) throw new NotFoundError("notification channel", id);
    if (record.subscriptions.has(subscriptionId)) return false;
    const u = this.usageOf(record.owner);
    if (u.subscriptions >= this.limits.maxSubscriptionsPerToken)
      throw new QuotaExceededError("subscriptions", this.limits.maxSubscriptionsPerToken, u.subscriptions);
    record.subscriptions.add(subscriptionId);
    u.subscriptions++;
    return true;
  }

  /** Removes a subscription from a channel; false when the channel (still there or not) lacks it. */
  remove(id: string, subscriptionId: string): boolean {
    const record = this.channels.get(id);
    if (!record?.subscriptions.delete(subscriptionId)) return false;
    this.release(record.owner, 0, 1);
    return true;
  }

  /** Forgets a channel and gives its quota back; returns what it held (undefined if unknown). */
  close(id: string): ChannelRecord | undefined {
    const record = this.channels.get(id);
    if (!record) return undefined;
    this.channels.delete(id);
    this.release(record.owner, 1, record.subscriptions.size);
    return record;
  }

  /** Ids of the channels expired at `now`. */
  expired(now: number): string[] {
    const out: string[] = [];
    for (const r of this.channels.values()) if (now >= r.expiresAt) out.push(r.id);
    return out;
  }

  /** What `owner` uses of its quotas. */
  usageBy(owner: string): Readonly<Usage> {
    return { ...(this.usage.get(owner) ?? { channels: 0, subscriptions: 0 }) };
  }

  /** Number of open channels. */
  get size(): number {
    return this.channels.size;
  }

  /** Number of subscriptions across all channels. */
  get subscriptionCount(): number {
    let n = 0;
    for (const u of this.usage.values()) n += u.subscriptions;
    return n;
  }

  private usageOf(owner: string): Usage {
    return this.usage.get(owner) ?? { channels: 0, subscriptions: 0 };
  }

  private release(owner: string, channels: number, subscriptions: number): void {
    const u = this.usage.get(owner);
    if (!u) return;
    u.channels -= channels;
    u.subscriptions -= subscriptions;
    if (u.channels === 0 && u.subscriptions === 0) this.usage.delete(owner);
  }
}
