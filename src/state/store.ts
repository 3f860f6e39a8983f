import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { produce } from "immer";
import { applyTxn, redo, undo } from "./apply.js";
import { acquireDirLock, releaseDirLock } from "./data-dir-lock.js";
import { CorruptLogError, ReplicationGapError, StoreClosedError, StoreFailedError } from "./errors.js";
import { emptyRoot, type MutableRoot, type StateRoot } from "./schema.js";
import { listSnapshots, pruneSnapshots, readSnapshot, writeSnapshot } from "./snapshot.js";
import type { Commit, CommitResult, FsyncMode, Index, Txn } from "./types.js";
import { validateTxn } from "./validate.js";
import { deleteSegmentsUpTo, LogWriter, listSegments, readSegment } from "./wal.js";
import { decodeWalCommit, encodeWalRecords } from "./wal-codec.js";

/** Where log lines go; pino's logger fits. */
export interface StoreLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const silent: StoreLogger = { info() {}, warn() {}, error() {} };

export interface StoreOptions {
  /** Directory of the log and snapshots. Required unless `inMemory`. */
  readonly dataDir?: string;
  /** Keep nothing on disk (`--dev`, tests). */
  readonly inMemory?: boolean;
  /** `always` (default): fsync before acknowledging; `batch`: fsync every 50 ms; `never`. */
  readonly fsync?: FsyncMode;
  /** Commits between snapshots (default 50,000). */
  readonly snapshotEvery?: number;
  /**
   * Least time between two automatic snapshots, ms (default 10 s): at a high write rate
   * `snapshotEvery` alone would serialize the whole state several times a second (Consul's
   * snapshot threshold and interval work the same way).
   */
  readonly snapshotMinIntervalMs?: number;
  /** Commits kept replayable in the log behind the latest snapshot (default 10,000). */
  readonly historyRetain?: number;
  /** Size at which a log segment is closed and a new one started (default 64 MiB). */
  readonly segmentBytes?: number;
  readonly logger?: StoreLogger;
  /**
   * Most transactions applied in one turn of the event loop before they go to the log
   * (default 1,024). Smaller chunks let the log's write+fsync of one chunk overlap the
   * applying of the next.
   */
  readonly drainChunk?: number;
  /**
   * Give a brand-new store a creation commit (index 1, no changes), so that its index is
   * never 0 once open: a snapshot at index 0 cannot be told apart from one at index 1 by a
   * resuming client. The server sets this; bare stores in tests may leave it off.
   */
  readonly initialize?: boolean;
  /** Observes each fsync's duration (metrics). */
  readonly onFsync?: (ms: number) => void;
  /**
   * The oldest index the log must keep beyond the snapshot's history (the JetStream bridge's
   * first commit not yet acknowledged): segments holding it or anything newer are not deleted.
   */
  readonly retainLogFrom?: () => number;
}

/** Options of a replica store (an edge): state comes from the writer, writes go to it. */
export interface ReplicaOptions {
  /** The state to start from (a snapshot the writer published, or an empty root). */
  readonly root: StateRoot;
  /**
   * Sends a validated transaction to the writer and resolves with its commit there, or
   * rejects (NotWriterError when forwarding is off, WriterUnavailableError, or the writer's
   * own error).
   */
  readonly forward: (txn: Txn) => Promise<CommitResult>;
  /** How long a forwarded write waits for its commit to arrive here (default 10 s). */
  readonly applyWaitMs?: number;
  readonly logger?: StoreLogger;
}

/**
 * Called once per commit after it is durable, in index order, with the roots just before and
 * just after it. Listeners run synchronously and must not throw; the stream layer hangs off
 * this. Commits that became durable together are handed over in one synchronous run.
 */
export type CommitListener = (commit: Commit, before: StateRoot, after: StateRoot) => void;

interface Queued {
  readonly txn: Txn;
  readonly resolve: (r: CommitResult) => void;
  readonly reject: (e: unknown) => void;
}

interface Applied {
  readonly entry: Queued;
  readonly commit: Commit;
  readonly before: StateRoot;
  readonly after: StateRoot;
}

