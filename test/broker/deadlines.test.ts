import { status as Status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ComponentClient, eventually, promMetric } from "../helpers/component-client.js";
import { grpcError, Harness } from "../helpers/grpc-harness.js";

/*
 * Deadlines and failures inside one broker: expired envelopes are dropped and counted, a
 * request gets exactly one response even when no component gives one (DEADLINE_EXCEEDED),
 * its replica goes away (UNAVAILABLE), or no replica exists (UNAVAILABLE "no replica of X").
 */

const BROKER_ERROR = "sluice-broker-error";

describe("deadlines", () => {
  it("an event whose deadline has passed is never delivered, and is counted", async () => {
    const h = await Harness.start();
    const w = await ComponentClient.connect(h.address, { name: "worker", id: "w1" });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const before = await promMetric(h.server.httpPort, "sluice_broker_expired_total");

    caller.emit({ name: "worker", id: "" }, { type: "late", deadline_ms: Date.now() - 1000 });
    caller.emit({ name: "worker", id: "w1" }, { type: "late-targeted", deadline_ms: Date.now() - 1 });
    // Envelopes from one connection are routed in order: once this one is in, the others were handled.
    caller.emit({ name: "worker", id: "w1" }, { type: "on-time" });
    await w.until(() => w.received.length > 0, "the on-time event");

    expect(w.received.map((e) => e.type)).toEqual(["on-time"]);
    expect(await promMetric(h.server.httpPort, "sluice_broker_expired_total")).toBe(before + 2);
  });

  it("a request nobody answers in time gets DEADLINE_EXCEEDED, once, and the late answer is dropped", async () => {
    const h = await Harness.start();
    let release: (() => void) | undefined;
    const held = new Promise<void>((r) => {
      release = r;
    });
    const w = await ComponentClient.connect(h.address, {
      name: "worker",
      id: "w1",
      handler: async () => {
        await held;
        return { payload: Buffer.from("too late") };
      },
    });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });

    const t0 = Date.now();
    const r = await caller.request({ name: "worker", id: "" }, { deadline_ms: t0 + 150 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(r.status_code).toBe(Status.DEADLINE_EXCEEDED);
    expect(r.headers[BROKER_ERROR]).toBe("deadline");
    expect(w.received).toHaveLength(1);
    expect(await promMetric(h.server.httpPort, "sluice_broker_deadline_exceeded_total")).toBe(1);

    // The component answers after all: the caller already has its one response.
    release!();
    await caller.request({ name: "worker", id: "" });
    expect(caller.responses.filter((x) => x.parent_id === r.parent_id)).toHaveLength(1);
    expect(await promMetric(h.server.httpPort, "sluice_broker_late_responses_total")).toBe(1);
  });

  it("a request already expired when sent is not delivered and gets DEADLINE_EXCEEDED", async () => {
    const h = await Harness.start();
    const w = await ComponentClient.connect(h.address, { name: "worker", id: "w1" });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const r = await caller.request({ name: "worker", id: "" }, { deadline_ms: Date.now() - 500 });
    expect(r.status_code).toBe(Status.DEADLINE_EXCEEDED);
    await caller.request({ name: "worker", id: "w1" });
    expect(w.received).toHaveLength(1); // only the second one
    expect(await promMetric(h.server.httpPort, "sluice_broker_expired_total")).toBe(1);
  });

  it("a request its replica never answers frees the replica's slot at its deadline", async () => {
    const h = await Harness.start();
    const w = await ComponentClient.connect(h.address, {
      name: "worker",
      id: "w1",
      concurrency: 1,
      handler: (req) => (req.type === "ignored" ? undefined : { payload: Buffer.from("done") }),
    });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const ignored = caller.request(
      { name: "worker", id: "" },
      { type: "ignored", deadline_ms: Date.now() + 100 },
    );
    await w.until(() => w.received.length === 1, "the ignored request");
    // Waits in the queue while the only slot is taken, then gets it when the first one expires.
    const next = await caller.request(
      { name: "worker", id: "" },
      { type: "next", deadline_ms: Date.now() + 3000 },
    );
    expect((await ignored).status_code).toBe(Status.DEADLINE_EXCEEDED);
    expect(next.status_code).toBe(Status.OK);
    expect(w.received.map((e) => e.type)).toEqual(["ignored", "next"]);
  });

  it("requests queued behind a busy group expire in the queue: DEADLINE_EXCEEDED, never delivered", async () => {
    const h = await Harness.start();
    const w = await ComponentClient.connect(h.address, {
      name: "worker",
      id: "w1",
      concurrency: 1,
      delayMs: 200,
    });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const first = caller.request({ name: "worker", id: "" }, { type: "first" });
    const queued = await caller.request({ name: "worker", id: "" }, { deadline_ms: Date.now() + 50 });
    expect(queued.status_code).toBe(Status.DEADLINE_EXCEEDED);
    expect((await first).status_code).toBe(Status.OK);
    // The queue moved on after the first answer: the expired one was skipped, not delivered.
    await caller.request({ name: "worker", id: "" }, { type: "third" });
    expect(w.received.map((e) => e.type)).toEqual(["first", "third"]);
    expect(await promMetric(h.server.httpPort, "sluice_broker_expired_total")).toBe(1);
  });
});

