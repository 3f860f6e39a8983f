import { type Event, type Subject, SubjectKind, Topic } from "../../src/state/events/index.js";
import { queries, type StateRoot } from "../../src/state/index.js";
import { type Frame, FrameKind } from "../../src/stream/index.js";

/*
 * A client's materialized view of one topic and subject, built only from the frames it reads,
 * and the store's projection of the same subject at a root, so that tests can check the
 * view-equivalence invariant (DESIGN.md, invariant 4) and the frame-order invariants
 * (invariants 2 and 3) on every frame.
 */

/** A stable text form of a row or payload: sorted keys, bytes as hex. */
export function canonical(value: unknown): string {
  if (value instanceof Uint8Array) return `hex:${Buffer.from(value).toString("hex")}`;
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const o = value as Record<string, unknown>;
    const keys = Object.keys(o)
      .filter((k) => o[k] !== undefined && k !== "encoded")
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "undefined";
}

/** Entries of a view or projection: entry key → canonical content. */
export type Entries = Map<string, string>;

const instanceKey = (node: string, serviceId: string): string => `${node}\u0000${serviceId}`;

/** Whether an event's subject belongs to a subscription's subject (service names are case-insensitive). */
export function subjectMatches(topic: Topic, subject: Subject, eventSubject: string): boolean {
  switch (subject.kind) {
    case SubjectKind.Key:
      return eventSubject === (topic === Topic.KV ? subject.key : subject.key.toLowerCase());
    case SubjectKind.Prefix:
      return eventSubject.startsWith(subject.prefix);
    case SubjectKind.Wildcard:
      return true;
    default: {
      const never: never = subject;
      return never;
    }
  }
}

/** The store's projection of a topic and subject at a root, computed from the public queries. */
export function project(topic: Topic, subject: Subject, root: StateRoot): Entries {
  const out: Entries = new Map();
  switch (topic) {
    case Topic.ServiceHealth: {
      if (subject.kind !== SubjectKind.Key) throw new Error("ServiceHealth takes a key subject");
      for (const service of queries.serviceInstances(root, subject.key)) {
        const node = queries.getNode(root, service.Node);
        if (!node) throw new Error(`store: service ${service.ID} on missing node ${service.Node}`);
        const checks = queries.instanceChecks(root, service.Node, service.ID);
        out.set(instanceKey(service.Node, service.ID), canonical({ node, service, checks }));
      }
      return out;
    }
    case Topic.KV: {
      if (subject.kind === SubjectKind.Key) {
        const row = queries.kvGet(root, subject.key);
        if (row) out.set(row.Key, canonical(row));
      } else {
        for (const row of queries.kvList(root, subject.kind === SubjectKind.Prefix ? subject.prefix : "")) {
          out.set(row.Key, canonical(row));
        }
      }
      return out;
    }
    case Topic.ServiceList:
      // An entry's identity is the lower-cased name (the event subject); the spelling shown
      // is the registered one and may differ in case between instances.
      for (const name of queries.serviceNames(root)) out.set(name, canonical({ name }));
      return out;
    default: {
      const never: never = topic;
      return never;
    }
  }
}

/** Applies one event to entries: register/set puts, deregister/delete removes. */
export function applyEvent(entries: Entries, e: Event): void {
  switch (e.topic) {
    case Topic.ServiceHealth: {
      const { op, node, service, checks } = e.payload;
      const k = instanceKey(service.Node, service.ID);
      if (op === "register") entries.set(k, canonical({ node, service, checks }));
      else entries.delete(k);
      return;
    }
    case Topic.KV: {
      const { op, entry } = e.payload;
      if (op === "set") entries.set(entry.Key, canonical(entry));
      else entries.delete(entry.Key);
      return;
    }
    case Topic.ServiceList: {
      if (e.payload.op === "register") entries.set(e.subject, canonical({ name: e.subject }));
      else entries.delete(e.subject);
      return;
    }
    default: {
      const never: never = e;
      throw new Error(`unknown event ${String(never)}`);
    }
  }
}

