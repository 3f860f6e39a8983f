import { status as Status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { type BrokerSubscription, ComponentClient } from "../helpers/component-client.js";
import { Harness } from "../helpers/grpc-harness.js";

/*
 * Change-stream subscriptions on the broker connection: the frames a component gets match,
 * decoded, those of a plain Subscribe stream for the same topic, subject, index and token.
 */

const ACL = { aclEnabled: true, aclDefaultPolicy: "deny" } as const;

function until(c: ComponentClient, sub: BrokerSubscription, pred: () => boolean, what: string) {
  return c.until(pred, `${what} on subscription ${sub.id}; got ${JSON.stringify(sub.frames)}`);
}

const snapshotDone = (c: ComponentClient, sub: BrokerSubscription): Promise<void> =>
  until(c, sub, () => sub.messages.some((m) => m.payload === "end_of_snapshot"), "end of snapshot");

describe("subscriptions over the broker connection", () => {
  it("KV wildcard: snapshot and live changes match a Subscribe stream", async () => {
    const h = await Harness.start();
    const admin = h.connect();
    await admin.put("a", "1");
    await admin.put("b/c", "2");
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1" });
    const sub = comp.subscribe("kv", { topic: "TOPIC_KV", wildcard: true });
    const plain = admin.subscribe({ topic: "TOPIC_KV", wildcard: true });
    await Promise.all([snapshotDone(comp, sub), plain.snapshotDone()]);
    expect(sub.frames).toEqual(plain.frames);

    await admin.put("a", "3");
    await admin.delete("b/c");
    const last = await admin.put("d", "4");
    await plain.until((w) => w.changes.some((l) => l.endsWith(`@${last}`)), "the last put");
    await until(comp, sub, () => sub.changes.some((l) => l.endsWith(`@${last}`)), "the last put");
    expect(sub.changes).toEqual(plain.changes);
    // Same wire messages, not only the same text: indexes and entries decode alike.
    const strip = (ms: typeof plain.messages) => ms.filter((m) => m.payload !== "progress");
    expect(strip(sub.messages)).toEqual(strip(plain.messages));
  });

  it("a key subject on service health, with events for other services filtered out", async () => {
    const h = await Harness.start();
    const admin = h.connect();
    await admin.register({
      node: { node: "n1", address: "10.0.0.1" },
      service: { id: "web-1", service: "web" },
    });
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1" });
    const sub = comp.subscribe("web", { topic: "TOPIC_SERVICE_HEALTH", key: "web" });
    const plain = admin.subscribe({ topic: "TOPIC_SERVICE_HEALTH", key: "web" });
    await Promise.all([snapshotDone(comp, sub), plain.snapshotDone()]);
    await admin.register({
      node: { node: "n2", address: "10.0.0.2" },
      service: { id: "api-1", service: "api" },
    });
    const last = await admin.register({
      node: { node: "n2", address: "10.0.0.2" },
      service: { id: "web-2", service: "web" },
    });
    await plain.until((w) => w.changes.some((l) => l.endsWith(`@${last}`)), "web-2");
    await until(comp, sub, () => sub.changes.some((l) => l.endsWith(`@${last}`)), "web-2");
    expect(sub.changes).toEqual(plain.changes);
    expect(sub.changes.join(" ")).not.toContain("api");
  });

  it("resuming from an index gives what a resumed Subscribe gives", async () => {
    const h = await Harness.start();
    const admin = h.connect();
    await admin.put("k1", "1");
    const resumeAt = await admin.put("k2", "2");
    await admin.put("k3", "3");
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1" });
    const sub = comp.subscribe("r", { topic: "TOPIC_KV", prefix: "k", index: resumeAt });
    const plain = admin.subscribe({ topic: "TOPIC_KV", prefix: "k", index: resumeAt });
    const last = await admin.put("k4", "4");
    await plain.until((w) => w.changes.some((l) => l.endsWith(`@${last}`)), "k4");
    await until(comp, sub, () => sub.changes.some((l) => l.endsWith(`@${last}`)), "k4");
    expect(sub.changes).toEqual(plain.changes);
    expect(sub.changes[0]).not.toBe("NST"); // resumed from history, no new snapshot
  });

  it("is filtered by the connection's token, like Subscribe with the same token", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const t = await h.tokenWithRules(
      'component "watcher" { policy = "write" }\nkey_prefix "pub/" { policy = "read" }',
    );
    const admin = h.connect(h.management);
    await admin.put("pub/a", "1");
    await admin.put("secret/a", "2");
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1", token: t.secret });
    // The request's own token field is not what counts: the connection's token is.
    const sub = comp.subscribe("kv", { topic: "TOPIC_KV", wildcard: true, token: h.management! });
    const plain = h.connect(t.secret).subscribe({ topic: "TOPIC_KV", wildcard: true });
    await Promise.all([snapshotDone(comp, sub), plain.snapshotDone()]);
    await admin.put("secret/b", "3");
    const last = await admin.put("pub/b", "4");
    await plain.until((w) => w.changes.some((l) => l.endsWith(`@${last}`)), "pub/b");
    await until(comp, sub, () => sub.changes.some((l) => l.endsWith(`@${last}`)), "pub/b");
    expect(sub.changes).toEqual(plain.changes);
    expect(sub.lines.join(" ")).not.toContain("secret");
  });

  it("several subscriptions share the connection with events; unsubscribe ends one with an OK frame", async () => {
    const h = await Harness.start();
    const admin = h.connect();
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1" });
    const a = comp.subscribe("a", { topic: "TOPIC_KV", key: "a" });
    const b = comp.subscribe("b", { topic: "TOPIC_KV", key: "b" });
    await Promise.all([snapshotDone(comp, a), snapshotDone(comp, b)]);
    comp.unsubscribe("a");
    await until(comp, a, () => a.ended !== undefined, "the end frame");
    expect(a.ended!.code).toBe(Status.OK);
    const ib = await admin.put("b", "1");
    await admin.put("a", "1");
    await until(comp, b, () => b.changes.includes(`kv set b=1@${ib}`), "b=1");
    expect(a.changes.filter((l) => l.startsWith("kv"))).toEqual([]);
    // The connection still routes events.
    expect((await comp.request({ name: "watcher", id: "w1" })).status_code).toBe(Status.OK);
    expect(comp.status).toBeUndefined();
  });

  it("a connection's subscriptions are limited like Subscribe streams per connection", async () => {
    const h = await Harness.start({ maxSubscriptionsPerConnection: 2 });
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1" });
    const a = comp.subscribe("a", { topic: "TOPIC_KV", key: "a" });
    const b = comp.subscribe("b", { topic: "TOPIC_KV", key: "b" });
    await Promise.all([snapshotDone(comp, a), snapshotDone(comp, b)]);
    const c = comp.subscribe("c", { topic: "TOPIC_KV", key: "c" });
    await until(comp, c, () => c.ended !== undefined, "the refusal");
    expect(c.ended!.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(comp.status).toBeUndefined();
  });

  it("a bad subscription ends with its own error frame; the connection stays up", async () => {
    const h = await Harness.start();
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1" });
    const bad = comp.subscribe("bad", { topic: "TOPIC_KV", key: "" });
    await until(comp, bad, () => bad.ended !== undefined, "the end frame");
    expect(bad.ended!.code).toBe(Status.INVALID_ARGUMENT);
    const ok = comp.subscribe("ok", { topic: "TOPIC_KV", wildcard: true });
    await snapshotDone(comp, ok);
    const dup = comp.subscribe("ok", { topic: "TOPIC_KV", wildcard: true });
    await until(comp, dup, () => dup.ended !== undefined, "the duplicate's end frame");
    expect(dup.ended!.code).toBe(Status.INVALID_ARGUMENT);
    expect(comp.status).toBeUndefined();
  });

  it("an index ahead of the store waits for it, like Subscribe", async () => {
    const h = await Harness.start();
    const admin = h.connect();
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1" });
    const now = await admin.put("x", "1");
    const sub = comp.subscribe("ahead", { topic: "TOPIC_KV", wildcard: true, index: now + 1 });
    const plain = admin.subscribe({ topic: "TOPIC_KV", wildcard: true, index: now + 1 });
    await admin.put("y", "1");
    const last = await admin.put("z", "1");
    await plain.until((w) => w.changes.some((l) => l.endsWith(`@${last}`)), "z");
    await until(comp, sub, () => sub.changes.some((l) => l.endsWith(`@${last}`)), "z");
    expect(sub.changes).toEqual(plain.changes);
    expect(sub.ended).toBeUndefined();
  });

  it("an index the store never reaches ends OUT_OF_RANGE, like Subscribe", async () => {
    const h = await Harness.start();
    const admin = h.connect();
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1" });
    const sub = comp.subscribe("ahead", { topic: "TOPIC_KV", wildcard: true, index: 1_000_000 });
    const plain = admin.subscribe({ topic: "TOPIC_KV", wildcard: true, index: 1_000_000 });
    const s = await plain.end(10_000);
    await comp.until(() => sub.ended !== undefined, "the end frame", 10_000);
    expect(sub.ended!.code).toBe(s.code);
    expect(s.code).toBe(Status.OUT_OF_RANGE);
  });

  it("an unsubscribe while the subscription waits to open cancels it; its id is taken meanwhile", async () => {
    const h = await Harness.start();
    const admin = h.connect();
    const comp = await ComponentClient.connect(h.address, { name: "watcher", id: "w1" });
    const now = await admin.put("x", "1");
    const sub = comp.subscribe("ahead", { topic: "TOPIC_KV", wildcard: true, index: now + 1 });
    // A second subscription with the same id is refused at once, and leaves the first alone.
    const dup = new Promise<number>((resolve) => {
      comp.call.on("data", (m) => {
        if (m.frame?.subscription_id === "ahead" && m.frame.ended) resolve(m.frame.status_code);
      });
    });
    comp.write({ subscribe: { id: "ahead", request: { topic: "TOPIC_KV", wildcard: true } } });
    expect(await dup).toBe(Status.INVALID_ARGUMENT);
    sub.ended = undefined;
    comp.unsubscribe("ahead");
    await admin.put("y", "1");
    await until(comp, sub, () => sub.ended !== undefined, "the end frame");
    expect(sub.ended!.code).toBe(Status.OK);
    expect(sub.messages).toEqual([]);
  });
});
