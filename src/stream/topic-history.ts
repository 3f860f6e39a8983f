import type { Event } from "../state/events/index.js";
import type { Index } from "../state/index.js";
import { Deque } from "./deque.js";
import type { SubjectStream } from "./subject-stream.js";

/** One commit's events of one topic, as the history keeps them. */
export interface HistoryEntry {
  readonly index: Index;
  readonly events: readonly Event[];
  readonly bytes: number;
  /** Subject streams that hold a node for this entry (to drop it with the entry). */
  streams: SubjectStream[] | undefined;
}

export interface HistoryLimits {
  /** Most events kept per topic. */
  readonly maxEvents: number;
  /** Most (estimated) bytes kept per topic. */
  readonly maxBytes: number;
}

/** A rough size of an event in memory, for the byte bound. */
export function estimateBytes(e: Event): number {
  switch (e.topic) {
    case "KV":
      return 160 + e.subject.length * 2 + e.payload.entry.Value.byteLength;
    case "ServiceHealth": {
      let checks = 0;
      for (const c of e.payload.checks) checks += 200 + (c.Output.length + c.Notes.length) * 2;
      return 480 + e.subject.length * 2 + checks;
    }
    case "ServiceList":
      return 96 + e.subject.length * 2;
    default: {
      const never: never = e;
      return never;
    }
  }
}

/**
 * A topic's recent commits: a ring bounded by event count and bytes. It holds every commit
 * of the topic with an index above `coveredFrom`, so a subscriber can resume from any index
 * at or above it, whether or not anyone watched its subject meanwhile.
 */
export class TopicHistory {
  readonly entries = new Deque<HistoryEntry>();
  private events = 0;
  private bytes = 0;

  constructor(
    private readonly limits: HistoryLimits,
    /** The history holds every commit above this index. */
    public coveredFrom: number,
  ) {}

  get eventCount(): number {
    return this.events;
  }

  get byteCount(): number {
    return this.bytes;
  }

  /** Appends a commit's events and evicts the oldest entries beyond the bounds. */
  append(index: Index, events: readonly Event[]): HistoryEntry {
    let bytes = 0;
    for (const e of events) bytes += estimateBytes(e);
    const entry: HistoryEntry = { index, events, bytes, streams: undefined };
    this.entries.push(entry);
    this.events += events.length;
    this.bytes += bytes;
    while (
      this.entries.length > 1 &&
      (this.events > this.limits.maxEvents || this.bytes > this.limits.maxBytes)
    ) {
      this.evictOldest();
    }
    return entry;
  }

  private evictOldest(): void {
    const old = this.entries.shift();
    if (!old) return;
    this.events -= old.events.length;
    this.bytes -= old.bytes;
    this.coveredFrom = old.index;
    if (old.streams) for (const s of old.streams) s.evict(old.index);
  }

  /** Sequence number of the first entry with an index above `index`. */
  seqAfter(index: number): number {
    return this.entries.search((e) => e.index > index);
  }
}