/** The differences between a view and a projection, for failure messages (empty when equal). */
export function diffEntries(view: Entries, expected: Entries): string[] {
  const out: string[] = [];
  for (const [k, v] of expected) {
    const got = view.get(k);
    if (got === undefined) out.push(`missing ${JSON.stringify(k)}`);
    else if (got !== v) out.push(`stale ${JSON.stringify(k)}: has ${got}, store has ${v}`);
  }
  for (const k of view.keys()) if (!expected.has(k)) out.push(`extra ${JSON.stringify(k)}`);
  return out;
}

/** A frame-order or view invariant that a subscription broke. */
export class StreamInvariantError extends Error {
  override readonly name = "StreamInvariantError";
  constructor(
    readonly client: string,
    readonly rule: string,
    detail: string,
  ) {
    super(`${client}: ${rule}: ${detail}`);
  }
}

const Phase = {
  /** Subscribed at index 0: snapshot frames, then EndOfSnapshot. */
  Initial: "initial",
  /** Resumed at an index: the continuation, or NewSnapshotToFollow first. */
  Resumed: "resumed",
  /** After NewSnapshotToFollow: snapshot frames, then EndOfSnapshot. */
  Snapshot: "snapshot",
  Live: "live",
} as const;
type Phase = (typeof Phase)[keyof typeof Phase];

/** One-line form of a frame for messages. */
export function frameLabel(f: Frame): string {
  switch (f.kind) {
    case FrameKind.NewSnapshotToFollow:
      return "NST";
    case FrameKind.Snapshot:
      return `S${f.index}:${f.events.length}`;
    case FrameKind.EndOfSnapshot:
      return `EOS${f.index}`;
    case FrameKind.Events:
      return `E${f.index}:[${f.events.map((e) => `${e.index}/${e.subject}`).join(",")}]`;
    case FrameKind.Progress:
      return `P${f.index}`;
    default: {
      const never: never = f;
      return never;
    }
  }
}

/**
 * A simulated client: applies the frames it reads to its view and checks, frame by frame,
 * that indexes only move forward, that a commit never spans frames, that a snapshot comes
 * only first or after NewSnapshotToFollow, and that every event belongs to its subject.
 */
export class ClientView {
  entries: Entries;
  /** The last index the client was told (by EndOfSnapshot, events or progress). */
  index: number;
  private phase: Phase;
  /** Index of the snapshot being received (its frames must agree). */
  private snapshotIndex: number | undefined;
  /** The index before a reset, which the new snapshot must not go behind. */
  private floor = 0;
  readonly frames: string[] = [];
  resets = 0;
  eventsApplied = 0;

  constructor(
    readonly name: string,
    readonly topic: Topic,
    readonly subject: Subject,
    /** Resume from this index with these entries; absent: index 0 with an empty view. */
    from?: { readonly index: number; readonly entries: Entries },
  ) {
    this.index = from?.index ?? 0;
    this.entries = new Map(from?.entries ?? []);
    this.phase = from ? Phase.Resumed : Phase.Initial;
  }

  /** Whether the view is a whole state (not in the middle of a snapshot) with an index to resume from. */
  get consistent(): boolean {
    return (this.phase === Phase.Live || this.phase === Phase.Resumed) && this.index > 0;
  }

  /** The client reconnects (after a shutdown) and resumes with its index and view. */
  reconnect(): void {
    if (!this.consistent) throw new Error(`${this.name}: no consistent view to resume from`);
    this.phase = Phase.Resumed;
  }

  private fail(rule: string, frame: Frame): never {
    const recent = this.frames.slice(-8).join(" ");
    throw new StreamInvariantError(
      this.name,
      rule,
      `frame ${frameLabel(frame)} at view index ${this.index} (phase ${this.phase}); frames before: ${recent}`,
    );
  }

