import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg, NatsConnection } from "nats";
import {
  connectNats,
  errorFromWire,
  FeedSubjects,
  Header,
  isNoMessage,
  isStreamNotFound,
  NotWriterError,
  readSnapshotObject,
  type SnapshotInfo,
  snapshotBucket,
  type WriteReply,
  WriterUnavailableError,
} from "../broker/jetstream/index.js";
import {
  type CommitResult,
  decodeJson,
  decodeSnapshot,
  decodeWalCommit,
  emptyRoot,
  encodeJson,
  type StateRoot,
  Store,
  type StoreLogger,
  type Txn,
} from "../state/index.js";
import { ReplicationStoppedError } from "./errors.js";

export interface EdgeOptions {
  /** NATS server URL(s), comma-separated. */
  readonly servers: string;
  /** The writer's JetStream stream (default `SLUICE`). */
  readonly stream?: string;
  /** The writer's subject prefix (default `sluice`). */
  readonly prefix?: string;
  /** Forward writes to the writer (default true); off: writes fail with NotWriterError. */
  readonly forwardWrites?: boolean;
  /** How long a forwarded write waits for the writer's answer (default 10 s). */
  readonly forwardTimeoutMs?: number;
  readonly logger: StoreLogger;
  /** A name for the NATS connection (default `sluice-edge`). */
  readonly name?: string;
}

/** How far an edge is behind its writer. */
export interface ReplicationLag {
  /** Index applied here. */
  readonly index: number;
  /** Commits in the stream not applied here yet. */
  readonly commits: number;
  /** Age of the oldest commit not applied yet, in seconds (0 when caught up). */
  readonly seconds: number;
  /** The writer's last index as far as this edge knows. */
  readonly writerIndex: number;
  /** Whether replication stopped (a gap in the stream); the edge then serves stale data. */
  readonly stopped: boolean;
}

/**
 * An edge's replica of the writer's state: loads the newest snapshot the writer stored in
 * JetStream, then replays `<prefix>.log` after it with an ordered consumer into a replica
 * {@link Store}, commit by commit with the writer's indexes, and follows it. The server
 * builds its publisher, ACL enforcement, gRPC and HTTP on `store` exactly as on the writer.
 * Writes to `store` are forwarded to the writer over NATS request/reply and resolve once
 * this edge has applied them (read-your-writes).
 */
export class EdgeReplica {
  readonly subjects: FeedSubjects;
  readonly streamName: string;
  /** The writer as the snapshot named it. */
  writer: SnapshotInfo["writer"] | undefined;
  private messages: ConsumerMessages | undefined;
  private following: Promise<void> | undefined;
  private pendingCommits = 0;
  private oldestPendingMs = 0;
  private lastAppliedTimeMs = 0;
  private stopped: Error | undefined;
  private readonly stopListeners: ((err: Error) => void)[] = [];
  private closed = false;
  readonly store: Store;
  /** Index of the snapshot this edge started from. */
  readonly snapshotIndex: number;

  private constructor(
    private readonly opts: EdgeOptions,
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    root: StateRoot,
    /** Stream sequence the log replay starts after. */
    private readonly logSeq: number,
    writer: SnapshotInfo["writer"] | undefined,
  ) {
    this.subjects = new FeedSubjects(opts.prefix ?? "sluice");
    this.streamName = opts.stream ?? "SLUICE";
    this.writer = writer;
    this.snapshotIndex = root.index;
    this.store = Store.replica({
      root,
      forward: (txn) => this.forward(txn),
      logger: opts.logger,
    });
  }

