import { afterEach, describe, expect, it, vi } from "vitest";
import {
  CasFailedError,
  Code,
  FailedPreconditionError,
  ForceClosedError,
  type Frame,
  FrameKind,
  InvalidArgumentError,
  type KVEntry,
  type MaterializedView,
  NotFoundError,
  OutOfRangeError,
  PermissionDeniedError,
  type RetryNotice,
  type ServiceInstance,
  SluiceClient,
  type SluiceClientOptions,
  Topic,
  UnavailableError,
  WaitTimeoutError,
} from "../../src/client/index.js";
import { PAUSE_AT } from "../../src/client/watch-mux.js";
import { sluiceV1 } from "../../src/proto/index.js";
import type { SluiceServer } from "../../src/server/index.js";
import { RestartableServer, startDevServer } from "../helpers/sluice-server.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

/*
 * The SDK's materialized views against real servers over real gRPC on loopback: equal to
 * the server's state after writes, resuming after cut connections and server restarts
 * without a new snapshot while the index is in history, rebuilding when it is not or when
 * the token changes, and stopping for good when the token is deleted.
 */

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function client(options: SluiceClientOptions): SluiceClient {
  const c = new SluiceClient(options);
  cleanups.push(() => c.close());
  return c;
}

async function devServer(overrides: Parameters<typeof startDevServer>[0] = {}): Promise<SluiceServer> {
  const s = await startDevServer(overrides);
  cleanups.push(() => s.stop());
  return s;
}

const addr = (s: SluiceServer): string => `127.0.0.1:${s.grpcPort}`;

/** Entries in a comparable form (values as text). */
const kvRows = (entries: Iterable<KVEntry>) =>
  [...entries].map((e) => ({
    key: e.key,
    value: Buffer.from(e.value).toString("hex"),
    flags: e.flags,
    create_index: e.create_index,
    modify_index: e.modify_index,
  }));

const instanceRows = (instances: readonly ServiceInstance[]) =>
  instances.map((i) => ({
    node: i.node,
    service: i.service,
    checks: [...i.checks].sort((a, b) => a.check_id.localeCompare(b.check_id)),
  }));

/** Waits until the view reflects `index` and checks it against the server's list of the prefix. */
async function expectKvViewMatches(
  view: MaterializedView<ReadonlyMap<string, KVEntry>>,
  reader: SluiceClient,
  prefix: string,
  index: number,
): Promise<void> {
  const u = await view.waitForIndexAbove(index - 1, { timeout: 10_000 });
  expect(u.index).toBeGreaterThanOrEqual(index);
  const server = await reader.kvStore.list(prefix);
  expect(server.index).toBe(u.index);
  expect(kvRows(u.value.values())).toEqual(kvRows(server.entries));
}

/** The promise's rejection, checked to be an instance of `cls` with `fields`. */
async function rejectsWith(
  p: Promise<unknown>,
  cls: abstract new (...args: never[]) => Error,
  fields: Record<string, unknown> = {},
): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(cls);
  expect(err).toMatchObject(fields);
}

function until(cond: () => boolean, ms = 5000): Promise<void> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) resolve();
      else if (Date.now() - start > ms) reject(new Error(`condition not met within ${ms} ms`));
      else setTimeout(tick, 10);
    };
    tick();
  });
}

