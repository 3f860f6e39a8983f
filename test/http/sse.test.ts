import { Writable } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { SseWriter } from "../../src/http/sse-writer.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";
import { eventually, type HttpApi, startAclServer, startServer } from "./http-harness.js";
import { b64, SseClient, type SseMessage } from "./sse-client.js";

/*
 * `GET /v1/stream/:topic` as Server-Sent Events, read with the real `eventsource` client:
 * snapshot then updates, resume with Last-Event-ID, reset, refusals before the stream opens,
 * force close, shutdown, keep-alives, and the writer's back-pressure.
 */

type ErrorBody = { error: string } & Record<string, unknown>;

const proxies: TcpProxy[] = [];
afterEach(async () => {
  for (const p of proxies.splice(0)) await p.close();
});

const streamUrl = (api: HttpApi, path: string): string => `${api.base}${path}`;

/** The (key, value) of each event of an update, values decoded. */
const kvOf = (m: SseMessage): [string, string | null][] =>
  m.data.events.map((e: { key: string; row: { Value: string | null } }) => [
    e.key,
    e.row.Value === null ? null : Buffer.from(e.row.Value, "base64").toString(),
  ]);

/**
 * Updates until they hold `n` change events. A reader that is behind (a resume) gets several
 * commits in one update, each event with its own index.
 */
async function updatesHolding(c: SseClient, n: number, ms = 5_000): Promise<SseMessage[]> {
  const out: SseMessage[] = [];
  let events = 0;
  while (events < n) {
    const m = await c.next(ms);
    out.push(m);
    events += m.type === "update" ? m.data.events.length : 0;
  }
  expect(events).toBe(n);
  return out;
}

/** Checks that a live update's id is its last commit's index, and its events are in index order. */
function expectLive(m: SseMessage): void {
  expect(m.type).toBe("update");
  expect(m.data.snapshot).toBe(false);
  expect(m.id).toBe(String(m.data.index));
  const indexes = m.data.events.map((e: { index: number }) => e.index);
  expect([...indexes].sort((a, b) => a - b)).toEqual(indexes);
  expect(indexes.at(-1)).toBe(m.data.index);
}

