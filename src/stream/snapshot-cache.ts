import { LRUCache } from "lru-cache";
import type { Event } from "../state/events/index.js";
import type { Index } from "../state/index.js";

/** A built snapshot: the subject's events at one index. Never includes framing. */
export interface CachedSnapshot {
  readonly index: Index;
  readonly events: readonly Event[];
}

export interface SnapshotCacheOptions {
  /** How long a snapshot may be served after it was built (default 10 s). */
  readonly ttlMs?: number;
  /** Most snapshots kept (default 1,000). */
  readonly maxEntries?: number;
  /** Most events kept over all snapshots (default 1,000,000). */
  readonly maxEvents?: number;
}

/** Snapshots by stream id, bounded by count, events and age (lru-cache). */
export class SnapshotCache {
  private readonly lru: LRUCache<string, CachedSnapshot>;

  constructor(opts: SnapshotCacheOptions = {}, now: () => number = performance.now.bind(performance)) {
    this.lru = new LRUCache<string, CachedSnapshot>({
      max: opts.maxEntries ?? 1000,
      ttl: opts.ttlMs ?? 10_000,
      maxSize: opts.maxEvents ?? 1_000_000,
      sizeCalculation: (v) => v.events.length + 1,
      perf: { now },
    });
  }

  /** A cached snapshot no older than `minIndex`, if one is live. */
  get(id: string, minIndex: number): CachedSnapshot | undefined {
    const hit = this.lru.get(id);
    if (hit && hit.index < minIndex) {
      this.lru.delete(id);
      return undefined;
    }
    return hit;
  }

  set(id: string, snap: CachedSnapshot): void {
    this.lru.set(id, snap);
  }

  delete(id: string): void {
    this.lru.delete(id);
  }

  get size(): number {
    return this.lru.size;
  }
}
