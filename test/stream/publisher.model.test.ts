import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DEFAULT_HANDLERS, type Subject, SubjectKind, TOPICS, Topic } from "../../src/state/events/index.js";
import {
  CasFailedError,
  type CheckStatus,
  ConflictError,
  MissingReferenceError,
  type Op,
  type StateRoot,
  Store,
  type StoreOptions,
  ValidationError,
} from "../../src/state/index.js";
import {
  EventPublisher,
  FrameKind,
  type PublisherOptions,
  ShuttingDownError,
  type Subscription,
} from "../../src/stream/index.js";
import { assertReplayable, commandsReplayPath, replayConfig } from "../helpers/fc-replay.js";
import {
  ClientView,
  diffEntries,
  type Entries,
  frameLabel,
  project,
  StreamInvariantError,
  subjectMatches,
} from "../helpers/views.js";

/*
 * Model-based test of the EventPublisher (DESIGN.md invariants 2, 3, 4 and 6) against a real
 * store: random transactions, subscribers, resumes at random indexes, slow readers, partial
 * reads, unsubscribes and restarts. Every simulated client keeps a materialized view built
 * only from its frames; each frame is checked as it is applied (indexes only move forward, a
 * commit never spans frames, a resume gives the continuation or NewSnapshotToFollow first),
 * and whenever a client has read everything ready its view must equal the store's projection
 * of its subject at the last index it saw (every root is recorded by index) and at the
 * current index.
 *
 * Replay a failure with the line it prints (SLUICE_FC_SEED / SLUICE_FC_PATH); SLUICE_FC_RUNS
 * sets the number of runs.
 */

const enc = new TextEncoder();
const KEYS = ["a", "a/b", "a/c", "b"] as const;
const PREFIXES = ["a", "a/", "b"] as const;
const NODES = ["n1", "n2"] as const;
const SERVICE_IDS = ["s1", "s2", "s3"] as const;
/** "Web" and "web" are one ServiceHealth subject: renaming between them changes case only. */
const SERVICE_NAMES = ["web", "api", "Web"] as const;
const CHECK_IDS = ["c1", "c2", "c3"] as const;
const STATUSES: readonly CheckStatus[] = ["passing", "critical"];
const MAX_CLIENTS = 10;
const PROGRESS_MS = 100;

// ---- transactions ----

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.constantFrom(...KEYS), fc.constantFrom("1", "2", "3"), fc.constantFrom(0, 7))
      .map(([key, v, flags]): Op => ({ op: "kv.set", key, value: enc.encode(v), flags })),
  },
  { weight: 2, arbitrary: fc.constantFrom(...KEYS).map((key): Op => ({ op: "kv.delete", key })) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(...PREFIXES).map((prefix): Op => ({ op: "kv.deleteTree", prefix })),
  },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.constantFrom(...NODES), fc.constantFrom("10.0.0.1", "10.0.0.2"))
      .map(([Node, Address]): Op => ({ op: "node.register", node: { Node, Address } })),
  },
  { weight: 1, arbitrary: fc.constantFrom(...NODES).map((node): Op => ({ op: "node.deregister", node })) },
  {
    weight: 5,
    arbitrary: fc
      .tuple(
        fc.constantFrom(...NODES),
        fc.constantFrom(...SERVICE_IDS),
        fc.constantFrom(...SERVICE_NAMES),
        fc.constantFrom(80, 8080),
      )
      .map(
        ([Node, ID, Service, Port]): Op => ({ op: "service.register", service: { Node, ID, Service, Port } }),
      ),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(...NODES), fc.constantFrom(...SERVICE_IDS))
      .map(([node, serviceId]): Op => ({ op: "service.deregister", node, serviceId })),
  },
  {
    weight: 4,
    arbitrary: fc
      .tuple(
        fc.constantFrom(...NODES),
        fc.constantFrom(...CHECK_IDS),
        fc.constantFrom("", ...SERVICE_IDS),
        fc.constantFrom(...STATUSES),
      )
      .map(
        ([Node, CheckID, ServiceID, Status]): Op => ({
          op: "check.register",
          check: { Node, CheckID, ServiceID, Status },
        }),
      ),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom(...NODES), fc.constantFrom(...CHECK_IDS))
      .map(([node, checkId]): Op => ({ op: "check.deregister", node, checkId })),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(...NODES), fc.constantFrom(...CHECK_IDS), fc.constantFrom(...STATUSES))
      .map(([node, checkId, status]): Op => ({ op: "check.status", node, checkId, status })),
  },
);