describe("views equal the server's state", () => {
  it("a KV prefix view follows puts and deletes, and ignores keys outside its prefix", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    await c.kvStore.put("app/a", "1");
    await c.kvStore.put("other/x", "1");
    const view = c.kv("app/");
    await expectKvViewMatches(view, c, "app/", 2);
    expect(view.stats.snapshots).toBe(1);

    await c.kvStore.put("app/b", "2", { flags: 42 });
    await c.kvStore.put("app/a", new Uint8Array([0, 255, 7]));
    await c.kvStore.put("other/y", "2");
    await c.kvStore.put("app/c/d", "3");
    const last = await c.kvStore.delete("app/b");
    await expectKvViewMatches(view, c, "app/", last);
    expect([...view.get()!.value.keys()]).toEqual(["app/a", "app/c/d"]);
    expect([...view.get()!.value.get("app/a")!.value]).toEqual([0, 255, 7]);

    const tree = await c.kvStore.delete("app/c", { recurse: true });
    await expectKvViewMatches(view, c, "app/", tree);
    expect(view.stats).toMatchObject({ snapshots: 1, eventsApplied: 5, duplicatesSkipped: 0, retries: 0 });
  });

  it("a single-key view holds that key only", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    const view = c.kv({ key: "k" });
    await c.kvStore.put("k2", "no");
    const i = await c.kvStore.put("k", "yes");
    const u = await view.waitForIndexAbove(i - 1, { timeout: 5000 });
    expect([...u.value.keys()]).toEqual(["k"]);
    const d = await c.kvStore.delete("k");
    expect((await view.waitForIndexAbove(d - 1, { timeout: 5000 })).value.size).toBe(0);
  });

  it("service health views (all, passing only, by tag) equal the catalog's health reads", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    const all = c.serviceHealth("web");
    const passing = c.serviceHealth("web", { passingOnly: true });
    const tagged = c.serviceHealth("web", { tag: "canary" });
    const check = async (index: number): Promise<void> => {
      for (const [view, query] of [
        [all, {}],
        [passing, { passingOnly: true }],
        [tagged, { tag: "canary" }],
      ] as const) {
        const u = await view.waitForIndexAbove(index - 1, { timeout: 5000 });
        const server = await c.catalog.serviceHealth("web", query);
        expect(u.index).toBe(server.index);
        expect(instanceRows(u.value)).toEqual(instanceRows(server.instances));
      }
    };
    const reg = (node: string, status: string, tags: string[]) =>
      c.catalog.register({
        node: { node, address: `10.0.0.${node.length}` },
        service: { service: "web", id: "web-1", port: 8080, tags },
        checks: [{ check_id: "alive", status }],
      });
    await reg("n1", "passing", ["v1"]);
    await reg("n2", "critical", ["canary"]);
    let i = await reg("n3", "passing", ["canary", "v1"]);
    await check(i);
    expect(all.get()!.value.map((x) => x.node.node)).toEqual(["n1", "n2", "n3"]);
    expect(passing.get()!.value.map((x) => x.node.node)).toEqual(["n1", "n3"]);
    expect(tagged.get()!.value.map((x) => x.node.node)).toEqual(["n2", "n3"]);

    await c.catalog.updateCheck({ node: "n2", check_id: "alive", status: "passing" });
    await c.catalog.register({
      node: { node: "n1", address: "10.0.0.1" },
      checks: [{ check_id: "disk", status: "warning" }],
    });
    await c.catalog.register({
      node: { node: "n4", address: "10.0.0.4" },
      service: { service: "db", port: 5432 },
    });
    i = await c.catalog.deregister({ node: "n3" });
    await check(i);
    expect(passing.get()!.value.map((x) => x.node.node)).toEqual(["n2"]);
    expect(
      all
        .get()!
        .value.find((x) => x.node.node === "n1")!
        .checks.map((ch) => ch.check_id)
        .sort(),
    ).toEqual(["alive", "disk"]);
  });

  it("subscribe yields typed frames: snapshot, end of snapshot, then events; abort ends it quietly", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    await c.kvStore.put("f/a", "1");
    const at = await c.kvStore.put("f/b", "2");
    const ac = new AbortController();
    const frames: Frame[] = [];
    const done = (async () => {
      for await (const f of c.subscribe(
        { topic: Topic.KV, subject: { prefix: "f/" } },
        { signal: ac.signal },
      )) {
        frames.push(f);
        if (frames.length === 2) await c.kvStore.put("f/c", "3");
        if (frames.length === 3) ac.abort();
      }
    })();
    await done;
    expect(frames.map((f) => f.kind)).toEqual([
      FrameKind.Snapshot,
      FrameKind.EndOfSnapshot,
      FrameKind.Events,
    ]);
    const [snap, eos, ev] = frames;
    if (
      snap?.kind !== FrameKind.Snapshot ||
      eos?.kind !== FrameKind.EndOfSnapshot ||
      ev?.kind !== FrameKind.Events
    ) {
      throw new Error("unexpected frames");
    }
    expect(snap.index).toBe(at);
    expect(snap.events.map((e) => (e.topic === Topic.KV ? [e.payload.op, e.payload.entry.key] : []))).toEqual(
      [
        ["set", "f/a"],
        ["set", "f/b"],
      ],
    );
    expect(eos.index).toBe(at);
    expect(ev.index).toBe(at + 1);
    expect(ev.events).toHaveLength(1);
    expect(ev.events[0]).toMatchObject({
      topic: Topic.KV,
      index: at + 1,
      payload: { op: "set", entry: { key: "f/c" } },
    });
  });

  it("views of one client share one Watch stream; with multiplex: false each has a Subscribe stream; both equal the server", async () => {
    const s = await devServer({ progressIntervalMs: 100 });
    const stub = sluiceV1.StateChangeSubscription.prototype as unknown as Record<
      string,
      (...a: unknown[]) => unknown
    >;
    const watch = vi.spyOn(stub, "Watch");
    const subscribe = vi.spyOn(stub, "Subscribe");
    cleanups.push(() => {
      watch.mockRestore();
      subscribe.mockRestore();
    });
    const writer = client({ address: addr(s) });
    const shared = client({ address: addr(s) });
    const own = client({ address: addr(s), multiplex: false });
    const views = [
      shared.kv("m/"),
      shared.kv("m/"),
      shared.kv({ key: "m/a" }),
      own.kv("m/"),
      own.kv({ key: "m/a" }),
    ];
    let last = 0;
    for (let i = 0; i < 6; i++) last = await writer.kvStore.put(`m/${"ab"[i % 2]}`, String(i));
    last = await writer.kvStore.delete("m/b");
    const states = await Promise.all(views.map((v) => v.waitForIndexAbove(last - 1, { timeout: 5000 })));
    const all = await writer.kvStore.list("m/");
    for (const i of [0, 1, 3]) expect(kvRows(states[i]!.value.values())).toEqual(kvRows(all.entries));
    for (const i of [2, 4]) {
      expect(kvRows(states[i]!.value.values())).toEqual(kvRows(all.entries.filter((e) => e.key === "m/a")));
    }
    expect(watch).toHaveBeenCalledTimes(1);
    expect(subscribe).toHaveBeenCalledTimes(2);
  });

  it("a subscribe() iteration that stops reading holds back neither the client's views nor loses its own frames", async () => {
    const s = await devServer();
    const writer = client({ address: addr(s) });
    const c = client({ address: addr(s) });
    const raw = c.subscribe({ topic: Topic.KV, subject: { prefix: "h/" } })[Symbol.asyncIterator]();
    const first = await raw.next();
    expect(first.done).toBe(false);
    const view = c.kv("v/");
    await view.waitForIndexAbove(0, { timeout: 5000 });
    // More single-commit messages than a subscription may leave unread before its Watch
    // stream pauses; nobody reads `raw` meanwhile.
    const puts = PAUSE_AT + 76;
    let last = 0;
    for (let i = 0; i < puts; i++) last = await writer.kvStore.put(`h/${i % 10}`, String(i));
    const v = await writer.kvStore.put("v/x", "seen");
    const u = await view.waitForIndexAbove(v - 1, { timeout: 5000 });
    expect(u.index).toBeGreaterThanOrEqual(v);
    expect(Buffer.from(u.value.get("v/x")!.value).toString()).toBe("seen");
    // The paused iteration then gets everything, in order, once.
    const indexes: number[] = [];
    while (indexes.length === 0 || indexes[indexes.length - 1]! < last) {
      const r = await raw.next();
      expect(r.done).toBe(false);
      const f = r.value as Frame;
      if (f.kind === FrameKind.Events) for (const e of f.events) indexes.push(e.index);
    }
    expect(indexes.length).toBe(puts);
    for (let i = 1; i < indexes.length; i++) expect(indexes[i]!).toBeGreaterThan(indexes[i - 1]!);
    await raw.return?.();
  });

  it("progress frames move a quiet view's index without changing its value", async () => {
    const s = await devServer({ progressIntervalMs: 100 });
    const c = client({ address: addr(s) });
    await c.kvStore.put("mine/a", "1");
    const view = c.kv("mine/");
    await view.waitForIndexAbove(0, { timeout: 5000 });
    const i = await c.kvStore.put("theirs/a", "1");
    const u = await view.waitForIndexAbove(i - 1, { timeout: 5000 });
    expect(u.index).toBeGreaterThanOrEqual(i);
    expect([...u.value.keys()]).toEqual(["mine/a"]);
    expect(view.stats.eventsApplied).toBe(0);
  });
});

