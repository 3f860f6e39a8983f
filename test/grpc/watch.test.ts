import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import type { Event__Output } from "../../src/generated/sluice/v1/Event.js";
import type { KVEntry__Output } from "../../src/generated/sluice/v1/KVEntry.js";
import type { StateChangeSubscriptionClient } from "../../src/generated/sluice/v1/StateChangeSubscription.js";
import type { SubscribeRequest } from "../../src/generated/sluice/v1/SubscribeRequest.js";
import type { WatchClosed__Output } from "../../src/generated/sluice/v1/WatchClosed.js";
import type { WatchFrame__Output } from "../../src/generated/sluice/v1/WatchFrame.js";
import type { WatchRequest } from "../../src/generated/sluice/v1/WatchRequest.js";
import type { WatchResponse__Output } from "../../src/generated/sluice/v1/WatchResponse.js";
import { sluiceV1 } from "../../src/proto/index.js";
import { assertReplayable, replayConfig } from "../helpers/fc-replay.js";
import {
  type Conn,
  errorClass,
  flatten,
  Harness,
  metadataFor,
  render,
  type Watch,
  withTimeout,
} from "../helpers/grpc-harness.js";

/*
 * sluice.v1.StateChangeSubscription/Watch over real gRPC on loopback: many subscriptions on
 * one bidirectional stream, each getting exactly what a Subscribe stream for the same request
 * gets, shared frames sent once with all their ids, each subscription ending with one
 * `closed` frame carrying the status Subscribe would have ended with, and the stream itself
 * ending with INVALID_ARGUMENT / UNAVAILABLE / OK.
 */

const code = (c: number): string => grpc.status[c] ?? String(c);
const ACL = { aclEnabled: true, aclDefaultPolicy: "deny" } as const;
const PUB_READ = 'key_prefix "pub/" { policy = "read" }';
const READ_ALL = 'key_prefix "" { policy = "read" }';
const BOGUS_TOKEN = "00000000-0000-4000-8000-000000000000";

const noProgress = (lines: readonly string[]): string[] => lines.filter((l) => !l.startsWith("P@"));

/** The frames one subscription of a Watch stream received, from its open to its `closed` frame. */
class WatchSub {
  readonly events: Event__Output[] = [];
  closed: WatchClosed__Output | undefined;
  /** Set once the client sent its cancel. */
  cancelRequested = false;

  constructor(
    readonly id: number,
    readonly request: SubscribeRequest,
  ) {}

  /** Frames as text, one per wire frame (batches whole), as {@link Watch.frames}. */
  get frames(): string[] {
    return this.events.map(render);
  }

  /** Markers and events with batches expanded. */
  get lines(): string[] {
    return flatten(this.events);
  }

  /** Lines without progress markers. */
  get changes(): string[] {
    return noProgress(this.lines);
  }

  get snapshotDone(): boolean {
    return this.events.some((e) => e.payload === "end_of_snapshot");
  }

  /** The resume index: that of the last frame that carries one. */
  get lastIndex(): number {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i]!;
      if (e.payload !== "new_snapshot_to_follow") return e.index;
    }
    return 0;
  }
}

/**
 * Records one Watch call: every WatchFrame in wire order, the frames of each subscription,
 * and the stream's final status. Anything that breaks the protocol as a client sees it (a
 * frame for an id that is not open, a frame after an id's `closed`, an id twice in one
 * frame, a `closed` frame with several ids) goes to `violations`, which every test checks.
 */
class WatchCall {
  readonly call: grpc.ClientDuplexStream<WatchRequest, WatchResponse__Output>;
  readonly responses: WatchResponse__Output[] = [];
  /** Every frame, in wire order. */
  readonly wire: WatchFrame__Output[] = [];
  readonly violations: string[] = [];
  /** Every subscription ever opened on this stream, in open order. */
  readonly history: WatchSub[] = [];
  status: grpc.StatusObject | undefined;
  readonly ended: Promise<grpc.StatusObject>;
  private readonly current = new Map<number, WatchSub>();
  private readonly waiters = new Set<() => void>();

  constructor(conn: Conn | StateChangeSubscriptionClient, token?: string) {
    const client = "stream" in conn ? conn.stream : conn;
    this.call = client.Watch(metadataFor(token));
    this.call.on("data", (r: WatchResponse__Output) => {
      this.responses.push(r);
      for (const f of r.frames) this.onFrame(f);
      this.notify();
    });
    this.call.on("error", () => {});
    this.ended = new Promise((resolve) => {
      this.call.on("status", (s: grpc.StatusObject) => {
        this.status = s;
        resolve(s);
        this.notify();
      });
    });
  }

