import { status as Status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import type { Envelope__Output } from "../../src/generated/sluice/v1/Envelope.js";
import { ComponentClient, eventually, promMetric } from "../helpers/component-client.js";
import type { Harness } from "../helpers/grpc-harness.js";
import { freshFeed, startEdge, startWriter, useNats } from "../jetstream/jetstream-harness.js";

/*
 * Two brokers joined by a real nats-server: a writer (broker A) and an edge of its feed
 * (broker B), each with its own broker id, sharing the NATS prefix. Requests cross in both
 * directions with their deadlines, answers and errors come back, nothing loops, and the
 * JetStream archive serves GetEvent on either broker.
 */

const nats = useNats();

async function twoBrokers(): Promise<{ a: Harness; b: Harness }> {
  const feed = freshFeed();
  // A short grace: the writer's bridge waits all of it when stopping, even with nothing queued.
  const a = await startWriter(nats().url, feed, { brokerId: "broker-a", shutdownGraceMs: 200 }, false);
  const b = await startEdge(nats().url, feed, { brokerId: "broker-b", shutdownGraceMs: 200 });
  await Promise.all([a.server.broker.linking, b.server.broker.linking]);
  return { a, b };
}

const metric = (h: Harness, name: string): Promise<number> => promMetric(h.server.httpPort, name);

describe("two brokers over NATS", () => {
  it("a request from A to a component on B and back, with the deadline shrinking in transit", async () => {
    const { a, b } = await twoBrokers();
    const worker = await ComponentClient.connect(b.address, {
      name: "worker",
      id: "wb",
      handler: (req) => ({ payload: Buffer.from(`left ${req.deadline_ms - Date.now()}`) }),
    });
    const caller = await ComponentClient.connect(a.address, { name: "caller", id: "ca" });
    expect(worker.brokerId).toBe("broker-b");
    expect(caller.brokerId).toBe("broker-a");

    const sentDeadline = Date.now() + 2000;
    const r = await caller.request(
      { name: "worker", id: "" },
      { id: "x-1", deadline_ms: sentDeadline, headers: { h: "v" }, payload: Buffer.from("hi") },
    );
    expect(r.status_code).toBe(Status.OK);
    expect(r.source).toEqual({ name: "worker", id: "wb" });
    expect(r.target).toEqual({ name: "caller", id: "ca" });
    expect(r.parent_id).toBe("x-1");

    const [got] = worker.received;
    expect(got!.id).toBe("x-1");
    expect(got!.source).toEqual({ name: "caller", id: "ca" });
    expect(got!.headers).toEqual({ h: "v" });
    expect(got!.payload.toString()).toBe("hi");
    expect(got!.deadline_ms).toBeLessThanOrEqual(sentDeadline);
    expect(got!.deadline_ms).toBeGreaterThan(Date.now());
    expect(Number(r.payload.toString().split(" ")[1])).toBeLessThan(2000);

    expect(await metric(a, "sluice_broker_forwarded_total")).toBe(1);
    expect(await metric(b, "sluice_broker_received_total")).toBe(1);
    // The response travelled to A's node subject.
    expect(await metric(a, "sluice_broker_received_total")).toBe(1);
    expect(await metric(b, "sluice_broker_forwarded_total")).toBe(0);
  });

  it("the other way round, by target id, and one-way events", async () => {
    const { a, b } = await twoBrokers();
    const worker = await ComponentClient.connect(a.address, { name: "worker", id: "wa" });
    await ComponentClient.connect(a.address, { name: "worker", id: "wa2" });
    const caller = await ComponentClient.connect(b.address, { name: "caller", id: "cb" });
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => caller.request({ name: "worker", id: "wa" })),
    );
    expect(answers.every((r) => r.status_code === Status.OK && r.source?.id === "wa")).toBe(true);
    caller.emit({ name: "worker", id: "wa" }, { type: "one-way" });
    await worker.until(() => worker.received.some((e) => e.type === "one-way"), "the event");
    expect(worker.received.filter((e) => e.kind === "ENVELOPE_KIND_REQUEST")).toHaveLength(10);
  });

  it("a local replica is preferred over a remote one", async () => {
    const { a, b } = await twoBrokers();
    const local = await ComponentClient.connect(a.address, { name: "worker", id: "local" });
    const remote = await ComponentClient.connect(b.address, { name: "worker", id: "remote" });
    const caller = await ComponentClient.connect(a.address, { name: "caller", id: "ca" });
    await Promise.all(Array.from({ length: 20 }, () => caller.request({ name: "worker", id: "" })));
    expect(local.served).toHaveLength(20);
    expect(remote.received).toEqual([]);
    expect(await metric(a, "sluice_broker_forwarded_total")).toBe(0);
  });

  it("no loops when the target is gone: UNAVAILABLE promptly, and no ping-pong", async () => {
    const { a, b } = await twoBrokers();
    const worker = await ComponentClient.connect(b.address, { name: "worker", id: "wb" });
    const caller = await ComponentClient.connect(a.address, { name: "caller", id: "ca" });
    expect((await caller.request({ name: "worker", id: "" })).status_code).toBe(Status.OK);
    worker.close();
    await eventually(() => !b.server.broker.router.has({ name: "worker", id: "" }), "the worker to leave B");

    const before = {
      aForwarded: await metric(a, "sluice_broker_forwarded_total"),
      aReceived: await metric(a, "sluice_broker_received_total"),
      bForwarded: await metric(b, "sluice_broker_forwarded_total"),
      bReceived: await metric(b, "sluice_broker_received_total"),
    };
    for (const target of [
      { name: "worker", id: "" },
      { name: "worker", id: "wb" },
    ]) {
      const t0 = Date.now();
      const r = await caller.request(target, { deadline_ms: Date.now() + 10_000 });
      expect(Date.now() - t0).toBeLessThan(1000);
      expect(r.status_code).toBe(Status.UNAVAILABLE);
      expect(r.headers["sluice-broker-error"]).toBe("no-route");
      expect(r.status_message).toContain("no replica of worker");
    }
    // Each request left A once, and nothing came back or went on.
    expect(await metric(a, "sluice_broker_forwarded_total")).toBe(before.aForwarded + 2);
    expect(await metric(b, "sluice_broker_forwarded_total")).toBe(before.bForwarded);
    expect(await metric(b, "sluice_broker_received_total")).toBeLessThanOrEqual(before.bReceived + 2);
    expect(await metric(a, "sluice_broker_received_total")).toBe(before.aReceived);
    expect(await metric(a, "sluice_broker_unroutable_total")).toBe(2);
  });

  it("a remote replica that does not answer in time: DEADLINE_EXCEEDED from the caller's broker", async () => {
    const { a, b } = await twoBrokers();
    await ComponentClient.connect(b.address, { name: "worker", id: "wb", handler: () => undefined });
    const caller = await ComponentClient.connect(a.address, { name: "caller", id: "ca" });
    const t0 = Date.now();
    const r = await caller.request({ name: "worker", id: "" }, { deadline_ms: t0 + 200 });
    expect(r.status_code).toBe(Status.DEADLINE_EXCEEDED);
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(caller.responses.filter((x) => x.parent_id === r.parent_id)).toHaveLength(1);
  });

  it("a remote replica that disconnects with the request in flight: UNAVAILABLE over NATS", async () => {
    const { a, b } = await twoBrokers();
    const worker = await ComponentClient.connect(b.address, {
      name: "worker",
      id: "wb",
      handler: () => undefined,
    });
    const caller = await ComponentClient.connect(a.address, { name: "caller", id: "ca" });
    const pending = caller.request({ name: "worker", id: "" }, { deadline_ms: Date.now() + 10_000 });
    await worker.until(() => worker.received.length === 1, "the request on B");
    const t0 = Date.now();
    worker.close();
    const r = await pending;
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(r.status_code).toBe(Status.UNAVAILABLE);
    expect(r.headers["sluice-broker-error"]).toBe("disconnected");
  });

  it("GetEvent returns an event from the JetStream archive, on either broker", async () => {
    const { a, b } = await twoBrokers();
    const worker = await ComponentClient.connect(b.address, { name: "worker", id: "wb" });
    const caller = await ComponentClient.connect(a.address, { name: "caller", id: "ca" });
    const resp = await caller.request(
      { name: "worker", id: "" },
      { id: "archived-x", type: "t", payload: Buffer.from("kept") },
    );
    const fromA = await archived(caller, "archived-x");
    expect(fromA.payload.toString()).toBe("kept");
    expect(fromA.source).toEqual({ name: "caller", id: "ca" });
    expect(fromA.kind).toBe("ENVELOPE_KIND_REQUEST");
    expect((await worker.getEvent("archived-x")).type).toBe("t");
    // The response is archived too (by B, whose replica answered), and readable on A.
    expect((await archived(caller, resp.id)).parent_id).toBe("archived-x");
    expect((await caller.getEvent("never-sent").catch((e) => e)).code).toBe(Status.NOT_FOUND);
  });
});

/** GetEvent, retried until the event is in the archive (archiving never delays delivery). */
async function archived(c: ComponentClient, id: string): Promise<Envelope__Output> {
  const t0 = Date.now();
  for (;;) {
    const e = await c.getEvent(id).catch((err: { code?: number }) => {
      if (err.code !== Status.NOT_FOUND) throw err;
      return undefined;
    });
    if (e) return e;
    if (Date.now() - t0 > 5000) throw new Error(`event ${id} never reached the archive`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