  apply(frame: Frame): void {
    switch (frame.kind) {
      case FrameKind.NewSnapshotToFollow:
        if (this.phase === Phase.Initial || this.phase === Phase.Snapshot) {
          this.fail("NewSnapshotToFollow in the middle of a snapshot", frame);
        }
        this.floor = this.index;
        this.entries = new Map();
        this.phase = Phase.Snapshot;
        this.snapshotIndex = undefined;
        this.resets++;
        break;
      case FrameKind.Snapshot:
        if (this.phase !== Phase.Initial && this.phase !== Phase.Snapshot) {
          this.fail("snapshot frame without NewSnapshotToFollow (resume must give the continuation)", frame);
        }
        if (this.snapshotIndex !== undefined && this.snapshotIndex !== frame.index) {
          this.fail("snapshot frames of different indexes", frame);
        }
        this.snapshotIndex = frame.index;
        for (const e of frame.events) {
          if (e.topic !== this.topic) this.fail(`snapshot event of topic ${e.topic}`, frame);
          if (!subjectMatches(this.topic, this.subject, e.subject))
            this.fail(`snapshot event for ${e.subject}`, frame);
          if (e.payload.op !== "register" && e.payload.op !== "set")
            this.fail("snapshot event not a put", frame);
          if (e.index !== frame.index) this.fail(`snapshot event carries index ${e.index}`, frame);
          applyEvent(this.entries, e);
        }
        break;
      case FrameKind.EndOfSnapshot:
        if (this.phase !== Phase.Initial && this.phase !== Phase.Snapshot) {
          this.fail("EndOfSnapshot without a snapshot", frame);
        }
        if (this.snapshotIndex !== undefined && this.snapshotIndex !== frame.index) {
          this.fail("EndOfSnapshot index differs from its snapshot frames", frame);
        }
        if (frame.index < 1) this.fail("EndOfSnapshot index below 1", frame);
        if (frame.index < this.floor)
          this.fail("snapshot went back behind the index before the reset", frame);
        this.index = frame.index;
        this.phase = Phase.Live;
        this.snapshotIndex = undefined;
        break;
      case FrameKind.Events: {
        if (this.phase !== Phase.Live && this.phase !== Phase.Resumed) {
          this.fail("events before the snapshot ended", frame);
        }
        if (frame.index <= this.index) this.fail("events frame index does not increase", frame);
        if (frame.events.length === 0) this.fail("empty events frame", frame);
        let last = this.index;
        for (const e of frame.events) {
          if (e.topic !== this.topic) this.fail(`event of topic ${e.topic}`, frame);
          if (!subjectMatches(this.topic, this.subject, e.subject))
            this.fail(`event for ${e.subject}`, frame);
          if (e.index <= this.index) this.fail(`event index ${e.index} not above the view's index`, frame);
          if (e.index < last) this.fail("events out of index order", frame);
          if (e.index > frame.index) this.fail("event index above its frame's", frame);
          last = e.index;
          applyEvent(this.entries, e);
          this.eventsApplied++;
        }
        if (last !== frame.index) this.fail("frame index is not its last event's index", frame);
        this.index = frame.index;
        this.phase = Phase.Live;
        break;
      }
      case FrameKind.Progress:
        if (this.phase !== Phase.Live && this.phase !== Phase.Resumed) {
          this.fail("progress before the snapshot ended", frame);
        }
        if (frame.index < this.index) this.fail("progress went backwards", frame);
        this.index = frame.index;
        this.phase = Phase.Live;
        break;
      default: {
        const never: never = frame;
        throw new Error(`unknown frame ${String(never)}`);
      }
    }
    this.frames.push(frameLabel(frame));
    if (this.frames.length > 64) this.frames.splice(0, 32);
  }

  /** Throws unless the view equals `expected` (the store's projection at `label`). */
  expectEquals(expected: Entries, label: string): void {
    const diff = diffEntries(this.entries, expected);
    if (diff.length > 0) {
      throw new StreamInvariantError(
        this.name,
        `view differs from the store's projection ${label}`,
        `${diff.slice(0, 6).join("; ")} (view index ${this.index}; frames: ${this.frames.slice(-8).join(" ")})`,
      );
    }
  }
}