/** Mostly single operations; some transactions of several, so that one commit changes a row twice. */
const txnArb: fc.Arbitrary<Op[]> = fc.oneof(
  { weight: 3, arbitrary: opArb.map((o) => [o]) },
  { weight: 2, arbitrary: fc.array(opArb, { minLength: 2, maxLength: 4 }) },
);

function opLabel(o: Op): string {
  switch (o.op) {
    case "kv.set":
      return `kv.set ${o.key}=${new TextDecoder().decode(o.value)}${o.flags ? ` f${o.flags}` : ""}`;
    case "kv.delete":
      return `kv.delete ${o.key}`;
    case "kv.deleteTree":
      return `kv.deleteTree ${o.prefix}`;
    case "node.register":
      return `node.register ${o.node.Node}@${o.node.Address}`;
    case "node.deregister":
      return `node.deregister ${o.node}`;
    case "service.register":
      return `service.register ${o.service.Node}/${o.service.ID}=${o.service.Service}:${o.service.Port}`;
    case "service.deregister":
      return `service.deregister ${o.node}/${o.serviceId}`;
    case "check.register":
      return `check.register ${o.check.Node}/${o.check.CheckID}->${o.check.ServiceID || "node"}:${o.check.Status}`;
    case "check.deregister":
      return `check.deregister ${o.node}/${o.checkId}`;
    case "check.status":
      return `check.status ${o.node}/${o.checkId}:${o.status}`;
    default:
      return o.op;
  }
}

/** A populated start: both nodes, instances under every name, node and service checks, keys. */
const SEED_TXN: Op[] = [
  ...NODES.map((Node): Op => ({ op: "node.register", node: { Node, Address: "10.0.0.1" } })),
  { op: "service.register", service: { Node: "n1", ID: "s1", Service: "web" } },
  { op: "service.register", service: { Node: "n1", ID: "s2", Service: "api" } },
  { op: "service.register", service: { Node: "n2", ID: "s1", Service: "Web" } },
  { op: "service.register", service: { Node: "n2", ID: "s3", Service: "api" } },
  { op: "check.register", check: { Node: "n1", CheckID: "c1", Status: "passing" } },
  { op: "check.register", check: { Node: "n1", CheckID: "c2", ServiceID: "s1", Status: "critical" } },
  { op: "check.register", check: { Node: "n2", CheckID: "c3", ServiceID: "s3", Status: "passing" } },
  ...KEYS.map((key): Op => ({ op: "kv.set", key, value: enc.encode("0") })),
];

const txnLabel = (txn: readonly Op[]): string => `[${txn.map(opLabel).join("; ")}]`;

/** Rejections a random transaction may meet; they change nothing. */
const isRejection = (err: unknown): boolean =>
  err instanceof MissingReferenceError ||
  err instanceof CasFailedError ||
  err instanceof ConflictError ||
  err instanceof ValidationError;

// ---- subjects ----

interface Target {
  readonly topic: Topic;
  readonly subject: Subject;
}

const targetArb: fc.Arbitrary<Target> = fc.oneof(
  fc
    .constantFrom(...KEYS)
    .map((key): Target => ({ topic: Topic.KV, subject: { kind: SubjectKind.Key, key } })),
  fc
    .constantFrom(...PREFIXES)
    .map((prefix): Target => ({ topic: Topic.KV, subject: { kind: SubjectKind.Prefix, prefix } })),
  fc.constant<Target>({ topic: Topic.KV, subject: { kind: SubjectKind.Wildcard } }),
  fc
    .constantFrom("web", "api", "WEB")
    .map((key): Target => ({ topic: Topic.ServiceHealth, subject: { kind: SubjectKind.Key, key } })),
  fc.constant<Target>({ topic: Topic.ServiceList, subject: { kind: SubjectKind.Wildcard } }),
);

function targetLabel(t: Target): string {
  const s = t.subject;
  const subj = s.kind === SubjectKind.Key ? s.key : s.kind === SubjectKind.Prefix ? `${s.prefix}*` : "*";
  return `${t.topic}:${subj}`;
}