describe("resume and rebuild", () => {
  it("resumes after its connection is cut, with no new snapshot while the index is in history", async () => {
    const s = await devServer();
    const proxy = await TcpProxy.start(s.grpcPort);
    cleanups.push(() => proxy.close());
    const writer = client({ address: addr(s) });
    const notices: RetryNotice[] = [];
    const viewer = client({ address: proxy.address });
    const view = viewer.kv("r/", { onRetry: (n) => notices.push(n) });
    let last = await writer.kvStore.put("r/1", "a");
    await expectKvViewMatches(view, writer, "r/", last);

    // Cut while idle, write while the client cannot reconnect, then let it back in.
    expect(proxy.block()).toBeGreaterThan(0);
    await until(() => notices.length >= 1);
    for (let n = 2; n <= 6; n++) last = await writer.kvStore.put(`r/${n}`, `v${n}`);
    last = await writer.kvStore.delete("r/1");
    proxy.unblock();
    await expectKvViewMatches(view, writer, "r/", last);

    // Cut again and write at once: the resume races the writes.
    proxy.cut();
    for (let n = 7; n <= 9; n++) last = await writer.kvStore.put(`r/${n}`, `v${n}`);
    await expectKvViewMatches(view, writer, "r/", last);

    expect(notices[0]!.error).toBeInstanceOf(UnavailableError);
    expect(notices.every((n) => !n.reset && n.resumeIndex > 0)).toBe(true);
    expect(view.stats.snapshots).toBe(1);
    expect(view.stats.resumes).toBeGreaterThanOrEqual(2);
    expect(view.stats.eventsApplied).toBe(9);
    expect(view.stats.duplicatesSkipped).toBe(0);
  });

  it("rebuilds from a fresh snapshot when its index has left the server's history", async () => {
    const s = await devServer({ historyMaxEvents: 2 });
    const proxy = await TcpProxy.start(s.grpcPort);
    cleanups.push(() => proxy.close());
    const writer = client({ address: addr(s) });
    const notices: RetryNotice[] = [];
    const view = client({ address: proxy.address }).kv("h/", { onRetry: (n) => notices.push(n) });
    let last = await writer.kvStore.put("h/keep", "1");
    await expectKvViewMatches(view, writer, "h/", last);
    proxy.block();
    await until(() => notices.length >= 1);
    for (let n = 0; n < 10; n++) last = await writer.kvStore.put(`h/${n % 3}`, `v${n}`);
    last = await writer.kvStore.delete("h/keep");
    proxy.unblock();
    await expectKvViewMatches(view, writer, "h/", last);
    expect(view.stats.snapshots).toBe(2);
    expect([...view.get()!.value.keys()]).toEqual(["h/0", "h/1", "h/2"]);
  });

  it("a force-closed view (its policy changed) rebuilds from a snapshot with the token's new rights", async () => {
    const s = await devServer({ aclEnabled: true });
    const boot = await client({ address: addr(s) }).acl.bootstrap();
    const admin = client({ address: addr(s), token: boot.token.secret_id });
    const { policy } = await admin.acl.createPolicy({
      name: "app",
      rules: 'key_prefix "app/" { policy = "read" }',
    });
    const { token } = await admin.acl.createToken({ policies: ["app"] });
    await admin.kvStore.put("app/a", "1");
    let last = await admin.kvStore.put("app/b/x", "2");
    const notices: RetryNotice[] = [];
    const view = client({ address: addr(s), token: token.secret_id }).kv("app/", {
      onRetry: (n) => notices.push(n),
    });
    const first = await view.waitForIndexAbove(last - 1, { timeout: 5000 });
    expect([...first.value.keys()]).toEqual(["app/a", "app/b/x"]);

    await admin.acl.updatePolicy(policy.id, {
      name: "app",
      rules: 'key_prefix "app/b/" { policy = "read" }',
    });
    last = await admin.kvStore.put("app/b/y", "3");
    await admin.kvStore.put("app/c", "hidden");
    const u = await view.waitForIndexAbove(last - 1, { timeout: 5000 });
    expect([...u.value.keys()]).toEqual(["app/b/x", "app/b/y"]);
    expect(notices[0]!.error).toBeInstanceOf(ForceClosedError);
    expect(notices[0]!.reset).toBe(true);
    expect(view.stats.snapshots).toBe(2);
  });

  it("deleting the token stops the view with PermissionDeniedError, without retrying forever", async () => {
    const s = await devServer({ aclEnabled: true });
    const boot = await client({ address: addr(s) }).acl.bootstrap();
    const admin = client({ address: addr(s), token: boot.token.secret_id });
    await admin.acl.createPolicy({ name: "all-keys", rules: 'key_prefix "" { policy = "read" }' });
    const { token } = await admin.acl.createToken({ policies: ["all-keys"] });
    const last = await admin.kvStore.put("t/a", "1");
    const view = client({ address: addr(s), token: token.secret_id }).kv("t/");
    await view.waitForIndexAbove(last - 1, { timeout: 5000 });
    const seen: number[] = [];
    const consumed = (async () => {
      for await (const u of view) seen.push(u.index);
    })();

    await admin.acl.deleteToken(token.accessor_id);
    const err = await consumed.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PermissionDeniedError);
    expect(err).toMatchObject({ code: Code.PermissionDenied, kind: "TokenNotFoundError" });
    expect(view.closed).toBe(true);
    expect(() => view.get()).toThrow(PermissionDeniedError);
    await expect(view.waitForIndexAbove(1_000)).rejects.toBeInstanceOf(PermissionDeniedError);
    // One rebuild attempt after the force-close, refused; then nothing more.
    expect(view.stats).toMatchObject({ subscriptions: 2, retries: 1 });
    await new Promise((r) => setTimeout(r, 300));
    expect(view.stats.subscriptions).toBe(2);
    expect(seen.length).toBeGreaterThanOrEqual(1);
  });

  it("graceful shutdown ends the stream with UNAVAILABLE; the view resumes on the restarted server without losing or double-applying changes", async () => {
    const srv = await RestartableServer.start();
    cleanups.push(() => srv.destroy());
    const writer = client({ address: srv.address, waitForReady: true });
    const notices: RetryNotice[] = [];
    await writer.kvStore.put("g/before", "0");
    let last = await writer.kvStore.put("outside", "0");
    const view = client({ address: srv.address }).kv("g/", { onRetry: (n) => notices.push(n) });
    await view.waitForIndexAbove(0, { timeout: 5000 });
    let written = 0;
    for (let n = 0; n < 5; n++, written++) last = await writer.kvStore.put(`g/${n}`, `a${n}`);
    await expectKvViewMatches(view, writer, "g/", last);

    await srv.stop();
    expect(notices[0]!.error).toBeInstanceOf(UnavailableError);
    expect(notices[0]!.error).toMatchObject({ kind: "ShuttingDownError" });
    expect(notices[0]!.delayMs).toBe(0);
    expect(notices[0]!.resumeIndex).toBe(last);

    await srv.startAgain();
    for (let n = 0; n < 5; n++, written++) last = await writer.kvStore.put(`g/${n}`, `b${n}`);
    last = await writer.kvStore.delete("g/before");
    written++;
    await expectKvViewMatches(view, writer, "g/", last);

    // Once more, with writes racing the restart.
    await srv.restart();
    for (let n = 5; n < 8; n++, written++) last = await writer.kvStore.put(`g/${n}`, `c${n}`);
    await expectKvViewMatches(view, writer, "g/", last);

    expect(view.stats.snapshots).toBe(1);
    expect(view.stats.eventsApplied).toBe(written);
    expect(view.stats.duplicatesSkipped).toBe(0);
    expect(notices.every((n) => !n.reset)).toBe(true);
  });
});

