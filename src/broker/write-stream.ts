import type * as grpc from "@grpc/grpc-js";
import type { KVWrite__Output } from "../generated/sluice/v1/KVWrite.js";
import type { KVWriteRequest__Output } from "../generated/sluice/v1/KVWriteRequest.js";
import type { KVWriteResponse } from "../generated/sluice/v1/KVWriteResponse.js";
import type { KVWriteResult } from "../generated/sluice/v1/KVWriteResult.js";
import type { Op } from "../state/index.js";
import { ShuttingDownError } from "../stream/index.js";
import type { BrokerDeps } from "./context.js";
import { InvalidArgumentError } from "./errors.js";
import { deleteOp, putOp, submitFor } from "./kv-ops.js";
import { statusFields, toGrpcStatus } from "./status.js";

/** Writes of one stream in flight (submitted, not yet durable) at most. */
export const MAX_IN_FLIGHT = 1024;

function txnOf(w: KVWrite__Output): Op[] {
  switch (w.op) {
    case "put":
      return [putOp(w.put!)];
    case "delete":
      return [deleteOp(w.delete!)];
    default:
      throw new InvalidArgumentError("op", "one of put or delete is required");
  }
}

/**
 * KV.Write: puts and deletes pipelined on one stream. Each write is committed as the unary
 * call would commit it (same token resolution, ACL check and transaction), and the writes of
 * a stream reach the store in the order they arrived: each is authorized after the one
 * before it was handed to the store (resolving a token is asynchronous, and a cache miss
 * must not let a later write overtake it). Results ready together go out in one message.
 * Flow control: writes beyond MAX_IN_FLIGHT wait in the stream's queue, and reading pauses
 * while the queue holds any or while the results cannot be written (the client is not
 * reading them), so a writer that floods or stops reading holds the stream, not the server's
 * memory.
 *
 * At shutdown (`shutdown()`) a stream starts no write it receives from then on (each gets an
 * UNAVAILABLE result, not applied); the writes received before are committed and answered,
 * and then the stream ends: OK if the client had half-closed, else UNAVAILABLE, as
 * Subscribe and Watch streams do, rather than holding the server until its grace period
 * runs out (a client that does not read its results still can: the end waits for them).
 * A write waiting for the one before it when its stream is cancelled is not applied.
 */
export function makeWriteHandler(deps: BrokerDeps) {
  const open = new Set<() => void>();
  const handler = (call: grpc.ServerDuplexStream<KVWriteRequest__Output, KVWriteResponse>): void => {
    const queue: KVWrite__Output[] = [];
    let head = 0;
    let inFlight = 0;
    let readPaused = false;
    let outputBlocked = false;
    let halfClosed = false;
    let gone = false;
    /** Set by shutdown(): no more writes start, and the stream ends once none is in flight. */
    let stopping = false;
    let results: KVWriteResult[] = [];
    let scheduled = false;
    /** Settles once the previous write was handed to the store (or failed to be). */
    let order: Promise<unknown> = Promise.resolve();

    const flush = (): void => {
      scheduled = false;
      if (gone) return;
      if (results.length > 0) {
        const out = results;
        results = [];
        if (!call.write({ results: out })) outputBlocked = true;
      }
      if (stopping && !halfClosed && inFlight === 0 && head === queue.length) {
        gone = true;
        open.delete(stop);
        call.emit("error", toGrpcStatus(new ShuttingDownError()));
        return;
      }
      if (halfClosed && inFlight === 0 && head === queue.length) {
        gone = true;
        open.delete(stop);
        call.end();
        return;
      }
      flow();
    };
    const done = (result: KVWriteResult): void => {
      if (gone) return;
      results.push(result);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    };
    const fail = (id: number, err: unknown): void => done({ id, error: statusFields(err) });

    const stop = (): void => {
      if (gone || stopping) return;
      stopping = true;
      // Reading goes on (a half-close must be seen to end OK); the end goes out with a flush
      // once nothing received before is left.
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    };
    open.add(stop);

    /** Starts queued writes while there is room, and pauses or resumes reading. */
    const flow = (): void => {
      while (head < queue.length && inFlight < MAX_IN_FLIGHT) start(queue[head++]!);
      if (head === queue.length) {
        queue.length = 0;
        head = 0;
      }
      const hold = head < queue.length || outputBlocked || inFlight >= MAX_IN_FLIGHT;
      if (hold && !readPaused) {
        readPaused = true;
        call.pause();
      } else if (!hold && readPaused && inFlight <= MAX_IN_FLIGHT / 2) {
        readPaused = false;
        call.resume();
      }
    };

    const start = (w: KVWrite__Output): void => {
      const id = Number(w.id);
      let txn: Op[];
      try {
        txn = txnOf(w);
      } catch (err) {
        fail(id, err);
        return;
      }
      inFlight++;
      const submitted = order.then(() => {
        // Cancelled meanwhile: the client was told nothing about it; do not apply it.
        if (gone) throw new Error("the stream was cancelled");
        return submitFor(deps, call.metadata, txn);
      });
      order = submitted.catch(() => {});
      submitted
        .then((s) => s.durable)
        .then(
          (index) => {
            inFlight--;
            done({ id, index });
          },
          (err) => {
            inFlight--;
            fail(id, err);
          },
        );
    };

    call.on("data", (req: KVWriteRequest__Output) => {
      if (gone) return;
      if (stopping) {
        for (const w of req.writes) fail(Number(w.id), new ShuttingDownError());
        return;
      }
      for (const w of req.writes) queue.push(w);
      flow();
    });
    call.on("drain", () => {
      outputBlocked = false;
      flow();
    });
    call.on("end", () => {
      halfClosed = true;
      if (!scheduled && inFlight === 0 && head === queue.length && !gone) {
        gone = true;
        open.delete(stop);
        call.end();
      }
    });
    call.on("cancelled", () => {
      gone = true;
      open.delete(stop);
    });
    call.on("error", () => {
      gone = true;
      open.delete(stop);
    });
  };
  return {
    handler,
    /** The server is stopping: every open Write stream finishes its writes in flight and ends. */
    shutdown(): void {
      for (const stop of [...open]) stop();
    },
  };
}
