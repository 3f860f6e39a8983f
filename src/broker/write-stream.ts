import type * as grpc from "@grpc/grpc-js";
import type { KVWrite__Output } from "../generated/sluice/v1/KVWrite.js";
import type { KVWriteRequest__Output } from "../generated/sluice/v1/KVWriteRequest.js";
import type { KVWriteResponse } from "../generated/sluice/v1/KVWriteResponse.js";
import type { KVWriteResult } from "../generated/sluice/v1/KVWriteResult.js";
import type { Op } from "../state/index.js";
import type { BrokerDeps } from "./context.js";
import { InvalidArgumentError } from "./errors.js";
import { commitFor, deleteOp, putOp } from "./kv-ops.js";
import { toGrpcStatus } from "./status.js";

/** Writes of one stream in flight before the server stops reading it. */
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
 * call would commit it (same token resolution, ACL check and transaction); results ready
 * together (a group commit) go out in one message. Reading pauses while MAX_IN_FLIGHT
 * writes wait, so a fast writer cannot queue without bound.
 */
export function makeWriteHandler(deps: BrokerDeps) {
  return (call: grpc.ServerDuplexStream<KVWriteRequest__Output, KVWriteResponse>): void => {
    let inFlight = 0;
    let paused = false;
    let halfClosed = false;
    let gone = false;
    let results: KVWriteResult[] = [];
    let scheduled = false;

    const flush = (): void => {
      scheduled = false;
      if (gone || results.length === 0) return;
      const out = results;
      results = [];
      call.write({ results: out });
      if (halfClosed && inFlight === 0) {
        gone = true;
        call.end();
      }
    };
    const done = (result: KVWriteResult): void => {
      if (gone) return;
      results.push(result);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    };
    /** A write in flight got its outcome, success or not: reading resumes below half. */
    const settled = (): void => {
      inFlight--;
      if (paused && inFlight <= MAX_IN_FLIGHT / 2) {
        paused = false;
        call.resume();
      }
    };
    const fail = (id: number, err: unknown): void => {
      const s = toGrpcStatus(err);
      done({
        id,
        error: { code: s.code, message: s.details, error: err instanceof Error ? err.name : "Error" },
      });
    };

    call.on("data", (req: KVWriteRequest__Output) => {
      for (const w of req.writes) {
        const id = Number(w.id);
        let txn: Op[];
        try {
          txn = txnOf(w);
        } catch (err) {
          fail(id, err);
          continue;
        }
        inFlight++;
        commitFor(deps, call.metadata, txn).then(
          (r) => {
            settled();
            done({ id, index: r.index });
          },
          (err) => {
            settled();
            fail(id, err);
          },
        );
      }
      if (!paused && inFlight >= MAX_IN_FLIGHT) {
        paused = true;
        call.pause();
      }
    });
    call.on("end", () => {
      halfClosed = true;
      if (inFlight === 0 && !scheduled && !gone) {
        gone = true;
        call.end();
      }
    });
    call.on("cancelled", () => {
      gone = true;
    });
    call.on("error", () => {
      gone = true;
    });
  };
}
