import type * as grpc from "@grpc/grpc-js";
import type { KVClient } from "../generated/sluice/v1/KV.js";
import type { KVWrite } from "../generated/sluice/v1/KVWrite.js";
import type { KVWriteRequest } from "../generated/sluice/v1/KVWriteRequest.js";
import type { KVWriteResponse__Output } from "../generated/sluice/v1/KVWriteResponse.js";
import {
  ClosedError,
  Code,
  errorFromStatus,
  errorFromWire,
  InvalidArgumentError,
  UnavailableError,
} from "./errors.js";
import type { KVDeleteOptions, KVPutOptions } from "./kv-api.js";
import { asIndex, type Index } from "./types.js";
import type { CallContext } from "./unary-call.js";

/** Writes go out in messages of about this many bytes at most (the server takes 4 MiB). */
const MESSAGE_BYTES = 1024 * 1024;
/** A write larger than this cannot go in a message the server accepts: refused here. */
const WRITE_BYTES_MAX = 3 * 1024 * 1024;
/** Bytes a write costs in a message besides its key and value (ids, tags, flags). */
const WRITE_OVERHEAD = 32;

/** One write from the call that made it to its result. */
interface Entry {
  readonly write: KVWrite;
  readonly bytes: number;
  readonly resolve: (index: Index) => void;
  readonly reject: (err: unknown) => void;
  readonly signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Settled (result, failure, abort or timeout): skipped if still queued, ignored if answered. */
  done: boolean;
}

const encoder = new TextEncoder();

/**
 * KV puts and deletes pipelined on one `KV.Write` stream: each is its own transaction with
 * its own commit index or error, as the unary call would give, and the writes of one stream
 * commit in the order they were made. The writes made in one event-loop turn go out
 * together, in messages of up to ~1 MiB. For a writer with many writes in flight: a unary
 * call costs a whole HTTP/2 stream each (~180 µs of client CPU with grpc-js), a write here a
 * few bytes of a message.
 *
 * The stream opens with the first write. If it fails (connection cut, server shutdown),
 * every write sent on it and not answered rejects with that status (its outcome is unknown,
 * as for a unary call cut off mid-way; the server applies no write of a stream it saw
 * cancelled that it had not started), and writes not sent yet go out on a new stream. Each
 * write has the client's call timeout (or its own `timeoutMs`): without a result by then it
 * rejects with DEADLINE_EXCEEDED and may still be applied, as a unary call's would. Aborting
 * its `signal` rejects it the same way; a write not sent yet is then never sent. `close()`
 * waits for the writes made before it and ends the stream.
 */
export class KVWriter {
  private call: grpc.ClientDuplexStream<KVWriteRequest, KVWriteResponse__Output> | undefined;
  /** Writes sent on the current stream and waiting for their result, by id. */
  private readonly sent = new Map<number, Entry>();
  /** Writes not sent yet, in order (a turn's worth, or more while the stream is full). */
  private queue: Entry[] = [];
  private scheduled = false;
  private blocked = false;
  private nextId = 1;
  private closing: Promise<void> | undefined;
  private cancelled: Error | undefined;

  constructor(
    private readonly ctx: CallContext,
    private readonly stub: KVClient,
    private readonly onClosed: (w: KVWriter) => void = () => {},
  ) {}

  /** Writes made and not settled yet (queued, or sent and waiting for their result). */
  get inFlight(): number {
    let queued = 0;
    for (const e of this.queue) if (!e.done) queued++;
    return this.sent.size + queued;
  }

  /** Sets `key`; resolves with the commit index (`CasFailedError` when `cas` does not hold). */
  put(key: string, value: string | Uint8Array, options: KVPutOptions = {}): Promise<Index> {
    const v = typeof value === "string" ? encoder.encode(value) : value;
    return this.submit(
      {
        put: {
          key,
          value: v,
          flags: options.flags ?? 0,
          ...(options.cas !== undefined ? { cas: options.cas } : {}),
        },
      },
      key.length * 3 + v.byteLength,
      options,
    );
  }

  /** Deletes `key` (or every key under it with `recurse`); resolves with the commit index. */
  delete(key: string, options: KVDeleteOptions = {}): Promise<Index> {
    return this.submit(
      {
        delete: {
          key,
          recurse: options.recurse ?? false,
          ...(options.cas !== undefined ? { cas: options.cas } : {}),
        },
      },
      key.length * 3,
      options,
    );
  }

  /** No more writes; resolves once every write made before has settled and the stream ended. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      const finish = (): void => {
        this.onClosed(this);
        resolve();
      };
      if (this.cancelled || (!this.call && this.inFlight === 0)) {
        finish();
        return;
      }
      // Queued writes still go out (on a new stream if there is none), then the half-close;
      // the server ends the stream once each has its result.
      this.flush(true);
      const call = this.call;
      if (!call) {
        finish();
        return;
      }
      call.once("end", finish);
      call.once("error", finish);
      call.end();
    });
    return this.closing;
  }

  /** Ends at once: every write not settled rejects with `ClosedError` (the client is closing). */
  cancel(): void {
    if (this.cancelled) return;
    const err = new ClosedError();
    this.cancelled = err;
    this.closing ??= Promise.resolve();
    const call = this.call;
    this.call = undefined;
    this.rejectAll(err);
    call?.cancel();
    this.onClosed(this);
  }

