import type * as grpc from "@grpc/grpc-js";
import type { KVClient } from "../../src/generated/sluice/v1/KV.js";
import type { KVWrite } from "../../src/generated/sluice/v1/KVWrite.js";
import type { KVWriteRequest } from "../../src/generated/sluice/v1/KVWriteRequest.js";
import type { KVWriteResponse__Output } from "../../src/generated/sluice/v1/KVWriteResponse.js";

/**
 * Puts over one KV.Write stream, with the promise API of a unary put: the puts made in one
 * event-loop turn go out in one message; each resolves with its commit index when its result
 * comes back. What a writer with many puts in flight would use instead of one unary call each.
 */
export class KvWriteStream {
  private readonly call: grpc.ClientDuplexStream<KVWriteRequest, KVWriteResponse__Output>;
  private readonly waiting = new Map<number, { resolve: (i: number) => void; reject: (e: Error) => void }>();
  private queued: KVWrite[] = [];
  private scheduled = false;
  private nextId = 1;
  private failed: Error | undefined;

  constructor(client: KVClient) {
    this.call = client.Write();
    this.call.on("data", (m: KVWriteResponse__Output) => {
      for (const r of m.results) {
        const id = Number(r.id);
        const w = this.waiting.get(id);
        if (!w) continue;
        this.waiting.delete(id);
        if (r.result === "index") w.resolve(Number(r.index));
        else w.reject(new Error(`write ${id}: ${r.error?.code} ${r.error?.message}`));
      }
    });
    this.call.on("error", (err: Error) => {
      this.failed = err;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    });
  }

  put(key: string, value: Buffer): Promise<number> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    this.queued.push({ id, put: { key, value } });
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        const writes = this.queued;
        this.queued = [];
        this.call.write({ writes });
      });
    }
    return new Promise((resolve, reject) => this.waiting.set(id, { resolve, reject }));
  }

  close(): void {
    this.call.end();
    this.call.on("error", () => {});
    this.call.cancel();
  }
}