describe("GET /v1/stream/:topic", () => {
  it("a key: the snapshot, snapshot-end with its index, then each change as an update", async () => {
    const api = await startServer();
    await api.put("/v1/kv/cfg/a", "one");
    const c = new SseClient(streamUrl(api, "/v1/stream/kv?key=cfg/a"));
    const [snap, end] = await c.take(2);
    expect(snap!.type).toBe("update");
    expect(snap!.data.snapshot).toBe(true);
    // A snapshot part is no resume point.
    expect(snap!.id).toBe("");
    expect(snap!.data.events).toEqual([
      {
        index: expect.any(Number),
        topic: "kv",
        op: "set",
        key: "cfg/a",
        row: expect.objectContaining({ Key: "cfg/a", Value: b64("one"), Flags: 0, LockIndex: 0 }),
      },
    ]);
    expect(end!.type).toBe("snapshot-end");
    expect(end!.id).toBe(String(end!.data.index));
    expect(end!.data.index).toBe(snap!.data.index);

    await api.put("/v1/kv/cfg/b", "elsewhere");
    await api.put("/v1/kv/cfg/a", "two");
    await api.call("DELETE", "/v1/kv/cfg/a");
    const [u1, u2] = await c.take(2);
    expectLive(u1!);
    expect(kvOf(u1!)).toEqual([["cfg/a", "two"]]);
    expect(u1!.data.events[0].row.ModifyIndex).toBe(u1!.data.index);
    expectLive(u2!);
    expect(u2!.data.events[0].op).toBe("delete");
    expect(Number(u2!.id)).toBe(Number(u1!.id) + 1);
    expect(Number(u1!.id)).toBeGreaterThan(Number(end!.id) + 1); // cfg/b's commit went by unseen
  });

  it("services and prefixes: CheckServiceNode rows, the service list, several keys", async () => {
    const api = await startServer();
    await api.put("/v1/kv/app/x", "1");
    const health = new SseClient(streamUrl(api, "/v1/stream/service_health?key=Web"));
    const list = new SseClient(streamUrl(api, "/v1/stream/service_list?wildcard"));
    const prefix = new SseClient(streamUrl(api, "/v1/stream/kv?prefix=app/"));
    // No instances yet: no snapshot rows, just its end.
    expect((await health.next()).type).toBe("snapshot-end");
    expect((await list.next()).type).toBe("snapshot-end");
    const [psnap] = await prefix.take(2);
    expect(kvOf(psnap!)).toEqual([["app/x", "1"]]);

    await api.register("n1", "web", { port: 8080, tags: ["v1"] });
    const reg = await health.next();
    expectLive(reg);
    expect(reg.data.events[0]).toMatchObject({ topic: "service_health", op: "register", key: "web" });
    expect(reg.data.events[0].row).toMatchObject({
      Node: { Node: "n1", Address: "10.0.0.1" },
      Service: { ID: "web", Service: "web", Port: 8080, Tags: ["v1"] },
      Checks: [expect.objectContaining({ CheckID: "web-check", Status: "passing" })],
    });
    const listed = await list.next();
    expect(listed.data.events[0]).toMatchObject({
      topic: "service_list",
      op: "register",
      row: { Name: "web" },
    });

    await api.put("/v1/kv/app/y", "2");
    await api.put("/v1/kv/other", "no");
    await api.put("/v1/kv/app/x", "3");
    const got = await prefix.take(2);
    expect(got.flatMap(kvOf)).toEqual([
      ["app/y", "2"],
      ["app/x", "3"],
    ]);
    expect(prefix.untaken).toEqual([]);
  });

  it("Last-Event-ID (or ?index=) resumes exactly: every write once, in order, none missed", async () => {
    const api = await startServer();
    const writes: [string, string][] = [];
    const write = async (key: string, value: string): Promise<void> => {
      await api.put(`/v1/kv/${key}`, value);
      if (key.startsWith("app/")) writes.push([key, value]);
    };
    await write("app/a", "0");
    const first = new SseClient(streamUrl(api, "/v1/stream/kv?prefix=app/"));
    await first.take(2); // snapshot, snapshot-end
    await write("app/a", "1");
    await write("app/b", "1");
    const seen = await first.take(2);
    first.close();
    const lastId = seen[1]!.id;
    const missed = writes.length;
    for (let i = 2; i <= 5; i++) {
      await write(i % 2 ? "app/a" : "app/b", String(i));
      await write("zzz", String(i)); // outside the prefix
    }

    for (const how of ["header", "query"] as const) {
      const c =
        how === "header"
          ? new SseClient(streamUrl(api, "/v1/stream/kv?prefix=app/"), { lastEventId: lastId })
          : new SseClient(streamUrl(api, `/v1/stream/kv?prefix=app/&index=${lastId}`));
      const resumed = await updatesHolding(c, writes.length - missed);
      for (const m of resumed) expectLive(m);
      expect(resumed.flatMap(kvOf)).toEqual(writes.slice(missed));
      const indexes = resumed.flatMap((m) => m.data.events.map((e: { index: number }) => e.index));
      expect(indexes[0]).toBeGreaterThan(Number(lastId));
      expect(new Set(indexes).size).toBe(indexes.length);
      // Caught up: nothing more until the next write.
      await new Promise((r) => setTimeout(r, 50));
      expect(c.untaken).toEqual([]);
      c.close();
    }
  });

  it("the client's own reconnect after a cut connection sends its last event id and loses nothing", async () => {
    const api = await startServer();
    const proxy = await TcpProxy.start(api.server.httpPort);
    proxies.push(proxy);
    await api.put("/v1/kv/k", "0");
    const c = new SseClient(`http://${proxy.address}/v1/stream/kv?key=k`);
    await c.take(2);
    await api.put("/v1/kv/k", "1");
    const one = await c.next();
    proxy.cut();
    await api.put("/v1/kv/k", "2");
    await api.put("/v1/kv/k", "3");
    // eventsource waits 3 s before it reconnects.
    const after = await updatesHolding(c, 2, 10_000);
    expect(c.opens).toBe(2);
    expect(c.requests[1]!.get("last-event-id")).toBe(one.id);
    expect([...[one], ...after].flatMap(kvOf)).toEqual([
      ["k", "1"],
      ["k", "2"],
      ["k", "3"],
    ]);
  });

  it("an index a little ahead of the server is waited for, then served from there", async () => {
    const api = await startServer();
    const ahead = api.server.publisher.index + 1;
    const ac = new AbortController();
    const opening = api.fetch("GET", `/v1/stream/kv?key=k&index=${ahead}`, {
      headers: { Accept: "text/event-stream" },
      signal: ac.signal,
    });
    await new Promise((r) => setTimeout(r, 50));
    await api.put("/v1/kv/k", "reached"); // commit `ahead`: already seen by the resuming client
    await api.put("/v1/kv/k", "next");
    const r = await opening;
    expect(r.status).toBe(200);
    const reader = r.body!.getReader();
    let text = "";
    while (!text.includes("\n\n")) text += Buffer.from((await reader.read()).value!).toString();
    ac.abort();
    expect(text).toContain(`id: ${ahead + 1}\n`);
    expect(text).toContain(b64("next"));
    expect(text).not.toContain(b64("reached"));
  });

  it("an index older than the history: reset (clearing the client's id), then a fresh snapshot", async () => {
    const api = await startServer({ historyMaxEvents: 4 });
    await api.put("/v1/kv/k", "start");
    const c0 = new SseClient(streamUrl(api, "/v1/stream/kv?key=k"));
    const [, end] = await c0.take(2);
    c0.close();
    for (let i = 1; i <= 10; i++) await api.put("/v1/kv/k", `v${i}`);
    const c = new SseClient(streamUrl(api, "/v1/stream/kv?key=k"), { lastEventId: end!.id });
    const [reset, snap, snapEnd] = await c.take(3);
    expect(reset!.type).toBe("reset");
    expect(reset!.data).toEqual({ reason: "index-too-old" });
    expect(reset!.id).toBe("");
    expect(snap!.data.snapshot).toBe(true);
    expect(kvOf(snap!)).toEqual([["k", "v10"]]);
    expect(snapEnd!.type).toBe("snapshot-end");
  });

  it("refusals are JSON errors before any stream opens", async () => {
    const api = await startServer();
    const sse = { Accept: "text/event-stream" };
    const cases: [string, Record<string, string>, number, string][] = [
      ["/v1/stream/nope?key=a", sse, 400, "BadRequestError"],
      ["/v1/stream/kv", sse, 400, "BadRequestError"],
      ["/v1/stream/kv?key=a&prefix=b", sse, 400, "BadRequestError"],
      ["/v1/stream/kv?key=", sse, 400, "InvalidSubjectError"],
      ["/v1/stream/service_health?prefix=web", sse, 400, "InvalidSubjectError"],
      ["/v1/stream/service_list?key=web", sse, 400, "InvalidSubjectError"],
      ["/v1/stream/kv?key=a&index=abc", sse, 400, "BadRequestError"],
      ["/v1/stream/kv?key=a", { ...sse, "Last-Event-ID": "x1" }, 400, "BadRequestError"],
      ["/v1/stream/kv?key=a", { Accept: "application/json" }, 406, "NotAcceptableError"],
    ];
    for (const [path, headers, status, kind] of cases) {
      const r = await api.call<ErrorBody>("GET", path, { headers });
      expect(r.status, path).toBe(status);
      expect(r.headers.get("content-type")).toMatch(/^application\/json/);
      expect(r.headers.get("x-sluice-error"), path).toBe(kind);
      expect(r.body.error).toEqual(expect.any(String));
    }
    // The gRPC enum spellings name topics too.
    const ac = new AbortController();
    const ok = await api.fetch("GET", "/v1/stream/TOPIC_KV?key=a", { headers: sse, signal: ac.signal });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toMatch(/^text\/event-stream/);
    ac.abort();
    // The real client gives up on a refusal rather than retrying it.
    const c = new SseClient(streamUrl(api, "/v1/stream/kv"));
    expect((await c.failure()).code).toBe(400);
    expect(c.es.readyState).toBe(c.es.CLOSED);
    await eventually(() => api.server.publisher.subscriptionCount === 0);
  });

  it("ACLs: unknown token 403 'ACL not found' from any place a token goes; unreadable key 403", async () => {
    const { api, root } = await startAclServer();
    const bogus = "00000000-dead-beef-0000-000000000000";
    const sse = { Accept: "text/event-stream" };
    for (const r of [
      await api.call<ErrorBody>("GET", "/v1/stream/kv?key=a", {
        headers: { ...sse, "X-Consul-Token": bogus },
      }),
      await api.call<ErrorBody>("GET", "/v1/stream/kv?key=a", {
        headers: { ...sse, Authorization: `Bearer ${bogus}` },
      }),
      await api.call<ErrorBody>("GET", `/v1/stream/kv?key=a&token=${bogus}`, { headers: sse }),
    ]) {
      expect(r.status).toBe(403);
      expect(r.body.error).toBe("ACL not found");
    }
    const policy = await api.put<{ ID: string }>(
      "/v1/acl/policy",
      { Name: "app", Rules: 'key_prefix "app/" { policy = "read" }' },
      root,
    );
    const token = await api.put<{ SecretID: string }>(
      "/v1/acl/token",
      { Policies: [{ ID: policy.body.ID }] },
      root,
    );
    const denied = await api.call<ErrorBody>("GET", "/v1/stream/kv?key=secret", {
      headers: sse,
      token: token.body.SecretID,
    });
    expect(denied.status).toBe(403);
    expect(denied.headers.get("x-sluice-error")).toBe("PermissionDeniedError");
    // A prefix is filtered per event instead: the wildcard shows only what the token reads.
    await api.put("/v1/kv/app/x", "1", root);
    await api.put("/v1/kv/secret", "s", root);
    const c = new SseClient(`${api.base}/v1/stream/kv?wildcard&token=${token.body.SecretID}`);
    const [snap] = await c.take(2);
    expect(kvOf(snap!)).toEqual([["app/x", "1"]]);
  });

  it("revoking the token ends the stream with `closed` (resume: false); the reconnect is refused", async () => {
    const { api, root } = await startAclServer();
    const policy = await api.put<{ ID: string }>(
      "/v1/acl/policy",
      { Name: "all-keys", Rules: 'key_prefix "" { policy = "read" }' },
      root,
    );
    const token = await api.put<{ SecretID: string; AccessorID: string }>(
      "/v1/acl/token",
      { Policies: [{ ID: policy.body.ID }] },
      root,
    );
    await api.put("/v1/kv/a", "1", root);
    const c = new SseClient(streamUrl(api, "/v1/stream/kv?key=a"), {
      token: token.body.SecretID,
      keepOpen: true,
    });
    await c.take(2);
    const del = await api.call("DELETE", `/v1/acl/token/${token.body.AccessorID}`, { token: root });
    expect(del.status).toBe(200);
    const closed = await c.next();
    expect(closed.type).toBe("closed");
    expect(closed.data).toMatchObject({ error: "SubscriptionForceClosedError", resume: false });
    expect(closed.data.reason).toEqual(expect.any(String));
    // eventsource reconnects (after 3 s) without an id, and is refused for good.
    expect((await c.failure(10_000)).code).toBe(403);
    expect(c.requests[1]!.get("last-event-id")).toBeNull();
    expect(c.es.readyState).toBe(c.es.CLOSED);
    expect(api.server.publisher.subscriptionCount).toBe(0);
  });

  it("shutdown ends open streams at once with `closed` (resume: true)", async () => {
    const api = await startServer({ shutdownGraceMs: 10_000 });
    await api.put("/v1/kv/a", "1");
    const c = new SseClient(streamUrl(api, "/v1/stream/kv?key=a"));
    await c.take(2);
    const raw = await api.fetch("GET", "/v1/stream/kv?key=a", { headers: { Accept: "text/event-stream" } });
    const started = performance.now();
    await api.server.stop();
    expect(performance.now() - started).toBeLessThan(2_000);
    const closed = await c.next();
    expect(closed.type).toBe("closed");
    expect(closed.data).toMatchObject({ error: "ShuttingDownError", resume: true });
    // On the wire: no `id:` line, so the client keeps its resume point for later.
    const text = await raw.text();
    expect(text).toMatch(/event: closed\ndata: \{[^\n]*"resume":true[^\n]*\}\n\n$/);
    expect(text.split("event: closed\n")[1]).not.toContain("id:");
  });

  it("a client that goes away frees its subscription", async () => {
    const api = await startServer();
    const c = new SseClient(streamUrl(api, "/v1/stream/kv?prefix=x/"));
    await c.take(1);
    expect(api.server.publisher.subscriptionCount).toBe(1);
    expect(api.server.httpServer!.stats().eventStreams).toBe(1);
    c.close();
    await eventually(
      () => api.server.publisher.subscriptionCount === 0 && api.server.httpServer!.stats().eventStreams === 0,
    );
  });

  it("sends keep-alive comments while idle", async () => {
    const api = await startServer({ sseKeepAliveMs: 40 });
    const ac = new AbortController();
    const r = await api.fetch("GET", "/v1/stream/kv?key=a", {
      headers: { Accept: "text/event-stream" },
      signal: ac.signal,
    });
    const reader = r.body!.getReader();
    let text = "";
    while (!text.includes(": keepalive\n\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    ac.abort();
    expect(text).toMatch(/^event: snapshot-end\nid: \d+\ndata: \{"index":\d+\}\n\n/);
    expect(text).toContain(": keepalive\n\n");
  });
});

describe("SseWriter back-pressure", () => {
  /** A socket stand-in that takes writes into its buffer but flushes only when told. */
  function slowSink(): { sink: Writable; flush: () => void } {
    const held: (() => void)[] = [];
    const sink = new Writable({
      highWaterMark: 64,
      decodeStrings: false,
      write(_chunk, _enc, cb) {
        held.push(cb);
      },
    });
    return {
      sink,
      flush: () => {
        for (const cb of held.splice(0)) cb();
      },
    };
  }

  it("waits for 'drain' before the next event, and sends no keep-alive into a full socket", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    try {
      const { sink, flush } = slowSink();
      const w = new SseWriter(sink, 100);
      const big = { event: "update", data: "x".repeat(200) };
      let firstDone = false;
      let secondDone = false;
      void w.send(big).then(() => (firstDone = true));
      void w.send(big).then(() => (secondDone = true));
      await new Promise((r) => setImmediate(r));
      expect(firstDone).toBe(false);
      expect(w.blocked).toBe(true);
      // Only the first event is in the socket's buffer; the second waits outside it.
      expect(w.written).toBe(1);
      const buffered = sink.writableLength;
      vi.advanceTimersByTime(500);
      expect(sink.writableLength).toBe(buffered); // no keep-alive added
      flush();
      await new Promise((r) => setImmediate(r));
      expect(firstDone).toBe(true);
      expect(w.written).toBe(2);
      flush();
      await new Promise((r) => setImmediate(r));
      expect(secondDone).toBe(true);
      // Idle now: a keep-alive goes out after a quiet period.
      vi.advanceTimersByTime(250);
      expect(sink.writableLength).toBe(": keepalive\n\n".length);
      w.end();
    } finally {
      vi.useRealTimers();
    }
  });

  it("ending while the reader is stuck cuts the socket instead of waiting for it", async () => {
    const { sink } = slowSink();
    const w = new SseWriter(sink, 1000);
    void w.send({ event: "update", data: "y".repeat(200) });
    expect(w.blocked).toBe(true);
    w.end({ event: "closed", data: "{}" });
    expect(sink.destroyed).toBe(true);
    expect(await w.send({ event: "update", data: "{}" })).toBe(false);
  });
});