/**
 * The state store: an immutable root that each commit replaces, a write-ahead log that makes
 * a commit durable before it is acknowledged or published, and snapshots that bound the log.
 *
 * Commits queue and are applied in groups: one immer `produce` and one log write+fsync serve
 * every transaction that arrived meanwhile (group commit). Each transaction still gets its own
 * index and applies all-or-nothing.
 */
export class Store {
  private pendingRoot: StateRoot;
  private committedRoot: StateRoot;
  private queue: Queued[] = [];
  private scheduled = false;
  private closed = false;
  private failed: unknown;
  private readonly listeners = new Set<CommitListener>();
  private lastSnapshotIndex: number;
  /** When the last snapshot was taken (or the store opened), performance.now() ms. */
  private lastSnapshotAt = performance.now();
  private snapshotting = false;
  /** The snapshot in progress, if any (close waits for it). */
  private background: Promise<void> = Promise.resolve();
  private readonly opts: Required<
    Omit<StoreOptions, "dataDir" | "onFsync" | "initialize" | "retainLogFrom">
  > &
    Pick<StoreOptions, "dataDir" | "onFsync" | "retainLogFrom">;
  /** Set on a replica: where its writes go. */
  private forward: ReplicaOptions["forward"] | undefined;
  private applyWaitMs = 10_000;
  /** Forwarded writes waiting for their commit to be replicated here. */
  private applyWaiters: { index: number; resolve: () => void }[] = [];
  private inflight: Promise<unknown> = Promise.resolve();
  private readonly recoveryRoot: StateRoot;

  private constructor(
    root: StateRoot,
    private readonly log: LogWriter | undefined,
    private readonly recovered: readonly Commit[],
    opts: Store["opts"],
    private readonly lockFile: string | undefined,
  ) {
    this.pendingRoot = root;
    this.committedRoot = root;
    this.recoveryRoot = root;
    this.opts = opts;
    this.lastSnapshotIndex = root.index;
  }

  /** Opens (or creates) a store: loads the newest snapshot, replays the log, cuts a torn tail. */
  static async open(options: StoreOptions): Promise<Store> {
    const opts = {
      inMemory: options.inMemory ?? false,
      fsync: options.fsync ?? "always",
      snapshotEvery: options.snapshotEvery ?? 50_000,
      snapshotMinIntervalMs: options.snapshotMinIntervalMs ?? 10_000,
      historyRetain: options.historyRetain ?? 10_000,
      drainChunk: Math.max(1, options.drainChunk ?? 1024),
      segmentBytes: options.segmentBytes ?? 64 * 1024 * 1024,
      logger: options.logger ?? silent,
      dataDir: options.dataDir === undefined ? undefined : resolve(options.dataDir),
      onFsync: options.onFsync,
      retainLogFrom: options.retainLogFrom,
    };
    if (opts.inMemory)
      return Store.initialized(new Store(emptyRoot(), undefined, [], opts, undefined), options);
    if (!opts.dataDir) throw new TypeError("Store.open: dataDir is required unless inMemory");
    const dir = opts.dataDir;
    mkdirSync(dir, { recursive: true });
    const lockFile = acquireDirLock(dir);
    try {
      const { root, history, logEnd } = recover(dir, opts.historyRetain, opts.logger);
      const segs = listSegments(dir);
      // When the snapshot is ahead of the log's end (records lost after the snapshot was
      // synced, with fsync batch/never), new records start a new segment at the next index.
      const append = logEnd === root.index ? segs.at(-1) : undefined;
      const log = new LogWriter(
        { dir, fsync: opts.fsync, segmentBytes: opts.segmentBytes, onFsync: opts.onFsync },
        append,
      );
      const store = new Store(root, log, history, opts, lockFile);
      return await Store.initialized(store, options);
    } catch (err) {
      releaseDirLock(lockFile);
      throw err;
    }
  }

