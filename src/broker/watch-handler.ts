import * as grpc from "@grpc/grpc-js";
import type { SubscribeRequest__Output } from "../generated/sluice/v1/SubscribeRequest.js";
import type { WatchRequest__Output } from "../generated/sluice/v1/WatchRequest.js";
import { type WatchClosedStatus, WatchResponseBuilder } from "../proto/index.js";
import { StoreClosedError } from "../state/index.js";
import { ShuttingDownError, type Subscription } from "../stream/index.js";
import type { ConnectionLimit } from "./connection-limit.js";
import { type BrokerDeps, metadataToken } from "./context.js";
import { InvalidArgumentError } from "./errors.js";
import { openSubscription } from "./open-subscription.js";
import { statusFields, toGrpcStatus } from "./status.js";

/** Frames one subscription may add to one flush before the others get their turn. */
const FRAMES_PER_TURN = 64;
/**
 * Frame bytes one flush collects at most: the rest waits for the next flush (and, once the
 * stream's write buffer is full, for 'drain'), so that a burst of snapshots is not all copied
 * into messages at once whatever the client's speed.
 */
const FLUSH_BYTES = 4 * 1024 * 1024;

const CANCELLED: WatchClosedStatus = {
  code: grpc.status.CANCELLED,
  message: "cancelled by the client",
  error: "",
};

/** One subscription of a Watch stream. */
interface Entry {
  readonly id: number;
  sub: Subscription | undefined;
  /** In the stream's ready list. */
  queued: boolean;
  /** Ended (cancelled, closed or the stream went away): nothing more is sent for it. */
  gone: boolean;
  /** Counted against the connection's limit. */
  counted: boolean;
  /** Aborts the wait for an index ahead of the store. */
  abort: AbortController | undefined;
  /** The subscription's `notify` callback, made once. */
  readonly wake: () => void;
}

/**
 * Watch: many subscriptions on one bidirectional stream. Each subscription is the same
 * ACL-filtered {@link Subscription} that Subscribe streams; instead of a loop and a promise
 * per frame, a woken subscription joins the stream's ready list, and one flush per event-loop
 * turn polls every ready subscription and writes what they have as one WatchResponse, a frame
 * that several of them share going once with all their ids. Back-pressure pauses the
 * flushes (subscriptions wait in the publisher's history, as a slow Subscribe stream does).
 */
export function makeWatchHandler(deps: BrokerDeps, limit: ConnectionLimit) {
  const waitMs = deps.indexAheadWaitMs ?? 3000;
  const open = new Set<WatchStream>();
  return {
    handler: (call: grpc.ServerDuplexStream<WatchRequest__Output, Buffer>): void => {
      const w = new WatchStream(deps, limit, waitMs, call, () => open.delete(w));
      open.add(w);
    },
    /**
     * Ends every open Watch stream with UNAVAILABLE (the server is stopping), after the closed
     * frames of its subscriptions (the publisher, shut down first, has closed them): also a
     * stream with no subscription, which would otherwise wait for the grace period.
     */
    shutdown(): void {
      for (const w of [...open]) w.end(new ShuttingDownError());
    },
  };
}

class WatchStream {
  private readonly entries = new Map<number, Entry>();
  private ready: Entry[] = [];
  private spare: Entry[] = [];
  private scheduled = false;
  private paused = false;
  private ended = false;
  /** Set when the server is going away: the stream ends with it after the next flush. */
  private endError: unknown;
  private ending = false;
  private readonly out = new WatchResponseBuilder();
  private readonly peer: string;
  private readonly streamToken: string | undefined;
  private readonly flushNow = () => this.flush();

  constructor(
    private readonly deps: BrokerDeps,
    private readonly limit: ConnectionLimit,
    private readonly waitMs: number,
    private readonly call: grpc.ServerDuplexStream<WatchRequest__Output, Buffer>,
    private readonly onEnded: () => void,
  ) {
    this.peer = call.getPeer();
    this.streamToken = metadataToken(call.metadata);
    call.on("data", (req: WatchRequest__Output) => this.onRequest(req));
    // Half-close: the client wants no more; every subscription ends and so does the stream.
    call.on("end", () => {
      if (this.ended) return;
      this.teardown();
      call.end();
    });
    call.on("cancelled", () => this.teardown());
    call.on("error", () => this.teardown());
    call.on("drain", () => {
      this.paused = false;
      if (this.ready.length > 0 || !this.out.empty) this.schedule();
    });
  }

  private onRequest(req: WatchRequest__Output): void {
    if (this.ended) return;
    switch (req.request) {
      case "open": {
        const id = Number(req.open?.id ?? 0);
        if (!(id > 0) || !Number.isSafeInteger(id)) {
          this.fail(new InvalidArgumentError("open.id", "must be above 0 and below 2^53"));
          return;
        }
        if (this.entries.has(id)) {
          this.fail(new InvalidArgumentError("open.id", `${id} is already open on this stream`));
          return;
        }
        const entry: Entry = {
          id,
          sub: undefined,
          queued: false,
          gone: false,
          counted: false,
          abort: undefined,
          wake: () => this.enqueue(entry),
        };
        this.entries.set(id, entry);
        void this.open(entry, req.open?.subscribe ?? null);
        return;
      }
      case "cancel": {
        const entry = this.entries.get(Number(req.cancel));
        // Unknown: already closed (its closed frame is on its way) or never opened.
        if (entry === undefined) return;
        this.drop(entry);
        this.out.addClosed(entry.id, CANCELLED);
        this.schedule();
        return;
      }
      default:
        this.fail(new InvalidArgumentError("request", "one of open or cancel is required"));
    }
  }

