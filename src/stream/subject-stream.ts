import type { Event, Subject, Topic } from "../state/events/index.js";
import type { Index } from "../state/index.js";
import { Deque } from "./deque.js";

/** One commit's events for one subject. Shared by every subscriber of the subject. */
/**
 * Shared by every reader of the subject: `frame` and `bytes` are caches filled by the first
 * reader that needs them (derived from `events`, the same for every reader), nothing else
 * is ever written.
 */
export interface StreamNode {
  readonly index: Index;
  readonly events: readonly Event[];
  /**
   * The node as an events frame, made by the first reader that sends it whole and shared
   * by the others: no frame object per subscriber on the dispatch path.
   */
  frame?: { readonly kind: "events"; readonly index: Index; readonly events: readonly Event[] };
  /** Estimated bytes of the events (`estimateBytes`), computed when a catch-up first needs it. */
  bytes?: number;
}

/** Something waiting for a stream to grow. */
export interface Waiter {
  wake(): void;
}

/**
 * The events of one subject (a key, a prefix, or the wildcard) that are still in the topic
 * history, in index order. Subscribers of the subject hold a cursor (a sequence number)
 * into it; publishing appends one node per commit and subject, never per subscriber.
 */
export class SubjectStream {
  readonly nodes = new Deque<StreamNode>();
  /** The stream holds every matching commit with an index above this one. */
  coveredFrom: number;
  readonly subscribers = new Set<object>();
  private readonly waiters = new Set<Waiter>();
  private lastConcat: { from: number; to: number; base: number; events: readonly Event[] } | undefined;
  /** Set when the last subscriber left; history entries may still point here. */
  dead = false;

  constructor(
    /** Cache and lookup key: topic, kind and subject. */
    readonly id: string,
    readonly topic: Topic,
    readonly subject: Subject,
    coveredFrom: number,
  ) {
    this.coveredFrom = coveredFrom;
  }

  append(node: StreamNode): void {
    this.nodes.push(node);
    if (this.waiters.size > 0) {
      for (const w of this.waiters) w.wake();
      this.waiters.clear();
    }
  }

  /**
   * The events of nodes [from, to) in one array. Readers that lag by the same amount ask
   * for the same range, so the last one is kept: one array per subject, not per reader.
   */
  concat(from: number, to: number): readonly Event[] {
    const c = this.lastConcat;
    if (c !== undefined && c.from === from && c.to === to && c.base === this.nodes.base) return c.events;
    const all: Event[] = [];
    for (let s = from; s < to; s++) for (const e of this.nodes.at(s)!.events) all.push(e);
    this.lastConcat = { from, to, base: this.nodes.base, events: all };
    return all;
  }

  /** Drops the oldest node if it belongs to the commit leaving the history. */
  evict(index: number): void {
    const first = this.nodes.first();
    if (first !== undefined && first.index === index) this.nodes.shift();
    if (index > this.coveredFrom) this.coveredFrom = index;
  }

  /** Sequence number of the first node with an index above `index`. */
  seqAfter(index: number): number {
    return this.nodes.search((n) => n.index > index);
  }

  addWaiter(w: Waiter): void {
    this.waiters.add(w);
  }

  removeWaiter(w: Waiter): void {
    this.waiters.delete(w);
  }
}