/** One stream per topic and normalized subject (service names are case-insensitive). */
function streamKey(t: Target): string {
  const s = t.subject;
  if (s.kind === SubjectKind.Key)
    return `${t.topic} key ${t.topic === Topic.KV ? s.key : s.key.toLowerCase()}`;
  return `${t.topic} ${s.kind} ${s.kind === SubjectKind.Prefix ? s.prefix : ""}`;
}

/** What the runs exercised, summed over runs: a property that never resets proves little. */
const newCoverage = () => ({
  runs: 0,
  commits: 0,
  rejected: 0,
  maxIndex: 0,
  frames: { snapshot: 0, endOfSnapshot: 0, newSnapshotToFollow: 0, events: 0, progress: 0 },
  multiCommitFrames: 0,
  resumes: 0,
  restarts: 0,
  caughtUpChecks: 0,
  publisherResets: 0,
});
let coverage = newCoverage();

// ---- the system under test ----

interface Variant {
  /** A store with a data directory (restarts reopen it) or in memory (restarts re-attach). */
  readonly durable: boolean;
  /** Start from a populated store (else from an empty one, index 0). */
  readonly seeded: boolean;
  readonly maxEvents: number;
  readonly maxFrameEvents: number;
  readonly maxFrameBytes: number;
  readonly ttlMs: number;
  readonly snapshotEvery: number;
  readonly historyRetain: number;
  /** Small log segments (each is preallocated): rotations and recovery across segments. */
  readonly segmentBytes: number;
}

interface Client {
  readonly id: number;
  view: ClientView;
  sub: Subscription;
  /** Resumed at an index the history no longer covered: NewSnapshotToFollow must come first. */
  resetPending: boolean;
}

/**
 * What each topic's history ring holds, by the rule the issue states: every commit with events
 * for the topic, the oldest dropped while the ring holds more than maxEvents (one commit is
 * always kept). It says when a subscriber must be reset, and when it must not be.
 */
class HistoryModel {
  private readonly rings = new Map<Topic, { index: number; count: number }[]>();
  private readonly totals = new Map<Topic, number>();
  private readonly coveredFrom = new Map<Topic, number>();

  constructor(
    private readonly maxEvents: number,
    start: number,
  ) {
    for (const t of TOPICS) {
      this.rings.set(t, []);
      this.totals.set(t, 0);
      this.coveredFrom.set(t, start);
    }
  }

  push(index: number, subjects: ReadonlyMap<Topic, readonly string[]>): void {
    for (const [t, list] of subjects) {
      if (list.length === 0) continue;
      const ring = this.rings.get(t)!;
      ring.push({ index, count: list.length });
      let total = this.totals.get(t)! + list.length;
      while (ring.length > 1 && total > this.maxEvents) {
        const old = ring.shift()!;
        total -= old.count;
        this.coveredFrom.set(t, old.index);
      }
      this.totals.set(t, total);
    }
  }

  /** Whether the ring holds every commit of the topic above `index`. */
  covers(topic: Topic, index: number): boolean {
    return index >= this.coveredFrom.get(topic)!;
  }

  /** The last index of the topic that left the ring. */
  evictedUpTo(topic: Topic): number {
    return this.coveredFrom.get(topic)!;
  }
}

class World {
  store!: Store;
  pub!: EventPublisher;
  /** The publisher's clock. */
  now = 0;
  /** Every root the store has had, by index: the truth views are compared with. */
  readonly roots: StateRoot[] = [];
  /** Each commit's event subjects per topic, by index (from the topic handlers). */
  private readonly subjectsAt: ReadonlyMap<Topic, readonly string[]>[] = [];
  private history!: HistoryModel;
  readonly clients = new Map<number, Client>();
  private nextId = 1;
  private readonly dir: string | undefined;

  constructor(readonly variant: Variant) {
    this.dir = variant.durable ? mkdtempSync(join(tmpdir(), "sluice-model-")) : undefined;
  }

  private storeOptions(): StoreOptions {
    // As the server does: a new store starts at its creation commit (index 1), so that no
    // snapshot is ever taken at index 0 (one a resuming client could not tell from 1).
    return this.dir === undefined
      ? { inMemory: true, initialize: true }
      : {
          initialize: true,
          dataDir: this.dir,
          fsync: "never",
          snapshotEvery: this.variant.snapshotEvery,
          snapshotMinIntervalMs: 0,
          historyRetain: this.variant.historyRetain,
          segmentBytes: this.variant.segmentBytes,
        };
  }

