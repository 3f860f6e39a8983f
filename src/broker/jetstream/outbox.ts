import type { StateRoot } from "../../state/index.js";

/** One message of the feed, waiting to be published. */
export interface FeedMessage {
  /** The commit's index. */
  readonly index: number;
  /** 0 for the commit's log message, 1.. for its events in order. */
  readonly pos: number;
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: readonly (readonly [string, string])[];
  /** On a log message chosen as a snapshot point: the root right after the commit. */
  readonly root?: StateRoot;
}

/** Where the stream ends: the last message stored, as its headers name it. */
export interface StreamTail {
  /** The stream's last sequence number (0 for an empty stream). */
  readonly seq: number;
  /** Index and position of the last feed message (0, 0 when none). */
  readonly index: number;
  readonly pos: number;
}

/** A message handed out for publishing, with the stream sequence it must get. */
export interface Send {
  readonly msg: FeedMessage;
  /** The `expected-last-sequence` condition: the stream's last sequence before this message. */
  readonly expectLastSeq: number;
}

/**
 * The bridge's outbox, as a pure state machine: messages queue in commit order; `next()` hands
 * them out with consecutive expected-last-sequence conditions (so many can be in flight);
 * acknowledgements arrive in any order and retire the head in order. A failure pauses
 * sending until `resync(tail)` tells where the stream really ends: everything at or before
 * the tail is dropped (it is stored), the rest is sent again. So whatever fails, retries or
 * restarts, the stream holds each message once and in order.
 */
export class Outbox {
  private readonly queue: FeedMessage[] = [];
  private head = 0;
  /** Messages handed out and not yet acknowledged, from `head`. */
  private sent = 0;
  private readonly acks = new Set<FeedMessage>();
  /** The stream's last sequence as far as acknowledged messages tell. */
  private ackedSeq = 0;
  private synced = false;
  /** Index of the last commit whose log message is acknowledged. */
  ackedIndex = 0;

  /** Queues a commit's messages (log message first). */
  push(msgs: readonly FeedMessage[]): void {
    for (const m of msgs) this.queue.push(m);
  }

  /** Messages not yet acknowledged (queued or in flight). */
  get length(): number {
    return this.queue.length - this.head;
  }

  /** Whether sending may go on (synced and not paused by a failure). */
  get ready(): boolean {
    return this.synced;
  }

  /** The next message to send, or undefined (none queued, or paused until a resync). */
  next(): Send | undefined {
    if (!this.synced) return undefined;
    const i = this.head + this.sent;
    const msg = this.queue[i];
    if (!msg) return undefined;
    const send = { msg, expectLastSeq: this.ackedSeq + this.sent };
    this.sent++;
    return send;
  }

  /** A message was stored: the head retires as far as acknowledgements reach. */
  acked(msg: FeedMessage): void {
    this.acks.add(msg);
    while (this.head < this.queue.length && this.acks.has(this.queue[this.head]!)) {
      const m = this.queue[this.head]!;
      this.acks.delete(m);
      this.head++;
      this.sent--;
      this.ackedSeq++;
      if (m.pos === 0) this.ackedIndex = m.index;
    }
    this.compact();
  }

  /** A publish failed: stop sending until the stream's tail is known again. */
  failed(): void {
    this.synced = false;
  }

  /**
   * The stream ends at `tail` (read while no publish was in flight): drop every queued message at or before it, and send the rest
   * with conditions that follow `tail.seq`.
   */
  resync(tail: StreamTail): void {
    this.acks.clear();
    this.sent = 0;
    while (this.head < this.queue.length) {
      const m = this.queue[this.head]!;
      if (m.index > tail.index || (m.index === tail.index && m.pos > tail.pos)) break;
      this.head++;
      if (m.pos === 0) this.ackedIndex = m.index;
    }
    if (tail.index > this.ackedIndex) this.ackedIndex = tail.index;
    this.ackedSeq = tail.seq;
    this.synced = true;
    this.compact();
  }

  private compact(): void {
    if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }
}
