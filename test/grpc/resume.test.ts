import * as grpc from "@grpc/grpc-js";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { errorClass, Harness } from "../helpers/grpc-harness.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

/*
 * Resuming over real gRPC: after a cancelled call, a cut TCP connection, a server restart
 * with its data dir, and past the end of the history. A resume whose index is still in the
 * history gets exactly the missed commits and no snapshot.
 */

async function proxyTo(h: Harness): Promise<TcpProxy> {
  const proxy = await TcpProxy.start(h.port);
  onTestFinished(() => proxy.close());
  return proxy;
}

const freed = (h: Harness, count = 0) =>
  vi.waitFor(() => expect(h.server.publisher.subscriptionCount).toBe(count), { timeout: 3000, interval: 10 });

describe("resume after the client's connection is cut", () => {
  it("after a cancelled call: no snapshot, exactly the missed commits in one batch, each event with its own index", async () => {
    const h = await Harness.start();
    const c = h.connect();
    await c.put("r/1", "a");
    const w = c.subscribe({ topic: "TOPIC_KV", prefix: "r/" });
    await w.snapshotDone();
    const a = await c.put("r/2", "b");
    await w.changeCount(3);
    expect(w.lastIndex).toBe(a);
    w.cancel();
    expect((await w.end()).code).toBe(grpc.status.CANCELLED);
    await freed(h);

    const m1 = await c.put("r/3", "c");
    await c.put("other/x", "not mine");
    const m2 = await c.put("r/1", "a2");
    const m3 = await c.delete("r/2");

    const w2 = c.subscribe({ topic: "TOPIC_KV", prefix: "r/", index: a });
    await w2.changeCount(3);
    expect(w2.frames).toEqual([`B@${m3}[kv set r/3=c@${m1} | kv set r/1=a2@${m2} | kv delete r/2@${m3}]`]);
    const m4 = await c.put("r/4", "d");
    await w2.changeCount(4);
    expect(w2.changes).toEqual([
      `kv set r/3=c@${m1}`,
      `kv set r/1=a2@${m2}`,
      `kv delete r/2@${m3}`,
      `kv set r/4=d@${m4}`,
    ]);
  });

  it("after the TCP connection is cut under the stream: the server frees the subscription and the client resumes", async () => {
    const h = await Harness.start();
    const proxy = await proxyTo(h);
    const c = h.connect(undefined, `127.0.0.1:${proxy.port}`);
    await c.register({ node: { node: "n1", address: "10.0.0.1" }, service: { id: "web-1", service: "web" } });
    const w = c.subscribe({ topic: "TOPIC_SERVICE_HEALTH", key: "web" });
    await w.snapshotDone();
    expect(h.server.publisher.subscriptionCount).toBe(1);
    const resumeAt = w.lastIndex;

    proxy.cut();
    expect((await w.end()).code).toBe(grpc.status.UNAVAILABLE);
    await freed(h);

    const direct = h.connect();
    const m1 = await direct.register({
      node: { node: "n2", address: "10.0.0.2" },
      service: { id: "web-2", service: "web" },
      checks: [{ check_id: "c2", status: "warning" }],
    });
    const m2 = await direct.updateCheck("n2", "c2", "passing");

    // The same client reconnects through the proxy and resumes.
    const w2 = c.subscribe({ topic: "TOPIC_SERVICE_HEALTH", key: "web", index: resumeAt });
    await w2.changeCount(2);
    expect(w2.changes).toEqual([
      `sh register n2/web-2 c2=warning@${m1}`,
      `sh register n2/web-2 c2=passing@${m2}`,
    ]);
    expect(w2.lines.some((l) => l.startsWith("EOS") || l === "NST")).toBe(false);
  });

  it("resuming from a Progress index gets only what followed it", async () => {
    const h = await Harness.start({ progressIntervalMs: 100 });
    const c = h.connect();
    await c.put("seed", "0");
    const w = c.subscribe({ topic: "TOPIC_KV", prefix: "quiet/" });
    await w.snapshotDone();
    const p = await c.put("loud/1", "x");
    await w.until((x) => x.lines.includes(`P@${p}`), "progress");
    w.cancel();
    await freed(h);
    const m = await c.put("quiet/1", "y");
    const w2 = c.subscribe({ topic: "TOPIC_KV", prefix: "quiet/", index: w.lastIndex });
    await w2.changeCount(1);
    expect(w2.frames).toEqual([`kv set quiet/1=y@${m}`]);
  });

  it("a resume index that left the history gets new_snapshot_to_follow, a fresh snapshot and end_of_snapshot", async () => {
    const h = await Harness.start({ historyMaxEvents: 2 });
    const c = h.connect();
    const first = await c.put("h/a", "1");
    for (let i = 0; i < 5; i++) await c.put(`h/k${i}`, String(i));
    const last = await c.put("h/a", "2");
    const w = c.subscribe({ topic: "TOPIC_KV", key: "h/a", index: first });
    await w.snapshotDone();
    expect(w.frames).toEqual(["NST", `B@${last}[kv set h/a=2@${last}]`, `EOS@${last}`]);
  });

  it("a client whose snapshot of an empty store ended at end_of_snapshot misses no write when it resumes", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const w = c.subscribe({ topic: "TOPIC_KV", wildcard: true });
    await w.snapshotDone();
    const resumeAt = w.lastIndex;
    w.cancel();
    await freed(h);

    const missed = await c.put("first", "while away");
    const w2 = c.subscribe({ topic: "TOPIC_KV", wildcard: true, index: resumeAt });
    const next = await c.put("second", "live");
    await w2.until((x) => x.changes.some((l) => l.includes("second")), "the live write");
    // The view built from the stream must hold both keys (as events or as a fresh snapshot).
    expect(w2.changes.filter((l) => l.startsWith("kv set"))).toEqual(
      expect.arrayContaining([`kv set first=while away@${missed}`, `kv set second=live@${next}`]),
    );
  });
});

