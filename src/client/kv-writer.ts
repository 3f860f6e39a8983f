import type * as grpc from "@grpc/grpc-js";
import type { KVClient } from "../generated/sluice/v1/KV.js";
import type { KVWrite } from "../generated/sluice/v1/KVWrite.js";
import type { KVWriteRequest } from "../generated/sluice/v1/KVWriteRequest.js";
import type { KVWriteResponse__Output } from "../generated/sluice/v1/KVWriteResponse.js";
import { ClosedError, Code, errorFromStatus, errorFromWire, UnavailableError } from "./errors.js";
import type { KVDeleteOptions, KVPutOptions } from "./kv-api.js";
import { asIndex, type Index } from "./types.js";
import type { CallContext } from "./unary-call.js";

/** Per-write options of a {@link KVWriter}: no timeout, the stream has none. */
export type KVWriterPutOptions = Omit<KVPutOptions, "timeoutMs">;
export type KVWriterDeleteOptions = Omit<KVDeleteOptions, "timeoutMs">;

interface Pending {
  readonly resolve: (index: Index) => void;
  readonly reject: (err: unknown) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: (() => void) | undefined;
}

const encoder = new TextEncoder();

/**
 * KV puts and deletes pipelined on one `KV.Write` stream: each is its own transaction with
 * its own commit index or error, as the unary call would give, and the writes of one writer
 * commit in the order they were made. The writes made in one event-loop turn go out in one
 * message. For a writer with many writes in flight: a unary call costs a whole HTTP/2 stream
 * each (~180 µs of client CPU with grpc-js), a write here a few bytes of a message.
 *
 * The stream opens with the first write. If it fails (connection cut, server shutdown),
 * every write in flight on it rejects with that status (its outcome is unknown, as a unary
 * call cut off mid-way), and the next write opens a new stream. Aborting a write's `signal`
 * rejects its promise; a write already sent may still commit. `close()` waits for the
 * writes in flight and ends the stream.
 */
export class KVWriter {
  private call: grpc.ClientDuplexStream<KVWriteRequest, KVWriteResponse__Output> | undefined;
  /** Writes of the current stream sent and waiting for their result, by id. */
  private readonly sent = new Map<number, Pending>();
  /** Writes not sent yet, in order (a turn's worth, or more while the stream is full). */
  private queue: { write: KVWrite; pending: Pending }[] = [];
  private scheduled = false;
  private blocked = false;
  private nextId = 1;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly ctx: CallContext,
    private readonly stub: KVClient,
  ) {}

  /** Writes sent or queued whose result has not come yet. */
  get inFlight(): number {
    return this.sent.size + this.queue.length;
  }

  /** Sets `key`; resolves with the commit index (`CasFailedError` when `cas` does not hold). */
  put(key: string, value: string | Uint8Array, options: KVWriterPutOptions = {}): Promise<Index> {
    return this.submit(
      {
        put: {
          key,
          value: typeof value === "string" ? encoder.encode(value) : value,
          flags: options.flags ?? 0,
          ...(options.cas !== undefined ? { cas: options.cas } : {}),
        },
      },
      options.signal,
    );
  }

  /** Deletes `key` (or every key under it with `recurse`); resolves with the commit index. */
  delete(key: string, options: KVWriterDeleteOptions = {}): Promise<Index> {
    return this.submit(
      {
        delete: {
          key,
          recurse: options.recurse ?? false,
          ...(options.cas !== undefined ? { cas: options.cas } : {}),
        },
      },
      options.signal,
    );
  }

  /** No more writes; resolves once every write made before has its result and the stream ended. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      if (!this.call && this.queue.length === 0) {
        resolve();
        return;
      }
      // Queued writes still go out (on a new stream if there is none), then the half-close;
      // the server ends the stream once each has its result.
      this.flush(true);
      const call = this.call!;
      call.once("end", () => resolve());
      call.once("error", () => resolve());
      call.end();
    });
    return this.closing;
  }

  private submit(op: Omit<KVWrite, "id">, signal: AbortSignal | undefined): Promise<Index> {
    if (this.closing) return Promise.reject(new ClosedError());
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<Index>((resolve, reject) => {
      const id = this.nextId++;
      const write: KVWrite = { id, ...op };
      const onAbort = signal
        ? (): void => {
            // Not sent yet: it never will be. Sent: its result is ignored when it comes.
            const q = this.queue.findIndex((w) => w.write === write);
            if (q >= 0) this.queue.splice(q, 1);
            this.sent.delete(id);
            reject(signal.reason);
          }
        : undefined;
      if (signal && onAbort) signal.addEventListener("abort", onAbort, { once: true });
      this.queue.push({ write, pending: { resolve, reject, signal, onAbort } });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /**
   * Sends what is queued in one message. While the stream is full (write() said so) writes
   * wait here for 'drain', unless `force`: close() hands everything to the stream.
   */
  private flush(force = false): void {
    this.scheduled = false;
    if ((this.blocked && !force) || this.queue.length === 0) return;
    const call = this.call ?? this.open();
    const batch = this.queue;
    this.queue = [];
    for (const { write, pending } of batch) this.sent.set(Number(write.id), pending);
    if (!call.write({ writes: batch.map((w) => w.write) })) this.blocked = true;
  }

  private open(): grpc.ClientDuplexStream<KVWriteRequest, KVWriteResponse__Output> {
    const call = this.stub.Write(this.ctx.metadata(this.ctx.waitForReady));
    this.call = call;
    call.on("data", (m: KVWriteResponse__Output) => {
      for (const r of m.results) {
        const p = this.sent.get(Number(r.id));
        if (!p) continue;
        this.sent.delete(Number(r.id));
        settle(p);
        if (r.result === "index") p.resolve(asIndex(r.index!));
        else p.reject(errorFromWire(r.error ?? { code: Code.Unknown, message: "no result", error: "" }));
      }
    });
    call.on("drain", () => {
      this.blocked = false;
      this.flush();
    });
    const fail = (err: unknown): void => {
      if (this.call !== call) return;
      this.call = undefined;
      this.blocked = false;
      const e = errorFromStatus(err);
      for (const p of this.sent.values()) {
        settle(p);
        p.reject(e);
      }
      this.sent.clear();
      // Writes not sent yet go out on a new stream (not after close(): they went with this one).
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

function settle(p: Pending): void {
  if (p.onAbort) p.signal?.removeEventListener("abort", p.onAbort);
}