  private async open(entry: Entry, req: SubscribeRequest__Output | null): Promise<void> {
    try {
      // Counted from the start, while it waits for its token or index too: a client cannot
      // hold more pending opens than the limit allows open ones.
      this.limit.acquire(this.peer);
      entry.counted = true;
      if (req === null) throw new InvalidArgumentError("open.subscribe", "required");
      const sub = await openSubscription(this.deps, req, req.token || this.streamToken, this.waitMs, () => {
        entry.abort = new AbortController();
        // Cancelled while its token was resolved: no wait at all.
        if (entry.gone) entry.abort.abort();
        return entry.abort.signal;
      });
      entry.abort = undefined;
      if (entry.gone) {
        sub.unsubscribe();
        return;
      }
      entry.sub = sub;
      this.enqueue(entry);
    } catch (err) {
      if (!entry.gone) this.closeWith(entry, err);
    }
  }

  private enqueue(entry: Entry): void {
    if (entry.queued || entry.gone) return;
    entry.queued = true;
    this.ready.push(entry);
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.paused || this.ended) return;
    this.scheduled = true;
    setImmediate(this.flushNow);
  }

  /** Polls every ready subscription and writes what they have. */
  private flush(): void {
    this.scheduled = false;
    // Paused by back-pressure; unless the stream is ending: then what is ready still goes.
    if (this.ended || (this.paused && !this.ending)) return;
    const batch = this.ready;
    this.ready = this.spare;
    const now = this.deps.publisher.now();
    const out = this.out;
    for (const e of batch) {
      if (out.bytes >= FLUSH_BYTES && !this.ending) {
        // Full: this one (still queued) and the rest go in a later flush.
        this.ready.push(e);
        continue;
      }
      e.queued = false;
      const sub = e.sub;
      if (e.gone || sub === undefined) continue;
      let n = 0;
      let pos = -1;
      try {
        while (n < FRAMES_PER_TURN) {
          const f = sub.poll(now);
          if (f === undefined) break;
          pos = out.add(e.id, f, pos);
          n++;
        }
      } catch (err) {
        this.closeWith(e, err);
        continue;
      }
      if (n === FRAMES_PER_TURN) {
        // More to come: after the others have had their turn.
        e.queued = true;
        this.ready.push(e);
      } else sub.notify(e.wake);
    }
    batch.length = 0;
    this.spare = batch;
    if (this.ending) {
      // Every subscription still open (one waiting for its index or its token, say) ends
      // with the stream's status, so that each id has its closed frame.
      for (const e of this.entries.values()) this.out.addClosed(e.id, statusFields(this.endError));
    }
    if (!out.empty) {
      for (const msg of out.take()) if (!this.call.write(msg)) this.paused = true;
    }
    if (this.ending) {
      this.teardown();
      this.call.emit("error", toGrpcStatus(this.endError));
      return;
    }
    if (this.ready.length > 0) this.schedule();
  }

  /** Ends one subscription with the status Subscribe would have ended with. */
  private closeWith(entry: Entry, err: unknown): void {
    this.drop(entry);
    const closed = statusFields(err);
    this.out.addClosed(entry.id, closed);
    // The server is going away: the whole stream ends UNAVAILABLE after this flush. (Not for
    // every UNAVAILABLE: a store that failed is this subscription's end, not the stream's.)
    if ((err instanceof ShuttingDownError || err instanceof StoreClosedError) && !this.ending) {
      this.ending = true;
      this.endError = err;
    }
    this.schedule();
  }

  /** Forgets a subscription: unsubscribes it and frees its slot and id. */
  private drop(entry: Entry): void {
    entry.gone = true;
    this.entries.delete(entry.id);
    entry.abort?.abort();
    entry.sub?.unsubscribe();
    if (entry.counted) {
      entry.counted = false;
      this.limit.release(this.peer);
    }
  }

  /** A protocol error: the whole stream ends with it, and nothing more is sent. */
  private fail(err: Error): void {
    this.teardown();
    this.call.emit("error", toGrpcStatus(err));
  }

  /**
   * Ends the stream with the status of `err`, after writing what its subscriptions have
   * ready (their closed frames, when the publisher has just closed them).
   */
  end(err: Error): void {
    if (this.ended) return;
    if (!this.ending) {
      this.ending = true;
      this.endError = err;
    }
    this.flush();
  }

  private teardown(): void {
    if (this.ended) return;
    this.ended = true;
    for (const e of this.entries.values()) this.drop(e);
    this.ready.length = 0;
    this.onEnded();
  }
}