  /**
   * Connects to NATS and loads the newest snapshot (waiting, with progress logged, for the
   * writer's stream and first snapshot to exist). The returned replica has not replayed the
   * log yet: attach the publisher to `store`, then call {@link follow}.
   */
  static async connect(opts: EdgeOptions): Promise<EdgeReplica> {
    const stream = opts.stream ?? "SLUICE";
    const nc = await connectNats(opts.servers, opts.name ?? "sluice-edge");
    try {
      const js = nc.jetstream();
      const jsm = await nc.jetstreamManager();
      let waitedLogged = 0;
      for (;;) {
        const loaded = await EdgeReplica.loadSnapshot(js, jsm, stream, opts.logger);
        if (loaded) {
          return new EdgeReplica(opts, nc, js, jsm, loaded.root, loaded.logSeq, loaded.writer);
        }
        if (Date.now() - waitedLogged > 5000) {
          waitedLogged = Date.now();
          opts.logger.info(
            { stream, bucket: `${stream}_snapshots` },
            "waiting for the writer's stream and first snapshot in JetStream",
          );
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    } catch (err) {
      await nc.close();
      throw err;
    }
  }

  /**
   * The newest snapshot whose log continuation the stream still holds, or undefined (no
   * stream yet, no snapshot yet, or the log after the snapshot aged out and a newer
   * snapshot is awaited).
   */
  private static async loadSnapshot(
    js: JetStreamClient,
    jsm: JetStreamManager,
    stream: string,
    logger: StoreLogger,
  ): Promise<{ root: StateRoot; logSeq: number; writer: SnapshotInfo["writer"] } | undefined> {
    let first: number;
    try {
      first = (await jsm.streams.info(stream)).state.first_seq;
    } catch (err) {
      if (isStreamNotFound(err)) return undefined;
      throw err;
    }
    const os = await snapshotBucket(js, stream);
    const snap = await readSnapshotObject(os);
    if (!snap) return undefined;
    if (snap.info.logSeq + 1 < first) {
      logger.warn(
        { snapshotIndex: snap.info.index, logSeq: snap.info.logSeq, streamFirstSeq: first },
        "the stream no longer holds the log after the newest snapshot: waiting for a newer snapshot",
      );
      return undefined;
    }
    const t0 = performance.now();
    const root =
      snap.info.index === 0
        ? emptyRoot()
        : decodeSnapshot(Buffer.from(snap.bytes), `${stream}_snapshots/latest`);
    logger.info(
      { index: root.index, bytes: snap.bytes.length, ms: Math.round(performance.now() - t0) },
      "loaded the writer's snapshot from JetStream",
    );
    return { root, logSeq: snap.info.logSeq, writer: snap.info.writer };
  }

  /**
   * Replays the log after the snapshot and keeps following it. Resolves once the edge has
   * applied everything the stream held when it was called (progress is logged meanwhile).
   */
  async follow(): Promise<void> {
    let target = 0;
    try {
      const last = await this.jsm.streams.getMessage(this.streamName, { last_by_subj: this.subjects.log });
      if (last.seq > this.logSeq) target = Number(last.header.get(Header.Index));
    } catch (err) {
      if (!isNoMessage(err)) throw err;
    }
    const consumer = await this.js.consumers.get(this.streamName, {
      filterSubjects: this.subjects.log,
      opt_start_seq: this.logSeq + 1,
    });
    this.messages = await consumer.consume({ max_messages: 1024 });
    const start = this.store.index;
    const t0 = performance.now();
    let caughtUp!: () => void;
    const ready = new Promise<void>((r) => {
      caughtUp = r;
    });
    if (this.store.index >= target) caughtUp();
    let lastReport = performance.now();
    this.following = (async () => {
      for await (const m of this.messages!) {
        this.apply(m);
        if (this.stopped) break;
        if (this.store.index >= target && target >= 0) {
          if (target > start) {
            const s = (performance.now() - t0) / 1000;
            this.opts.logger.info(
              {
                index: this.store.index,
                replayed: this.store.index - start,
                commitsPerSec: Math.round((this.store.index - start) / s),
              },
              "edge caught up with the writer's log",
            );
          }
          target = -1;
          caughtUp();
        } else if (target > 0 && performance.now() - lastReport > 2000) {
          lastReport = performance.now();
          this.opts.logger.info(
            { index: this.store.index, target, remaining: target - this.store.index },
            "replaying the writer's log from JetStream",
          );
        }
      }
    })().catch((err) => {
      if (!this.closed) {
        this.stop(err instanceof Error ? err : new Error(String(err)));
        this.opts.logger.error({ err: String(err) }, "replication stopped");
      }
    });
    await Promise.race([
      ready,
      this.following.then(() => {
        if (this.stopped) throw this.stopped;
      }),
    ]);
  }

  private apply(m: JsMsg): void {
    const index = Number(m.headers?.get(Header.Index));
    this.pendingCommits = m.info.pending;
    const time = Number(m.headers?.get(Header.Time));
    if (index <= this.store.index) return; // already in the snapshot, or a redelivery
    if (index !== this.store.index + 1) {
      this.stop(new ReplicationStoppedError(this.store.index, index));
      this.opts.logger.error(
        { applied: this.store.index, received: index },
        "gap in the writer's log (retention removed commits this edge needs): replication stopped; restart the edge",
      );
      return;
    }
    const commit = decodeWalCommit(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength));
    this.store.applyReplicated(commit);
    this.lastAppliedTimeMs = Number.isFinite(time) ? time : Date.now();
    this.oldestPendingMs = m.info.pending > 0 ? this.lastAppliedTimeMs : 0;
  }

  /** Why replication stopped, if it did (the edge then serves a state that no longer moves). */
  get stoppedBy(): Error | undefined {
    return this.stopped;
  }

  /** Calls `cb` once if replication stops. */
  onStopped(cb: (err: Error) => void): void {
    if (this.stopped) cb(this.stopped);
    else this.stopListeners.push(cb);
  }

  private stop(err: Error): void {
    if (this.stopped) return;
    this.stopped = err;
    for (const cb of this.stopListeners.splice(0)) cb(err);
  }

  /** How far behind the writer this edge is. */
  lag(nowMs = Date.now()): ReplicationLag {
    const commits = this.pendingCommits;
    return {
      index: this.store.index,
      commits,
      seconds:
        commits > 0 && this.oldestPendingMs > 0 ? Math.max(0, (nowMs - this.oldestPendingMs) / 1000) : 0,
      writerIndex: this.store.index + commits,
      stopped: this.stopped !== undefined,
    };
  }

  private async forward(txn: Txn): Promise<CommitResult> {
    if (this.opts.forwardWrites === false) throw new NotWriterError(await this.currentWriter());
    let reply: WriteReply;
    try {
      const res = await this.nc.request(this.subjects.write, Buffer.from(encodeJson({ txn }), "utf8"), {
        timeout: this.opts.forwardTimeoutMs ?? 10_000,
      });
      reply = decodeJson<WriteReply>(Buffer.from(res.data).toString("utf8"));
    } catch (err) {
      const s = String(err);
      throw new WriterUnavailableError(
        /no responders|503/i.test(s)
          ? "no writer answers on NATS (nothing was written)"
          : `${s} (outcome unknown)`,
        { cause: err },
      );
    }
    if ("error" in reply) throw errorFromWire(reply.error);
    return reply.ok;
  }

  /** Who the writer is now (asked over NATS), else as the snapshot named it. */
  private async currentWriter(): Promise<SnapshotInfo["writer"] | undefined> {
    try {
      const res = await this.nc.request(this.subjects.writer, new Uint8Array(0), { timeout: 1000 });
      const w = JSON.parse(Buffer.from(res.data).toString("utf8")) as SnapshotInfo["writer"];
      this.writer = { grpc: w.grpc, http: w.http };
    } catch {
      // Not reachable: name it as last known.
    }
    return this.writer;
  }

  /** Stops following and closes the NATS connection. */
  async close(): Promise<void> {
    this.closed = true;
    this.messages?.stop();
    await this.following?.catch(() => {});
    await this.store.close();
    await this.nc.close().catch(() => {});
  }
}
