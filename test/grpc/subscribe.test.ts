import { describe, expect, it } from "vitest";
import { Harness } from "../helpers/grpc-harness.js";

/*
 * Subscribe over real gRPC on loopback: what a raw grpc-js client decodes from the wire for
 * each topic, from the snapshot through end_of_snapshot to live changes.
 */

describe("snapshot then live", () => {
  it("KV prefix: one snapshot batch, end_of_snapshot with the index, then only matching live events in order", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const i1 = await c.put("a/1", "x");
    const i2 = await c.put("a/2", "y");
    const i3 = await c.put("b/1", "z");
    expect([i1, i2, i3]).toEqual([i1, i1 + 1, i1 + 2]);

    const w = c.subscribe({ topic: "TOPIC_KV", prefix: "a/" });
    await w.snapshotDone();
    expect(w.frames).toEqual([`B@${i3}[kv set a/1=x@${i3} | kv set a/2=y@${i3}]`, `EOS@${i3}`]);
    // Snapshot events carry the snapshot's index; the rows keep their own create/modify indexes.
    const snap = w.messages[0]!.batch!.events.map((e) => e.kv!.entry!);
    expect(snap.map((e) => [e.key, e.create_index, e.modify_index])).toEqual([
      ["a/1", i1, i1],
      ["a/2", i2, i2],
    ]);

    const i4 = await c.put("a/3", "w");
    await c.put("b/2", "not mine");
    const i6 = await c.put("a/1", "x2");
    const i7 = await c.delete("a/2");
    const i8 = await c.put("a/4", "v");
    await w.changeCount(7);
    expect(w.changes).toEqual([
      `kv set a/1=x@${i3}`,
      `kv set a/2=y@${i3}`,
      `EOS@${i3}`,
      `kv set a/3=w@${i4}`,
      `kv set a/1=x2@${i6}`,
      `kv delete a/2@${i7}`,
      `kv set a/4=v@${i8}`,
    ]);
    // A live event is the row as written: modify index = the commit index the write returned.
    const live = w.messages.filter((m) => m.payload === "kv").map((m) => m.kv!.entry!);
    expect(live.map((e) => [e.key, e.create_index, e.modify_index])).toEqual([
      ["a/3", i4, i4],
      ["a/1", i1, i6],
      ["a/2", i2, i2],
      ["a/4", i8, i8],
    ]);
    expect(w.status).toBeUndefined();
  });

  it("KV key: a missing key snapshots as end_of_snapshot alone, then its first write arrives live", async () => {
    const h = await Harness.start();
    const c = h.connect();
    await c.put("other", "1");
    const w = c.subscribe({ topic: "TOPIC_KV", key: "cfg/x" });
    await w.snapshotDone();
    expect(w.frames).toEqual([`EOS@${h.server.publisher.index}`]);
    await c.put("cfg/xy", "not this key");
    const i = await c.put("cfg/x", "42", { flags: 7 });
    await w.changeCount(2);
    expect(w.changes).toEqual([`EOS@${i - 2}`, `kv set cfg/x=42@${i}`]);
    expect(w.messages.at(-1)!.kv!.entry!.flags).toBe(7);
  });

  it("KV wildcard: every key in the snapshot and live", async () => {
    const h = await Harness.start();
    const c = h.connect();
    await c.put("x", "1");
    const i = await c.put("y/z", "2");
    const w = c.subscribe({ topic: "TOPIC_KV", wildcard: true });
    await w.snapshotDone();
    expect(w.frames).toEqual([`B@${i}[kv set x=1@${i} | kv set y/z=2@${i}]`, `EOS@${i}`]);
    const j = await c.put("q", "3");
    await w.changeCount(4);
    expect(w.changes.at(-1)).toBe(`kv set q=3@${j}`);
  });

  it("ServiceHealth key: instances with node-level then service checks, then check and instance changes live", async () => {
    const h = await Harness.start();
    const c = h.connect();
    await c.register({
      node: { node: "n1", address: "10.0.0.1" },
      checks: [{ check_id: "serfHealth", status: "passing" }],
    });
    await c.register({
      node: { node: "n1", address: "10.0.0.1" },
      service: { id: "web-1", service: "web", port: 80, tags: ["v1"] },
      // As in Consul's catalog API, a check names its service; without one it is node-level.
      checks: [{ check_id: "web-alive", service_id: "web-1", status: "passing" }],
    });
    await c.register({
      node: { node: "n2", address: "10.0.0.2" },
      service: { id: "web-2", service: "web", port: 8080 },
      checks: [{ check_id: "web2-alive", status: "critical" }],
    });
    const s = await c.register({
      node: { node: "n3", address: "10.0.0.3" },
      service: { id: "db-1", service: "db" },
    });

    // Service names are case-insensitive subjects.
    const w = c.subscribe({ topic: "TOPIC_SERVICE_HEALTH", key: "WEB" });
    await w.snapshotDone();
    expect(w.frames).toEqual([
      `B@${s}[sh register n1/web-1 serfHealth=passing,web-alive=passing@${s} | sh register n2/web-2 web2-alive=critical@${s}]`,
      `EOS@${s}`,
    ]);
    const inst = w.messages[0]!.batch!.events[0]!.service_health!;
    expect(inst.node).toMatchObject({ node: "n1", address: "10.0.0.1" });
    expect(inst.service).toMatchObject({ id: "web-1", service: "web", port: 80, tags: ["v1"], node: "n1" });
    expect(inst.checks.map((ch) => [ch.check_id, ch.service_id, ch.node])).toEqual([
      ["serfHealth", "", "n1"],
      ["web-alive", "web-1", "n1"],
    ]);

    const a = await c.updateCheck("n2", "web2-alive", "passing");
    await c.register({ node: { node: "n3", address: "10.0.0.3" }, service: { id: "db-2", service: "db" } });
    // A node-level check touches every instance on its node.
    const b = await c.updateCheck("n1", "serfHealth", "critical");
    const d = await new Promise<number>((resolve, reject) =>
      c.catalog.Deregister({ node: "n2", service_id: "web-2", check_id: "" }, (err, r) =>
        err ? reject(err) : resolve(r!.index),
      ),
    );
    await w.changeCount(6);
    expect(w.changes.slice(3)).toEqual([
      `sh register n2/web-2 web2-alive=passing@${a}`,
      `sh register n1/web-1 serfHealth=critical,web-alive=passing@${b}`,
      `sh deregister n2/web-2 web2-alive=passing@${d}`,
    ]);
  });

  it("ServiceList wildcard: the names in the snapshot, then a name's first register and last deregister", async () => {
    const h = await Harness.start();
    const c = h.connect();
    await c.register({ node: { node: "n1", address: "10.0.0.1" }, service: { id: "web-1", service: "web" } });
    const i = await c.register({
      node: { node: "n1", address: "10.0.0.1" },
      service: { id: "db-1", service: "db" },
    });
    const w = c.subscribe({ topic: "TOPIC_SERVICE_LIST", wildcard: true });
    await w.snapshotDone();
    expect(w.frames).toEqual([`B@${i}[sl register db@${i} | sl register web@${i}]`, `EOS@${i}`]);

    const a = await c.register({
      node: { node: "n2", address: "10.0.0.2" },
      service: { id: "cache-1", service: "cache" },
    });
    // A second instance of a known name changes no name.
    await c.register({ node: { node: "n2", address: "10.0.0.2" }, service: { id: "web-2", service: "web" } });
    const d = await new Promise<number>((resolve, reject) =>
      c.catalog.Deregister({ node: "n1", service_id: "db-1", check_id: "" }, (err, r) =>
        err ? reject(err) : resolve(r!.index),
      ),
    );
    await w.changeCount(5);
    expect(w.changes.slice(3)).toEqual([`sl register cache@${a}`, `sl deregister db@${d}`]);
  });

  it("one commit with several events arrives as one batch whose events each carry the commit's index", async () => {
    const h = await Harness.start();
    const c = h.connect();
    await c.put("t/1", "a");
    await c.put("t/2", "b");
    await c.put("t/3", "c");
    const w = c.subscribe({ topic: "TOPIC_KV", prefix: "t/" });
    await w.snapshotDone();
    const i = await c.delete("t/", { recurse: true });
    await w.until((x) => x.messages.length >= 3, "the delete batch");
    expect(w.frames.slice(2)).toEqual([
      `B@${i}[kv delete t/1@${i} | kv delete t/2@${i} | kv delete t/3@${i}]`,
    ]);
  });
});