describe("failures are answered, never silent", () => {
  it("a replica that disconnects with requests in flight and queued: each gets UNAVAILABLE", async () => {
    const h = await Harness.start();
    const w = await ComponentClient.connect(h.address, {
      name: "worker",
      id: "w1",
      concurrency: 2,
      handler: () => undefined, // never answers
    });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const pending = Array.from({ length: 5 }, () =>
      caller.request({ name: "worker", id: "" }, { deadline_ms: Date.now() + 10_000 }),
    );
    await w.until(() => w.received.length === 2, "two requests in flight");
    await eventually(() => h.server.broker.pendingCount === 5, "all five requests at the broker");
    const t0 = Date.now();
    w.close();
    const answers = await Promise.all(pending);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(answers.map((a) => a.status_code)).toEqual(Array(5).fill(Status.UNAVAILABLE));
    // Two were in flight on it, three waited in the group's queue: all lost their replica.
    expect(answers.map((a) => a.headers[BROKER_ERROR])).toEqual(Array(5).fill("disconnected"));
    expect(h.server.broker.pendingCount).toBe(0);
  });

  it("in-flight work of a replica that leaves is not given to the rest of its group twice", async () => {
    const h = await Harness.start();
    const gone = await ComponentClient.connect(h.address, {
      name: "worker",
      id: "gone",
      handler: () => undefined,
    });
    const stays = await ComponentClient.connect(h.address, { name: "worker", id: "stays" });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const toGone = caller.request({ name: "worker", id: "gone" });
    await gone.until(() => gone.received.length === 1, "the request on the leaving replica");
    gone.close();
    const r = await toGone;
    expect(r.status_code).toBe(Status.UNAVAILABLE);
    expect(r.headers[BROKER_ERROR]).toBe("disconnected");
    expect((await caller.request({ name: "worker", id: "" })).source?.id).toBe("stays");
    expect(stays.received).toHaveLength(1);
  });

  it('no replica anywhere: UNAVAILABLE "no replica of X" at once', async () => {
    const h = await Harness.start();
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const t0 = Date.now();
    const r = await caller.request({ name: "nobody", id: "" }, { deadline_ms: Date.now() + 10_000 });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(r.status_code).toBe(Status.UNAVAILABLE);
    expect(r.headers[BROKER_ERROR]).toBe("no-route");
    expect(r.status_message).toContain("no replica of nobody");
    expect(r.source?.name).toBe("sluice-broker");
    expect(await promMetric(h.server.httpPort, "sluice_broker_unroutable_total")).toBe(1);
  });

  it("a request without a target name is INVALID_ARGUMENT; a reused in-flight id too", async () => {
    const h = await Harness.start();
    await ComponentClient.connect(h.address, { name: "worker", id: "w1", handler: () => undefined });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const noTarget = await caller.request({ name: "", id: "" });
    expect(noTarget.status_code).toBe(Status.INVALID_ARGUMENT);
    void caller.request({ name: "worker", id: "" }, { id: "same", deadline_ms: Date.now() + 300 });
    const again = await caller.request({ name: "worker", id: "" }, { id: "same" });
    // Both share a parent id, so the client sees the broker's refusal as that id's answer.
    expect(again.status_code).toBe(Status.INVALID_ARGUMENT);
  });
});

describe("GetEvent", () => {
  it("returns an archived event by id (in memory, without NATS)", async () => {
    const h = await Harness.start();
    await ComponentClient.connect(h.address, { name: "worker", id: "w1" });
    const caller = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const resp = await caller.request(
      { name: "worker", id: "" },
      { id: "archived-1", type: "greet", headers: { a: "1" }, payload: Buffer.from("hi") },
    );
    const got = await caller.getEvent("archived-1");
    expect(got.id).toBe("archived-1");
    expect(got.type).toBe("greet");
    expect(got.kind).toBe("ENVELOPE_KIND_REQUEST");
    expect(got.source).toEqual({ name: "caller", id: "c1" });
    expect(got.headers).toEqual({ a: "1" });
    expect(got.payload.toString()).toBe("hi");
    // The response is archived too.
    const r = await caller.getEvent(resp.id);
    expect(r.parent_id).toBe("archived-1");
    expect((await grpcError(caller.getEvent("no-such-event"))).code).toBe(Status.NOT_FOUND);
  });
});
