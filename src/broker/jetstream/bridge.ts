import {
  DiscardPolicy,
  headers,
  type JetStreamClient,
  type JetStreamManager,
  type NatsConnection,
  nanos,
  type ObjectStore,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "nats";
import type { StoreLogger } from "../../state/index.js";
import { emptyRoot, encodeSnapshot, type StateRoot, type Store } from "../../state/index.js";
import { BridgeDivergedError } from "./errors.js";
import { commitMessages } from "./feed-messages.js";
import { connectNats, isStreamNotFound } from "./nats-connection.js";
import { type FeedMessage, Outbox, type Send, type StreamTail } from "./outbox.js";
import { type SnapshotInfo, snapshotBucket, writeSnapshotObject } from "./snapshot-object.js";
import { FeedSubjects, Header } from "./subjects.js";
import { WriteService } from "./write-service.js";

export interface BridgeOptions {
  /** NATS server URL(s), comma-separated. */
  readonly servers: string;
  /** JetStream stream name (default `SLUICE`). */
  readonly stream?: string;
  /** Subject prefix (default `sluice`). */
  readonly prefix?: string;
  /** Commits between state snapshots stored in JetStream for new edges (default 10,000). */
  readonly snapshotEvery?: number;
  /** Stream retention: oldest message age in ms (0 = unlimited, the default). */
  readonly maxAgeMs?: number;
  /** Stream retention: total bytes (0 = unlimited, the default). */
  readonly maxBytes?: number;
  /** Publishes in flight at once (default 256). */
  readonly window?: number;
  /** How this writer is reached, stored with each snapshot so edges can name it. */
  readonly writer: { readonly grpc: string; readonly http: string };
  /** Answer forwarded writes from edges (default true). */
  readonly serveWrites?: boolean;
  readonly store: Store;
  readonly logger: StoreLogger;
  /** Observes the lag: commits not yet acknowledged by JetStream. */
  readonly onLag?: (commits: number) => void;
  /** How long `start` waits for NATS before going on in the background (default 2 s). */
  readonly startWaitMs?: number;
}

const PUBLISH_TIMEOUT_MS = 5000;

/**
 * Publishes the writer's commit log to JetStream: each commit as one message on
 * `<prefix>.log`, then its topic events on `<prefix>.events.<topic>.<subject>`, every message
 * with an expected-last-sequence condition, so the stream holds each once and in order.
 *
 * The local log stays the source of truth. Commits queue in an {@link Outbox} while NATS is
 * down or slow and writes go on; after a failure or a restart the bridge reads where the
 * stream ends (the last message's index and position headers) and continues right after it,
 * from memory or, after a restart, from the write-ahead log, whose segments are kept until
 * JetStream has them (`Store.retainLogFrom`). Every `snapshotEvery` commits it stores the
 * state in a JetStream object store, so new edges start from there. It also answers writes
 * that edges forward (`<prefix>.write`).
 */
export class JetStreamBridge {
  readonly subjects: FeedSubjects;
  readonly streamName: string;
  private readonly outbox = new Outbox();
  /** Messages of commits made before the first sync (they follow the catch-up). */
  private live: FeedMessage[][] | undefined = [];
  private readonly attachIndex: number;
  private readonly attachRoot: StateRoot;
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private jsm: JetStreamManager | undefined;
  private snapshots: ObjectStore | undefined;
  /** When the stream was created (part of each Nats-Msg-Id). */
  private streamEpoch = "";
  private writes: WriteService | undefined;
  private established = false;
  private closed = false;
  private pending = 0;
  private wakeUp: (() => void) | undefined;
  private running: Promise<void> | undefined;
  private lastSnapshotIndex = 0;
  private nextSnapshotAt: number;
  private snapshotting = false;
  private lagWarnedAt = 0;
  private readonly snapshotEvery: number;
  private readonly window: number;
  private readonly detach: () => void;
  /** The first failure of the current outage, logged once. */
  private failing = false;
  /** Set when the stream cannot be continued (another writer's stream): the bridge stops. */
  fatal: Error | undefined;

  constructor(private readonly opts: BridgeOptions) {
    this.subjects = new FeedSubjects(opts.prefix ?? "sluice");
    this.streamName = opts.stream ?? "SLUICE";
    this.snapshotEvery = opts.snapshotEvery ?? 10_000;
    this.window = opts.window ?? 256;
    this.attachIndex = opts.store.index;
    this.attachRoot = opts.store.root;
    this.nextSnapshotAt = this.attachIndex + this.snapshotEvery;
    this.detach = opts.store.onCommit((commit, before, after) => {
      const point = commit.index >= this.nextSnapshotAt;
      if (point) this.nextSnapshotAt = commit.index + this.snapshotEvery;
      const msgs = commitMessages(this.subjects, commit, before, after, Date.now(), point);
      if (this.live) this.live.push(msgs);
      else this.outbox.push(msgs);
      this.reportLag();
      this.wake();
    });
  }

  /**
   * Starts the bridge. Resolves once the stream is reached and its tail agrees with the store,
   * or after `startWaitMs` with the bridge going on in the background (NATS down: writes go
   * on, commits queue). Rejects with {@link BridgeDivergedError} when the stream already holds
   * commits this store does not have.
   */
  static async start(opts: BridgeOptions): Promise<JetStreamBridge> {
    const bridge = new JetStreamBridge(opts);
    bridge.running = bridge.run();
    const wait = opts.startWaitMs ?? 2000;
    const t0 = Date.now();
    while (!bridge.established && !bridge.fatal && Date.now() - t0 < wait) {
      await new Promise((r) => setTimeout(r, 20));
    }
    if (bridge.fatal) {
      await bridge.close();
      throw bridge.fatal;
    }
    if (!bridge.established) {
      opts.logger.warn(
        { nats: opts.servers, stream: bridge.streamName },
        "JetStream not reachable yet: commits queue in the outbox and are published when it is",
      );
    }
    return bridge;
  }

  /** Commits not yet acknowledged by JetStream. */
  get lag(): number {
    return Math.max(0, this.opts.store.index - this.outbox.ackedIndex);
  }

  /** Index of the last commit JetStream acknowledged. */
  get publishedIndex(): number {
    return this.outbox.ackedIndex;
  }

  /**
   * The oldest index the local log must keep for the bridge (the store's `retainLogFrom`):
   * before the first sync, everything from the start.
   */
  retainFrom(): number {
    // A bridge that stopped for good holds nothing back: the log must not grow without end.
    if (this.fatal) return Number.POSITIVE_INFINITY;
    return this.established ? this.outbox.ackedIndex + 1 : 0;
  }

  /** The NATS connection (once connected). */
  get connection(): NatsConnection | undefined {
    return this.nc;
  }

  private wake(): void {
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wakeUp = undefined;
        resolve();
      }, ms);
      this.wakeUp = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    let backoff = 200;
    while (!this.closed) {
      try {
        if (!this.nc) await this.connect();
        if (this.closed) break;
        if (!this.established) await this.establish();
        else if (!this.outbox.ready) {
          if (this.pending > 0) {
            await this.sleep(50);
            continue;
          }
          this.outbox.resync(await this.readTailOrRecreate());
        }
        backoff = 200;
        this.pump();
        if (this.outbox.ready && this.failing) {
          this.failing = false;
          this.opts.logger.info({ lag: this.lag }, "JetStream reachable again: publishing the outbox");
        }
        await this.sleep(this.outbox.ready ? 1000 : backoff);
      } catch (err) {
        if (err instanceof BridgeDivergedError) {
          this.fatal = err;
          this.opts.logger.error({ err }, "JetStream bridge stopped");
          return;
        }
        if (!this.failing) {
          this.failing = true;
          this.opts.logger.warn({ err: String(err), lag: this.lag }, "JetStream bridge: retrying");
        }
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  private async connect(): Promise<void> {
    const nc = await connectNats(this.opts.servers, "sluice-writer");
    if (this.closed) {
      await nc.close();
      return;
    }
    this.nc = nc;
    this.js = nc.jetstream();
    this.jsm = await nc.jetstreamManager();
    this.writes = new WriteService(
      nc,
      this.subjects,
      this.opts.store,
      this.opts.logger,
      () => this.opts.writer,
      this.opts.serveWrites ?? true,
    );
    this.opts.logger.info({ nats: this.opts.servers, stream: this.streamName }, "connected to NATS");
  }

  private streamConfig(): Partial<StreamConfig> {
    return {
      name: this.streamName,
      subjects: this.subjects.streamSubjects,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: nanos(this.opts.maxAgeMs ?? 0),
      max_bytes: this.opts.maxBytes ? this.opts.maxBytes : -1,
      max_msgs: -1,
    };
  }

  private async ensureStream(): Promise<void> {
    const jsm = this.jsm!;
    const cfg = this.streamConfig();
    try {
      const info = await jsm.streams.info(this.streamName);
      this.streamEpoch = info.created;
      const c = info.config;
      if (
        c.max_age !== cfg.max_age ||
        c.max_bytes !== cfg.max_bytes ||
        c.subjects.join() !== cfg.subjects!.join()
      ) {
        await jsm.streams.update(this.streamName, { ...c, ...cfg });
        this.opts.logger.info({ stream: this.streamName }, "updated the JetStream stream's configuration");
      }
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      this.streamEpoch = (await jsm.streams.add(cfg)).created;
      this.opts.logger.info(
        { stream: this.streamName, subjects: cfg.subjects },
        "created the JetStream stream",
      );
    }
    this.snapshots = await snapshotBucket(this.js!, this.streamName);
  }

  /** Where the stream ends, from its last message's headers. */
  private async readTail(): Promise<StreamTail> {
    const info = await this.jsm!.streams.info(this.streamName);
    const seq = info.state.last_seq;
    if (seq === 0 || info.state.messages === 0) return { seq, index: 0, pos: 0 };
    const msg = await this.jsm!.streams.getMessage(this.streamName, { seq });
    const index = Number(msg.header.get(Header.Index));
    const pos = Number(msg.header.get(Header.Position));
    if (!Number.isSafeInteger(index) || !Number.isSafeInteger(pos)) {
      throw new BridgeDivergedError(
        this.streamName,
        -1,
        this.opts.store.index,
        "its last message is not Sluice's",
      );
    }
    return { seq, index, pos };
  }

  /**
   * The stream's tail; if the stream was deleted while we ran, it is created again and
   * starts from a snapshot of the current state (what is queued after it follows).
   */
  private async readTailOrRecreate(): Promise<StreamTail> {
    try {
      return await this.readTail();
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
    }
    await this.ensureStream();
    const root = this.opts.store.root;
    await this.writeSnapshot(root, 0);
    this.opts.logger.warn(
      { stream: this.streamName, index: root.index },
      "the JetStream stream was deleted: created it again, starting from a snapshot of the current state",
    );
    return { seq: 0, index: root.index, pos: Number.MAX_SAFE_INTEGER };
  }

  /** First contact: agree with the stream on where to go on, and queue the catch-up. */
  private async establish(): Promise<void> {
    await this.ensureStream();
    const tail = await this.readTail();
    const store = this.opts.store;
    if (tail.index > store.index) {
      throw new BridgeDivergedError(
        this.streamName,
        tail.index,
        store.index,
        "the stream holds commits this store does not have (another writer, or a lost data dir)",
      );
    }
    const snap = await this.snapshots!.info("latest");
    const info = snap?.description ? (JSON.parse(snap.description) as SnapshotInfo) : undefined;
    this.lastSnapshotIndex = info?.index ?? 0;
    const catchUp: FeedMessage[][] = [];
    let snapshotStart = false;
    const replay = (from: number): boolean =>
      store.replayLog(
        from,
        (c, before, after) =>
          catchUp.push(commitMessages(this.subjects, c, before, after, Date.now(), false)),
        // Later commits are queued already: rebuild only up to where the bridge attached.
        this.attachRoot,
      );
    if (tail.index === 0) {
      // A new stream. When the local log still holds every commit, the stream gets them all
      // from index 1 (edges start from the empty state); otherwise it starts at this store's
      // state, stored as a snapshot first.
      if (replay(1)) await this.writeSnapshot(emptyRoot(), tail.seq);
      else {
        catchUp.length = 0;
        await this.writeSnapshot(this.attachRoot, tail.seq);
        snapshotStart = true;
      }
    } else if (tail.index <= this.attachIndex && !replay(tail.index)) {
      catchUp.length = 0;
      this.opts.logger.error(
        { stream: this.streamName, streamIndex: tail.index, storeIndex: this.attachIndex },
        "the local log no longer holds the commits the stream lacks: publishing a snapshot; edges will reload it",
      );
      await this.writeSnapshot(this.attachRoot, tail.seq);
      snapshotStart = true;
    }
    for (const m of catchUp) this.outbox.push(m);
    for (const m of this.live ?? []) this.outbox.push(m);
    this.live = undefined;
    // Commits a snapshot stands for count as published: the stream starts after them.
    this.outbox.resync(snapshotStart ? { ...tail, index: Math.max(tail.index, this.attachIndex) } : tail);
    this.established = true;
    this.opts.logger.info(
      {
        stream: this.streamName,
        streamIndex: tail.index,
        storeIndex: store.index,
        toPublish: this.lag,
        snapshotIndex: this.lastSnapshotIndex,
      },
      "JetStream bridge established",
    );
  }

  private pump(): void {
    while (this.pending < this.window) {
      const send = this.outbox.next();
      if (!send) return;
      this.publish(send);
    }
  }

  private publish(send: Send): void {
    const { msg } = send;
    const h = headers();
    for (const [k, v] of msg.headers) h.set(k, v);
    this.pending++;
    this.js!.publish(msg.subject, msg.data, {
      headers: h,
      // Nats-Msg-Id from the index (and the event's position): a retry inside the stream's
      // duplicate window is dropped by JetStream too, on top of the sequence condition.
      // The stream's creation time keeps a re-created stream from taking a resend for a duplicate.
      msgID: `${this.streamEpoch}.${msg.index}.${msg.pos}`,
      expect: { lastSequence: send.expectLastSeq, streamName: this.streamName },
      timeout: PUBLISH_TIMEOUT_MS,
    }).then(
      (ack) => {
        this.pending--;
        this.outbox.acked(msg);
        if (msg.root && !this.snapshotting && msg.index >= this.lastSnapshotIndex + this.snapshotEvery) {
          void this.writeSnapshot(msg.root, ack.seq).catch((err) =>
            this.opts.logger.warn({ err: String(err) }, "could not store a snapshot in JetStream"),
          );
        }
        this.reportLag();
        this.pump();
      },
      (err) => {
        this.pending--;
        if (this.outbox.ready && !this.failing) {
          this.failing = true;
          this.opts.logger.warn({ err: String(err), lag: this.lag }, "JetStream publish failed: resyncing");
        }
        this.outbox.failed();
        this.wake();
      },
    );
  }

  private async writeSnapshot(root: StateRoot, logSeq: number): Promise<void> {
    this.snapshotting = true;
    try {
      const t0 = performance.now();
      const bytes = await encodeSnapshot(root);
      await writeSnapshotObject(this.snapshots!, bytes, {
        index: root.index,
        logSeq,
        writer: this.opts.writer,
        time: Date.now(),
      });
      this.lastSnapshotIndex = root.index;
      this.opts.logger.info(
        { index: root.index, logSeq, bytes: bytes.length, ms: Math.round(performance.now() - t0) },
        "stored a state snapshot in JetStream",
      );
    } finally {
      this.snapshotting = false;
    }
  }

  private reportLag(): void {
    const lag = this.lag;
    this.opts.onLag?.(lag);
    if (lag >= 1000 && lag >= this.lagWarnedAt * 10) {
      this.lagWarnedAt = lag;
      this.opts.logger.warn(
        { lag, published: this.outbox.ackedIndex, index: this.opts.store.index },
        "JetStream bridge is behind: commits wait in the outbox",
      );
    } else if (lag === 0 && this.lagWarnedAt > 0) {
      this.lagWarnedAt = 0;
      this.opts.logger.info({ index: this.opts.store.index }, "JetStream bridge caught up");
    }
  }

  /**
   * Waits until every commit made so far is in JetStream (or `timeoutMs` passes); true when
   * it is. For tests, shutdown and benchmarks.
   */
  async flushed(timeoutMs = 10_000): Promise<boolean> {
    const target = this.opts.store.index;
    const t0 = Date.now();
    while (this.outbox.ackedIndex < target || this.outbox.length > 0) {
      if (Date.now() - t0 > timeoutMs || this.closed) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
    return true;
  }

  /** Stops publishing (what is queued stays in the local log) and closes the connection. */
  async close(flushMs = 0): Promise<void> {
    if (flushMs > 0 && this.established) await this.flushed(flushMs);
    this.closed = true;
    this.detach();
    this.wake();
    // While NATS has never been reached, the loop sits in connect (which cannot be cancelled;
    // a connection made after this closes at once): do not wait for it.
    if (this.running)
      await Promise.race([this.running.catch(() => {}), new Promise((r) => setTimeout(r, 1000))]);
    this.writes?.close();
    await this.nc?.drain().catch(() => this.nc?.close());
  }
}