describe("large snapshots", () => {
  it("a snapshot larger than one frame spans several batches, all at the snapshot's index, then end_of_snapshot", async () => {
    const h = await Harness.start();
    const keys = 5000;
    const enc = new TextEncoder();
    for (let i = 0; i < keys; i += 125) {
      const txn = Array.from({ length: 125 }, (_, j) => ({
        op: "kv.set" as const,
        key: `big/${String(i + j).padStart(5, "0")}`,
        value: enc.encode("v"),
      }));
      await h.server.store.commit(txn);
    }
    const at = h.server.publisher.index;
    const w = h.connect().subscribe({ topic: "TOPIC_KV", prefix: "big/" });
    await w.snapshotDone(10_000);
    expect(w.messages.map((m) => [m.payload, m.index])).toEqual([
      ["batch", at],
      ["batch", at],
      ["end_of_snapshot", at],
    ]);
    const events = w.messages.flatMap((m) => m.batch?.events ?? []);
    expect(events.length).toBe(keys);
    expect(events.every((e) => e.index === at)).toBe(true);
    const got = events.map((e) => e.kv!.entry!.key);
    expect(got).toEqual([...got].sort());
    expect(new Set(got).size).toBe(keys);
  });
});

describe("indexes", () => {
  it("a write returns its commit index, and a Subscribe sees exactly that index", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const put = await c.put("k", "v1");
    expect(put).toBe(h.server.publisher.index);
    const kw = c.subscribe({ topic: "TOPIC_KV", key: "k" });
    await kw.snapshotDone();
    expect(kw.lastIndex).toBe(put);
    expect(kw.messages[0]!.batch!.events[0]!.kv!.entry!.modify_index).toBe(put);

    const sw = c.subscribe({ topic: "TOPIC_SERVICE_HEALTH", key: "api" });
    await sw.snapshotDone();
    const reg = await c.register({
      node: { node: "n", address: "1.2.3.4" },
      service: { id: "api-1", service: "api" },
    });
    const put2 = await c.put("k", "v2");
    expect(put2).toBe(reg + 1);
    await sw.changeCount(2);
    await kw.changeCount(3);
    expect(sw.changes[1]).toBe(`sh register n/api-1 @${reg}`);
    expect(sw.messages[1]!.service_health!.service!.modify_index).toBe(reg);
    expect(kw.changes[2]).toBe(`kv set k=v2@${put2}`);
  });
});

describe("progress", () => {
  it("an idle subscriber is told the current index by Progress frames after other subjects' commits", async () => {
    const h = await Harness.start({ progressIntervalMs: 100 });
    const c = h.connect();
    await c.put("seed", "0");
    const w = c.subscribe({ topic: "TOPIC_KV", prefix: "idle/" });
    await w.snapshotDone();
    const eos = w.lastIndex;
    const started = performance.now();
    const i = await c.put("busy/1", "x");
    await w.until((x) => x.lines.includes(`P@${i}`), `progress to ${i}`, 2000);
    expect(performance.now() - started).toBeLessThan(1500);
    expect(w.changes).toEqual([`EOS@${eos}`]);

    const j = await c.put("busy/2", "y");
    await w.until((x) => x.lines.includes(`P@${j}`), `progress to ${j}`, 2000);
    // Progress is monotonic and only names reached indexes.
    const progress = w.messages.filter((m) => m.payload === "progress").map((m) => m.index);
    expect(progress).toEqual([...progress].sort((p, q) => p - q));
    expect(Math.max(...progress)).toBeLessThanOrEqual(h.server.publisher.index);
  });
});
