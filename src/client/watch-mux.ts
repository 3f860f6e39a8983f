import * as grpc from "@grpc/grpc-js";
import type { Event__Output } from "../generated/sluice/v1/Event.js";
import type { StateChangeSubscriptionClient } from "../generated/sluice/v1/StateChangeSubscription.js";
import type { SubscribeRequest as WireSubscribeRequest } from "../generated/sluice/v1/SubscribeRequest.js";
import type { WatchRequest } from "../generated/sluice/v1/WatchRequest.js";
import type { WatchResponse__Output } from "../generated/sluice/v1/WatchResponse.js";
import { errorFromStatus, errorFromWire, type SluiceError } from "./errors.js";

/*
 * The subscriptions of one SluiceClient share one Watch stream (as etcd's client shares a
 * watch stream between watchers): one HTTP/2 stream and one server-side stream however many
 * views are open, and a change that several views receive alike crosses the wire once.
 * The stream opens with the first subscription and is closed when the last one leaves; when
 * it fails (connection cut, server shutdown), every subscription on it fails with that status
 * and the next subscription opens a new stream.
 */

/** Messages queued for one subscription before the whole stream is paused (flow control). */
export const PAUSE_AT = 1024;

/** One subscription's queue: frames in order, then its end. */
class Sink implements AsyncIterator<Event__Output> {
  private readonly queue: Event__Output[] = [];
  private head = 0;
  private end: { error: SluiceError | undefined } | undefined;
  private waiting: ((r: IteratorResult<Event__Output>) => void) | undefined;
  private failWaiting: ((e: unknown) => void) | undefined;

  constructor(
    readonly id: number,
    private readonly onLeave: (sink: Sink) => void,
    private readonly onDrained: () => void,
  ) {}

  get backlog(): number {
    return this.queue.length - this.head;
  }

  push(m: Event__Output): void {
    if (this.end) return;
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      this.failWaiting = undefined;
      w({ value: m, done: false });
    } else this.queue.push(m);
  }

  /** Ends the subscription: with an error status, or quietly (undefined). */
  finish(error: SluiceError | undefined): void {
    if (this.end) return;
    this.end = { error };
    const w = this.waiting;
    const f = this.failWaiting;
    this.waiting = undefined;
    this.failWaiting = undefined;
    if (this.backlog > 0) return;
    if (error && f) f(error);
    else w?.({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<Event__Output>> {
    if (this.head < this.queue.length) {
      const value = this.queue[this.head++]!;
      if (this.head === this.queue.length) {
        this.queue.length = 0;
        this.head = 0;
        this.onDrained();
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.end) {
      return this.end.error
        ? Promise.reject(this.end.error)
        : Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.failWaiting = reject;
    });
  }

  return(): Promise<IteratorResult<Event__Output>> {
    this.leave();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** The consumer went away: cancel on the server (unless it already ended). */
  leave(): void {
    const ended = this.end !== undefined;
    this.finish(undefined);
    this.queue.length = 0;
    this.head = 0;
    if (!ended) this.onLeave(this);
    // Its backlog is gone: a stream paused for it may go on.
    else this.onDrained();
  }
}

/** One live Watch call and its subscriptions. */
interface Stream {
  readonly call: grpc.ClientDuplexStream<WatchRequest, WatchResponse__Output>;
  readonly sinks: Map<number, Sink>;
  paused: boolean;
}

/** The subscriptions of a client, multiplexed on one Watch stream at a time. */
export class WatchMux {
  private current: Stream | undefined;
  private nextId = 1;

  constructor(
    private readonly client: StateChangeSubscriptionClient,
    private readonly metadata: () => grpc.Metadata,
  ) {}

  /** Opens a subscription; its iterator yields the Subscribe-equivalent messages. */
  open(request: WireSubscribeRequest): AsyncIterator<Event__Output> & { leave(): void } {
    const s = this.current ?? this.start();
    const id = this.nextId++;
    const sink = new Sink(
      id,
      (gone) => this.cancel(s, gone),
      () => this.maybeResume(s),
    );
    s.sinks.set(id, sink);
    s.call.write({ open: { id, subscribe: request } });
    return sink;
  }

  private start(): Stream {
    const call = this.client.Watch(this.metadata());
    const s: Stream = { call, sinks: new Map(), paused: false };
    this.current = s;
    call.on("data", (m: WatchResponse__Output) => {
      for (const f of m.frames) {
        if (f.body === "closed") {
          const id = Number(f.ids[0]);
          const sink = s.sinks.get(id);
          if (sink === undefined) continue; // cancelled by us: the confirmation
          s.sinks.delete(id);
          const code = f.closed!.code;
          // The server is going away: subscriptions opened from now on go to a new stream
          // (this one is about to end), not to this one.
          if (code === grpc.status.UNAVAILABLE && this.current === s) this.current = undefined;
          sink.finish(code === grpc.status.CANCELLED ? undefined : errorFromWire(f.closed!));
          // No longer on the stream: its backlog no longer holds the others back.
          this.maybeResume(s);
          continue;
        }
        for (const raw of f.ids) {
          const sink = s.sinks.get(Number(raw));
          if (sink === undefined) continue;
          sink.push(f.event!);
          if (!s.paused && sink.backlog >= PAUSE_AT) {
            s.paused = true;
            call.pause();
          }
        }
      }
    });
    const fail = (err: unknown): void => {
      if (this.current === s) this.current = undefined;
      const e = errorFromStatus(err);
      for (const sink of s.sinks.values()) sink.finish(e);
      s.sinks.clear();
    };
    call.on("error", fail);
    call.on("end", () =>
      fail({ code: grpc.status.UNAVAILABLE, details: "the server ended the Watch stream" }),
    );
    return s;
  }

  private cancel(s: Stream, sink: Sink): void {
    if (s.sinks.get(sink.id) !== sink) return;
    s.sinks.delete(sink.id);
    if (s.sinks.size === 0) {
      // The last one: end the stream rather than keep an empty one open.
      if (this.current === s) this.current = undefined;
      s.call.cancel();
      return;
    }
    s.call.write({ cancel: sink.id });
    this.maybeResume(s);
  }

  private maybeResume(s: Stream): void {
    if (!s.paused) return;
    for (const sink of s.sinks.values()) if (sink.backlog >= PAUSE_AT) return;
    s.paused = false;
    s.call.resume();
  }

  /** Ends every subscription quietly and the stream. */
  close(): void {
    const s = this.current;
    this.current = undefined;
    if (!s) return;
    for (const sink of s.sinks.values()) sink.finish(undefined);
    s.sinks.clear();
    s.call.cancel();
  }
}