  private publisherOptions(): PublisherOptions {
    return {
      history: { maxEvents: this.variant.maxEvents },
      progressIntervalMs: PROGRESS_MS,
      maxFrameEvents: this.variant.maxFrameEvents,
      maxFrameBytes: this.variant.maxFrameBytes,
      snapshotCache: { ttlMs: this.variant.ttlMs },
      now: () => this.now,
    };
  }

  async open(): Promise<void> {
    this.store = await Store.open(this.storeOptions());
    this.history = new HistoryModel(this.variant.maxEvents, this.store.index);
    this.watch();
    this.pub = EventPublisher.attach(this.store, this.publisherOptions());
    if (this.variant.seeded) await this.store.commit(SEED_TXN);
  }

  /** Records every root and each commit's event subjects by index, and follows the history rings. */
  private watch(): void {
    this.roots[this.store.index] ??= this.store.root;
    this.store.onCommit((c, before, after) => {
      this.roots[c.index] = after;
      const subjects = new Map<Topic, string[]>();
      for (const [t, handler] of DEFAULT_HANDLERS) {
        subjects.set(
          t,
          handler.eventsOf(c, before, after).map((e) => e.subject),
        );
      }
      this.subjectsAt[c.index] = subjects;
      this.history.push(c.index, subjects);
    });
  }

  /** Whether a commit matching the subject above `index` has left the ring (so the client must be reset). */
  private missedEvents(v: ClientView): boolean {
    for (let i = v.index + 1; i <= this.history.evictedUpTo(v.topic); i++) {
      const subjects = this.subjectsAt[i]?.get(v.topic) ?? [];
      if (subjects.some((s) => subjectMatches(v.topic, v.subject, s))) return true;
    }
    return false;
  }

  async close(): Promise<void> {
    coverage.runs++;
    coverage.publisherResets += this.pub?.metrics.resets ?? 0;
    this.pub?.shutdown();
    await this.store?.close();
    if (this.dir !== undefined) rmSync(this.dir, { recursive: true, force: true });
  }

  async commit(txn: readonly Op[]): Promise<void> {
    try {
      await this.store.commit(txn);
      coverage.commits++;
      coverage.maxIndex = Math.max(coverage.maxIndex, this.store.index);
    } catch (err) {
      if (!isRejection(err)) throw err;
      coverage.rejected++;
    }
  }

  rootAt(index: number, who: string): StateRoot {
    const root = this.roots[index];
    if (root === undefined) {
      throw new StreamInvariantError(who, "index beyond the store", `${index} > ${this.store.index}`);
    }
    return root;
  }

  subscribe(t: Target, from?: { index: number; entries: Entries }): Client {
    const id = this.nextId++;
    const name = `#${id} ${targetLabel(t)}${from ? ` resumed@${from.index}` : ""}`;
    const view = new ClientView(name, t.topic, t.subject, from);
    const sub = this.pub.subscribe({ topic: t.topic, subject: t.subject, index: from?.index ?? 0 });
    const client = {
      id,
      view,
      sub,
      resetPending: from !== undefined && !this.history.covers(t.topic, from.index),
    };
    this.clients.set(id, client);
    return client;
  }

  pick(n: number): Client {
    const ids = [...this.clients.keys()];
    const id = ids[n % ids.length];
    if (id === undefined) throw new Error("no client to pick");
    return this.clients.get(id)!;
  }

  /** Reads up to `max` ready frames; a client that read everything ready is checked against the store. */
  read(c: Client, max = Number.POSITIVE_INFINITY): void {
    for (let i = 0; i < max; i++) {
      // A client with a whole view is reset exactly when it cannot get the continuation.
      const mustReset = c.view.consistent ? c.resetPending || this.missedEvents(c.view) : undefined;
      const frame = c.sub.poll(this.now);
      if (mustReset !== undefined && (frame?.kind === FrameKind.NewSnapshotToFollow) !== mustReset) {
        throw new StreamInvariantError(
          c.view.name,
          mustReset
            ? "not reset though events it needs left the history"
            : "reset though the history holds its continuation",
          `got ${frame ? frameLabel(frame) : "nothing"} at view index ${c.view.index}; frames before: ${c.view.frames.slice(-8).join(" ")}`,
        );
      }
      if (frame === undefined) {
        this.checkCaughtUp(c);
        return;
      }
      if (frame.kind === FrameKind.NewSnapshotToFollow) c.resetPending = false;
      c.view.apply(frame);
      if (c.view.index > this.store.index) {
        throw new StreamInvariantError(
          c.view.name,
          "frame index ahead of the store (a resume from it would skip commits)",
          `${frameLabel(frame)} while the store is at ${this.store.index}`,
        );
      }
      coverage.frames[frame.kind]++;
      if (frame.kind === "events" && frame.events[0]!.index !== frame.index) coverage.multiCommitFrames++;
    }
  }

