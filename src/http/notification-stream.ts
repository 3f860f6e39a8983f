import type { Subscription } from "../stream/index.js";
import { closedEvent, closeReason, type FrameLabels, pumpFrames } from "./sse-events.js";
import type { SseWriter } from "./sse-writer.js";

/** Why a channel ended, for its `closed` event; absent when the client went away. */
export interface ChannelCause {
  readonly reason: string;
  readonly error?: unknown;
}

/** A subscription of a channel: being opened (`opening`), then running (`sub`). */
interface Member {
  opening?: Promise<void>;
  sub?: Subscription;
}

/**
 * One open notification channel: its subscriptions' frames multiplexed into one event
 * stream, each event labelled with its subscription's id. A subscription that ends with an
 * error (its token's rules changed, the server shuts down) ends the channel, with a `closed`
 * event; one removed by the client just stops. Closing unsubscribes everything and calls
 * `onClose` once, which gives the channel's quota back.
 */
export class LiveChannel {
  private readonly members = new Map<string, Member>();
  private closedFlag = false;
  private timer: NodeJS.Timeout | undefined;
  private resolveDone!: () => void;
  /** Settles when the channel has closed. */
  readonly done = new Promise<void>((resolve) => {
    this.resolveDone = resolve;
  });

  constructor(
    readonly id: string,
    /** When it expires, on the registry's clock. */
    readonly expiresAt: number,
    private readonly writer: SseWriter,
    private readonly onClose: (ch: LiveChannel) => void,
  ) {}

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Number of subscriptions held (opening or running). */
  get size(): number {
    return this.members.size;
  }

  /** Whether the channel holds `sid` (opening or running); the promise settles once it runs. */
  pending(sid: string): Promise<void> | undefined {
    const m = this.members.get(sid);
    return m ? (m.opening ?? Promise.resolve()) : undefined;
  }

  /**
   * Adds subscription `sid`, opened by `open`; resolves once it runs. If opening fails, the
   * subscription is forgotten (`onFail` gives its quota back) and the error is thrown.
   */
  add(sid: string, open: () => Promise<Subscription>, onFail: () => void): Promise<void> {
    const member: Member = {};
    this.members.set(sid, member);
    member.opening = (async () => {
      let sub: Subscription;
      try {
        sub = await open();
      } catch (err) {
        if (this.members.get(sid) === member) {
          this.members.delete(sid);
          onFail();
        }
        throw err;
      }
      member.opening = undefined;
      // Removed, or the channel closed, while it opened.
      if (this.closedFlag || this.members.get(sid) !== member) sub.unsubscribe();
      else this.run(sid, member, sub);
    })();
    return member.opening;
  }

  /** Starts pumping an already open subscription. */
  start(sid: string, sub: Subscription): void {
    const member: Member = {};
    this.members.set(sid, member);
    this.run(sid, member, sub);
  }

  private run(sid: string, member: Member, sub: Subscription): void {
    member.sub = sub;
    const labels: FrameLabels = { subscription: sid, resumable: false };
    void pumpFrames(sub, this.writer, labels).then((err) => {
      if (this.members.get(sid) === member) this.members.delete(sid);
      if (err !== undefined) this.close({ reason: closeReason(err), error: err });
      else if (this.writer.closed) this.close();
    });
  }

  /** Stops subscription `sid` (the client removed it). */
  remove(sid: string): void {
    const m = this.members.get(sid);
    if (!m) return;
    this.members.delete(sid);
    m.sub?.unsubscribe();
  }

  /** Calls `onDue` in `inMs` (the owner closes expired channels then, and re-arms if its clock says it is early). */
  armExpiry(inMs: number, onDue: () => void): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(onDue, Math.max(1, Math.min(inMs, 2 ** 31 - 1)));
    this.timer.unref();
  }

  /** Ends the channel: a `closed` event with `cause` (none if the client went away), then the end. */
  close(cause?: ChannelCause): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    if (this.timer) clearTimeout(this.timer);
    for (const m of this.members.values()) m.sub?.unsubscribe();
    this.members.clear();
    this.writer.end(cause ? closedEvent(cause, { resumable: false }) : undefined);
    this.onClose(this);
    this.resolveDone();
  }
}
