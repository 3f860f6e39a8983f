import type { DeleteResponse__Output } from "../generated/sluice/v1/DeleteResponse.js";
import type { GetResponse__Output } from "../generated/sluice/v1/GetResponse.js";
import type { KVClient } from "../generated/sluice/v1/KV.js";
import type { ListResponse__Output } from "../generated/sluice/v1/ListResponse.js";
import type { PutResponse__Output } from "../generated/sluice/v1/PutResponse.js";
import { ClosedError } from "./errors.js";
import { KVWriter } from "./kv-writer.js";
import { asIndex, type Index, type KVEntry } from "./types.js";
import { type CallContext, type CallOptions, unaryCall } from "./unary-call.js";

export interface KVPutOptions extends CallOptions {
  /** Only if the key's modify index equals this (0: only if the key is absent); else `CasFailedError`. */
  readonly cas?: number;
  /** Opaque number stored with the entry. */
  readonly flags?: number;
}

export interface KVDeleteOptions extends CallOptions {
  /** Delete every key under `key` as a prefix. */
  readonly recurse?: boolean;
  /** Only if the key's modify index equals this; else `CasFailedError`. */
  readonly cas?: number;
}

export interface KVListOptions extends CallOptions {
  /** Only the keys: entries come with empty values. */
  readonly keysOnly?: boolean;
}

const encoder = new TextEncoder();

/** Unary KV calls (sluice.v1.KV). Writes answer the commit index. */
export class KVApi {
  private readonly writers = new Set<KVWriter>();
  private closed = false;

  constructor(
    private readonly ctx: CallContext,
    private readonly stub: KVClient,
  ) {}

  async put(key: string, value: string | Uint8Array, options: KVPutOptions = {}): Promise<Index> {
    const req = {
      key,
      value: typeof value === "string" ? encoder.encode(value) : value,
      flags: options.flags ?? 0,
      ...(options.cas !== undefined ? { cas: options.cas } : {}),
    };
    const res = await unaryCall<PutResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.Put(req, md, o, cb),
      options,
    );
    return asIndex(res.index);
  }

  /** The entry, or undefined when the key does not exist; `index` is the store's index of the read. */
  async get(key: string, options: CallOptions = {}): Promise<{ index: Index; entry: KVEntry | undefined }> {
    const res = await unaryCall<GetResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.Get({ key }, md, o, cb),
      options,
    );
    return { index: asIndex(res.index), entry: res.entry ?? undefined };
  }

  /** Entries under `prefix`, in key order (those the token may read). */
  async list(prefix: string, options: KVListOptions = {}): Promise<{ index: Index; entries: KVEntry[] }> {
    const req = { prefix, keys_only: options.keysOnly ?? false };
    const res = await unaryCall<ListResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.List(req, md, o, cb),
      options,
    );
    return { index: asIndex(res.index), entries: res.entries };
  }

  /**
   * A writer that pipelines puts and deletes on one KV.Write stream, for many writes in
   * flight at once; each still gets its own index or error. Close it when done; closing the
   * client ends it too.
   */
  writer(): KVWriter {
    if (this.closed) throw new ClosedError();
    const w = new KVWriter(this.ctx, this.stub, (gone) => this.writers.delete(gone));
    this.writers.add(w);
    return w;
  }

  /** The client is closing: every writer ends at once, and no new one is made. */
  cancelWriters(): void {
    this.closed = true;
    for (const w of [...this.writers]) w.cancel();
  }

  async delete(key: string, options: KVDeleteOptions = {}): Promise<Index> {
    const req = {
      key,
      recurse: options.recurse ?? false,
      ...(options.cas !== undefined ? { cas: options.cas } : {}),
    };
    const res = await unaryCall<DeleteResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.Delete(req, md, o, cb),
      options,
    );
    return asIndex(res.index);
  }
}