  /**
   * A caught-up client holds the projection at its last index, and, since nothing for its
   * subject is pending, the projection at the current index too.
   */
  checkCaughtUp(c: Client): void {
    const { view } = c;
    const t: Target = { topic: view.topic, subject: view.subject };
    coverage.caughtUpChecks++;
    view.expectEquals(project(t.topic, t.subject, this.rootAt(view.index, view.name)), `at ${view.index}`);
    view.expectEquals(project(t.topic, t.subject, this.store.root), `at the current ${this.store.index}`);
  }

  /** Publisher-wide invariants: counts match the clients, memory stays within its bounds. */
  checkGlobal(): void {
    expect(this.pub.index).toBe(this.store.index);
    expect(this.pub.subscriptionCount).toBe(this.clients.size);
    const subjects = new Set([...this.clients.values()].map((c) => streamKey(c.view)));
    const stats = this.pub.stats();
    expect(stats.streams).toBe(subjects.size);
    expect(stats.cachedSnapshots).toBeLessThanOrEqual(stats.streams);
    // Three topics, each at most maxEvents or one oversized commit.
    expect(stats.historyEvents).toBeLessThanOrEqual(3 * (this.variant.maxEvents + 16));
  }

  /**
   * Shuts the publisher down (every read throws ShuttingDownError), reopens the store when it
   * has a directory, attaches a new publisher, and every client resumes with its index (or
   * starts over when it was in the middle of a snapshot).
   */
  async restart(): Promise<void> {
    coverage.restarts++;
    coverage.publisherResets += this.pub.metrics.resets;
    this.pub.shutdown();
    for (const c of this.clients.values()) expect(() => c.sub.poll(this.now)).toThrow(ShuttingDownError);
    if (this.dir !== undefined) {
      const index = this.store.index;
      await this.store.close();
      this.store = await Store.open(this.storeOptions());
      expect(this.store.index).toBe(index);
      const was = this.rootAt(index, "restart");
      for (const t of [
        { topic: Topic.KV, subject: { kind: SubjectKind.Wildcard } },
        { topic: Topic.ServiceList, subject: { kind: SubjectKind.Wildcard } },
        ...SERVICE_NAMES.map((key) => ({
          topic: Topic.ServiceHealth,
          subject: { kind: SubjectKind.Key, key },
        })),
      ] as Target[]) {
        expect(
          diffEntries(project(t.topic, t.subject, this.store.root), project(t.topic, t.subject, was)),
        ).toEqual([]);
      }
      this.watch();
    }
    this.pub = EventPublisher.attach(this.store, this.publisherOptions());
    // The new publisher's rings hold what the store recovered from its log (nothing in memory).
    const recovered = this.store.recoveredCommits;
    const first = recovered[0]?.index;
    this.history = new HistoryModel(
      this.variant.maxEvents,
      first === undefined ? this.store.index : first - 1,
    );
    for (const c of recovered) this.history.push(c.index, this.subjectsAt[c.index] ?? new Map());
    for (const c of this.clients.values()) {
      const t: Target = { topic: c.view.topic, subject: c.view.subject };
      if (c.view.consistent) {
        c.view.reconnect();
        c.sub = this.pub.subscribe({ ...t, index: c.view.index });
        c.resetPending = !this.history.covers(t.topic, c.view.index);
      } else {
        c.view = new ClientView(`${c.view.name} restarted@0`, t.topic, t.subject);
        c.sub = this.pub.subscribe({ ...t, index: 0 });
      }
    }
  }
}

// ---- commands ----

interface Model {
  clients: number;
}
type Cmd = fc.AsyncCommand<Model, World, false>;

class CommitCmd implements Cmd {
  constructor(readonly txn: Op[]) {}
  check(): boolean {
    return true;
  }
  async run(_m: Model, w: World): Promise<void> {
    await w.commit(this.txn);
    w.checkGlobal();
  }
  toString(): string {
    return `Commit${txnLabel(this.txn)}`;
  }
}

