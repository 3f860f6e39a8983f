import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type Subject, SubjectKind, Topic, type TopicHandler } from "../../src/state/events/index.js";
import { Store, type Txn } from "../../src/state/index.js";
import {
  EventPublisher,
  IndexAheadError,
  InvalidSubjectError,
  type PublisherOptions,
  ShuttingDownError,
  SnapshotFailedError,
  SubscriptionForceClosedError,
} from "../../src/stream/index.js";
import { drain, shape, take } from "../helpers/frames.js";

const enc = new TextEncoder();
const key = (k: string): Subject => ({ kind: SubjectKind.Key, key: k });
const prefix = (p: string): Subject => ({ kind: SubjectKind.Prefix, prefix: p });
const wildcard: Subject = { kind: SubjectKind.Wildcard };
const set = (k: string, v = "v"): Txn => [{ op: "kv.set", key: k, value: enc.encode(v) }];
const node = (n: string): Txn => [{ op: "node.register", node: { Node: n, Address: "10.0.0.1" } }];
const svc = (n: string, id: string, name: string): Txn => [
  { op: "service.register", service: { Node: n, ID: id, Service: name } },
];

let store: Store;
let pub: EventPublisher;

async function open(opts: PublisherOptions = {}): Promise<void> {
  store = await Store.open({ inMemory: true });
  pub = EventPublisher.attach(store, opts);
}

beforeEach(async () => {
  await open();
});
afterEach(async () => {
  pub.shutdown();
  await store.close();
});