  /**
   * A replica: an in-memory store whose commits come from the writer through
   * {@link applyReplicated}, with the writer's indexes, and whose `commit` forwards the
   * transaction to the writer and resolves once the commit has been applied here
   * (read-your-writes).
   */
  static replica(options: ReplicaOptions): Store {
    const store = new Store(
      options.root,
      undefined,
      [],
      {
        inMemory: true,
        fsync: "never",
        snapshotEvery: Number.MAX_SAFE_INTEGER,
        snapshotMinIntervalMs: 0,
        historyRetain: 0,
        drainChunk: 1024,
        segmentBytes: 0,
        logger: options.logger ?? silent,
        dataDir: undefined,
        onFsync: undefined,
        retainLogFrom: undefined,
      },
      undefined,
    );
    store.forward = options.forward;
    store.applyWaitMs = options.applyWaitMs ?? 10_000;
    return store;
  }

  /** Whether this store is a replica (state from the writer, writes forwarded). */
  get isReplica(): boolean {
    return this.forward !== undefined;
  }

  /**
   * Applies a commit made by the writer (a replica only): its changes' after-images, at the
   * writer's index, which must be the next one. Listeners run before it returns.
   */
  applyReplicated(commit: Commit): void {
    if (!this.forward) throw new TypeError("applyReplicated: not a replica store");
    if (this.closed) throw new StoreClosedError();
    const before = this.committedRoot;
    if (commit.index !== before.index + 1) {
      throw new ReplicationGapError(before.index, commit.index);
    }
    const d = { ...before, idx: { ...before.idx } } as unknown as MutableRoot;
    redo(d, commit.changes);
    d.index = commit.index;
    Object.freeze(d.idx);
    const after = Object.freeze(d) as unknown as StateRoot;
    this.committedRoot = after;
    this.pendingRoot = after;
    for (const l of this.listeners) {
      try {
        l(commit, before, after);
      } catch (err) {
        this.opts.logger.error({ err }, "commit listener threw");
      }
    }
    if (this.applyWaiters.length > 0) {
      const ready = this.applyWaiters.filter((w) => w.index <= after.index);
      this.applyWaiters = this.applyWaiters.filter((w) => w.index > after.index);
      for (const w of ready) w.resolve();
    }
  }