describe("a client that vanishes", () => {
  it("frees every subscription of its connection when the connection dies", async () => {
    const h = await Harness.start();
    const proxy = await proxyTo(h);
    const keep = h.connect();
    const kept = keep.subscribe({ topic: "TOPIC_KV", prefix: "a/" });
    await kept.snapshotDone();

    const c = h.connect(undefined, `127.0.0.1:${proxy.port}`);
    const ws = [
      c.subscribe({ topic: "TOPIC_KV", prefix: "a/" }),
      c.subscribe({ topic: "TOPIC_KV", key: "b" }),
      c.subscribe({ topic: "TOPIC_SERVICE_LIST", wildcard: true }),
      c.subscribe({ topic: "TOPIC_SERVICE_HEALTH", key: "web" }),
    ];
    await Promise.all(ws.map((w) => w.snapshotDone()));
    expect(h.server.publisher.subscriptionCount).toBe(5);
    expect(proxy.connections).toBe(1);

    proxy.cut();
    await freed(h, 1);
    expect(h.server.publisher.stats().streams).toBe(1);
    // The survivor is untouched.
    const i = await keep.put("a/x", "1");
    await kept.changeCount(2);
    expect(kept.changes.at(-1)).toBe(`kv set a/x=1@${i}`);
  });

  it("frees its subscription when the call is cancelled", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const w = c.subscribe({ topic: "TOPIC_KV", prefix: "z/" });
    await w.snapshotDone();
    expect(h.server.publisher.subscriptionCount).toBe(1);
    w.cancel();
    await freed(h);
    expect(h.server.publisher.stats().streams).toBe(0);
  });
});

describe("server restart with the data dir kept", () => {
  it("clients resume with their index and get no new snapshot: the history is rebuilt from the log", async () => {
    const h = await Harness.start({}, { persistent: true });
    const c = h.connect();
    await c.put("s/1", "a");
    const early = c.subscribe({ topic: "TOPIC_KV", prefix: "s/" });
    await early.snapshotDone();
    const earlyAt = early.lastIndex;
    early.cancel();
    // Missed by `early`, committed before the restart.
    const m1 = await c.put("s/2", "b");
    const m2 = await c.put("s/1", "a2");

    // `open` is connected through the graceful stop: it ends with UNAVAILABLE.
    const open = c.subscribe({ topic: "TOPIC_KV", prefix: "s/" });
    await open.snapshotDone();
    const port = h.port;
    await h.restart();
    const st = await open.end();
    expect(st.code).toBe(grpc.status.UNAVAILABLE);
    expect(errorClass(st)).toBe("ShuttingDownError");
    expect(h.port).toBe(port);
    expect(h.server.publisher.index).toBe(m2);

    const resumedEarly = c.subscribe({ topic: "TOPIC_KV", prefix: "s/", index: earlyAt });
    const resumedOpen = c.subscribe({ topic: "TOPIC_KV", prefix: "s/", index: open.lastIndex });
    await resumedEarly.changeCount(2);
    expect(resumedEarly.frames).toEqual([`B@${m2}[kv set s/2=b@${m1} | kv set s/1=a2@${m2}]`]);

    const m3 = await c.put("s/3", "c");
    await resumedEarly.changeCount(3);
    await resumedOpen.changeCount(1);
    expect(resumedEarly.changes.at(-1)).toBe(`kv set s/3=c@${m3}`);
    expect(resumedOpen.changes).toEqual([`kv set s/3=c@${m3}`]);
  });
});