/** Many commits while nobody reads: slow readers fall off the history and must be reset. */
class SlowReadersCmd implements Cmd {
  constructor(
    readonly txns: Op[][],
    /** Commit them all at once, so that the store's group commit publishes them in one run. */
    readonly together: boolean,
  ) {}
  check(): boolean {
    return true;
  }
  async run(_m: Model, w: World): Promise<void> {
    if (this.together) await Promise.all(this.txns.map((t) => w.commit(t)));
    else for (const t of this.txns) await w.commit(t);
    w.checkGlobal();
  }
  toString(): string {
    return `SlowReaders(${this.together ? "together" : "one by one"}: ${this.txns.map(txnLabel).join(" ")})`;
  }
}

class SubscribeCmd implements Cmd {
  constructor(readonly target: Target) {}
  check(m: Readonly<Model>): boolean {
    return m.clients < MAX_CLIENTS;
  }
  async run(m: Model, w: World): Promise<void> {
    w.subscribe(this.target);
    m.clients++;
    w.checkGlobal();
  }
  toString(): string {
    return `Subscribe(${targetLabel(this.target)})`;
  }
}

/**
 * A new subscription for an existing client's subject, at that client's last index with its
 * view, or at another index with the store's projection there (a client that kept an older
 * view). It must get the exact continuation, or NewSnapshotToFollow first.
 */
class ResumeCmd implements Cmd {
  constructor(
    readonly pick: number,
    readonly atOwnIndex: boolean,
    readonly at: number,
  ) {}
  check(m: Readonly<Model>): boolean {
    return m.clients > 0 && m.clients < MAX_CLIENTS;
  }
  async run(m: Model, w: World): Promise<void> {
    const src = w.pick(this.pick);
    const t: Target = { topic: src.view.topic, subject: src.view.subject };
    let client: Client;
    if (this.atOwnIndex && src.view.consistent) {
      client = w.subscribe(t, { index: src.view.index, entries: src.view.entries });
    } else if (w.store.index > 0) {
      const index = 1 + (this.at % w.store.index);
      client = w.subscribe(t, { index, entries: project(t.topic, t.subject, w.rootAt(index, "resume")) });
    } else {
      client = w.subscribe(t);
    }
    m.clients++;
    coverage.resumes++;
    w.checkGlobal();
    w.read(client);
  }
  toString(): string {
    return this.atOwnIndex
      ? `Resume(client ${this.pick}, its index)`
      : `Resume(client ${this.pick}, at ${this.at})`;
  }
}

class ReadCmd implements Cmd {
  constructor(
    readonly pick: number,
    readonly advanceMs: number,
    /** Read only this many frames (undefined: everything ready). */
    readonly max: number | undefined,
  ) {}
  check(m: Readonly<Model>): boolean {
    return m.clients > 0;
  }
  async run(_m: Model, w: World): Promise<void> {
    w.now += this.advanceMs;
    w.read(w.pick(this.pick), this.max);
    w.checkGlobal();
  }
  toString(): string {
    return `Read(client ${this.pick}, +${this.advanceMs}ms${this.max === undefined ? "" : `, ${this.max} frames`})`;
  }
}

class ReadAllCmd implements Cmd {
  constructor(readonly advanceMs: number) {}
  check(m: Readonly<Model>): boolean {
    return m.clients > 0;
  }
  async run(_m: Model, w: World): Promise<void> {
    w.now += this.advanceMs;
    for (const c of w.clients.values()) w.read(c);
    w.checkGlobal();
  }
  toString(): string {
    return `ReadAll(+${this.advanceMs}ms)`;
  }
}

class UnsubscribeCmd implements Cmd {
  constructor(readonly pick: number) {}
  check(m: Readonly<Model>): boolean {
    return m.clients > 0;
  }
  async run(m: Model, w: World): Promise<void> {
    const c = w.pick(this.pick);
    c.sub.unsubscribe();
    expect(c.sub.poll(w.now)).toBeUndefined();
    expect(c.sub.closed).toBe(true);
    w.clients.delete(c.id);
    m.clients--;
    w.checkGlobal();
  }
  toString(): string {
    return `Unsubscribe(client ${this.pick})`;
  }
}