  /** Resolves once this replica has applied `index`, or after `applyWaitMs` (logged). */
  private whenApplied(index: number): Promise<void> {
    if (this.committedRoot.index >= index) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.applyWaiters = this.applyWaiters.filter((w) => w !== waiter);
        this.opts.logger.warn(
          { index, applied: this.committedRoot.index, waitedMs: this.applyWaitMs },
          "a forwarded write committed on the writer has not been replicated here yet",
        );
        resolve();
      }, this.applyWaitMs);
      timer.unref?.();
      const waiter = {
        index,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      this.applyWaiters.push(waiter);
    });
  }

  /**
   * Hands every commit from `from` up to `end` (a root this store committed; default the
   * latest) to `visit`, oldest first, with rebuilt roots before and after each: how the
   * JetStream bridge catches up after a restart. Returns false (and visits nothing) when the
   * log no longer holds `from`.
   */
  replayLog(from: number, visit: CommitListener, end: StateRoot = this.committedRoot): boolean {
    if (from > end.index) return true;
    const commits = this.readLog(from, end.index);
    if (!commits || commits.length !== end.index - from + 1 || commits[0]?.index !== from) return false;
    let root = produce(end, (draft) => {
      const d = draft as unknown as MutableRoot;
      for (let i = commits.length - 1; i >= 0; i--) undo(d, commits[i]!.changes);
      d.index = (from - 1) as Index;
    });
    for (const c of commits) {
      const before = root;
      root = produce(before, (draft) => {
        const d = draft as unknown as MutableRoot;
        redo(d, c.changes);
        d.index = c.index;
      });
      visit(c, before, root);
    }
    return true;
  }

  /** Commits `from..to` read back from the log files (or the recovered history), or undefined. */
  private readLog(from: number, to: number): Commit[] | undefined {
    const dir = this.opts.dataDir;
    if (!dir || !this.log) {
      const first = this.recovered[0]?.index;
      if (first === undefined || first > from) return undefined;
      return this.recovered.filter((c) => c.index >= from && c.index <= to);
    }
    const segs = listSegments(dir);
    // The log no longer reaches back to `from`: say so without reading it all.
    if (segs.length === 0 || segs[0]!.first > from) return undefined;
    let start = 0;
    for (let i = 0; i < segs.length; i++) if (segs[i]!.first <= from) start = i;
    const out: Commit[] = [];
    for (let i = start; i < segs.length; i++) {
      const { records } = readSegment(segs[i]!.file, i === segs.length - 1, true);
      for (const rec of records) {
        if (rec.index < from) continue;
        if (rec.index > to) return out;
        out.push(decodeWalCommit(rec.payload, segs[i]!.file));
      }
    }
    return out;
  }

  private static async initialized(store: Store, options: StoreOptions): Promise<Store> {
    if (!options.initialize || store.index !== 0) return store;
    await new Promise<CommitResult>((resolve, reject) => {
      store.queue.push({ txn: [], resolve, reject });
      store.drain();
    });
    return store;
  }

  /** The root as of the last durable commit: what readers and subscribers see. */
  get root(): StateRoot {
    return this.committedRoot;
  }

  /** Index of the last durable commit. */
  get index(): Index {
    return this.committedRoot.index;
  }

  /** Where the store keeps its files, if anywhere. */
  get dataDir(): string | undefined {
    return this.opts.dataDir;
  }

  /**
   * Commits recovered from the log at open (at most `historyRetain`, oldest first), so the
   * stream layer can refill its history and clients resume across a restart.
   */
  get recoveredCommits(): readonly Commit[] {
    return this.recovered;
  }

  /**
   * Hands each recovered commit to `visit` with the roots just before and after it, newest
   * first: the roots are rebuilt by undoing commits from the recovered state, one at a time,
   * so only two roots are alive at once whatever the history length.
   */
  replayRecovered(visit: CommitListener): void {
    let after = this.recoveryRoot;
    for (let i = this.recovered.length - 1; i >= 0; i--) {
      const commit = this.recovered[i]!;
      if (commit.index !== after.index) break;
      const before = produce(after, (draft) => {
        const d = draft as unknown as MutableRoot;
        undo(d, commit.changes);
        d.index = (commit.index - 1) as Index;
      });
      visit(commit, before, after);
      after = before;
    }
  }

  /** Registers a listener for durable commits; returns a function that removes it. */
  onCommit(listener: CommitListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Applies a transaction atomically and resolves with its index once it is durable.
   * Rejects with ValidationError, MissingReferenceError, CasFailedError or ConflictError
   * (nothing changed), or StoreClosedError / StoreFailedError.
   */
  commit(txn: Txn): Promise<CommitResult> {
    if (this.closed) return Promise.reject(new StoreClosedError());
    if (this.forward) return this.forwardCommit(txn);
    if (this.failed) return Promise.reject(new StoreFailedError({ cause: this.failed }));
    let own: Txn;
    try {
      // The transaction is applied a moment later: take a private copy, then validate that
      // copy, so a caller reusing its buffers or ops cannot change what was checked.
      own = copyTxn(txn);
      validateTxn(own);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<CommitResult>((resolve, reject) => {
      this.queue.push({ txn: own, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.drain());
      }
    });
  }

  private async forwardCommit(txn: Txn): Promise<CommitResult> {
    const own = copyTxn(txn);
    validateTxn(own);
    const result = await this.forward!(own);
    await this.whenApplied(result.index);
    return result;
  }

  private drain(): void {
    this.scheduled = false;
    // Apply at most `drainChunk` transactions per turn and hand them to the log at once: the
    // log starts their write+fsync while the next chunk is applied, so CPU and disk overlap
    // instead of taking turns. Whatever queues meanwhile shares the next fsync.
    const chunk = this.opts.drainChunk;
    const batch = this.queue.length <= chunk ? this.queue : this.queue.splice(0, chunk);
    if (batch === this.queue) this.queue = [];
    if (this.queue.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
    if (batch.length === 0) return;
    if (this.failed) {
      for (const e of batch) e.reject(new StoreFailedError({ cause: this.failed }));
      return;
    }
    const applied: Applied[] = [];
    let root = this.pendingRoot;
    for (const entry of batch) {
      // One new root per transaction: it gives every commit its own root for the event
      // handlers, and a transaction that throws leaves no trace.
      try {
        const before = root;
        const index = (before.index + 1) as Index;
        // The root is a dozen fields over persistent maps: a shallow copy is the whole
        // draft. (Through immer's produce this step was ~40% of a commit's CPU; immer still
        // does the row edits, and replay.) A throw leaves `before` untouched.
        const d = { ...before, idx: { ...before.idx } } as unknown as MutableRoot;
        const changes = applyTxn(d, entry.txn, index);
        d.index = index;
        Object.freeze(d.idx);
        root = Object.freeze(d) as unknown as StateRoot;
        applied.push({
          entry,
          before,
          after: root,
          commit: Object.freeze({ index, changes: Object.freeze(changes) }),
        });
      } catch (err) {
        entry.reject(err);
      }
    }
    if (applied.length === 0) return;
    this.pendingRoot = root;
    const commits = applied.map((a) => a.commit);
    const durable = this.log
      ? this.log.append(commits[0]!.index, encodeWalRecords(commits))
      : Promise.resolve();
    this.inflight = durable.then(
      () => this.publish(applied, root),
      (err) => this.fail(err, applied),
    );
  }

  private publish(applied: Applied[], root: StateRoot): void {
    this.committedRoot = root;
    for (const a of applied) {
      for (const l of this.listeners) {
        try {
          l(a.commit, a.before, a.after);
        } catch (err) {
          this.opts.logger.error({ err }, "commit listener threw");
        }
      }
    }
    for (const a of applied) a.entry.resolve({ index: a.commit.index, changes: a.commit.changes });
    if (
      !this.snapshotting &&
      root.index - this.lastSnapshotIndex >= this.opts.snapshotEvery &&
      performance.now() - this.lastSnapshotAt >= this.opts.snapshotMinIntervalMs
    ) {
      void this.snapshot().catch((err) => this.opts.logger.error({ err }, "snapshot failed"));
    }
  }

  private fail(err: unknown, applied: Applied[]): void {
    if (!this.failed) {
      this.failed = err;
      this.opts.logger.error({ err }, "write-ahead log failed: the store takes no more commits");
    }
    // What is in memory may be ahead of the disk: readers keep the last durable root.
    this.pendingRoot = this.committedRoot;
    for (const a of applied)
      a.entry.reject(err instanceof StoreFailedError ? err : new StoreFailedError({ cause: err }));
  }

  /**
   * Writes a snapshot of the durable root, then drops log segments older than the history
   * the stream layer may still need. Returns the snapshot's index. All of it asynchronous and
   * the encoding sliced (`writeSnapshot`): commits and streams go on meanwhile.
   */
  snapshot(): Promise<Index> {
    const p = this.writeSnapshotNow();
    // close() waits for it, whoever asked for it.
    this.background = p.then(
      () => {},
      () => {},
    );
    return p;
  }

  private async writeSnapshotNow(): Promise<Index> {
    const dir = this.opts.dataDir;
    const root = this.committedRoot;
    if (!dir || !this.log || this.snapshotting) return root.index;
    this.snapshotting = true;
    try {
      const t0 = performance.now();
      const file = await writeSnapshot(dir, root);
      this.lastSnapshotIndex = root.index;
      this.lastSnapshotAt = performance.now();
      this.log.rotate();
      await pruneSnapshots(dir, 2);
      const keepFrom = this.opts.retainLogFrom?.() ?? Number.POSITIVE_INFINITY;
      const upTo = Math.min(root.index - this.opts.historyRetain, keepFrom - 1);
      const removed = await deleteSegmentsUpTo(dir, upTo, this.log.activeSegment);
      this.opts.logger.info(
        { index: root.index, file, ms: Math.round(performance.now() - t0), segmentsRemoved: removed },
        "snapshot written",
      );
      return root.index;
    } finally {
      this.snapshotting = false;
    }
  }

  /** Stops taking commits, lets queued ones finish, flushes the log and releases the directory. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.scheduled) this.drain();
    await this.inflight.catch(() => {});
    // A snapshot still being written finishes before the directory is released.
    await this.background;
    await this.log?.close();
    this.listeners.clear();
    if (this.lockFile) releaseDirLock(this.lockFile);
  }
}

/** Loads the newest snapshot and replays the log after it, collecting recent history. */
function recover(
  dir: string,
  historyRetain: number,
  logger: StoreLogger,
): { root: StateRoot; history: Commit[]; logEnd: number } {
  const t0 = performance.now();
  const snap = listSnapshots(dir).at(-1);
  let root = snap ? readSnapshot(snap.file) : emptyRoot();
  const snapIndex = root.index as number;
  const segs = listSegments(dir);
  const history: Commit[] = [];
  let prev: number | undefined;
  let replayed = 0;
  let lastReport = performance.now();
  segs.forEach((seg, i) => {
    const { records, truncatedBytes } = readSegment(seg.file, i === segs.length - 1);
    if (truncatedBytes > 0) {
      logger.warn({ file: seg.file, bytes: truncatedBytes }, "cut a torn record off the end of the log");
    }
    const toApply: Commit[] = [];
    for (const rec of records) {
      if (prev !== undefined && rec.index !== prev + 1) {
        // A gap the snapshot covers (its segment was removed, or records after it were
        // lost while the snapshot survived) costs history, not state.
        if (rec.index > snapIndex + 1) {
          throw new CorruptLogError(seg.file, 0, `index ${rec.index} follows ${prev}: the log has a gap`);
        }
        history.length = 0;
      }
      prev = rec.index;
      const commit = decodeWalCommit(rec.payload, seg.file);
      if (commit.index !== rec.index)
        throw new CorruptLogError(seg.file, 0, `record ${rec.index} holds commit ${commit.index}`);
      history.push(commit);
      if (history.length > historyRetain * 2) history.splice(0, history.length - historyRetain);
      if (rec.index > snapIndex) toApply.push(commit);
    }
    if (toApply.length > 0) {
      if ((root.index as number) + 1 !== toApply[0]!.index) {
        throw new CorruptLogError(
          seg.file,
          0,
          `log resumes at ${toApply[0]!.index} but the state is at ${root.index}`,
        );
      }
      root = produce(root, (draft) => {
        const d = draft as unknown as MutableRoot;
        for (const c of toApply) redo(d, c.changes);
        d.index = toApply.at(-1)!.index;
      });
      replayed += toApply.length;
    }
    if (performance.now() - lastReport > 2000) {
      lastReport = performance.now();
      logger.info({ segment: seg.file, replayed, index: root.index }, "replaying the write-ahead log");
    }
  });
  if (history.length > historyRetain) history.splice(0, history.length - historyRetain);
  // History must end at the recovered state to be replayable.
  if ((prev ?? 0) !== root.index) history.length = 0;
  logger.info(
    {
      dir,
      snapshotIndex: snapIndex,
      replayed,
      index: root.index,
      ms: Math.round(performance.now() - t0),
    },
    "state recovered",
  );
  return { root, history, logEnd: prev ?? 0 };
}

/** A private deep copy of plain data: objects, arrays and bytes (cheaper than structuredClone). */
function copyPlain(v: unknown): unknown {
  if (typeof v !== "object" || v === null) return v;
  // A copy, and a plain Uint8Array even for a Buffer (whose slice() would share memory).
  if (v instanceof Uint8Array) return Uint8Array.prototype.slice.call(v);
  if (Array.isArray(v)) return v.map(copyPlain);
  const out: Record<string, unknown> = {};
  for (const k in v) out[k] = copyPlain((v as Record<string, unknown>)[k]);
  return out;
}

/** A private copy of one operation: a shallow copy, with nested objects and bytes copied deeply. */
function copyOp(op: unknown): unknown {
  if (typeof op !== "object" || op === null || Array.isArray(op) || op instanceof Uint8Array)
    return copyPlain(op);
  const out: Record<string, unknown> = { ...(op as Record<string, unknown>) };
  for (const k in out) {
    const v = out[k];
    if (typeof v === "object" && v !== null) out[k] = copyPlain(v);
  }
  return out;
}

function copyTxn(txn: Txn): Txn {
  if (!Array.isArray(txn)) return txn;
  return txn.map(copyOp) as unknown as Txn;
}