  private submit(
    op: Omit<KVWrite, "id">,
    size: number,
    options: KVPutOptions | KVDeleteOptions,
  ): Promise<Index> {
    if (this.closing) return Promise.reject(this.cancelled ?? new ClosedError());
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const bytes = size + WRITE_OVERHEAD;
    if (bytes > WRITE_BYTES_MAX) {
      return Promise.reject(
        new InvalidArgumentError(
          Code.InvalidArgument,
          "ValidationError",
          `a write of ${bytes} bytes does not fit in a KV.Write message (at most ${WRITE_BYTES_MAX})`,
        ),
      );
    }
    return new Promise<Index>((resolve, reject) => {
      const id = this.nextId++;
      const e: Entry = {
        write: { id, ...op },
        bytes,
        resolve,
        reject,
        signal,
        onAbort: undefined,
        timer: undefined,
        done: false,
      };
      if (signal) {
        e.onAbort = () => this.settle(e, signal.reason);
        signal.addEventListener("abort", e.onAbort, { once: true });
      }
      const ms = options.timeoutMs ?? this.ctx.callTimeoutMs;
      e.timer = setTimeout(
        () =>
          this.settle(
            e,
            errorFromStatus({
              code: Code.DeadlineExceeded,
              details: `no result within ${ms} ms (the write may still be applied)`,
            }),
          ),
        ms,
      );
      this.queue.push(e);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Settles a write once: with its index, or with an error. */
  private settle(e: Entry, outcome: Index | unknown, ok = false): void {
    if (e.done) return;
    e.done = true;
    clearTimeout(e.timer);
    if (e.onAbort) e.signal?.removeEventListener("abort", e.onAbort);
    this.sent.delete(Number(e.write.id));
    if (ok) e.resolve(outcome as Index);
    else e.reject(outcome);
  }

  private rejectAll(err: unknown): void {
    for (const e of [...this.sent.values()]) this.settle(e, err);
    for (const e of this.queue) this.settle(e, err);
    this.queue = [];
  }

  /**
   * Sends what is queued, in messages of up to MESSAGE_BYTES. While the stream is full
   * (write() said so) the rest waits for 'drain', unless `force`: close() hands everything
   * to the stream.
   */
  private flush(force = false): void {
    this.scheduled = false;
    if (this.cancelled) return;
    while (this.queue.length > 0 && (force || !this.blocked)) {
      let call = this.call;
      if (!call) {
        try {
          call = this.open();
        } catch (err) {
          // The channel is closed under us (the client was closed): nothing can go out.
          this.rejectAll(new ClosedError({ cause: err }));
          return;
        }
      }
      const writes: KVWrite[] = [];
      let bytes = 0;
      let n = 0;
      for (; n < this.queue.length; n++) {
        const e = this.queue[n]!;
        if (e.done) continue;
        if (writes.length > 0 && bytes + e.bytes > MESSAGE_BYTES) break;
        writes.push(e.write);
        bytes += e.bytes;
        this.sent.set(Number(e.write.id), e);
      }
      this.queue = n >= this.queue.length ? [] : this.queue.slice(n);
      if (writes.length > 0 && !call.write({ writes })) this.blocked = true;
    }
  }

  private open(): grpc.ClientDuplexStream<KVWriteRequest, KVWriteResponse__Output> {
    const call = this.stub.Write(this.ctx.metadata(this.ctx.waitForReady));
    this.call = call;
    this.blocked = false;
    call.on("data", (m: KVWriteResponse__Output) => {
      for (const r of m.results) {
        const e = this.sent.get(Number(r.id));
        if (!e) continue; // settled meanwhile (timeout, abort)
        if (r.result === "index") this.settle(e, asIndex(r.index!), true);
        else
          this.settle(e, errorFromWire(r.error ?? { code: Code.Unknown, message: "no result", error: "" }));
      }
    });
    call.on("drain", () => {
      if (this.call !== call) return;
      this.blocked = false;
      this.flush();
    });
    const fail = (err: unknown): void => {
      if (this.call !== call) return;
      this.call = undefined;
      this.blocked = false;
      const e = errorFromStatus(err);
      for (const s of [...this.sent.values()]) this.settle(s, e);
      // Writes not sent yet go out on a new stream (after close() they all went on this one).
      if (this.queue.length > 0 && !this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    };
    call.on("error", fail);
    call.on("end", () =>
      fail(new UnavailableError(Code.Unavailable, "", "the server ended the KV.Write stream")),
    );
    return call;
  }
}