  private onFrame(f: WatchFrame__Output): void {
    this.wire.push(f);
    const ids = f.ids.map(Number);
    const what = f.body === "closed" ? `closed ${code(f.closed?.code ?? -1)}` : render(f.event!);
    if (ids.length === 0) this.violations.push(`frame without ids: ${what}`);
    if (new Set(ids).size !== ids.length) this.violations.push(`an id twice in one frame: ${ids} ${what}`);
    if (f.body === "closed" && ids.length !== 1) this.violations.push(`closed frame with ids ${ids}`);
    if (f.body !== "closed" && f.body !== "event") this.violations.push(`frame without a body for ${ids}`);
    for (const id of ids) {
      const s = this.current.get(id);
      if (s === undefined) this.violations.push(`frame for id ${id}, never opened: ${what}`);
      else if (s.closed) this.violations.push(`frame for id ${id} after its closed frame: ${what}`);
      else if (f.body === "closed") s.closed = f.closed!;
      else if (f.body === "event") s.events.push(f.event!);
    }
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Opens subscription `id`; a test may reuse an id only after its closed frame arrived. */
  open(id: number, subscribe: SubscribeRequest | null): WatchSub {
    const prev = this.current.get(id);
    if (prev && !prev.closed) throw new Error(`test bug: id ${id} is still open`);
    const s = new WatchSub(id, subscribe ?? {});
    this.current.set(id, s);
    this.history.push(s);
    this.call.write({ open: { id, subscribe } });
    return s;
  }

  cancel(id: number): void {
    const s = this.current.get(id);
    if (s) s.cancelRequested = true;
    this.call.write({ cancel: id });
  }

  /** The current (latest) subscription with `id`. */
  sub(id: number): WatchSub {
    const s = this.current.get(id);
    if (!s) throw new Error(`no subscription ${id}`);
    return s;
  }

  /** Wire frames that carry `line` (rendered event), with their ids sorted. */
  idsOf(line: string): number[][] {
    return this.wire
      .filter((f) => f.body === "event" && render(f.event!) === line)
      .map((f) => f.ids.map(Number).sort((a, b) => a - b));
  }

  describe(): string {
    const subs = [...this.current.values()].map(
      (s) =>
        `  ${s.id}: ${JSON.stringify(s.frames)}${s.closed ? ` closed ${code(s.closed.code)} ${s.closed.error}` : ""}`,
    );
    const st = this.status ? `ended ${code(this.status.code)}: ${this.status.details}` : "open";
    return `stream ${st}\n${subs.join("\n")}\nviolations: ${JSON.stringify(this.violations)}`;
  }

  /** Waits until `pred` holds; fails after `ms`, or if the stream ends first. */
  until(pred: (w: this) => boolean, what: string, ms = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (pred(this)) finish();
        else if (this.status) finish(new Error(`stream ended before ${what}\n${this.describe()}`));
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out waiting for ${what}\n${this.describe()}`)),
        ms,
      );
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.waiters.add(check);
      check();
    });
  }

  snapshotDone(...ids: number[]): Promise<void> {
    return this.until((w) => ids.every((id) => w.sub(id).snapshotDone), `end of snapshot of ${ids}`);
  }

  closedFrame(id: number, ms = 5000): Promise<WatchClosed__Output> {
    return this.until((w) => w.sub(id).closed !== undefined, `closed frame of ${id}`, ms).then(
      () => this.sub(id).closed!,
    );
  }

  end(ms = 5000): Promise<grpc.StatusObject> {
    return withTimeout(this.ended, ms, "the Watch stream to end");
  }

  /** Half-closes: the client sends no more requests. */
  halfClose(): void {
    this.call.end();
  }
}

const closedAs = (c: WatchClosed__Output | undefined) =>
  c === undefined ? undefined : { code: code(c.code), error: c.error };

/** Waits until a Subscribe recording has a line. */
const subscribeHas = (w: Watch, line: string): Promise<void> =>
  w.until((x) => x.lines.includes(line), `"${line}" on the Subscribe stream`);

const watchHas = (w: WatchCall, id: number, line: string): Promise<void> =>
  w.until((x) => x.sub(id).lines.includes(line), `"${line}" for ${id}`);

/** Index problems of one subscription's frames: after end-of-snapshot, frame indexes strictly increase. */
function indexProblems(s: WatchSub, resumedAt = 0): string[] {
  const problems: string[] = [];
  let prev = resumedAt;
  let inSnapshot = resumedAt === 0;
  let snapshotIndex = -1;
  for (const e of s.events) {
    const r = render(e);
    if (e.payload === "new_snapshot_to_follow") {
      inSnapshot = true;
      snapshotIndex = -1;
      continue;
    }
    if (inSnapshot) {
      if (snapshotIndex === -1) snapshotIndex = e.index;
      if (e.index !== snapshotIndex)
        problems.push(`${r}: snapshot frame index differs from ${snapshotIndex}`);
      if (e.index < prev) problems.push(`${r}: snapshot below the previous index ${prev}`);
      if (e.payload === "end_of_snapshot") {
        inSnapshot = false;
        prev = e.index;
      }
      continue;
    }
    if (!(e.index > prev)) problems.push(`${r}: index not above the previous ${prev}`);
    if (e.payload === "batch") {
      let leafPrev = prev;
      for (const leaf of e.batch?.events ?? []) {
        if (leaf.index < leafPrev || leaf.index <= prev || leaf.index > e.index)
          problems.push(`${r}: event index ${leaf.index} out of order`);
        leafPrev = leaf.index;
      }
    }
    prev = e.index;
  }
  return problems;
}

/** A KV view folded from a subscription's frames: key → `value@modify_index`. */
function foldKv(s: WatchSub, base: Map<string, string> = new Map()): Map<string, string> {
  const view = new Map(base);
  const apply = (e: Event__Output): void => {
    if (e.payload !== "kv") return;
    const entry = e.kv!.entry!;
    if (e.kv!.op === "KV_OP_SET") view.set(entry.key, entryText(entry));
    else if (e.kv!.op === "KV_OP_DELETE") view.delete(entry.key);
    else throw new Error(`unexpected op ${e.kv!.op}`);
  };
  for (const e of s.events) {
    if (e.payload === "new_snapshot_to_follow") view.clear();
    else if (e.payload === "batch") for (const leaf of e.batch?.events ?? []) apply(leaf);
    else apply(e);
  }
  return view;
}

const entryText = (e: KVEntry__Output): string =>
  `${Buffer.from(e.value ?? []).toString("utf8")}@${e.modify_index}`;

/** The server's state for a KV subject, read with KV.Get or KV.List. */
async function kvState(c: Conn, req: SubscribeRequest): Promise<Map<string, string>> {
  const md = metadataFor(c.token);
  if (req.key !== undefined) {
    const r = await new Promise<{ entry?: KVEntry__Output | null }>((resolve, reject) =>
      c.kv.Get({ key: req.key }, md, (err, res) => (err ? reject(err) : resolve(res!))),
    );
    return new Map(r.entry ? [[r.entry.key, entryText(r.entry)]] : []);
  }
  const r = await new Promise<{ entries: KVEntry__Output[] }>((resolve, reject) =>
    c.kv.List({ prefix: req.prefix ?? "", keys_only: false }, md, (err, res) =>
      err ? reject(err) : resolve(res!),
    ),
  );
  return new Map(r.entries.map((e) => [e.key, entryText(e)]));
}

const freed = (h: Harness, count = 0) =>
  vi.waitFor(() => expect(h.server.publisher.subscriptionCount).toBe(count), { timeout: 3000, interval: 10 });

describe("Watch: several subscriptions on one stream", () => {
  async function seed(c: Conn): Promise<number> {
    await c.put("cfg/a", "1");
    await c.put("app/x", "1");
    await c.put("app/y", "2");
    await c.put("other", "0");
    return c.register({
      node: { node: "n1", address: "10.0.0.1" },
      service: { id: "web-1", service: "web", port: 80 },
      checks: [{ check_id: "web-alive", service_id: "web-1", status: "passing" }],
    });
  }

  const REQS: Record<number, SubscribeRequest> = {
    1: { topic: "TOPIC_KV", key: "cfg/a" },
    2: { topic: "TOPIC_KV", key: "cfg/a" },
    3: { topic: "TOPIC_KV", prefix: "app/" },
    4: { topic: "TOPIC_SERVICE_HEALTH", key: "web" },
  };

  it("each gets what a Subscribe for the same request gets: snapshot, end_of_snapshot, live in index order; a shared live frame goes once with both ids", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const s = await seed(c);
    const w = new WatchCall(c);
    const refs = Object.fromEntries(
      Object.entries(REQS).map(([id, req]) => [id, h.connect().subscribe(req)]),
    ) as Record<number, Watch>;
    // Opened one after the other (see the next test for subscriptions opened in one burst).
    w.open(1, REQS[1]!);
    w.open(2, REQS[2]!);
    await w.snapshotDone(1, 2);
    w.open(3, REQS[3]!);
    await w.snapshotDone(3);
    w.open(4, REQS[4]!);
    await w.snapshotDone(4);
    await Promise.all(Object.values(refs).map((r) => r.snapshotDone()));
    expect(noProgress(w.sub(1).frames)).toEqual([`B@${s}[kv set cfg/a=1@${s}]`, `EOS@${s}`]);
    expect(noProgress(w.sub(3).frames)).toEqual([
      `B@${s}[kv set app/x=1@${s} | kv set app/y=2@${s}]`,
      `EOS@${s}`,
    ]);
    expect(noProgress(w.sub(4).frames)).toEqual([
      `B@${s}[sh register n1/web-1 web-alive=passing@${s}]`,
      `EOS@${s}`,
    ]);

    // Each write is awaited on every stream it concerns before the next, so that no reader
    // batches two commits: frame for frame comparison with Subscribe is then exact.
    const step = async (write: Promise<number>, render: (i: number) => string, ids: number[]) => {
      const i = await write;
      const line = render(i);
      await Promise.all(ids.flatMap((id) => [watchHas(w, id, line), subscribeHas(refs[id]!, line)]));
      return i;
    };
    const a = await step(c.put("cfg/a", "2"), (i) => `kv set cfg/a=2@${i}`, [1, 2]);
    const b = await step(c.put("app/z", "3"), (i) => `kv set app/z=3@${i}`, [3]);
    const hidden = await c.put("other", "1");
    const d = await step(
      c.register({ node: { node: "n2", address: "10.0.0.2" }, service: { id: "web-2", service: "web" } }),
      (i) => `sh register n2/web-2 @${i}`,
      [4],
    );
    const e = await step(c.put("cfg/a", "3"), (i) => `kv set cfg/a=3@${i}`, [1, 2]);
    const f = await step(c.delete("app/x"), (i) => `kv delete app/x@${i}`, [3]);
    const g = await step(
      c.updateCheck("n1", "web-alive", "critical"),
      (i) => `sh register n1/web-1 web-alive=critical@${i}`,
      [4],
    );
    expect([a, b, hidden, d, e, f, g]).toEqual([a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6]);

    for (const id of [1, 2, 3, 4]) {
      expect(noProgress(w.sub(id).frames), `subscription ${id}`).toEqual(noProgress(refs[id]!.frames));
      expect(indexProblems(w.sub(id)), `subscription ${id}`).toEqual([]);
    }
    expect(w.sub(1).changes).toEqual([
      `kv set cfg/a=1@${s}`,
      `EOS@${s}`,
      `kv set cfg/a=2@${a}`,
      `kv set cfg/a=3@${e}`,
    ]);
    expect(w.sub(2).changes).toEqual(w.sub(1).changes);
    expect(w.sub(3).changes.slice(3)).toEqual([`kv set app/z=3@${b}`, `kv delete app/x@${f}`]);
    expect(w.sub(4).changes.slice(2)).toEqual([
      `sh register n2/web-2 @${d}`,
      `sh register n1/web-1 web-alive=critical@${g}`,
    ]);
    // The live events that 1 and 2 receive alike travel once, with both ids.
    expect(w.idsOf(`kv set cfg/a=2@${a}`)).toEqual([[1, 2]]);
    expect(w.idsOf(`kv set cfg/a=3@${e}`)).toEqual([[1, 2]]);
    // Nothing is sent for a write no subscription watches (beyond progress).
    expect(w.wire.some((x) => x.body === "event" && render(x.event!).includes("other"))).toBe(false);
    expect(w.violations).toEqual([]);
    expect(w.status).toBeUndefined();
  });

  // Regression test for a server bug found by this file on fecab3c (fixed in e81c818):
  // WatchResponseBuilder (src/proto/watch-codec.ts) grouped marker frames of different
  // subscriptions by kind and index alone, so end_of_snapshot@N of a subscription polled
  // later in a flush joined an earlier subscription's end_of_snapshot@N, i.e. went out
  // BEFORE its own snapshot batch, e.g.
  //   WatchResponse{ [ids 2] B@4[..], [ids 2,3] EOS@4, [ids 3] B@4[..] }
  // Subscriptions opened in one burst land in the same flush often enough (about a quarter
  // of them here) for this to fail every run on that version.
  it("subscriptions opened in one burst each get their snapshot before their end_of_snapshot, as Subscribe does", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const s = await seed(c);
    const w = new WatchCall(c);
    // Requests with an empty snapshot, one row, two rows, a service instance; all at index s.
    const kinds: SubscribeRequest[] = [{ topic: "TOPIC_KV", key: "missing" }, REQS[1]!, REQS[3]!, REQS[4]!];
    const refs = kinds.map((req) => h.connect().subscribe(req));
    await Promise.all(refs.map((r) => r.snapshotDone()));
    const want = refs.map((r) => noProgress(r.frames));
    expect(want[0]).toEqual([`EOS@${s}`]);
    expect(want[1]).toEqual([`B@${s}[kv set cfg/a=1@${s}]`, `EOS@${s}`]);

    const ids = Array.from({ length: 24 }, (_, i) => i + 1);
    for (const id of ids) w.open(id, kinds[id % kinds.length]!);
    await w.snapshotDone(...ids);
    const wrong = ids
      .map((id) => ({ id, got: noProgress(w.sub(id).frames), want: want[id % kinds.length]! }))
      .filter((x) => JSON.stringify(x.got) !== JSON.stringify(x.want));
    expect(wrong).toEqual([]);
    expect(ids.flatMap((id) => indexProblems(w.sub(id)))).toEqual([]);
    expect(w.violations).toEqual([]);
  });
});

describe("Watch: resume", () => {
  it("an open with the index of an earlier subscription gets no snapshot, only the commits after it, as Subscribe does", async () => {
    const h = await Harness.start();
    const c = h.connect();
    await c.put("r/1", "a");
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", prefix: "r/" });
    await w.snapshotDone(1);
    const a = await c.put("r/2", "b");
    await watchHas(w, 1, `kv set r/2=b@${a}`);
    expect(w.sub(1).lastIndex).toBe(a);
    w.cancel(1);
    expect(closedAs(await w.closedFrame(1))).toEqual({ code: "CANCELLED", error: "" });

    const m1 = await c.put("r/3", "c");
    await c.put("other/x", "not mine");
    const m2 = await c.put("r/1", "a2");
    const m3 = await c.delete("r/2");

    const ref = c.subscribe({ topic: "TOPIC_KV", prefix: "r/", index: a });
    w.open(2, { topic: "TOPIC_KV", prefix: "r/", index: a });
    await w.until((x) => x.sub(2).changes.length >= 3, "the missed commits");
    await ref.changeCount(3);
    expect(w.sub(2).frames).toEqual([
      `B@${m3}[kv set r/3=c@${m1} | kv set r/1=a2@${m2} | kv delete r/2@${m3}]`,
    ]);
    expect(w.sub(2).frames).toEqual(ref.frames);
    const m4 = await c.put("r/4", "d");
    await watchHas(w, 2, `kv set r/4=d@${m4}`);
    expect(w.sub(2).changes).toEqual([
      `kv set r/3=c@${m1}`,
      `kv set r/1=a2@${m2}`,
      `kv delete r/2@${m3}`,
      `kv set r/4=d@${m4}`,
    ]);
    expect(indexProblems(w.sub(2), a)).toEqual([]);
    expect(w.violations).toEqual([]);
  });
});

describe("Watch: cancel", () => {
  it("ends one subscription with closed CANCELLED, nothing follows for it, the others go on, and the id can be reused", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const k0 = await c.put("k", "0");
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", key: "k" });
    await w.snapshotDone(1);
    w.open(2, { topic: "TOPIC_KV", key: "k" });
    await w.snapshotDone(2);
    w.open(3, { topic: "TOPIC_KV", wildcard: true });
    await w.snapshotDone(3);
    expect(h.server.publisher.subscriptionCount).toBe(3);

    w.cancel(1);
    const closed = await w.closedFrame(1);
    expect(closed.code).toBe(grpc.status.CANCELLED);
    expect(closed.error).toBe("");
    await freed(h, 2);
    const before = [...w.sub(1).frames];
    expect(before).toEqual([`B@${k0}[kv set k=0@${k0}]`, `EOS@${k0}`]);

    const k1 = await c.put("k", "1");
    await Promise.all([watchHas(w, 2, `kv set k=1@${k1}`), watchHas(w, 3, `kv set k=1@${k1}`)]);
    expect(w.sub(1).frames).toEqual(before);
    expect(w.idsOf(`kv set k=1@${k1}`).flat()).not.toContain(1);
    expect(w.idsOf(`kv set k=1@${k1}`).flat().sort()).toEqual([2, 3]);

    // Cancelling an id that is not open is ignored; the stream goes on.
    w.cancel(42);
    w.cancel(1);

    // The id is free again: a new subscription with it starts from a snapshot.
    const again = w.open(1, { topic: "TOPIC_KV", key: "k" });
    await w.snapshotDone(1);
    // (The snapshot may be a cached one from before k=1, then followed by k=1 live.)
    expect(again.frames[0]).toMatch(/^B@/);
    expect(indexProblems(again)).toEqual([]);
    expect(Object.fromEntries(foldKv(again))).toEqual({ k: `1@${k1}` });
    const k2 = await c.put("k", "2");
    await Promise.all([1, 2, 3].map((id) => watchHas(w, id, `kv set k=2@${k2}`)));
    expect(w.idsOf(`kv set k=2@${k2}`).flat().sort()).toEqual([1, 2, 3]);
    // The first subscription with id 1 got nothing after its closed frame.
    expect(w.history[0]!.frames).toEqual(before);
    expect(w.violations).toEqual([]);
    expect(w.status).toBeUndefined();
    expect(h.server.publisher.subscriptionCount).toBe(3);
  });
});

describe("Watch: ACLs", () => {
  it("filters by each subscription's token, refuses an unknown token for that id only, and force-closes a deleted token's subscriptions with ABORTED", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const pub = await h.tokenWithRules(PUB_READ);
    const all = await h.tokenWithRules(READ_ALL);
    const admin = h.connect(h.management);
    await admin.put("pub/a", "1");
    await admin.put("secret/a", "2");
    const s = await admin.put("pub/b", "3");

    // The stream's metadata carries the pub token; id 3 names another token in its request.
    const c = h.connect();
    const w = new WatchCall(c, pub.secret);
    const ref = h.connect(pub.secret).subscribe({ topic: "TOPIC_KV", wildcard: true });
    w.open(1, { topic: "TOPIC_KV", wildcard: true });
    await w.snapshotDone(1);
    w.open(2, { topic: "TOPIC_KV", prefix: "secret/" });
    await w.snapshotDone(2);
    w.open(3, { topic: "TOPIC_KV", wildcard: true, token: all.secret });
    await w.snapshotDone(3);
    w.open(4, { topic: "TOPIC_KV", wildcard: true, token: BOGUS_TOKEN });
    expect(closedAs(await w.closedFrame(4))).toEqual({
      code: "PERMISSION_DENIED",
      error: "TokenNotFoundError",
    });
    expect(w.sub(4).closed!.message).not.toBe("");
    expect(w.sub(4).events).toEqual([]);
    await ref.snapshotDone();

    expect(w.sub(1).frames).toEqual([`B@${s}[kv set pub/a=1@${s} | kv set pub/b=3@${s}]`, `EOS@${s}`]);
    expect(w.sub(2).frames).toEqual([`EOS@${s}`]);
    expect(w.sub(3).frames).toEqual([
      `B@${s}[kv set pub/a=1@${s} | kv set pub/b=3@${s} | kv set secret/a=2@${s}]`,
      `EOS@${s}`,
    ]);

    const l1 = await admin.put("secret/b", "4");
    const l2 = await admin.put("pub/c", "5");
    await Promise.all([
      watchHas(w, 1, `kv set pub/c=5@${l2}`),
      watchHas(w, 3, `kv set pub/c=5@${l2}`),
      subscribeHas(ref, `kv set pub/c=5@${l2}`),
    ]);
    expect(w.sub(3).changes.slice(4)).toEqual([`kv set secret/b=4@${l1}`, `kv set pub/c=5@${l2}`]);
    expect(noProgress(w.sub(1).frames)).toEqual(noProgress(ref.frames));
    expect(w.sub(1).lines.join(" ")).not.toContain("secret");
    expect(w.sub(2).lines.join(" ")).not.toContain("secret");

    // Deleting the pub token ends 1 and 2 (which use it through the stream's metadata) with
    // ABORTED; 3 (another token) goes on, and so does the stream.
    const del = await admin.deleteToken(pub.accessor);
    const [c1, c2] = await Promise.all([w.closedFrame(1), w.closedFrame(2)]);
    for (const cl of [c1, c2])
      expect(closedAs(cl)).toEqual({ code: "ABORTED", error: "SubscriptionForceClosedError" });
    expect(w.sub(1).events.every((e) => e.index < del)).toBe(true);
    expect((await ref.end()).code).toBe(grpc.status.ABORTED);
    const l3 = await admin.put("pub/d", "6");
    await watchHas(w, 3, `kv set pub/d=6@${l3}`);
    expect(w.status).toBeUndefined();
    expect(w.violations).toEqual([]);
    await freed(h, 1);

    // The deleted token, from the metadata, is now refused for new opens.
    w.open(5, { topic: "TOPIC_KV", key: "pub/a" });
    expect(closedAs(await w.closedFrame(5))).toEqual({
      code: "PERMISSION_DENIED",
      error: "TokenNotFoundError",
    });
    expect(w.status).toBeUndefined();
  });

  it("more subscriptions for one token than maxSubscriptionsPerToken: that open is closed RESOURCE_EXHAUSTED", async () => {
    const h = await Harness.start({ ...ACL, maxSubscriptionsPerToken: 2 });
    await h.bootstrapAcl();
    const t = await h.tokenWithRules(READ_ALL);
    const u = await h.tokenWithRules(READ_ALL);
    const w = new WatchCall(h.connect(), t.secret);
    w.open(1, { topic: "TOPIC_KV", key: "a" });
    w.open(2, { topic: "TOPIC_KV", key: "b" });
    await w.snapshotDone(1, 2);
    w.open(3, { topic: "TOPIC_KV", key: "c" });
    expect(closedAs(await w.closedFrame(3))).toEqual({
      code: "RESOURCE_EXHAUSTED",
      error: "TooManySubscriptionsError",
    });
    w.open(4, { topic: "TOPIC_KV", key: "c", token: u.secret });
    await w.snapshotDone(4);
    expect(w.status).toBeUndefined();
    expect(w.violations).toEqual([]);
  });
});

describe("Watch: the per-connection limit", () => {
  it("counts Subscribe streams and Watch subscriptions of one connection together; a cancel makes room", async () => {
    const h = await Harness.start({ maxSubscriptionsPerConnection: 3 });
    const c = h.connect();
    const plain = c.subscribe({ topic: "TOPIC_KV", key: "a" });
    await plain.snapshotDone();
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", key: "b" });
    await w.snapshotDone(1);
    w.open(2, { topic: "TOPIC_KV", key: "c" });
    await w.snapshotDone(2);

    w.open(3, { topic: "TOPIC_KV", key: "d" });
    const over = await w.closedFrame(3);
    expect(closedAs(over)).toEqual({ code: "RESOURCE_EXHAUSTED", error: "TooManySubscriptionsError" });
    expect(w.sub(3).events).toEqual([]);
    // A Subscribe on the same connection is over the limit too.
    const plain2 = c.subscribe({ topic: "TOPIC_KV", key: "e" });
    const st = await plain2.end();
    expect(code(st.code)).toBe("RESOURCE_EXHAUSTED");
    expect(errorClass(st)).toBe("TooManySubscriptionsError");
    // The limit is per connection: another connection's Watch may open.
    const other = new WatchCall(h.connect());
    other.open(1, { topic: "TOPIC_KV", key: "d" });
    await other.snapshotDone(1);

    // A cancel frees a slot; the id over the limit can be opened again.
    w.cancel(1);
    await w.closedFrame(1);
    w.open(3, { topic: "TOPIC_KV", key: "d" });
    await w.snapshotDone(3);
    w.open(4, { topic: "TOPIC_KV", key: "f" });
    expect(closedAs(await w.closedFrame(4))).toEqual({
      code: "RESOURCE_EXHAUSTED",
      error: "TooManySubscriptionsError",
    });
    // Ending the plain Subscribe frees one too.
    plain.cancel();
    await plain.end();
    await freed(h, 3);
    w.open(4, { topic: "TOPIC_KV", key: "f" });
    await w.snapshotDone(4);
    const i = await c.put("d", "x");
    await watchHas(w, 3, `kv set d=x@${i}`);
    await watchHas(other, 1, `kv set d=x@${i}`);
    expect(w.status).toBeUndefined();
    expect(w.violations).toEqual([]);
  });
});

describe("Watch: the per-connection limit counts opens still waiting", () => {
  it("opens waiting for an index ahead hold their slots: one more is refused at once, and a cancel frees one", async () => {
    const h = await Harness.start({ maxSubscriptionsPerConnection: 2 });
    const c = h.connect();
    const at = await c.put("k", "v");
    const w = new WatchCall(c);
    // Two opens that wait (up to 3 s) for an index the store has not reached.
    w.open(1, { topic: "TOPIC_KV", key: "k", index: at + 1000 });
    w.open(2, { topic: "TOPIC_KV", key: "k", index: at + 1000 });
    // Refused, though neither of the two has its subscription yet.
    w.open(3, { topic: "TOPIC_KV", key: "k" });
    expect(closedAs(await w.closedFrame(3))).toEqual({
      code: "RESOURCE_EXHAUSTED",
      error: "TooManySubscriptionsError",
    });
    w.cancel(1);
    await w.closedFrame(1);
    w.open(3, { topic: "TOPIC_KV", key: "k" });
    await w.snapshotDone(3);
    w.cancel(2);
    await w.closedFrame(2);
    expect(w.violations).toEqual([]);
  });
});

describe("Watch: per-subscription errors", () => {
  it("a bad topic or subject closes that id with INVALID_ARGUMENT; the stream and its other subscriptions go on", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", key: "ok" });
    await w.snapshotDone(1);
    const cases: [number, SubscribeRequest | null][] = [
      [2, { topic: "TOPIC_KV", key: "" }],
      [3, { topic: "TOPIC_SERVICE_LIST", key: "web" }],
      [4, { topic: "TOPIC_UNSPECIFIED", key: "k" }],
      [5, { topic: "TOPIC_KV" }],
      [6, { topic: "TOPIC_SERVICE_HEALTH", wildcard: true }],
      [7, null],
    ];
    for (const [id, req] of cases) w.open(id, req);
    const closed = await Promise.all(cases.map(([id]) => w.closedFrame(id).then(closedAs)));
    expect(closed).toEqual([
      { code: "INVALID_ARGUMENT", error: "InvalidSubjectError" },
      { code: "INVALID_ARGUMENT", error: "InvalidSubjectError" },
      { code: "INVALID_ARGUMENT", error: "InvalidArgumentError" },
      { code: "INVALID_ARGUMENT", error: "InvalidArgumentError" },
      { code: "INVALID_ARGUMENT", error: "InvalidSubjectError" },
      { code: "INVALID_ARGUMENT", error: "InvalidArgumentError" },
    ]);
    for (const [id] of cases) expect(w.sub(id).events).toEqual([]);
    const i = await c.put("ok", "1");
    await watchHas(w, 1, `kv set ok=1@${i}`);
    expect(w.status).toBeUndefined();
    expect(w.violations).toEqual([]);
    expect(h.server.publisher.subscriptionCount).toBe(1);
  });

  it("an index far ahead closes with OUT_OF_RANGE after the wait; one slightly ahead proceeds once a write reaches it", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const i = await c.put("k", "v1");
    const w = new WatchCall(c);
    const started = performance.now();
    w.open(1, { topic: "TOPIC_KV", key: "k", index: i + 1000 });
    w.open(2, { topic: "TOPIC_KV", key: "k", index: i + 1 });
    w.open(3, { topic: "TOPIC_KV", key: "k" });
    w.open(4, { topic: "TOPIC_KV", key: "k", index: i + 500 });
    await w.snapshotDone(3);
    await sleep(200);
    // A cancel while waiting for the index ends that one at once.
    w.cancel(4);
    expect(closedAs(await w.closedFrame(4, 1000))).toEqual({ code: "CANCELLED", error: "" });

    const reached = await c.put("k", "v2");
    expect(reached).toBe(i + 1);
    const next = await c.put("k", "v3");
    await watchHas(w, 2, `kv set k=v3@${next}`);
    // Live after the index it asked for, without a snapshot.
    expect(noProgress(w.sub(2).frames)).toEqual([`kv set k=v3@${next}`]);
    await watchHas(w, 3, `kv set k=v3@${next}`);
    expect(w.sub(3).changes).toEqual([
      `kv set k=v1@${i}`,
      `EOS@${i}`,
      `kv set k=v2@${reached}`,
      `kv set k=v3@${next}`,
    ]);

    const far = await w.closedFrame(1, 6000);
    const elapsed = performance.now() - started;
    expect(closedAs(far)).toEqual({ code: "OUT_OF_RANGE", error: "IndexAheadError" });
    expect(w.sub(1).events).toEqual([]);
    expect(elapsed).toBeGreaterThan(2900);
    expect(elapsed).toBeLessThan(4500);
    // The others are untouched.
    const last = await c.put("k", "v4");
    await Promise.all([watchHas(w, 2, `kv set k=v4@${last}`), watchHas(w, 3, `kv set k=v4@${last}`)]);
    expect(w.status).toBeUndefined();
    expect(w.violations).toEqual([]);
    expect(h.server.publisher.subscriptionCount).toBe(2);
  });
});

describe("Watch: the stream's own end", () => {
  const expectInvalid = async (w: WatchCall, h: Harness) => {
    const st = await w.end();
    expect(code(st.code)).toBe("INVALID_ARGUMENT");
    expect(errorClass(st)).toBe("InvalidArgumentError");
    await freed(h);
  };

  it("id 0 ends the stream with INVALID_ARGUMENT", async () => {
    const h = await Harness.start();
    const w = new WatchCall(h.connect());
    w.open(1, { topic: "TOPIC_KV", key: "k" });
    await w.snapshotDone(1);
    w.call.write({ open: { id: 0, subscribe: { topic: "TOPIC_KV", key: "k" } } });
    await expectInvalid(w, h);
  });

  it("opening an id that is open ends the stream with INVALID_ARGUMENT and frees its subscriptions", async () => {
    const h = await Harness.start();
    const w = new WatchCall(h.connect());
    w.open(1, { topic: "TOPIC_KV", key: "k" });
    w.open(2, { topic: "TOPIC_KV", wildcard: true });
    await w.snapshotDone(1, 2);
    expect(h.server.publisher.subscriptionCount).toBe(2);
    w.call.write({ open: { id: 2, subscribe: { topic: "TOPIC_KV", key: "other" } } });
    await expectInvalid(w, h);
    expect(w.violations).toEqual([]);
  });

  it("opening an id that is still waiting for its index ends the stream with INVALID_ARGUMENT", async () => {
    const h = await Harness.start();
    const w = new WatchCall(h.connect());
    w.open(1, { topic: "TOPIC_KV", key: "k", index: 1000 });
    w.call.write({ open: { id: 1, subscribe: { topic: "TOPIC_KV", key: "k" } } });
    await expectInvalid(w, h);
  });

  it("a request with neither open nor cancel ends the stream with INVALID_ARGUMENT", async () => {
    const h = await Harness.start();
    const w = new WatchCall(h.connect());
    w.open(1, { topic: "TOPIC_KV", key: "k" });
    await w.snapshotDone(1);
    w.call.write({});
    await expectInvalid(w, h);
  });

  it("a graceful server stop: every subscription gets closed UNAVAILABLE, then the stream ends UNAVAILABLE", async () => {
    const h = await Harness.start({ shutdownGraceMs: 5000 });
    const c = h.connect();
    const i = await c.put("k", "v");
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", key: "k" });
    w.open(2, { topic: "TOPIC_SERVICE_LIST", wildcard: true });
    await w.snapshotDone(1, 2);
    const started = performance.now();
    await h.server.stop();
    const st = await w.end();
    expect(performance.now() - started).toBeLessThan(2000);
    expect(code(st.code)).toBe("UNAVAILABLE");
    expect(errorClass(st)).toBe("ShuttingDownError");
    // (grpc-js delivers every message before the status.)
    expect([1, 2].map((id) => closedAs(w.sub(id).closed))).toEqual([
      { code: "UNAVAILABLE", error: "ShuttingDownError" },
      { code: "UNAVAILABLE", error: "ShuttingDownError" },
    ]);
    // The client keeps the index to resume with.
    expect(w.sub(1).lastIndex).toBe(i);
    expect(w.violations).toEqual([]);
  });

  // SERVER BUG (reported; this test fails while it is there), since c6c890c: the stop now
  // ends every Watch stream synchronously (WatchStream.end → flush → teardown) right after
  // publisher.shutdown(), before the rejected index wait of a subscription that is still
  // opening has run its catch (a microtask later). That subscription is dropped without its
  // closed frame: the stream ends UNAVAILABLE, but id 2 never gets `closed`, which the
  // protocol promises for every subscription. (It passed on fecab3c.)
  it("a graceful server stop also sends closed UNAVAILABLE for a subscription still waiting for its index", async () => {
    const h = await Harness.start({ shutdownGraceMs: 5000 });
    const c = h.connect();
    const i = await c.put("k", "v");
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", key: "k" });
    await w.snapshotDone(1);
    w.open(2, { topic: "TOPIC_KV", key: "k", index: i + 10 });
    await sleep(100); // the open must be waiting in the server when the stop begins
    await h.server.stop();
    const st = await w.end();
    expect(code(st.code)).toBe("UNAVAILABLE");
    expect([1, 2].map((id) => closedAs(w.sub(id).closed))).toEqual([
      { code: "UNAVAILABLE", error: "ShuttingDownError" },
      { code: "UNAVAILABLE", error: "ShuttingDownError" },
    ]);
    expect(w.violations).toEqual([]);
  });

  // Regression test for a server bug found by this file on fecab3c (fixed in c6c890c): a
  // Watch stream with no open subscription (all cancelled, or none opened yet) was not ended
  // by a graceful stop, since only a subscription closed with UNAVAILABLE ended the stream.
  // The stop waited out the whole shutdownGraceMs, and even after grpc-js's forceShutdown
  // the client's Watch call got no status at all.
  it("a graceful server stop ends a Watch stream with no open subscription with UNAVAILABLE too, at once", async () => {
    const h = await Harness.start({ shutdownGraceMs: 1000 });
    const c = h.connect();
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", key: "k" });
    await w.snapshotDone(1);
    w.cancel(1);
    await w.closedFrame(1);
    const idle = new WatchCall(h.connect());
    await sleep(50);
    const stopped = h.server.stop();
    const outcome = await Promise.all(
      [w, idle].map((x) =>
        x.end(900).then(
          (st) => code(st.code),
          () => "still open 900 ms after the stop began",
        ),
      ),
    );
    await stopped;
    expect(outcome).toEqual(["UNAVAILABLE", "UNAVAILABLE"]);
  });

  it("a half-close ends the stream with OK and frees its subscriptions (and its connection's slots)", async () => {
    const h = await Harness.start({ maxSubscriptionsPerConnection: 2 });
    const c = h.connect();
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", key: "k" });
    w.open(2, { topic: "TOPIC_KV", wildcard: true });
    await w.snapshotDone(1, 2);
    expect(h.server.publisher.subscriptionCount).toBe(2);
    w.halfClose();
    const st = await w.end();
    expect(code(st.code)).toBe("OK");
    await freed(h);
    // The connection's two slots are free again.
    const w2 = new WatchCall(c);
    w2.open(1, { topic: "TOPIC_KV", key: "k" });
    w2.open(2, { topic: "TOPIC_KV", key: "j" });
    await w2.snapshotDone(1, 2);
    expect(w2.sub(1).closed).toBeUndefined();
    expect(w2.sub(2).closed).toBeUndefined();
    expect(w.violations).toEqual([]);
    expect(w2.violations).toEqual([]);
  });

  it("a client that cancels the Watch call frees its subscriptions and its connection's slots", async () => {
    const h = await Harness.start({ maxSubscriptionsPerConnection: 2 });
    const c = h.connect();
    const i = await c.put("k", "v");
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", key: "k" });
    w.open(2, { topic: "TOPIC_KV", key: "k", index: i + 100 }); // waiting for its index
    await w.snapshotDone(1);
    w.call.cancel();
    expect(code((await w.end()).code)).toBe("CANCELLED");
    await freed(h);
    const w2 = new WatchCall(c);
    w2.open(1, { topic: "TOPIC_KV", key: "k" });
    w2.open(2, { topic: "TOPIC_KV", key: "j" });
    await w2.snapshotDone(1, 2);
    // The write that would have reached the abandoned wait does not resurrect it.
    await c.put("k", "v2");
    expect(h.server.publisher.subscriptionCount).toBe(2);
    expect(w2.violations).toEqual([]);
  });
});

describe("Watch: large frames", () => {
  it("big frames in one flush are split over several WatchResponse messages of at most 1 MiB, each subscription's in order", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const KB400 = 400 * 1024;
    const i0 = await c.put("small", "s");
    const i1 = await c.put("big/1", "a".repeat(KB400));
    const i2 = await c.put("big/2", "b".repeat(KB400));
    const i3 = await c.put("big/3", "c".repeat(KB400));
    const shape = (frames: readonly Event__Output[]) =>
      noProgress(frames.map(render)).map((f) => `${f.length}:${f.slice(0, 40)}`);
    const valueBytes = (f: WatchFrame__Output) =>
      (f.event?.batch?.events ?? (f.event ? [f.event] : [])).reduce(
        (n, e) => n + (e.kv?.entry?.value?.length ?? 0),
        0,
      );

    // A 1.2 MB snapshot shared by two subscriptions (the one with an empty snapshot comes
    // last, so that nothing here depends on how end_of_snapshot markers are grouped).
    const w = new WatchCall(c);
    w.open(1, { topic: "TOPIC_KV", prefix: "big/" });
    w.open(2, { topic: "TOPIC_KV", prefix: "big/" });
    w.open(3, { topic: "TOPIC_KV", key: "missing" });
    await w.snapshotDone(1, 2, 3);
    const snapRef = c.subscribe({ topic: "TOPIC_KV", prefix: "big/" });
    await snapRef.snapshotDone();
    for (const id of [1, 2])
      expect(shape(w.sub(id).events), `subscription ${id}`).toEqual(shape(snapRef.messages));
    expect(noProgress(w.sub(3).frames)).toEqual([`EOS@${i3}`]);

    // Resumes that get their missed commits in catch-up frames (1.2 MB of them: cut at 1 MiB,
    // as for Subscribe; 800 KB and 400 KB: one frame).
    const resumes: [number, SubscribeRequest][] = [
      [4, { topic: "TOPIC_KV", prefix: "big/", index: i0 }],
      [5, { topic: "TOPIC_KV", prefix: "big/", index: i1 }],
      [6, { topic: "TOPIC_KV", key: "big/3", index: i2 }],
    ];
    const refs = resumes.map(([, r]) => h.connect().subscribe(r));
    for (const [id, r] of resumes) w.open(id, r);
    await w.until(
      (x) => resumes.every(([id]) => x.sub(id).lastIndex >= i3),
      "the resumed subscriptions to catch up",
    );
    await Promise.all(refs.map((r) => r.until((x) => x.lastIndex >= i3, "catch-up")));
    for (const [k, [id]] of resumes.entries())
      expect(shape(w.sub(id).events), `subscription ${id}`).toEqual(shape(refs[k]!.messages));
    expect(w.sub(4).changes.map((l) => l.slice(0, 14))).toEqual([
      `kv set big/1=a`,
      `kv set big/2=b`,
      `kv set big/3=c`,
    ]);

    // A live write all the big/ subscriptions share goes once, whatever their subject.
    const l = await c.put("big/3", "z".repeat(KB400));
    await w.until((x) => [1, 2, 4, 5, 6].every((id) => x.sub(id).lastIndex >= l), "the live write");
    const live = w.wire.filter((f) => f.event && f.event.index === l && f.event.payload === "kv");
    expect(live.map((f) => f.ids.map(Number).sort((a, b) => a - b))).toEqual([[1, 2, 4, 5, 6]]);
    for (const id of [1, 2]) {
      expect(indexProblems(w.sub(id)), `subscription ${id}`).toEqual([]);
      expect(foldKv(w.sub(id))).toEqual(await kvState(c, { topic: "TOPIC_KV", prefix: "big/" }));
    }

    // The wire: frames are cut at 1 MiB (estimated) and so are messages; some frames and
    // messages still carry several 400 KB values.
    for (const r of w.responses)
      expect(r.frames.reduce((n, f) => n + valueBytes(f), 0)).toBeLessThanOrEqual(1024 * 1024);
    expect(w.responses.some((r) => r.frames.some((f) => valueBytes(f) > KB400))).toBe(true);
    expect(w.responses.some((r) => r.frames.length > 1 && r.frames.some((f) => valueBytes(f) > 0))).toBe(
      true,
    );
    expect(w.violations).toEqual([]);
    expect(w.status).toBeUndefined();
  });
});

describe("Watch: back-pressure", () => {
  it("a client that stops reading holds the stream back; once it reads again every commit arrives, in order", async () => {
    const h = await Harness.start();
    const c = h.connect();
    // A client that accepts big messages, as the SDK's does (64 MiB): a lagging reader's
    // catch-up frame holds many commits.
    const client = new sluiceV1.StateChangeSubscription(h.address, grpc.credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
    }) as unknown as StateChangeSubscriptionClient;
    onTestFinished(() => client.close());
    const w = new WatchCall(client);
    w.open(1, { topic: "TOPIC_KV", prefix: "bp/" });
    w.open(2, { topic: "TOPIC_KV", key: "bp/0" });
    await w.snapshotDone(1, 2);
    w.call.pause();
    const value = (i: number) => `${i}`.padEnd(400 * 1024, ".");
    const writes: number[] = [];
    for (let i = 0; i < 48; i++) writes.push(await c.put(`bp/${i % 3}`, value(i)));
    const last = writes.at(-1)!;
    const seenWhilePaused = w.sub(1).lastIndex;
    w.call.resume();
    await w.until(
      (x) => x.sub(1).lastIndex >= last && x.sub(2).lastIndex >= writes.at(-3)!,
      "every write",
      8000,
    );
    // The reader lagged: the server held frames back, then sent several commits in one.
    expect(seenWhilePaused).toBeLessThan(writes[0]!);
    expect(
      w.sub(1).events.some((e) => e.payload === "batch" && (e.batch?.events.length ?? 0) > 1),
      JSON.stringify(w.sub(1).events.map((e) => `${e.payload}@${e.index}`)),
    ).toBe(true);
    for (const id of [1, 2]) {
      expect(indexProblems(w.sub(id)), `subscription ${id}`).toEqual([]);
      expect(foldKv(w.sub(id)), `subscription ${id}`).toEqual(await kvState(c, w.sub(id).request));
    }
    expect(w.violations).toEqual([]);
    expect(w.status).toBeUndefined();
  });
});

describe("Watch: property", () => {
  type Op =
    | { kind: "put"; key: number; value: string }
    | { kind: "del"; key: number }
    | { kind: "delTree" }
    | { kind: "open"; subject: number }
    | { kind: "resume"; which: number }
    | { kind: "cancel"; which: number }
    | { kind: "pause" };

  const opArb: fc.Arbitrary<Op> = fc.oneof(
    {
      arbitrary: fc.record({
        kind: fc.constant("put" as const),
        key: fc.nat(3),
        value: fc.string({ maxLength: 3 }),
      }),
      weight: 4,
    },
    { arbitrary: fc.record({ kind: fc.constant("del" as const), key: fc.nat(3) }), weight: 2 },
    { arbitrary: fc.constant({ kind: "delTree" as const }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant("open" as const), subject: fc.nat(4) }), weight: 3 },
    { arbitrary: fc.record({ kind: fc.constant("resume" as const), which: fc.nat(10) }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant("cancel" as const), which: fc.nat(10) }), weight: 2 },
    { arbitrary: fc.constant({ kind: "pause" as const }), weight: 1 },
  );

  it("after random writes and opens/cancels, every open subscription's folded view equals the server's state, with increasing indexes", async () => {
    const h = await Harness.start();
    const c = h.connect();
    let run = 0;
    const property = fc.asyncProperty(fc.array(opArb, { minLength: 4, maxLength: 25 }), async (ops) => {
      const ns = `p${++run}/`;
      const keys = [`${ns}a`, `${ns}b`, `${ns}c/1`, `${ns}c/2`];
      const subjects: SubscribeRequest[] = [
        { topic: "TOPIC_KV", key: keys[0] },
        { topic: "TOPIC_KV", key: keys[2] },
        { topic: "TOPIC_KV", prefix: `${ns}c/` },
        { topic: "TOPIC_KV", prefix: ns },
        { topic: "TOPIC_KV", key: keys[3] },
      ];
      const w = new WatchCall(c);
      /** For resumed subscriptions: the view and index they resumed from. */
      const bases = new Map<WatchSub, { view: Map<string, string>; index: number }>();
      let nextId = 1;
      const freeId = (): number => {
        const reusable = w.history.find((s) => s.closed && w.sub(s.id) === s);
        return reusable ? reusable.id : nextId++;
      };
      /** The index a subscription's view is at: its last frame's, or the one it resumed from. */
      const resumeIndex = (s: WatchSub): number => s.lastIndex || (bases.get(s)?.index ?? 0);
      const live = () => w.history.filter((s) => !s.cancelRequested && !s.closed);
      try {
        for (const op of ops) {
          switch (op.kind) {
            case "put":
              await c.put(keys[op.key]!, op.value);
              break;
            case "del":
              await c.delete(keys[op.key]!);
              break;
            case "delTree":
              await c.delete(`${ns}c/`, { recurse: true });
              break;
            case "open":
              w.open(freeId(), subjects[op.subject]!);
              break;
            case "resume": {
              // Resume a cancelled subscription that had a complete view, from its index.
              // (One whose last frames were a NewSnapshotToFollow and part of a snapshot is not.)
              const done = w.history.filter(
                (s) =>
                  s.closed?.code === grpc.status.CANCELLED &&
                  (s.snapshotDone ||
                    (bases.has(s) && !s.events.some((e) => e.payload === "new_snapshot_to_follow"))),
              );
              const from = done[op.which % Math.max(1, done.length)];
              if (!from) break;
              const base = bases.get(from)?.view ?? new Map<string, string>();
              const index = resumeIndex(from);
              const s = w.open(freeId(), { ...from.request, index });
              bases.set(s, { view: foldKv(from, base), index });
              break;
            }
            case "cancel": {
              const open = live();
              const s = open[op.which % Math.max(1, open.length)];
              if (s) w.cancel(s.id);
              break;
            }
            case "pause":
              await sleep(2);
              break;
          }
        }
        const final = h.server.publisher.index;
        // Every open subscription reaches the last commit (by events or progress); every
        // cancelled one gets its closed frame.
        await w.until(
          (x) =>
            x.history.every((s) =>
              s.cancelRequested ? s.closed !== undefined : s.closed === undefined && resumeIndex(s) >= final,
            ),
          "every subscription at the last index",
          3000,
        );
        for (const s of w.history) {
          if (s.cancelRequested) {
            expect(closedAs(s.closed)).toEqual({ code: "CANCELLED", error: "" });
            continue;
          }
          const base = bases.get(s);
          expect(
            indexProblems(s, base?.index ?? 0),
            `subscription ${s.id} ${JSON.stringify(s.request)}`,
          ).toEqual([]);
          const view = foldKv(s, base?.view);
          const state = await kvState(c, s.request);
          expect(
            Object.fromEntries(view),
            `view of ${s.id} ${JSON.stringify(s.request)}: ${JSON.stringify(s.frames)}`,
          ).toEqual(Object.fromEntries(state));
        }
        expect(w.violations).toEqual([]);
        expect(w.status).toBeUndefined();
      } finally {
        w.halfClose();
        await w.end().catch(() => undefined);
      }
    });
    const started = performance.now();
    await assertReplayable("test/grpc/watch.test.ts -t property", property, replayConfig(8));
    expect(performance.now() - started).toBeLessThan(10_000);
    await freed(h);
  });
});
