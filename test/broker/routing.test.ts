import { status as Status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import type { Envelope__Output } from "../../src/generated/sluice/v1/Envelope.js";
import { ComponentClient } from "../helpers/component-client.js";
import { Harness } from "../helpers/grpc-harness.js";

/*
 * Routing inside one broker: a group's replicas share untargeted requests (each answered
 * exactly once), work stealing keeps a slow replica at its own pace, and a target id reaches
 * exactly that replica.
 */

/** Every response's parent id, counted. */
function countByParent(responses: readonly Envelope__Output[]): Map<string, number> {
  const n = new Map<string, number>();
  for (const r of responses) n.set(r.parent_id, (n.get(r.parent_id) ?? 0) + 1);
  return n;
}

describe("a group of replicas", () => {
  it("1,000 untargeted requests are each answered exactly once, by both replicas", async () => {
    const h = await Harness.start();
    const w1 = await ComponentClient.connect(h.address, { name: "worker", id: "w1" });
    const w2 = await ComponentClient.connect(h.address, { name: "worker", id: "w2" });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });

    const sent: string[] = [];
    const answers = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => {
        const id = `req-${i}`;
        sent.push(id);
        return caller.request({ name: "worker", id: "" }, { id, payload: Buffer.from(String(i)) });
      }),
    );
    expect(answers.map((a) => a.status_code)).toEqual(sent.map(() => Status.OK));
    // Each answer carries its own request's payload back (echo).
    expect(answers.map((a) => a.payload.toString())).toEqual(sent.map((_, i) => String(i)));

    // A marker request after everything: any duplicate response would have come before it.
    await caller.request({ name: "worker", id: "" }, { id: "marker" });
    const counts = countByParent(caller.responses);
    counts.delete("marker");
    expect(counts.size).toBe(1000);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);

    const served1 = new Set(w1.served);
    const served2 = new Set(w2.served);
    served1.delete("marker");
    served2.delete("marker");
    expect(served1.size).toBeGreaterThan(0);
    expect(served2.size).toBeGreaterThan(0);
    expect(served1.size + served2.size).toBe(1000);
    expect([...served1].filter((id) => served2.has(id))).toEqual([]);
    expect(new Set([...served1, ...served2])).toEqual(new Set(sent));
    // The answers come from the replicas, not from the broker.
    expect(new Set(answers.map((a) => a.source?.name))).toEqual(new Set(["worker"]));
    expect(h.server.broker.pendingCount).toBe(0);
  });

  it("a slow replica takes only what it can do: the fast one is never idle while work waits", async () => {
    const h = await Harness.start();
    const SLOW_MS = 20;
    const fast = await ComponentClient.connect(h.address, { name: "worker", id: "fast", concurrency: 1 });
    const slow = await ComponentClient.connect(h.address, {
      name: "worker",
      id: "slow",
      concurrency: 1,
      delayMs: SLOW_MS,
    });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });

    const t0 = Date.now();
    const answers = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => caller.request({ name: "worker", id: "" }, { id: `r${i}` })),
    );
    const elapsed = Date.now() - t0;
    expect(answers.every((a) => a.status_code === Status.OK)).toBe(true);
    expect(fast.served.length + slow.served.length).toBe(1000);

    // Never more than its concurrency at once, so at most one request per SLOW_MS (plus the
    // one it holds when the run ends): nothing queued behind it while the fast one was free.
    expect(slow.maxBusy).toBe(1);
    expect(slow.served.length).toBeLessThanOrEqual(Math.ceil(elapsed / SLOW_MS) + 1);
    expect(slow.served.length).toBeGreaterThan(0);
    expect(fast.served.length).toBeGreaterThan(2 * slow.served.length);
  });

  it("a target id reaches exactly that replica, for events and requests", async () => {
    const h = await Harness.start();
    const w1 = await ComponentClient.connect(h.address, { name: "worker", id: "w1" });
    const w2 = await ComponentClient.connect(h.address, { name: "worker", id: "w2" });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });

    for (let i = 0; i < 20; i++) caller.emit({ name: "worker", id: "w2" }, { type: `e${i}` });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => caller.request({ name: "worker", id: "w1" })),
    );
    await w2.until(() => w2.received.length === 20, "20 events on w2");
    expect(w2.received.map((e) => e.type)).toEqual(Array.from({ length: 20 }, (_, i) => `e${i}`));
    expect(w2.received.every((e) => e.source?.name === "caller" && e.source.id === "c1")).toBe(true);
    expect(w1.received.filter((e) => e.kind === "ENVELOPE_KIND_EVENT")).toEqual([]);
    expect(answers.every((a) => a.source?.id === "w1" && a.status_code === Status.OK)).toBe(true);
    expect(w1.served).toHaveLength(20);
    expect(w2.served).toEqual([]);
  });

  it("a target id that is not connected anywhere is UNAVAILABLE, even when its group is", async () => {
    const h = await Harness.start();
    await ComponentClient.connect(h.address, { name: "worker", id: "w1" });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const r = await caller.request({ name: "worker", id: "w9" });
    expect(r.status_code).toBe(Status.UNAVAILABLE);
    expect(r.headers["sluice-broker-error"]).toBe("no-route");
  });

  it("a second replica with a connected id is refused with ALREADY_EXISTS", async () => {
    const h = await Harness.start();
    await ComponentClient.connect(h.address, { name: "worker", id: "w1" });
    const dup = ComponentClient.open(h.address, { name: "worker", id: "w1" });
    expect((await dup.end()).code).toBe(Status.ALREADY_EXISTS);
  });

  it("a replica that half-closes its stream leaves its group, and its stream ends OK", async () => {
    const h = await Harness.start();
    const w = await ComponentClient.connect(h.address, { name: "worker", id: "w1" });
    w.call.end();
    expect((await w.end()).code).toBe(Status.OK);
    expect(h.server.broker.router.has({ name: "worker", id: "" })).toBe(false);
    expect(h.server.broker.connectionCount).toBe(0);
  });
});
