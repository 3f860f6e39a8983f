import { describe, expect, it } from "vitest";
import {
  BadRequestError,
  ChannelOwnerError,
  NotFoundError,
  QuotaExceededError,
} from "../../src/http/index.js";
import { ChannelRegistry } from "../../src/http/notification-channels.js";
import { eventually, type HttpApi, startAclServer, startServer } from "./http-harness.js";
import { b64, SseClient, type SseMessage } from "./sse-client.js";

/*
 * Notification channels: the registry's bookkeeping as pure logic (time passed in), then the
 * endpoints with real servers and the real `eventsource` client (POSTing through its custom
 * fetch): lifecycle, expiry, ownership, ACL checks, quotas, bad input, disconnects.
 */

type ErrorBody = { error: string } & Record<string, unknown>;

describe("ChannelRegistry (pure)", () => {
  it("counts quotas per owner, deduplicates, and gives quota back on close", () => {
    const r = new ChannelRegistry({ maxChannelsPerToken: 2, maxSubscriptionsPerToken: 3 });
    r.open("c1", "alice", ["kv:key:a", "kv:key:a", "kv:key:b"], 1000, 0);
    expect(r.usageBy("alice")).toEqual({ channels: 1, subscriptions: 2 });
    expect(r.add("c1", "kv:key:a")).toBe(false); // idempotent
    expect(r.add("c1", "kv:key:c")).toBe(true);
    expect(() => r.add("c1", "kv:key:d")).toThrow(QuotaExceededError);
    expect(() => r.open("c2", "alice", ["kv:key:e"], 1000, 0)).toThrow(QuotaExceededError);
    r.open("c2", "alice", [], 1000, 0);
    expect(() => r.open("c3", "alice", [], 1000, 0)).toThrow(
      expect.objectContaining({ quota: "channels", limit: 2 }),
    );
    // Another token has its own quota.
    r.open("c3", "bob", ["kv:key:a"], 1000, 0);
    expect(r.remove("c1", "kv:key:c")).toBe(true);
    expect(r.remove("c1", "kv:key:c")).toBe(false);
    expect(r.usageBy("alice")).toEqual({ channels: 2, subscriptions: 2 });
    r.close("c1");
    r.close("c2");
    expect(r.usageBy("alice")).toEqual({ channels: 0, subscriptions: 0 });
    expect(r.size).toBe(1);
    expect(r.subscriptionCount).toBe(1);
  });

  it("looks channels up for their owner only, and not after they expire", () => {
    const r = new ChannelRegistry();
    r.open("c1", "alice", ["kv:key:a"], 500, 1000);
    expect(r.lookup("c1", "alice", 1499).id).toBe("c1");
    expect(() => r.lookup("c1", "bob", 1499)).toThrow(ChannelOwnerError);
    expect(() => r.lookup("nope", "alice", 1499)).toThrow(NotFoundError);
    expect(r.expired(1499)).toEqual([]);
    expect(r.expired(1500)).toEqual(["c1"]);
    expect(() => r.lookup("c1", "alice", 1500)).toThrow(NotFoundError);
  });

  it("lifetimes: default 24 h, refused when not positive or above the maximum", () => {
    const r = new ChannelRegistry({ maxExpiresMs: 60_000 });
    expect(new ChannelRegistry().lifetime(undefined)).toBe(24 * 3600 * 1000);
    expect(r.lifetime(30_000)).toBe(30_000);
    for (const bad of [0, -1, 60_001, Number.NaN]) expect(() => r.lifetime(bad)).toThrow(BadRequestError);
  });
});

/** Opens a channel with the real client (POST through its fetch) and returns it after its `channel` event. */
async function openChannel(
  api: HttpApi,
  body: unknown,
  token?: string,
): Promise<{ c: SseClient; id: string; hello: SseMessage }> {
  const c = new SseClient(`${api.base}/v1/notifications`, { post: body, ...(token ? { token } : {}) });
  const hello = await c.next();
  expect(hello.type).toBe("channel");
  return { c, id: hello.data.id as string, hello };
}

const subs = (channel: string): string => `/v1/notifications/${channel}/subscriptions`;

