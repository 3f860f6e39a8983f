import { status as Status } from "@grpc/grpc-js";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Op, StateRoot, Txn } from "../../src/state/index.js";
import { TABLE_NAMES } from "../../src/state/index.js";
import { errorClass, grpcError, type Harness, type Watch } from "../helpers/grpc-harness.js";
import { canonical } from "../helpers/views.js";
import { SseClient } from "../http/sse-client.js";
import { freshFeed, startEdge, startWriter, useNats } from "./jetstream-harness.js";

const nats = useNats();

async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Waits until the edge has applied everything the writer committed. */
const caughtUp = (edge: Harness, writer: Harness): Promise<void> =>
  until(() => edge.server.store.index >= writer.server.store.index, "the edge to catch up");

/** Every table's rows, as canonical text, for comparing two states. */
function tables(root: StateRoot): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of TABLE_NAMES) out[t] = canonical([...(root[t] as { values(): Iterable<unknown> }).values()]);
  return out;
}

const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s));

/** The txn of a service instance with one check (node, service, check registered together). */
function registerTxn(node: number, svc: number, inst: number, status: string): Txn {
  const id = `s${svc}-${inst}`;
  return [
    { op: "node.register", node: { Node: `n${node}`, Address: `10.0.0.${node}` } },
    { op: "service.register", service: { Node: `n${node}`, ID: id, Service: `s${svc}`, Port: 8000 + inst } },
    {
      op: "check.register",
      check: { Node: `n${node}`, CheckID: `${id}-alive`, Name: "alive", Status: status, ServiceID: id },
    },
  ] as Txn;
}

const statusArb = fc.constantFrom("passing", "warning", "critical");
const opArb: fc.Arbitrary<Txn> = fc.oneof(
  fc.tuple(fc.nat(5), fc.nat(2), fc.nat(3), statusArb).map(([n, s, i, st]) => registerTxn(n, s, i, st)),
  fc
    .tuple(fc.nat(5), fc.nat(2), fc.nat(3))
    .map(([n, s, i]): Txn => [{ op: "service.deregister", node: `n${n}`, serviceId: `s${s}-${i}` }]),
  fc
    .tuple(fc.nat(5), fc.nat(2), fc.nat(3), statusArb)
    .map(
      ([n, s, i, st]): Txn => [
        { op: "check.status", node: `n${n}`, checkId: `s${s}-${i}-alive`, status: st } as Op,
      ],
    ),
  fc
    .tuple(fc.nat(9), fc.string({ maxLength: 8 }))
    .map(([k, v]): Txn => [{ op: "kv.set", key: `k/${k}`, value: bytes(v) }]),
  fc.nat(9).map((k): Txn => [{ op: "kv.delete", key: `k/${k}` }]),
);

/** Applies a txn on the writer; a refused one (a check of a missing instance, say) is skipped. */
async function apply(writer: Harness, txn: Txn): Promise<void> {
  await writer.server.store.commit(txn).catch(() => {});
}