class RestartCmd implements Cmd {
  check(): boolean {
    return true;
  }
  async run(_m: Model, w: World): Promise<void> {
    await w.restart();
    w.checkGlobal();
  }
  toString(): string {
    return "Restart";
  }
}

const pickArb = fc.nat({ max: MAX_CLIENTS * 3 });
const advanceArb = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 2 * PROGRESS_MS + 50 }));

const commandsArb: fc.Arbitrary<Iterable<Cmd>> = fc.commands<Model, World, false>(
  [
    txnArb.map((t) => new CommitCmd(t)),
    txnArb.map((t) => new CommitCmd(t)),
    txnArb.map((t) => new CommitCmd(t)),
    fc
      .tuple(fc.array(txnArb, { minLength: 1, maxLength: 40, size: "medium" }), fc.boolean())
      .map(([ts, together]) => new SlowReadersCmd(ts, together)),
    targetArb.map((t) => new SubscribeCmd(t)),
    targetArb.map((t) => new SubscribeCmd(t)),
    fc.tuple(pickArb, fc.boolean(), fc.nat()).map(([p, own, at]) => new ResumeCmd(p, own, at)),
    fc
      .tuple(pickArb, advanceArb, fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }))
      .map(([p, a, max]) => new ReadCmd(p, a, max)),
    fc.tuple(pickArb, advanceArb).map(([p, a]) => new ReadCmd(p, a, undefined)),
    advanceArb.map((a) => new ReadAllCmd(a)),
    pickArb.map((p) => new UnsubscribeCmd(p)),
    fc.constant(new RestartCmd()),
  ],
  { maxCommands: 100, size: "medium", replayPath: commandsReplayPath },
);

const variantArb = (durable: boolean): fc.Arbitrary<Variant> =>
  fc.record({
    durable: fc.constant(durable),
    seeded: fc.boolean(),
    maxEvents: fc.integer({ min: 8, max: 30 }),
    maxFrameEvents: fc.constantFrom(2, 3, 4096),
    maxFrameBytes: fc.constantFrom(200, 1000, 1024 * 1024),
    ttlMs: fc.constantFrom(500, 10_000),
    snapshotEvery: fc.constantFrom(7, 30, 50_000),
    historyRetain: fc.constantFrom(5, 25, 10_000),
    segmentBytes: fc.constantFrom(2048, 64 * 1024),
  });

async function runModel(variant: Variant, cmds: Iterable<Cmd>): Promise<void> {
  const world = new World(variant);
  await world.open();
  try {
    await fc.asyncModelRun(() => ({ model: { clients: 0 }, real: world }), cmds);
    // Finally every client reads everything: all views equal the store.
    world.now += PROGRESS_MS;
    for (const c of world.clients.values()) world.read(c);
  } finally {
    await world.close();
  }
}

/** Runs the property, then checks that the runs exercised what the property is about. */
async function runProperty(name: string, durable: boolean, defaultRuns: number): Promise<void> {
  const cfg = replayConfig(defaultRuns);
  coverage = newCoverage();
  const t0 = performance.now();
  await assertReplayable(
    `test/stream/publisher.model.test.ts -t '${name}'`,
    fc.asyncProperty(variantArb(durable), commandsArb, runModel),
    cfg,
  );
  console.log(
    `[${name}] seed ${cfg.seed}, ${Math.round(performance.now() - t0)} ms`,
    JSON.stringify(coverage),
  );
  if (cfg.path !== undefined || cfg.numRuns < defaultRuns) return;
  const f = coverage.frames;
  expect(coverage.maxIndex).toBeGreaterThan(40);
  expect(f.newSnapshotToFollow).toBeGreaterThan(0);
  expect(coverage.publisherResets).toBeGreaterThan(0);
  expect(f.progress).toBeGreaterThan(0);
  expect(f.events).toBeGreaterThan(0);
  expect(coverage.multiCommitFrames).toBeGreaterThan(0);
  expect(coverage.resumes).toBeGreaterThan(0);
  expect(coverage.restarts).toBeGreaterThan(0);
}

describe("EventPublisher model", () => {
  it("in-memory store, publisher restarts: views equal the store's projection", async () => {
    await runProperty("in-memory store", false, 300);
  }, 120_000);

  it("durable store, store and publisher restarts: clients resume across restarts", async () => {
    await runProperty("durable store", true, 120);
  }, 120_000);
});
