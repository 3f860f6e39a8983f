import type { Msg, NatsConnection, Subscription } from "nats";
import {
  type CommitResult,
  decodeJson,
  encodeJson,
  type Store,
  type StoreLogger,
  type Txn,
} from "../../state/index.js";
import { errorToWire, type WireError } from "./remote-errors.js";
import type { FeedSubjects } from "./subjects.js";

/** A forwarded write: the transaction, as the edge validated it. */
export interface WriteRequest {
  readonly txn: Txn;
}

/** The writer's answer: the commit, or the error it failed with. */
export type WriteReply = { readonly ok: CommitResult } | { readonly error: WireError };

/**
 * The writer's side of write forwarding: tells who the writer is (`<prefix>.writer`) and answers `<prefix>.write` requests from edges by
 * committing the transaction to the store (queue group `sluice-writer`, so a standby
 * subscriber never commits twice). Encoding: JSON with KV bytes as {"$b": base64}.
 *
 * NATS is the trusted backplane here: the edge checked the caller's token against its
 * replicated ACL state before forwarding; secure NATS itself (accounts, TLS) accordingly.
 */
export class WriteService {
  private readonly sub: Subscription | undefined;
  private readonly info: Subscription;

  constructor(
    nc: NatsConnection,
    subjects: FeedSubjects,
    private readonly store: Store,
    private readonly logger: StoreLogger,
    /** How the writer is reached (answered on `<prefix>.writer`). */
    writer: () => { readonly grpc: string; readonly http: string },
    serveWrites: boolean,
  ) {
    this.info = nc.subscribe(subjects.writer, {
      callback: (err, msg) => {
        if (!err) msg.respond(Buffer.from(JSON.stringify({ ...writer(), index: store.index }), "utf8"));
      },
    });
    if (!serveWrites) return;
    this.sub = nc.subscribe(subjects.write, {
      queue: "sluice-writer",
      callback: (err, msg) => {
        if (err) {
          logger.warn({ err: String(err) }, "write forwarding subscription failed");
          return;
        }
        void this.handle(msg);
      },
    });
  }

  private async handle(msg: Msg): Promise<void> {
    let reply: WriteReply;
    try {
      const req = decodeJson<WriteRequest>(Buffer.from(msg.data).toString("utf8"));
      if (!req || !Array.isArray(req.txn)) throw new TypeError("a forwarded write must be { txn: [...] }");
      reply = { ok: await this.store.commit(req.txn) };
    } catch (err) {
      reply = { error: errorToWire(err) };
    }
    try {
      msg.respond(Buffer.from(encodeJson(reply), "utf8"));
    } catch (err) {
      this.logger.warn({ err: String(err) }, "could not answer a forwarded write");
    }
  }

  close(): void {
    this.sub?.unsubscribe();
    this.info.unsubscribe();
  }
}