describe("view API", () => {
  it("waitForIndexAbove returns the current state when its timeout runs out, and rejects on abort", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    const i = await c.kvStore.put("w/a", "1");
    const view = c.kv("w/");
    const u = await view.waitForIndexAbove(i + 100, { timeout: 100 });
    expect(u.index).toBe(i);
    const ac = new AbortController();
    const waiting = view.waitForIndexAbove(i + 100, { signal: ac.signal });
    ac.abort(new Error("enough"));
    await expect(waiting).rejects.toThrow("enough");
  });

  it("waitForIndexAbove without any state yet times out with WaitTimeoutError", async () => {
    const proxy = await TcpProxy.start(1);
    cleanups.push(() => proxy.close());
    proxy.block();
    const view = client({ address: proxy.address }).kv("x/");
    await expect(view.waitForIndexAbove(0, { timeout: 200 })).rejects.toBeInstanceOf(WaitTimeoutError);
    expect(view.get()).toBeUndefined();
    expect(view.stats.retries).toBeGreaterThanOrEqual(1);
  });

  it("iteration gives the current state, then each change; break closes the view", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    await c.kvStore.put("it/a", "1");
    const view = c.kv("it/");
    const sizes: number[] = [];
    for await (const u of view) {
      sizes.push(u.value.size);
      if (u.value.size === 3) break;
      await c.kvStore.put(`it/${sizes.length}x`, "v");
    }
    expect(sizes).toEqual([1, 2, 3]);
    expect(view.closed).toBe(true);
  });

  it("close() ends iterators and client.close() closes every view", async () => {
    const s = await devServer();
    const c = new SluiceClient({ address: addr(s) });
    const a = c.kv("a/");
    const b = c.serviceHealth("web");
    const ended = (async () => {
      let n = 0;
      for await (const _ of a) n++;
      return n;
    })();
    await a.waitForIndexAbove(0, { timeout: 5000 });
    c.close();
    expect(await ended).toBe(1);
    expect(a.closed && b.closed).toBe(true);
  });
});