describe("edges", () => {
  it("an edge started after 10,000 commits catches up from snapshot plus log, and its subscribers see what the writer's see at every index", async () => {
    const feed = freshFeed();
    const writer = await startWriter(nats().url, feed, { natsSnapshotEvery: 3000 }, false);
    const N = 10_000;
    for (let i = 0; i < N; i += 1000) {
      await Promise.all(
        Array.from({ length: 1000 }, (_, j) => {
          const k = i + j;
          const txn: Txn =
            k % 3 === 0
              ? registerTxn(k % 50, k % 7, k % 11, "passing")
              : k % 3 === 1
                ? [
                    {
                      op: "check.status",
                      node: `n${(k - 1) % 50}`,
                      checkId: `s${(k - 1) % 7}-${(k - 1) % 11}-alive`,
                      status: k % 2 ? "critical" : "passing",
                    },
                  ]
                : [{ op: "kv.set", key: `bulk/${k % 200}`, value: bytes(`v${k}`) }];
          return apply(writer, txn);
        }),
      );
    }
    expect(writer.server.store.index).toBeGreaterThan(N);
    expect(await writer.server.bridge!.flushed(30_000)).toBe(true);

    const edge = await startEdge(nats().url, feed);
    // Started from a snapshot, then the log after it.
    expect(edge.server.replica!.snapshotIndex).toBeGreaterThan(0);
    expect(edge.server.replica!.snapshotIndex).toBeLessThan(writer.server.store.index);
    await caughtUp(edge, writer);
    expect(edge.server.store.index).toBe(writer.server.store.index);
    expect(tables(edge.server.store.root)).toEqual(tables(writer.server.store.root));

    const subjects = [
      { topic: "TOPIC_SERVICE_HEALTH", key: "s0" },
      { topic: "TOPIC_SERVICE_HEALTH", key: "s1" },
      { topic: "TOPIC_KV", prefix: "k/" },
    ] as const;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (txns) => {
        // Subscribers on both, from scratch (snapshot) and resuming at the current index.
        const from = writer.server.store.index;
        const open = (h: Harness): Watch[] =>
          subjects.flatMap((s) => [
            h.connect().subscribe({ ...s, index: 0 }),
            h.connect().subscribe({ ...s, index: from }),
          ]);
        const onWriter = open(writer);
        const onEdge = open(edge);
        await Promise.all(
          [...onWriter, ...onEdge].filter((_, i) => i % 2 === 0).map((w) => w.snapshotDone()),
        );
        for (const t of txns) await apply(writer, t);
        const last = writer.server.store.index;
        await caughtUp(edge, writer);
        // Progress markers carry the index: wait until every stream has reached the last one.
        for (const w of [...onWriter, ...onEdge]) await w.until((x) => x.lastIndex >= last, `index ${last}`);
        for (let i = 0; i < onWriter.length; i++) {
          expect(onEdge[i]!.changes).toEqual(onWriter[i]!.changes);
        }
        for (const w of [...onWriter, ...onEdge]) w.cancel();
        expect(tables(edge.server.store.root)).toEqual(tables(writer.server.store.root));
      }),
      { numRuns: 5 },
    );
  }, 120_000);

  it("a client resumes on an edge with the writer's index, and on another edge when the first dies: no snapshot, no gap, no duplicate", async () => {
    const feed = freshFeed();
    const writer = await startWriter(nats().url, feed, {}, false);
    const [e1, e2] = [await startEdge(nats().url, feed), await startEdge(nats().url, feed)];
    const w = writer.connect();
    const req = { topic: "TOPIC_KV", prefix: "r/" } as const;

    const first = writer.connect().subscribe({ ...req, index: 0 });
    await first.snapshotDone();
    for (let i = 0; i < 5; i++) await w.put(`r/${i}`, `a${i}`);
    await first.changeCount(1 + 5);
    const onWriter = first.lastIndex;
    first.cancel();

    const later: number[] = [];
    for (let i = 0; i < 5; i++) later.push(await w.put(`r/${i}`, `b${i}`));
    const second = e1.connect().subscribe({ ...req, index: onWriter });
    await second.changeCount(5);
    expect(second.changes.some((l) => /snapshot/i.test(l))).toBe(false);
    expect(
      second.messages
        .flatMap((m) => (m.payload === "batch" ? m.batch!.events! : [m]))
        .filter((m) => m.payload === "kv")
        .map((m) => m.index),
    ).toEqual(later);
    const onE1 = second.lastIndex;

    // The first edge dies; the client goes on at the second with the index the first gave it.
    e1.server.forceStop();
    await e1.server.stop();
    const more: number[] = [];
    for (let i = 0; i < 3; i++) more.push(await w.put(`r/x${i}`, "c"));
    const third = e2.connect().subscribe({ ...req, index: onE1 });
    await third.changeCount(3);
    expect(third.changes.some((l) => /snapshot/i.test(l))).toBe(false);
    expect(
      third.messages
        .flatMap((m) => (m.payload === "batch" ? m.batch!.events! : [m]))
        .filter((m) => m.payload === "kv")
        .map((m) => m.index),
    ).toEqual(more);
  }, 60_000);

  it("a subscriber whose index the edge has not reached yet waits for it, as on the writer", async () => {
    const feed = freshFeed();
    const writer = await startWriter(nats().url, feed, {}, false);
    const edge = await startEdge(nats().url, feed);
    const w = writer.connect();
    await w.put("ahead/0", "x");
    await caughtUp(edge, writer);
    // The client got index+1 from the writer (say) before the edge has it.
    const ahead = writer.server.store.index + 1;
    const watch = edge.connect().subscribe({ topic: "TOPIC_KV", prefix: "ahead/", index: ahead });
    await new Promise((r) => setTimeout(r, 300)); // the edge is now waiting for `ahead`
    const first = await w.put("ahead/1", "y");
    expect(first).toBe(ahead);
    const second = await w.put("ahead/2", "z");
    await watch.changeCount(1);
    expect(watch.changes.some((l) => /snapshot/i.test(l))).toBe(false);
    const kv = watch.messages
      .flatMap((m) => (m.payload === "batch" ? m.batch!.events! : [m]))
      .filter((m) => m.payload === "kv");
    expect(kv.map((m) => m.index)).toEqual([second]);
    expect(watch.status).toBeUndefined();
  }, 30_000);

  it("an edge that finds a gap in the log stops replicating and reports itself unhealthy", async () => {
    const feed = freshFeed();
    const writer = await startWriter(nats().url, feed, {}, false);
    const edge = await startEdge(nats().url, feed);
    await writer.connect().put("g/1", "x");
    await caughtUp(edge, writer);
    const health = () => fetch(`http://127.0.0.1:${edge.server.httpPort}/v1/health`);
    expect((await health()).status).toBe(200);
    // A log message that skips indexes (as if retention had removed commits).
    const { connect, headers } = await import("nats");
    const nc = await connect({ servers: nats().url });
    const h = headers();
    h.set("Sluice-Index", String(writer.server.store.index + 5));
    h.set("Sluice-Kind", "log");
    h.set("Sluice-Pos", "0");
    await nc.jetstream().publish(`${feed.natsPrefix}.log`, new Uint8Array([1]), { headers: h });
    await nc.close();
    await until(() => edge.server.replica!.stoppedBy !== undefined, "replication to stop");
    const res = await health();
    expect(res.status).toBe(503);
    expect(((await res.json()) as { reason: string }).reason).toContain("replication stopped");
  }, 30_000);

  it("serves blocking queries and SSE with the writer's indexes: a client moves from the writer to an edge", async () => {
    const feed = freshFeed();
    const writer = await startWriter(nats().url, feed, {}, false);
    const edge = await startEdge(nats().url, feed);
    const w = writer.connect();
    await w.put("web/a", "1");
    await caughtUp(edge, writer);
    const wBase = `http://127.0.0.1:${writer.server.httpPort}`;
    const eBase = `http://127.0.0.1:${edge.server.httpPort}`;

    // A blocking query: the index from the writer's answer, continued on the edge.
    const first = await fetch(`${wBase}/v1/kv/web?recurse`);
    const index = Number(first.headers.get("x-consul-index"));
    const blocked = fetch(`${eBase}/v1/kv/web?recurse&index=${index}&wait=10s`);
    await new Promise((r) => setTimeout(r, 200));
    const changed = await w.put("web/b", "2");
    const res = await blocked;
    expect(Number(res.headers.get("x-consul-index"))).toBe(changed);
    expect(((await res.json()) as { Key: string }[]).map((e) => e.Key)).toEqual(["web/a", "web/b"]);

    // SSE: the last event id from the writer's stream resumes on the edge, no snapshot, no gap.
    const onWriter = new SseClient(`${wBase}/v1/stream/kv?prefix=web/`);
    await onWriter.waitFor(
      () => onWriter.messages.find((m) => m.type === "snapshot-end"),
      5000,
      "snapshot-end",
    );
    const lastId = onWriter.messages.filter((m) => m.id !== "").at(-1)!.id;
    onWriter.close();
    const later = await w.put("web/c", "3");
    const onEdge = new SseClient(`${eBase}/v1/stream/kv?prefix=web/`, { lastEventId: lastId });
    const update = await onEdge.waitFor(
      () => onEdge.messages.find((m) => m.type === "update"),
      5000,
      "an update",
    );
    expect(update.data.snapshot).toBe(false);
    expect(update.data.events.map((e: { index: number; key: string }) => [e.index, e.key])).toEqual([
      [later, "web/c"],
    ]);
    onEdge.close();
  }, 30_000);

  it("a token revoked on the writer force-closes its subscriptions on every edge", async () => {
    const feed = freshFeed();
    const acl = { aclEnabled: true, aclDefaultPolicy: "deny" } as const;
    const writer = await startWriter(nats().url, feed, acl, false);
    await writer.bootstrapAcl();
    const token = await writer.tokenWithRules(`key_prefix "" { policy = "read" }`);
    const edges = [await startEdge(nats().url, feed, acl), await startEdge(nats().url, feed, acl)];
    for (const e of edges) await caughtUp(e, writer);
    const watches = edges.map((e) =>
      e.connect(token.secret).subscribe({ topic: "TOPIC_KV", wildcard: true }),
    );
    for (const w of watches) await w.snapshotDone();

    await writer.connect(writer.management).deleteToken(token.accessor);
    for (const w of watches) {
      const s = await w.end();
      expect(s.code).toBe(Status.ABORTED);
      expect(errorClass(s)).toBe("SubscriptionForceClosedError");
    }
  }, 30_000);

  it("forwards writes to the writer with read-your-writes, or names the writer when forwarding is off", async () => {
    const feed = freshFeed();
    const writer = await startWriter(nats().url, feed, {}, false);
    const edge = await startEdge(nats().url, feed);
    const e = edge.connect();

    // gRPC write on the edge: committed on the writer, visible on the edge when it answers.
    const index = await e.put("fw/a", "one");
    expect(writer.server.store.index).toBeGreaterThanOrEqual(index);
    expect(edge.server.store.index).toBeGreaterThanOrEqual(index);
    // HTTP write on the edge, read back at once from the edge.
    const base = `http://127.0.0.1:${edge.server.httpPort}`;
    const put = await fetch(`${base}/v1/kv/fw/b`, { method: "PUT", body: "two" });
    expect(await put.json()).toBe(true);
    const got = await fetch(`${base}/v1/kv/fw/b?raw`);
    expect(got.status).toBe(200);
    expect(await got.text()).toBe("two");
    expect(Number(got.headers.get("x-consul-index"))).toBeGreaterThan(index);
    // The writer's own errors come back as such: a failed CAS is a CAS failure on the edge too.
    const cas = await grpcError(e.put("fw/a", "three", { cas: 1 }));
    expect(cas.code).toBe(Status.FAILED_PRECONDITION);
    expect(errorClass(cas)).toBe("CasFailedError");

    const readOnly = await startEdge(nats().url, feed, { edgeForwardWrites: false });
    const err = await grpcError(readOnly.connect().put("fw/c", "x"));
    expect(err.code).toBe(Status.FAILED_PRECONDITION);
    expect(err.details).toContain(`gRPC 127.0.0.1:${writer.server.grpcPort}`);
    const viaHttp = await fetch(`http://127.0.0.1:${readOnly.server.httpPort}/v1/kv/fw/c`, {
      method: "PUT",
      body: "x",
    });
    expect(viaHttp.status).toBe(503);
    expect(((await viaHttp.json()) as { error: string }).error).toContain(
      `HTTP 127.0.0.1:${writer.server.httpPort}`,
    );
    expect(writer.server.store.root.kv.get("fw/c")).toBeUndefined();

    // The edge reports its role and lag, in /v1/agent/self and in the metrics.
    const self = (await (await fetch(`${base}/v1/agent/self`)).json()) as {
      Stats: { sluice: { replication: { role: string; index: number; commits: number; stopped: boolean } } };
    };
    expect(self.Stats.sluice.replication).toMatchObject({ role: "edge", commits: 0, stopped: false });
    expect(self.Stats.sluice.replication.index).toBe(edge.server.store.index);
    const metrics = await (await fetch(`${base}/v1/agent/metrics?format=prometheus`)).text();
    expect(metrics).toMatch(/^sluice_replication_lag_commits 0$/m);
    expect(metrics).toMatch(/^sluice_replication_lag_seconds 0$/m);
    const writerMetrics = await (
      await fetch(`http://127.0.0.1:${writer.server.httpPort}/v1/agent/metrics?format=prometheus`)
    ).text();
    expect(writerMetrics).toMatch(/^sluice_bridge_lag_commits \d+$/m);
  }, 30_000);
});
