import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MAX_IN_FLIGHT } from "../../src/broker/write-stream.js";
import type { KVEntry__Output } from "../../src/generated/sluice/v1/KVEntry.js";
import type { KVWrite } from "../../src/generated/sluice/v1/KVWrite.js";
import type { KVWriteResponse__Output } from "../../src/generated/sluice/v1/KVWriteResponse.js";
import type { KVWriteResult__Output } from "../../src/generated/sluice/v1/KVWriteResult.js";
import { assertReplayable, replayConfig } from "../helpers/fc-replay.js";
import { type Conn, Harness, metadataFor, withTimeout } from "../helpers/grpc-harness.js";

/*
 * sluice.v1.KV/Write end to end over loopback: pipelined puts and deletes on one bidi stream,
 * one result per write id (an index, or the status the unary call would have failed with),
 * per-write errors that do not end the stream, ACLs, half-close, durability across a restart,
 * flow control past MAX_IN_FLIGHT, the writes as Subscribe events, and a model test.
 */

const code = (c: number): string => grpc.status[c] ?? String(c);
const ACL = { aclEnabled: true, aclDefaultPolicy: "deny" } as const;

/** One KV.Write call: every response message and result, and the final status. */
class WriteStream {
  readonly call: grpc.ClientDuplexStream<{ writes: KVWrite[] }, KVWriteResponse__Output>;
  readonly responses: KVWriteResponse__Output[] = [];
  readonly results: KVWriteResult__Output[] = [];
  /** Results by id; an id answered twice is recorded in {@link duplicates}. */
  readonly byId = new Map<number, KVWriteResult__Output>();
  readonly duplicates: number[] = [];
  /** How many results had arrived when the status arrived. */
  resultsAtStatus = -1;
  status: grpc.StatusObject | undefined;
  readonly ended: Promise<grpc.StatusObject>;
  private readonly waiters = new Set<() => void>();