describe("EventPublisher", () => {
  it("index 0: snapshot, EndOfSnapshot, then live events", async () => {
    await store.commit(set("a", "1"));
    await store.commit(set("b", "1"));
    const sub = pub.subscribe({ topic: Topic.KV, subject: prefix("a") });
    expect(shape(drain(sub))).toEqual(["S2:1", "EOS2"]);
    await store.commit(set("a", "2"));
    await store.commit(set("b", "2"));
    await store.commit(set("ab", "2"));
    const frames = drain(sub);
    expect(shape(frames)).toEqual(["E5:2"]);
    const ev = frames[0]!.kind === "events" ? frames[0]!.events : [];
    expect(ev.map((e) => [e.index, e.subject])).toEqual([
      [3, "a"],
      [5, "ab"],
    ]);
  });

  it("a snapshot index of 0 is reported as 1", () => {
    const sub = pub.subscribe({ topic: Topic.KV, subject: key("x") });
    expect(shape(drain(sub))).toEqual(["EOS1"]);
  });

  it("rejects subjects the topic does not allow, at subscribe time", () => {
    expect(() => pub.subscribe({ topic: Topic.ServiceHealth, subject: wildcard })).toThrow(
      InvalidSubjectError,
    );
    expect(() => pub.subscribe({ topic: Topic.ServiceHealth, subject: prefix("w") })).toThrow(
      InvalidSubjectError,
    );
    expect(() => pub.subscribe({ topic: Topic.ServiceList, subject: key("web") })).toThrow(
      InvalidSubjectError,
    );
    expect(() => pub.subscribe({ topic: Topic.KV, subject: key("") })).toThrow(InvalidSubjectError);
    expect(() => pub.subscribe({ topic: "Nope" as Topic, subject: wildcard })).toThrow(InvalidSubjectError);
    expect(() => pub.subscribe({ topic: Topic.KV, subject: wildcard, index: -1 })).toThrow(
      InvalidSubjectError,
    );
    expect(pub.subscriptionCount).toBe(0);
  });

  it("rejects an index ahead of the store", async () => {
    await store.commit(set("a"));
    let err: unknown;
    try {
      pub.subscribe({ topic: Topic.KV, subject: key("a"), index: 5 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IndexAheadError);
    expect((err as IndexAheadError).current).toBe(1);
  });

  it("serves a second subscriber within the TTL from the cache, and it still sees later events", async () => {
    const handler = vi.fn((s: Subject, r: Parameters<TopicHandler["snapshot"]>[1]) => kv.snapshot(s, r));
    const { DEFAULT_HANDLERS, kvHandler: kv } = await import("../../src/state/events/index.js");
    const handlers = new Map(DEFAULT_HANDLERS);
    handlers.set(Topic.KV, { ...kv, snapshot: handler });
    pub.shutdown();
    pub = EventPublisher.attach(store, { handlers });
    await store.commit(set("k", "1"));
    const a = pub.subscribe({ topic: Topic.KV, subject: key("k") });
    expect(shape(drain(a))).toEqual(["S1:1", "EOS1"]);
    await store.commit(set("k", "2"));
    const b = pub.subscribe({ topic: Topic.KV, subject: key("k") });
    expect(shape(drain(b))).toEqual(["S1:1", "EOS1", "E2:1"]);
    expect(handler).toHaveBeenCalledTimes(1);
    expect(pub.metrics.snapshotCacheHits).toBe(1);
    await store.commit(set("k", "3"));
    expect(shape(drain(a))).toEqual(["E3:2"]);
    expect(shape(drain(b))).toEqual(["E3:1"]);
  });

  it("resume inside the history gets exactly the missed events, no snapshot", async () => {
    for (let i = 0; i < 10; i++) await store.commit(set(`k${i % 3}`, String(i)));
    const sub = pub.subscribe({ topic: Topic.KV, subject: key("k1"), index: 4 });
    const frames = drain(sub);
    // k1 was set at indexes 2, 5 and 8.
    expect(shape(frames)).toEqual(["E8:2"]);
    const ev = frames[0]!.kind === "events" ? frames[0]!.events : [];
    expect(ev.map((e) => e.index)).toEqual([5, 8]);
  });

  it("resume works for a subject nobody watched, and for prefixes", async () => {
    for (let i = 1; i <= 6; i++) await store.commit(set(`p/${i}`));
    const sub = pub.subscribe({ topic: Topic.KV, subject: prefix("p/"), index: 3 });
    expect(shape(drain(sub))).toEqual(["E6:3"]);
  });

  it("resume with an index that fell off the history gets NewSnapshotToFollow", async () => {
    pub.shutdown();
    pub = EventPublisher.attach(store, { history: { maxEvents: 5 } });
    for (let i = 0; i < 20; i++) await store.commit(set(`k${i}`));
    const sub = pub.subscribe({ topic: Topic.KV, subject: wildcard, index: 3 });
    expect(shape(drain(sub))).toEqual(["NST", "S20:20", "EOS20"]);
  });

  it("a cached snapshot carries NewSnapshotToFollow only for the resetting subscriber", async () => {
    pub.shutdown();
    pub = EventPublisher.attach(store, { history: { maxEvents: 2 } });
    for (let i = 0; i < 6; i++) await store.commit(set("k"));
    const resuming = pub.subscribe({ topic: Topic.KV, subject: key("k"), index: 1 });
    expect(shape(drain(resuming))).toEqual(["NST", "S6:1", "EOS6"]);
    const fresh = pub.subscribe({ topic: Topic.KV, subject: key("k") });
    expect(shape(drain(fresh))).toEqual(["S6:1", "EOS6"]);
    expect(pub.metrics.snapshotBuilds).toBe(1);
  });

  it("a slow subscriber whose next event left the history is reset, and memory stays bounded", async () => {
    pub.shutdown();
    pub = EventPublisher.attach(store, { history: { maxEvents: 10 } });
    const slow = pub.subscribe({ topic: Topic.KV, subject: wildcard });
    drain(slow);
    for (let i = 0; i < 100; i++) await store.commit(set(`k${i % 7}`));
    expect(pub.stats().historyEvents).toBeLessThanOrEqual(10);
    expect(shape(drain(slow))).toEqual(["NST", "S100:7", "EOS100"]);
    expect(pub.metrics.resets).toBe(1);
  });

  it("events of one commit arrive together; a lagging reader gets several commits in one frame", async () => {
    const sub = pub.subscribe({ topic: Topic.KV, subject: prefix("x/") });
    drain(sub);
    await store.commit([
      { op: "kv.set", key: "x/1", value: enc.encode("a") },
      { op: "kv.set", key: "y/1", value: enc.encode("a") },
      { op: "kv.set", key: "x/2", value: enc.encode("a") },
    ]);
    await store.commit(set("x/3"));
    const frames = drain(sub);
    expect(shape(frames)).toEqual(["E2:3"]);
    const ev = frames[0]!.kind === "events" ? frames[0]!.events : [];
    expect(ev.map((e) => `${e.index}:${e.subject}`)).toEqual(["1:x/1", "1:x/2", "2:x/3"]);
  });

  it("a lagging reader of big values gets catch-up frames of at most maxFrameBytes (whole commits always)", async () => {
    pub.shutdown();
    await store.close();
    await open({ maxFrameBytes: 250_000 });
    const sub = pub.subscribe({ topic: Topic.KV, subject: prefix("big/") });
    drain(sub);
    const value = new Uint8Array(100_000);
    for (let i = 1; i <= 7; i++) await store.commit([{ op: "kv.set", key: `big/${i}`, value }]);
    // One commit bigger than the limit still goes whole, alone.
    await store.commit([
      { op: "kv.set", key: "big/a", value },
      { op: "kv.set", key: "big/b", value },
      { op: "kv.set", key: "big/c", value },
    ]);
    const frames = drain(sub);
    // ~100 KB per event: two commits per frame, then the three-event commit by itself.
    expect(shape(frames)).toEqual(["E2:2", "E4:2", "E6:2", "E7:1", "E8:3"]);
    // A snapshot of the same keys (another subject: not the cached one) is cut by event.
    const fresh = pub.subscribe({ topic: Topic.KV, subject: prefix("big") });
    expect(shape(drain(fresh))).toEqual(["S8:2", "S8:2", "S8:2", "S8:2", "S8:2", "EOS8"]);
  });

  it("sends Progress to an idle caught-up subscriber after the interval", async () => {
    let now = 0;
    pub.shutdown();
    pub = EventPublisher.attach(store, { progressIntervalMs: 100, now: () => now });
    const sub = pub.subscribe({ topic: Topic.KV, subject: key("quiet") });
    expect(shape(drain(sub, now))).toEqual(["EOS1"]);
    await store.commit(set("loud"));
    await store.commit(set("loud"));
    expect(drain(sub, 50)).toEqual([]);
    now = 150;
    expect(shape(drain(sub, now))).toEqual(["P2"]);
    now = 400;
    expect(drain(sub, now)).toEqual([]);
  });

  it("Progress reaches a reader blocked in next() (fake timers)", async () => {
    // The store's group commit runs on setImmediate, which stays real.
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "Date"] });
    try {
      pub.shutdown();
      pub = EventPublisher.attach(store, { progressIntervalMs: 200, now: () => Date.now() });
      const sub = pub.subscribe({ topic: Topic.KV, subject: key("quiet") });
      await sub.next();
      await store.commit(set("other"));
      await store.commit(set("other"));
      const pending = sub.next();
      await vi.advanceTimersByTimeAsync(400);
      const r = await pending;
      expect(r.value).toEqual({ kind: "progress", index: 2 });
    } finally {
      vi.useRealTimers();
    }
  });

  it("ServiceHealth: node and check changes re-register every instance, rename deregisters first", async () => {
    await store.commit([...node("n1"), ...svc("n1", "web-1", "web"), ...svc("n1", "api-1", "api")]);
    const web = pub.subscribe({ topic: Topic.ServiceHealth, subject: key("WEB") });
    const frames0 = drain(web);
    expect(shape(frames0)).toEqual(["S1:1", "EOS1"]);
    await store.commit([
      { op: "check.register", check: { Node: "n1", CheckID: "serfHealth", Status: "passing" } },
    ]);
    const f1 = drain(web);
    expect(shape(f1)).toEqual(["E2:1"]);
    const e1 = f1[0]!.kind === "events" ? f1[0]!.events[0]! : undefined;
    expect(e1?.topic === Topic.ServiceHealth && e1.payload.checks.map((c) => c.CheckID)).toEqual([
      "serfHealth",
    ]);
    await store.commit(svc("n1", "web-1", "frontend"));
    const f2 = drain(web);
    const e2 = f2[0]!.kind === "events" ? f2[0]!.events[0]! : undefined;
    expect(e2?.topic === Topic.ServiceHealth && e2.payload.op).toBe("deregister");
    const fe = pub.subscribe({ topic: Topic.ServiceHealth, subject: key("frontend"), index: 2 });
    const f3 = drain(fe);
    const e3 = f3[0]!.kind === "events" ? f3[0]!.events[0]! : undefined;
    expect(e3?.topic === Topic.ServiceHealth && e3.payload.op).toBe("register");
  });

  it("ServiceList: an event when a name's first instance appears and its last goes", async () => {
    const list = pub.subscribe({ topic: Topic.ServiceList, subject: wildcard });
    drain(list);
    await store.commit([...node("n1"), ...svc("n1", "w1", "web")]);
    await store.commit([...node("n2"), ...svc("n2", "w2", "web")]);
    await store.commit([{ op: "service.deregister", node: "n1", serviceId: "w1" }]);
    await store.commit([{ op: "node.deregister", node: "n2" }]);
    const ev = drain(list).flatMap((f) => (f.kind === "events" ? f.events : []));
    expect(ev.map((e) => (e.topic === Topic.ServiceList ? `${e.index}:${e.payload.op}` : ""))).toEqual([
      "1:register",
      "4:deregister",
    ]);
  });

  it("unsubscribe frees the stream and its cached snapshot; break in for-await unsubscribes", async () => {
    await store.commit(set("a"));
    const sub = pub.subscribe({ topic: Topic.KV, subject: key("a") });
    drain(sub);
    expect(pub.stats()).toMatchObject({ streams: 1, cachedSnapshots: 1 });
    sub.unsubscribe();
    expect(pub.stats()).toMatchObject({ streams: 0, cachedSnapshots: 0 });
    expect(await sub.next()).toEqual({ value: undefined, done: true });
    const sub2 = pub.subscribe({ topic: Topic.KV, subject: key("a") });
    for await (const f of sub2) if (f.kind === "endOfSnapshot") break;
    expect(pub.subscriptionCount).toBe(0);
  });

  it("force close and shutdown give distinct errors while a read is blocked", async () => {
    const a = pub.subscribe({ topic: Topic.KV, subject: key("a"), token: "t1" });
    const b = pub.subscribe({ topic: Topic.KV, subject: key("a"), token: "t2" });
    await take(a, 1);
    await take(b, 1);
    const ra = a.next();
    const rb = b.next();
    expect(pub.closeToken("t1")).toBe(1);
    await expect(ra).rejects.toBeInstanceOf(SubscriptionForceClosedError);
    await expect(a.next()).rejects.toBeInstanceOf(SubscriptionForceClosedError);
    pub.shutdown();
    await expect(rb).rejects.toBeInstanceOf(ShuttingDownError);
  });

  it("a snapshot handler error reaches the subscriber as an error", async () => {
    const { DEFAULT_HANDLERS, kvHandler } = await import("../../src/state/events/index.js");
    const handlers = new Map(DEFAULT_HANDLERS);
    handlers.set(Topic.KV, {
      ...kvHandler,
      snapshot: () => {
        throw new Error("boom");
      },
    });
    pub.shutdown();
    pub = EventPublisher.attach(store, { handlers });
    const sub = pub.subscribe({ topic: Topic.KV, subject: key("a") });
    await expect(sub.next()).rejects.toBeInstanceOf(SnapshotFailedError);
  });

  it("live frames wake a reader blocked in next()", async () => {
    const sub = pub.subscribe({ topic: Topic.KV, subject: key("a") });
    await take(sub, 1);
    const pending = sub.next();
    await store.commit(set("a"));
    const r = await pending;
    expect(r.value).toMatchObject({ kind: "events", index: 1 });
  });

  it("filters events per subscriber and advances its index by Progress", async () => {
    let now = 0;
    pub.shutdown();
    pub = EventPublisher.attach(store, { progressIntervalMs: 100, now: () => now });
    const sub = pub.subscribe({
      topic: Topic.KV,
      subject: wildcard,
      filter: (e) => !e.subject.startsWith("secret/"),
    });
    drain(sub);
    await store.commit([
      { op: "kv.set", key: "pub/a", value: enc.encode("1") },
      { op: "kv.set", key: "secret/a", value: enc.encode("1") },
    ]);
    // The frame carries its commit's index even though one of its events was filtered out.
    expect(shape(drain(sub, 0))).toEqual(["E1:1"]);
    await store.commit(set("secret/b"));
    expect(drain(sub, 0)).toEqual([]);
    now = 200;
    expect(shape(drain(sub, now))).toEqual(["P2"]);
  });
});