describe("notification channels", () => {
  it("lifecycle: `channel` first, events labelled by subscription, add (idempotent) and remove", async () => {
    const api = await startServer();
    await api.put("/v1/kv/a", "1");
    const { c, id, hello } = await openChannel(api, {
      subscriptions: [{ topic: "kv", key: "a" }],
      expiresIn: "1h",
    });
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(hello.id).toBe(""); // channels are not resumable: no ids
    expect(hello.data.subscriptions).toEqual([{ id: "kv:key:a", topic: "kv", key: "a" }]);
    expect(Date.parse(hello.data.expiresAt) - Date.now()).toBeGreaterThan(3500_000);
    const [snap, end] = await c.take(2);
    expect(snap).toMatchObject({
      type: "update",
      data: { subscription: "kv:key:a", snapshot: true, events: [{ key: "a", row: { Value: b64("1") } }] },
    });
    expect(end).toMatchObject({ type: "snapshot-end", data: { subscription: "kv:key:a" } });

    // Add a service subscription; the same one again is the same subscription.
    for (let i = 0; i < 2; i++) {
      const put = await api.call("PUT", subs(id), { body: { topic: "service_health", key: "web" } });
      expect(put.status).toBe(200);
      expect(put.body).toEqual({ id: "service_health:key:web", topic: "service_health", key: "web" });
    }
    expect(api.server.httpServer!.stats().channelSubscriptions).toBe(2);
    expect(api.server.publisher.subscriptionCount).toBe(2);
    expect(await c.next()).toMatchObject({
      type: "snapshot-end",
      data: { subscription: "service_health:key:web" },
    });

    await api.register("n1", "web");
    await api.put("/v1/kv/a", "2");
    const [svc, kv] = await c.take(2);
    expect(svc).toMatchObject({
      type: "update",
      data: {
        subscription: "service_health:key:web",
        events: [{ op: "register", row: { Service: { ID: "web" } } }],
      },
    });
    expect(kv).toMatchObject({ data: { subscription: "kv:key:a", events: [{ row: { Value: b64("2") } }] } });

    // Remove the KV one (by body here; by query below for an unknown one): its events stop.
    const del = await api.call("DELETE", subs(id), { body: { topic: "kv", key: "a" } });
    expect(del.status).toBe(204);
    const again = await api.call<ErrorBody>("DELETE", `${subs(id)}?topic=kv&key=a`);
    expect(again.status).toBe(404);
    await api.put("/v1/kv/a", "3");
    await api.register("n2", "web");
    const next = await c.next();
    expect(next.data).toMatchObject({ subscription: "service_health:key:web", events: [{ op: "register" }] });
    expect(api.server.publisher.subscriptionCount).toBe(1);
    expect(api.server.httpServer!.stats()).toMatchObject({ channels: 1, channelSubscriptions: 1 });
  });

  it("expires when its time is up, idle or not, with `closed`", async () => {
    const api = await startServer();
    const started = performance.now();
    const { c } = await openChannel(api, {
      subscriptions: [{ topic: "kv", prefix: "x/" }],
      expiresIn: "300ms",
    });
    expect((await c.next()).type).toBe("snapshot-end");
    const closed = await c.next(3_000);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(closed).toMatchObject({ type: "closed", data: { reason: "expired", resume: false } });
    await eventually(() => api.server.httpServer!.stats().channels === 0);
    expect(api.server.publisher.subscriptionCount).toBe(0);
  });

  it("only its owner may change it; unknown channels are 404", async () => {
    const api = await startServer();
    const { id } = await openChannel(api, { subscriptions: [{ topic: "kv", key: "a" }] }, "alice-token");
    const body = { topic: "kv", key: "b" };
    for (const token of ["bob-token", undefined]) {
      const put = await api.call<ErrorBody>("PUT", subs(id), { body, ...(token ? { token } : {}) });
      expect(put.status).toBe(403);
      expect(put.headers.get("x-sluice-error")).toBe("ChannelOwnerError");
      const del = await api.call<ErrorBody>("DELETE", subs(id), {
        body: { topic: "kv", key: "a" },
        ...(token ? { token } : {}),
      });
      expect(del.status).toBe(403);
    }
    expect((await api.call("PUT", subs(id), { body, token: "alice-token" })).status).toBe(200);
    const unknown = await api.call<ErrorBody>("PUT", subs("no-such-channel"), { body, token: "alice-token" });
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get("x-sluice-error")).toBe("NotFoundError");
  });

  it("ACLs: every subscription is checked before the channel exists; one denied and nothing is made", async () => {
    const { api, root } = await startAclServer();
    const policy = await api.put<{ ID: string }>(
      "/v1/acl/policy",
      { Name: "app", Rules: 'key_prefix "app/" { policy = "read" }\nservice "web" { policy = "read" }' },
      root,
    );
    const token = await api.put<{ SecretID: string; AccessorID: string }>(
      "/v1/acl/token",
      { Policies: [{ ID: policy.body.ID }] },
      root,
    );
    const t = token.body.SecretID;
    const denied = await api.call<ErrorBody>("POST", "/v1/notifications", {
      token: t,
      body: {
        subscriptions: [
          { topic: "kv", key: "app/a" },
          { topic: "kv", key: "secret" },
        ],
      },
    });
    expect(denied.status).toBe(403);
    expect(denied.body).toMatchObject({ resource: "key", segment: "secret", access: "read" });
    expect(api.server.httpServer!.stats()).toMatchObject({ channels: 0, channelSubscriptions: 0 });
    expect(api.server.publisher.subscriptionCount).toBe(0);

    const bogus = await api.call<ErrorBody>("POST", "/v1/notifications", {
      token: "00000000-dead-beef-0000-000000000000",
      body: { subscriptions: [{ topic: "kv", key: "app/a" }] },
    });
    expect(bogus.status).toBe(403);
    expect(bogus.body.error).toBe("ACL not found");

    const { c, id } = await openChannel(api, { subscriptions: [{ topic: "kv", key: "app/a" }] }, t);
    const put = await api.call<ErrorBody>("PUT", subs(id), {
      token: t,
      body: { topic: "kv", key: "secret" },
    });
    expect(put.status).toBe(403);
    expect(api.server.httpServer!.stats().channelSubscriptions).toBe(1);

    // Revoking the token closes the channel and frees what it held.
    await c.next(); // snapshot-end
    await api.call("DELETE", `/v1/acl/token/${token.body.AccessorID}`, { token: root });
    const closed = await c.next();
    expect(closed).toMatchObject({
      type: "closed",
      data: { error: "SubscriptionForceClosedError", resume: false },
    });
    await eventually(() => api.server.httpServer!.stats().channels === 0);
  });

  it("per-token quotas on channels and subscriptions: 429 with a JSON body", async () => {
    const api = await startServer({ notificationChannelsPerToken: 2, notificationSubscriptionsPerToken: 3 });
    const one = await openChannel(api, { subscriptions: [{ topic: "kv", key: "a" }] }, "alice");
    await openChannel(api, { subscriptions: [{ topic: "kv", key: "b" }] }, "alice");
    const third = await api.call<ErrorBody>("POST", "/v1/notifications", {
      token: "alice",
      body: { subscriptions: [{ topic: "kv", key: "c" }] },
    });
    expect(third.status).toBe(429);
    expect(third.headers.get("content-type")).toMatch(/^application\/json/);
    expect(third.body).toMatchObject({ quota: "channels", limit: 2, used: 2 });
    // Quotas are per token.
    await openChannel(api, { subscriptions: [{ topic: "kv", key: "c" }] }, "bob");

    expect(
      (await api.call("PUT", subs(one.id), { token: "alice", body: { topic: "kv", key: "x" } })).status,
    ).toBe(200);
    const over = await api.call<ErrorBody>("PUT", subs(one.id), {
      token: "alice",
      body: { topic: "kv", key: "y" },
    });
    expect(over.status).toBe(429);
    expect(over.body).toMatchObject({ quota: "subscriptions", limit: 3 });
    // Re-adding one it has costs nothing.
    expect(
      (await api.call("PUT", subs(one.id), { token: "alice", body: { topic: "kv", key: "x" } })).status,
    ).toBe(200);

    // A disconnect gives the quota back.
    one.c.close();
    await eventually(() => api.server.httpServer!.stats().channels === 2);
    await openChannel(api, { subscriptions: [{ topic: "kv", key: "d" }] }, "alice");
  });

  it("bad input: 400 naming the field, and nothing is made", async () => {
    const api = await startServer();
    const cases: [unknown, string][] = [
      [{ subscriptions: [] }, "subscriptions"],
      [{}, "subscriptions"],
      [{ subscriptions: "kv" }, "subscriptions"],
      [{ subscriptions: [{ topic: "kv", key: "a" }], extra: 1 }, "extra"],
      [{ subscriptions: [{ topic: "kv", key: "a", colour: "red" }] }, "subscriptions[0].colour"],
      [{ subscriptions: [{ topic: "kv", key: "a" }], expiresIn: "-5s" }, "expiresIn"],
      [{ subscriptions: [{ topic: "kv", key: "a" }], expiresIn: "0s" }, "expiresIn"],
      [{ subscriptions: [{ topic: "kv", key: "a" }], expiresIn: 30000 }, "expiresIn"],
      [{ subscriptions: [{ topic: "kv", key: "a" }], expiresIn: "soon" }, "expiresIn"],
      [{ subscriptions: [{ topic: "kv", key: "a" }], expiresIn: "25h" }, "expiresIn"],
      [{ subscriptions: [{ topic: "nope", key: "a" }] }, "subscriptions[0].topic"],
      [{ subscriptions: [{ key: "a" }] }, "subscriptions[0].topic"],
      [{ subscriptions: [{ topic: "kv" }] }, "subject"],
      [{ subscriptions: [{ topic: "kv", key: "a", prefix: "b" }] }, "subject"],
    ];
    for (const [body, field] of cases) {
      const r = await api.call<ErrorBody>("POST", "/v1/notifications", { body: body as object });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.field, JSON.stringify(body)).toBe(field);
    }
    const wrongKind = await api.call<ErrorBody>("POST", "/v1/notifications", {
      body: { subscriptions: [{ topic: "service_health", prefix: "w" }] },
    });
    expect(wrongKind.status).toBe(400);
    expect(wrongKind.headers.get("x-sluice-error")).toBe("InvalidSubjectError");
    const notJson = await api.call<ErrorBody>("POST", "/v1/notifications", { body: "{nope" });
    expect(notJson.status).toBe(400);
    expect(api.server.httpServer!.stats().channels).toBe(0);

    const { id } = await openChannel(api, { subscriptions: [{ topic: "kv", key: "a" }] });
    for (const body of [{ topic: "kv" }, { topic: "kv", key: "a", more: true }, { topic: "kv", key: 3 }]) {
      const r = await api.call<ErrorBody>("PUT", subs(id), { body });
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
    expect((await api.call<ErrorBody>("DELETE", subs(id))).status).toBe(400);
    expect(api.server.httpServer!.stats().channelSubscriptions).toBe(1);
  });

  it("a client that goes away frees the channel, its subscriptions and its quota", async () => {
    const api = await startServer({ notificationChannelsPerToken: 1 });
    const { c } = await openChannel(api, {
      subscriptions: [
        { topic: "kv", prefix: "a/" },
        { topic: "service_list", wildcard: true },
      ],
    });
    await c.take(2);
    expect(api.server.httpServer!.stats()).toMatchObject({
      channels: 1,
      channelSubscriptions: 2,
      eventStreams: 1,
    });
    expect(api.server.publisher.subscriptionCount).toBe(2);
    c.close();
    await eventually(
      () =>
        api.server.httpServer!.stats().channels === 0 &&
        api.server.httpServer!.stats().eventStreams === 0 &&
        api.server.publisher.subscriptionCount === 0,
    );
    expect(api.server.httpServer!.stats().channelSubscriptions).toBe(0);
    await openChannel(api, { subscriptions: [{ topic: "kv", key: "z" }] });
  });

  it("shutdown ends channels at once with `closed`", async () => {
    const api = await startServer();
    const { c } = await openChannel(api, { subscriptions: [{ topic: "kv", key: "a" }] });
    await c.next();
    const started = performance.now();
    await api.server.stop();
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(await c.next()).toMatchObject({
      type: "closed",
      data: { error: "ShuttingDownError", resume: false },
    });
  });
});