  constructor(conn: Conn, token?: string) {
    this.call = conn.kv.Write(metadataFor(token ?? conn.token));
    this.call.on("data", (m: KVWriteResponse__Output) => {
      this.responses.push(m);
      for (const r of m.results) {
        this.results.push(r);
        if (this.byId.has(r.id)) this.duplicates.push(r.id);
        else this.byId.set(r.id, r);
      }
      this.notify();
    });
    this.call.on("error", () => {});
    this.ended = new Promise((resolve) => {
      this.call.on("status", (s: grpc.StatusObject) => {
        this.status = s;
        this.resultsAtStatus = this.results.length;
        resolve(s);
        this.notify();
      });
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  send(writes: KVWrite[]): void {
    this.call.write({ writes });
  }

  /** Sends `writes` split into messages of `size`. */
  sendIn(writes: KVWrite[], size: number): void {
    for (let i = 0; i < writes.length; i += size) this.send(writes.slice(i, i + size));
  }

  /** Half-close. */
  end(): void {
    this.call.end();
  }

  /** Waits until results for at least `n` distinct ids arrived; fails on timeout or early end. */
  until(n: number, ms = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.byId.size >= n) finish();
        else if (this.status)
          finish(
            new Error(
              `stream ended (${code(this.status.code)}: ${this.status.details}) with ${this.byId.size}/${n} results`,
            ),
          );
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out waiting for ${n} results; have ${this.byId.size}`)),
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

  /** Waits for the final status. */
  finished(ms = 10_000): Promise<grpc.StatusObject> {
    return withTimeout(this.ended, ms, "the Write stream to end");
  }

  /** The result of write `id`, as text: `@<index>` or `<CODE> <ErrorClass>`. */
  outcome(id: number): string {
    const r = this.byId.get(id);
    if (!r) return "missing";
    if (r.result === "index") return `@${r.index}`;
    if (r.result === "error") return `${code(r.error!.code)} ${r.error!.error}`;
    return `?${String(r.result)}`;
  }

  index(id: number): number {
    const r = this.byId.get(id);
    if (r?.result !== "index") throw new Error(`write ${id} has no index: ${this.outcome(id)}`);
    return r.index!;
  }
}

const put = (id: number, key: string, value: string, o: { cas?: number; flags?: number } = {}): KVWrite => ({
  id,
  put: {
    key,
    value: Buffer.from(value),
    flags: o.flags ?? 0,
    ...(o.cas !== undefined ? { cas: o.cas } : {}),
  },
});
const del = (id: number, key: string, o: { cas?: number; recurse?: boolean } = {}): KVWrite => ({
  id,
  delete: { key, recurse: o.recurse ?? false, ...(o.cas !== undefined ? { cas: o.cas } : {}) },
});

function list(
  c: Conn,
  prefix: string,
  token?: string,
): Promise<{ index: number; entries: KVEntry__Output[] }> {
  return new Promise((resolve, reject) =>
    c.kv.List({ prefix, keys_only: false }, metadataFor(token ?? c.token), (err, r) =>
      err ? reject(err) : resolve({ index: r!.index, entries: r!.entries }),
    ),
  );
}

function get(c: Conn, key: string, token?: string): Promise<KVEntry__Output | undefined> {
  return new Promise((resolve, reject) =>
    c.kv.Get({ key }, metadataFor(token ?? c.token), (err, r) =>
      err ? reject(err) : resolve(r!.entry ?? undefined),
    ),
  );
}

/** Key → [value, modify index], from a List. */
async function stateOf(c: Conn, prefix: string, token?: string): Promise<Map<string, [string, number]>> {
  const { entries } = await list(c, prefix, token);
  return new Map(entries.map((e) => [e.key, [e.value.toString("utf8"), e.modify_index]]));
}

describe("pipelining", () => {
  it("2,000 puts and deletes in a few messages: one result per id, batched, matching Get and List", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const before = (await list(c, "")).index;
    const writes: KVWrite[] = [];
    // 200 keys, each written ten times; every fourth write to a key is a delete.
    for (let id = 1; id <= 2000; id++) {
      const key = `p/${id % 200}`;
      writes.push(id % 4 === 0 ? del(id, key) : put(id, key, `v${id}`, { flags: id }));
    }
    const s = new WriteStream(c);
    s.sendIn(writes, 500);
    await s.until(2000);
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");

    expect(s.duplicates).toEqual([]);
    expect(s.results).toHaveLength(2000);
    expect([...s.byId.keys()].sort((a, b) => a - b)).toEqual(writes.map((w) => w.id));
    const indexes = writes.map((w) => s.index(w.id as number));
    expect(new Set(indexes).size).toBe(2000);
    expect(Math.min(...indexes)).toBeGreaterThan(before);
    // Committed in arrival order: ids were sent in increasing order.
    for (let i = 1; i < indexes.length; i++) expect(indexes[i]).toBeGreaterThan(indexes[i - 1]!);
    // Results ready together share a message.
    expect(s.responses.length).toBeLessThan(2000 / 4);

    // The last write to each key decides what is read back.
    const expected = new Map<string, [string, number]>();
    for (const w of writes) {
      const key = (w.put ?? w.delete)!.key!;
      if (w.put) expected.set(key, [`v${w.id}`, s.index(w.id as number)]);
      else expected.delete(key);
    }
    const got = await stateOf(c, "p/");
    expect(new Map([...got].sort())).toEqual(new Map([...expected].sort()));
    expect(got.size).toBe(150);
    // Get agrees, flags included; deleted keys are absent.
    const e = await get(c, "p/1");
    expect([e?.value.toString(), e?.flags, e?.modify_index]).toEqual(["v1801", 1801, s.index(1801)]);
    expect(await get(c, "p/0")).toBeUndefined();
    expect(await get(c, "p/4")).toBeUndefined();
    // Nothing else committed: the store is at the last acknowledged write.
    expect((await list(c, "")).index).toBe(Math.max(...indexes));
  });

  it("a recursive delete on the stream removes the whole prefix", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const s = new WriteStream(c);
    s.send([put(1, "t/a", "1"), put(2, "t/b/c", "2"), put(3, "u", "3"), del(4, "t/", { recurse: true })]);
    await s.until(4);
    expect([1, 2, 3, 4].map((id) => s.outcome(id).startsWith("@"))).toEqual([true, true, true, true]);
    expect(await stateOf(c, "")).toEqual(new Map([["u", ["3", s.index(3)]]]));
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
  });
});

describe("per-write errors", () => {
  it("a failed CAS, an invalid key and a write without an op fail alone; the stream goes on", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const i0 = await c.put("e/a", "orig");
    const snapshot = await stateOf(c, "");

    const s = new WriteStream(c);
    s.send([
      put(1, "e/a", "cas-wrong", { cas: i0 + 100 }),
      put(2, "e/new", "created", { cas: 0 }), // absent: succeeds
      put(3, "", "empty key"),
      { id: 4 },
      put(5, "e/a", "again", { cas: 0 }), // exists: fails
      del(6, "e/a", { cas: i0 + 1 }), // wrong index: fails
      put(7, "e/\u0000nul", "x"),
    ]);
    await s.until(7);
    expect(s.outcome(1)).toBe("FAILED_PRECONDITION CasFailedError");
    expect(s.outcome(3)).toBe("INVALID_ARGUMENT ValidationError");
    expect(s.outcome(4)).toBe("INVALID_ARGUMENT InvalidArgumentError");
    expect(s.outcome(5)).toBe("FAILED_PRECONDITION CasFailedError");
    expect(s.outcome(6)).toBe("FAILED_PRECONDITION CasFailedError");
    expect(s.outcome(7)).toBe("INVALID_ARGUMENT ValidationError");
    expect(s.byId.get(1)!.error!.message).not.toBe("");
    expect(s.byId.get(4)!.error!.message).toContain("op");
    const i2 = s.index(2);
    // Only write 2 committed.
    expect(await stateOf(c, "")).toEqual(new Map([...snapshot, ["e/new", ["created", i2]]]));
    expect((await list(c, "")).index).toBe(i2);

    // Later writes on the same stream still succeed, CAS included.
    s.send([put(8, "e/a", "cas-right", { cas: i0 }), put(9, "e/b", "plain"), del(10, "e/new", { cas: i2 })]);
    await s.until(10);
    expect(s.status).toBeUndefined();
    const [i8, i9, i10] = [8, 9, 10].map((id) => s.index(id));
    expect([i8, i9, i10]).toEqual([i2 + 1, i2 + 2, i2 + 3]);
    expect(await stateOf(c, "e/")).toEqual(
      new Map([
        ["e/a", ["cas-right", i8]],
        ["e/b", ["plain", i9]],
      ]),
    );
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
    expect(s.duplicates).toEqual([]);
  });

  it("the error of a write is the status the unary call fails with", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const i0 = await c.put("k", "v");
    const unary = await c.put("k", "x", { cas: i0 + 7 }).catch((e: grpc.ServiceError) => e);
    const s = new WriteStream(c);
    s.send([put(1, "k", "x", { cas: i0 + 7 })]);
    await s.until(1);
    const r = s.byId.get(1)!;
    expect(unary).toBeInstanceOf(Error);
    const u = unary as grpc.ServiceError;
    expect([r.error?.code, r.error?.message, r.error?.error]).toEqual([
      u.code,
      u.details,
      u.metadata.get("x-sluice-error")[0],
    ]);
    s.end();
    await s.finished();
  });
});

describe("ACLs", () => {
  it('a token that may write only "pub/": indexes for pub/ keys, PERMISSION_DENIED for the rest', async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const t = await h.tokenWithRules('key_prefix "pub/" { policy = "write" }');
    const admin = h.connect(h.management);
    await admin.put("secret/x", "keep");
    const before = await stateOf(admin, "");

    const s = new WriteStream(h.connect(t.secret));
    s.send([
      put(1, "pub/a", "1"),
      put(2, "secret/a", "2"),
      put(3, "pub/b", "3"),
      del(4, "secret/x"),
      put(5, "public", "not under pub/"),
    ]);
    s.send([del(6, "pub/a"), put(7, "pub/c", "7"), del(8, "", { recurse: true })]);
    await s.until(8);
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((id) => s.outcome(id).replace(/^@\d+$/, "@"))).toEqual([
      "@",
      "PERMISSION_DENIED PermissionDeniedError",
      "@",
      "PERMISSION_DENIED PermissionDeniedError",
      "PERMISSION_DENIED PermissionDeniedError",
      "@",
      "@",
      "PERMISSION_DENIED PermissionDeniedError",
    ]);
    expect(s.status).toBeUndefined();
    const [i1, i3, i6, i7] = [1, 3, 6, 7].map((id) => s.index(id)) as [number, number, number, number];
    expect([i3, i6, i7]).toEqual([i1 + 1, i1 + 2, i1 + 3]);
    expect(await stateOf(admin, "")).toEqual(
      new Map([...before, ["pub/b", ["3", i3]], ["pub/c", ["7", i7]]]),
    );
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
  });

  it("an unknown token: PERMISSION_DENIED for each write, nothing committed, the stream ends OK", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const c = h.connect();
    const before = (await list(h.connect(h.management), "")).index;
    const s = new WriteStream(c, "00000000-0000-4000-8000-000000000000");
    s.send([put(1, "a", "1"), del(2, "b"), { id: 3 }]);
    s.send([put(4, "pub/c", "1")]);
    await s.until(4);
    expect([1, 2, 3, 4].map((id) => s.outcome(id))).toEqual([
      "PERMISSION_DENIED TokenNotFoundError",
      "PERMISSION_DENIED TokenNotFoundError",
      "INVALID_ARGUMENT InvalidArgumentError", // no op: refused before the token is looked at
      "PERMISSION_DENIED TokenNotFoundError",
    ]);
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
    expect((await list(h.connect(h.management), "")).index).toBe(before);
  });

  it("each write resolves the token: deleting it mid-stream refuses the later writes", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const t = await h.tokenWithRules('key_prefix "" { policy = "write" }');
    const s = new WriteStream(h.connect(t.secret));
    s.send([put(1, "a", "1")]);
    await s.until(1);
    const i1 = s.index(1);
    const d = await h.connect(h.management).deleteToken(t.accessor);
    s.send([put(2, "a", "2")]);
    await s.until(2);
    expect(s.outcome(2)).toBe("PERMISSION_DENIED TokenNotFoundError");
    expect(s.status).toBeUndefined();
    expect(await stateOf(h.connect(h.management), "a")).toEqual(new Map([["a", ["1", i1]]]));
    expect((await list(h.connect(h.management), "")).index).toBe(d);
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
  });

  it("anonymous (no token) under default deny: PERMISSION_DENIED", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const s = new WriteStream(h.connect());
    s.send([put(1, "a", "1")]);
    await s.until(1);
    expect(s.outcome(1)).toBe("PERMISSION_DENIED PermissionDeniedError");
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
  });
});

describe("half-close", () => {
  it("after end() every in-flight write gets its result, then the stream ends OK", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const s = new WriteStream(c);
    const writes = Array.from({ length: 600 }, (_, i) => put(i + 1, `h/${i % 50}`, `${i}`));
    s.sendIn(writes, 100);
    // The last write fails synchronously (no op), the one before it in the store (CAS).
    s.send([put(601, "h/0", "x", { cas: 1_000_000 }), { id: 602 }]);
    s.end();
    const st = await s.finished();
    expect(code(st.code)).toBe("OK");
    expect(s.resultsAtStatus).toBe(602);
    expect(s.byId.size).toBe(602);
    expect(s.duplicates).toEqual([]);
    expect(s.outcome(601)).toBe("FAILED_PRECONDITION CasFailedError");
    expect(s.outcome(602)).toBe("INVALID_ARGUMENT InvalidArgumentError");
    for (let id = 1; id <= 600; id++) s.index(id);
  });

  it("half-close with nothing in flight ends at once with OK", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const empty = new WriteStream(c);
    empty.end();
    expect(code((await empty.finished()).code)).toBe("OK");
    expect(empty.results).toEqual([]);

    const s = new WriteStream(c);
    s.send([put(1, "a", "1")]);
    await s.until(1);
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
    expect(s.results).toHaveLength(1);
  });

  it("half-close with only failing writes in flight ends OK", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const s = new WriteStream(c);
    s.send([put(1, "", "x"), put(2, "k", "x", { cas: 99 }), del(3, "k", { cas: 99 })]);
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
    expect([1, 2, 3].map((id) => s.outcome(id))).toEqual([
      "INVALID_ARGUMENT ValidationError",
      "FAILED_PRECONDITION CasFailedError",
      "FAILED_PRECONDITION CasFailedError",
    ]);
  });
});

describe("durability", () => {
  it("every acknowledged write is there after a graceful restart", async () => {
    const h = await Harness.start({}, { persistent: true });
    const c = h.connect();
    const s = new WriteStream(c);
    const writes: KVWrite[] = [];
    for (let id = 1; id <= 1500; id++)
      writes.push(id % 5 === 0 ? del(id, `d/${id % 97}`) : put(id, `d/${id % 97}`, `v${id}`));
    s.sendIn(writes, 300);
    await s.until(1500);
    const expected = new Map<string, [string, number]>();
    for (const w of writes) {
      const key = (w.put ?? w.delete)!.key!;
      if (w.put) expected.set(key, [`v${w.id}`, s.index(w.id as number)]);
      else expected.delete(key);
    }

    // A second stream still has writes in flight when the stop begins: it half-closes, the
    // stop lets it finish, and whatever it acknowledged must survive.
    const s2 = new WriteStream(h.connect());
    const late = Array.from({ length: 800 }, (_, i) => put(10_000 + i, `late/${i}`, `l${i}`));
    s2.sendIn(late, 200);
    s2.end();
    s.end();
    // The call must have reached the server (a call the server never saw is refused by the stop).
    await s2.until(1);
    await h.restart();
    const st2 = await s2.finished();
    expect(code((await s.finished()).code)).toBe("OK");

    const c2 = h.connect();
    expect(await stateOf(c2, "d/")).toEqual(expected);
    const lateState = await stateOf(c2, "late/");
    let acked = 0;
    for (const w of late) {
      const r = s2.byId.get(w.id as number);
      if (r?.result !== "index") continue;
      acked++;
      expect(lateState.get(w.put!.key!)).toEqual([w.put!.value!.toString(), r.index]);
    }
    // The stop waits for the half-closed stream, so it finished normally.
    expect([code(st2.code), acked]).toEqual(["OK", 800]);
  });
});

describe("shutdown", () => {
  it("a stream still open when the server stops ends UNAVAILABLE at once, after the results of what it received", async () => {
    const h = await Harness.start({ shutdownGraceMs: 8000 }, { persistent: true });
    const s = new WriteStream(h.connect());
    const writes = Array.from({ length: 600 }, (_, i) => put(i + 1, `sd/${i % 50}`, `v${i}`));
    s.sendIn(writes, 100);
    await s.until(1);
    const t0 = performance.now();
    await h.restart();
    const stopMs = performance.now() - t0;
    const st = await s.finished();
    expect(code(st.code)).toBe("UNAVAILABLE");
    expect(st.details).toMatch(/shutting down/);
    // The stop did not wait for the grace period: the stream ended as soon as it could.
    expect(stopMs).toBeLessThan(6000);
    expect(s.duplicates).toEqual([]);
    // Every write has an index or UNAVAILABLE (not applied), or no result at all (never
    // read); every index is durable.
    const expected = new Map<string, [string, number]>();
    for (const w of writes) {
      const r = s.byId.get(w.id as number);
      if (r === undefined) continue;
      if (r.result === "index") expected.set(w.put!.key!, [w.put!.value!.toString(), r.index!]);
      else expect(code(r.error!.code)).toBe("UNAVAILABLE");
    }
    expect(expected.size).toBeGreaterThan(0);
    const state = await stateOf(h.connect(), "sd/");
    for (const [key, v] of expected) expect(state.get(key)).toEqual(v);
  });
});

describe("flow control", () => {
  it(`well over MAX_IN_FLIGHT (${MAX_IN_FLIGHT}) writes at once: every one completes`, async () => {
    const h = await Harness.start();
    const c = h.connect();
    const s = new WriteStream(c);
    const n = 5000;
    // One huge message, then many small ones behind it while the server is not reading.
    s.send(Array.from({ length: n }, (_, i) => put(i + 1, `f/${i % 300}`, `a${i}`)));
    const more = Array.from({ length: n }, (_, i) => put(n + i + 1, `f/${i % 300}`, `b${i}`));
    s.sendIn(more, 250);
    await s.until(2 * n, 20_000);
    expect(s.duplicates).toEqual([]);
    const indexes = Array.from({ length: 2 * n }, (_, i) => s.index(i + 1));
    for (let i = 1; i < indexes.length; i++) expect(indexes[i]).toBe(indexes[i - 1]! + 1);
    // The second round wrote every key last.
    const expected = new Map<string, [string, number]>();
    for (const w of more) expected.set(w.put!.key!, [w.put!.value!.toString(), s.index(w.id as number)]);
    expect(expected.size).toBe(300);
    expect(await stateOf(c, "f/")).toEqual(expected);
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
  });
});

describe("flow control with failing writes", () => {
  /*
   * The handler pauses reading at MAX_IN_FLIGHT writes in flight; it resumed only when a write
   * succeeded, so a stream whose writes in flight all failed (CAS, permission, validation)
   * stayed paused for good: later messages unread, a half-close never seen. Now any outcome
   * resumes it. 2,048 failing writes, then one more message and a half-close: every result,
   * then OK.
   */
  const cases: [string, boolean, (id: number) => KVWrite, string][] = [
    ["CAS failures", false, (id) => put(id, "x", "v", { cas: 12_345 }), "FAILED_PRECONDITION CasFailedError"],
    ["an unknown token", true, (id) => put(id, `x/${id}`, "v"), "PERMISSION_DENIED TokenNotFoundError"],
  ];
  for (const [what, acl, failing, failure] of cases) {
    it(`${MAX_IN_FLIGHT * 2} writes failing with ${what} do not stall the stream`, async () => {
      const h = await Harness.start({ ...(acl ? ACL : {}), shutdownGraceMs: 200 });
      let token: string | undefined;
      if (acl) {
        await h.bootstrapAcl();
        token = "00000000-0000-4000-8000-000000000000";
      }
      const s = new WriteStream(h.connect(), token);
      const n = MAX_IN_FLIGHT * 2;
      s.send(Array.from({ length: n }, (_, i) => failing(i + 1)));
      // Later writes on the same stream: a no-op write, which fails before any commit.
      s.send([{ id: n + 1 }]);
      s.end();
      await s.until(n, 5000);
      for (let id = 1; id <= n; id++) expect(s.outcome(id)).toBe(failure);
      // The later message must still be read and answered, and the half-close must end the call.
      await s.until(n + 1, 2000);
      expect(s.outcome(n + 1)).toBe("INVALID_ARGUMENT InvalidArgumentError");
      expect(code((await s.finished(2000)).code)).toBe("OK");
    });
  }
});

describe("subscription", () => {
  it("a Subscribe on the prefix sees exactly the acknowledged writes, in index order", async () => {
    const h = await Harness.start();
    const c = h.connect();
    await c.put("s/old", "0");
    await c.put("other/x", "0");
    const w = c.subscribe({ topic: "TOPIC_KV", prefix: "s/" });
    await w.snapshotDone();
    const snapshotLines = w.changes.length;

    const s = new WriteStream(h.connect());
    const writes: KVWrite[] = [];
    for (let id = 1; id <= 400; id++) {
      if (id % 10 === 0) writes.push(del(id, `s/${id % 7}`));
      else if (id % 10 === 5)
        writes.push(put(id, `other/${id}`, "x")); // not on the prefix
      else if (id % 10 === 7)
        writes.push(put(id, "s/old", "cas", { cas: 1 })); // fails
      else writes.push(put(id, `s/${id % 7}`, `v${id}`));
    }
    s.sendIn(writes, 50);
    await s.until(400);
    const expected: string[] = [];
    for (const wr of writes) {
      const r = s.byId.get(wr.id as number)!;
      if (r.result !== "index") continue;
      if (wr.put) {
        if (!wr.put.key!.startsWith("s/")) continue;
        expected.push(`kv set ${wr.put.key}=${wr.put.value!.toString()}@${r.index}`);
      } else expected.push(`kv delete ${wr.delete!.key}@${r.index}`);
    }
    expect(writes.filter((wr) => s.byId.get(wr.id as number)!.result === "error")).toHaveLength(40);
    await w.changeCount(snapshotLines + expected.length);
    const live = w.changes.slice(snapshotLines);
    expect(live).toEqual(expected);
    const idx = live.map((l) => Number(l.slice(l.lastIndexOf("@") + 1)));
    for (let i = 1; i < idx.length; i++) expect(idx[i]).toBeGreaterThan(idx[i - 1]!);
    s.end();
    expect(code((await s.finished()).code)).toBe("OK");
  });
});

// ---- model test ----

type Cmd =
  | { kind: "put"; key: number; value: string }
  | { kind: "del"; key: number }
  | { kind: "casPut"; key: number; value: string; cas: "current" | "zero" | "stale" }
  | { kind: "casDel"; key: number; cas: "current" | "stale" }
  | { kind: "none" };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ kind: fc.constant("put" as const), key: fc.nat(3), value: fc.string({ maxLength: 4 }) }),
  fc.record({ kind: fc.constant("del" as const), key: fc.nat(3) }),
  fc.record({
    kind: fc.constant("casPut" as const),
    key: fc.nat(3),
    value: fc.string({ maxLength: 4 }),
    cas: fc.constantFrom("current" as const, "zero" as const, "stale" as const),
  }),
  fc.record({
    kind: fc.constant("casDel" as const),
    key: fc.nat(3),
    cas: fc.constantFrom("current" as const, "stale" as const),
  }),
  fc.constant({ kind: "none" as const }),
);

describe("model", () => {
  it("random puts, deletes and CAS writes in random batches match a model applied in id order", async () => {
    const h = await Harness.start();
    const c = h.connect();
    let run = 0;
    const name = "model";
    const cfg = replayConfig(10);
    await assertReplayable(
      `test/grpc/kv-write.test.ts -t '${name}'`,
      fc.asyncProperty(
        fc.array(cmdArb, { minLength: 1, maxLength: 120 }),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }),
        fc.boolean(),
        async (cmds, sizes, pauseBetween) => {
          const prefix = `m${++run}/`;
          const base = (await list(c, "")).index;
          // The model: key → [value, modify index]; indexes follow from arrival order.
          const model = new Map<string, [string, number]>();
          let index = base;
          const writes: KVWrite[] = [];
          const expected = new Map<number, string>();
          cmds.forEach((cmd, i) => {
            const id = i + 1;
            if (cmd.kind === "none") {
              writes.push({ id });
              expected.set(id, "INVALID_ARGUMENT InvalidArgumentError");
              return;
            }
            const key = `${prefix}${cmd.key}`;
            const cur = model.get(key)?.[1];
            let cas: number | undefined;
            if (cmd.kind === "casPut" || cmd.kind === "casDel") {
              if (cmd.cas === "current") cas = cur ?? 0;
              else if (cmd.cas === "zero") cas = 0;
              else cas = (cur ?? 0) + 1 + (id % 3);
            }
            const isPut = cmd.kind === "put" || cmd.kind === "casPut";
            writes.push(isPut ? put(id, key, cmd.value, { cas }) : del(id, key, { cas }));
            // A CAS write applies iff the key's modify index equals cas (0: absent).
            if (cas !== undefined && (cur ?? 0) !== cas) {
              expected.set(id, "FAILED_PRECONDITION CasFailedError");
              return;
            }
            index++;
            expected.set(id, `@${index}`);
            if (isPut) model.set(key, [cmd.value, index]);
            else model.delete(key);
          });

          const s = new WriteStream(c);
          let at = 0;
          for (let i = 0; at < writes.length; i++) {
            const n = sizes[i % sizes.length]!;
            s.send(writes.slice(at, at + n));
            at += n;
            if (pauseBetween) await new Promise((r) => setImmediate(r));
          }
          s.end();
          const st = await s.finished();
          expect(code(st.code)).toBe("OK");
          expect(s.duplicates).toEqual([]);
          expect(writes.map((w) => [w.id, s.outcome(w.id as number)])).toEqual(
            writes.map((w) => [w.id, expected.get(w.id as number)]),
          );
          expect(await stateOf(c, prefix)).toEqual(model);
          expect((await list(c, "")).index).toBe(index);
        },
      ),
      cfg,
    );
    if (cfg.path === undefined) expect(run).toBeGreaterThanOrEqual(cfg.numRuns);
  });
});