describe("errors are typed by status", () => {
  it("maps CAS failures, bad requests, unknown tokens, repeated bootstrap, missing tokens and indexes ahead", async () => {
    const s = await devServer({ aclEnabled: true });
    const anon = client({ address: addr(s) });
    const boot = await anon.acl.bootstrap();
    await rejectsWith(anon.acl.bootstrap(), FailedPreconditionError, {
      code: Code.FailedPrecondition,
      kind: "BootstrapDoneError",
    });
    const admin = client({ address: addr(s), token: boot.token.secret_id });
    const i = await admin.kvStore.put("k", "v");
    await expect(admin.kvStore.put("k", "w", { cas: i + 1 })).rejects.toBeInstanceOf(CasFailedError);
    await expect(admin.kvStore.put("k", "w", { cas: 0 })).rejects.toMatchObject({ kind: "CasFailedError" });
    expect(await admin.kvStore.put("k", "w", { cas: i })).toBe(i + 1);
    await expect(admin.kvStore.delete("k", { cas: 1 })).rejects.toBeInstanceOf(CasFailedError);

    const stranger = client({ address: addr(s), token: "no-such-secret" });
    await rejectsWith(stranger.kvStore.get("k"), PermissionDeniedError, { kind: "TokenNotFoundError" });
    await rejectsWith(anon.kvStore.put("k", "x"), PermissionDeniedError, { kind: "PermissionDeniedError" });
    await expect(admin.acl.deleteToken("nope" as never)).rejects.toBeInstanceOf(NotFoundError);

    const first = async (req: Parameters<SluiceClient["subscribe"]>[0], c = admin) => {
      for await (const f of c.subscribe(req)) return f;
      return undefined;
    };
    await rejectsWith(first({ topic: Topic.ServiceList, subject: { prefix: "x" } }), InvalidArgumentError, {
      kind: "InvalidSubjectError",
    });
    await expect(first({ topic: Topic.KV, subject: { key: "k" } }, stranger)).rejects.toBeInstanceOf(
      PermissionDeniedError,
    );
    await expect(first({ topic: Topic.KV, subject: { key: "k" }, index: 1_000_000 })).rejects.toBeInstanceOf(
      OutOfRangeError,
    );
  });
});
