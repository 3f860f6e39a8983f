import { describe, expect, it } from "vitest";
import { eventually, startAclServer, startServer } from "./http-harness.js";

/*
 * Blocking queries (`?index=&wait=`) with plain fetch: when they return, with which index,
 * and what they cost the publisher.
 */

type KvRow = { Key: string; Value: string | null; ModifyIndex: number };
const value = (rows: KvRow[]) => Buffer.from(rows[0]!.Value ?? "", "base64").toString();

describe("blocking reads from a view", () => {
  it("return as soon as the result changes, with the new index and value", async () => {
    const api = await startServer();
    await api.put("/v1/kv/cfg/a", "one");
    const first = await api.get<KvRow[]>("/v1/kv/cfg/a");
    expect(first.status).toBe(200);
    expect(first.headers.get("x-consul-query-backend")).toBe("streaming");

    const blocked = api.get<KvRow[]>(`/v1/kv/cfg/a?index=${first.index}&wait=10s`);
    await eventually(() => api.server.httpServer!.stats().blockedReads === 1);
    // Commits elsewhere do not wake it.
    await api.put("/v1/kv/cfg/b", "other");
    await new Promise((r) => setTimeout(r, 50));
    expect(api.server.httpServer!.stats().blockedReads).toBe(1);
    const put = await api.put("/v1/kv/cfg/a", "two");
    expect(put.body).toBe(true);
    const woke = await blocked;
    expect(woke.status).toBe(200);
    expect(woke.index).toBeGreaterThan(first.index);
    expect(woke.index).toBe(woke.body[0]!.ModifyIndex);
    expect(value(woke.body)).toBe("two");
    expect(woke.ms).toBeLessThan(5_000);
  });

  it("return at `wait` with the same index and result when nothing changed", async () => {
    const api = await startServer();
    await api.put("/v1/kv/k", "v");
    const first = await api.get<KvRow[]>("/v1/kv/k");
    const r = await api.get<KvRow[]>(`/v1/kv/k?index=${first.index}&wait=300ms`);
    expect(r.status).toBe(200);
    expect(r.index).toBe(first.index);
    expect(r.body).toEqual(first.body);
    // At least the wait; at most the wait plus Consul's jitter (wait/16) and some slack.
    expect(r.ms).toBeGreaterThanOrEqual(290);
    expect(r.ms).toBeLessThan(300 + 300 / 16 + 250);
  });

  it("return at once when the index asked for is ahead of the result's (index reset)", async () => {
    const api = await startServer();
    await api.put("/v1/kv/k", "v");
    const first = await api.get<KvRow[]>("/v1/kv/k");
    const r = await api.get<KvRow[]>(`/v1/kv/k?index=${first.index + 1000}&wait=10s`);
    expect(r.status).toBe(200);
    expect(r.index).toBe(first.index);
    expect(r.ms).toBeLessThan(1_000);
    // index=0 (or none) never blocks.
    expect((await api.get(`/v1/kv/k?index=0&wait=10s`)).ms).toBeLessThan(1_000);
  });

  it("on a missing key block on the 404 and return when the key appears", async () => {
    const api = await startServer();
    const first = await api.get("/v1/kv/later");
    expect(first.status).toBe(404);
    expect(first.index).toBeGreaterThan(0);
    const blocked = api.get<KvRow[]>(`/v1/kv/later?index=${first.index}&wait=10s`);
    await eventually(() => api.server.httpServer!.stats().blockedReads === 1);
    await api.put("/v1/kv/later", "now");
    const r = await blocked;
    expect(r.status).toBe(200);
    expect(value(r.body)).toBe("now");
  });

  it("share one view and one subscription among many identical requests", async () => {
    const api = await startServer();
    await api.register("n1", "web", { status: "passing" });
    const first = await api.get<unknown[]>("/v1/health/service/web");
    expect(first.body).toHaveLength(1);
    const { publisher } = api.server;
    expect(publisher.subscriptionCount).toBe(1);

    const n = 1_000;
    const blocked = Array.from({ length: n }, () =>
      api.get<{ Checks: { Status: string }[] }[]>(`/v1/health/service/web?index=${first.index}&wait=20s`),
    );
    await eventually(() => api.server.httpServer!.stats().blockedReads === n, 15_000);
    expect(publisher.subscriptionCount).toBe(1);
    expect(api.server.httpServer!.stats().views).toBe(1);
    // The same query with a filter is still the same view.
    const passing = api.get(`/v1/health/service/web?passing&index=${first.index}&wait=20s`);
    await eventually(() => api.server.httpServer!.stats().blockedReads === n + 1);
    expect(publisher.subscriptionCount).toBe(1);

    await api.register("n1", "web", { status: "critical" });
    const answers = await Promise.all(blocked);
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.index).toBeGreaterThan(first.index);
      expect(a.body[0]!.Checks[0]!.Status).toBe("critical");
    }
    expect(new Set(answers.map((a) => a.index)).size).toBe(1);
    expect((await passing).body).toEqual([]);
    expect(publisher.subscriptionCount).toBe(1);
  });

  it("keep one view per token: the same query under two tokens is two views", async () => {
    const { api, root } = await startAclServer();
    const policy = await api.put<{ ID: string }>(
      "/v1/acl/policy",
      { Name: "read-all", Rules: 'key_prefix "" { policy = "read" }' },
      root,
    );
    const token = await api.put<{ SecretID: string }>(
      "/v1/acl/token",
      { Policies: [{ ID: policy.body.ID }] },
      root,
    );
    await api.put("/v1/kv/shared", "v", root);
    expect((await api.get("/v1/kv/shared", root)).status).toBe(200);
    expect((await api.get("/v1/kv/shared", root)).status).toBe(200);
    expect(api.server.httpServer!.stats().views).toBe(1);
    expect((await api.get("/v1/kv/shared", token.body.SecretID)).status).toBe(200);
    expect(api.server.httpServer!.stats().views).toBe(2);
  });

  it("are answered when the server stops, and leave no view behind when idle", async () => {
    const api = await startServer();
    await api.put("/v1/kv/k", "v");
    const first = await api.get("/v1/kv/k");
    const blocked = api.get(`/v1/kv/k?index=${first.index}&wait=30s`);
    await eventually(() => api.server.httpServer!.stats().blockedReads === 1);
    // Idle views go; a view in use stays.
    expect(api.server.httpServer!.sweepViews(performance.now() + 3_600_000)).toBe(0);
    const stopped = api.server.stop();
    const r = await blocked;
    expect(r.status).toBe(200);
    expect(r.index).toBe(first.index);
    expect(r.ms).toBeLessThan(5_000);
    await stopped;
    expect(api.server.publisher.subscriptionCount).toBe(0);
  });

  it("evict views nobody uses, closing their subscriptions", async () => {
    const api = await startServer();
    await api.put("/v1/kv/a", "1");
    await api.get("/v1/kv/a");
    await api.get("/v1/kv/?recurse");
    expect(api.server.publisher.subscriptionCount).toBe(2);
    expect(api.server.httpServer!.sweepViews(performance.now())).toBe(0);
    expect(api.server.httpServer!.sweepViews(performance.now() + 3_600_000)).toBe(2);
    expect(api.server.publisher.subscriptionCount).toBe(0);
    expect(api.server.httpServer!.stats().views).toBe(0);
    // The next read opens a fresh one.
    expect((await api.get("/v1/kv/a")).status).toBe(200);
    expect(api.server.publisher.subscriptionCount).toBe(1);
  });

  it("stop waiting when the client goes away", async () => {
    const api = await startServer();
    await api.put("/v1/kv/k", "v");
    const first = await api.get("/v1/kv/k");
    const ac = new AbortController();
    const blocked = api.fetch("GET", `/v1/kv/k?index=${first.index}&wait=30s`, { signal: ac.signal });
    await eventually(() => api.server.httpServer!.stats().blockedReads === 1);
    ac.abort();
    await expect(blocked).rejects.toThrow();
    await eventually(() => api.server.httpServer!.stats().blockedReads === 0);
  });

  it("see their own writes at once (a read right after a write reflects it)", async () => {
    const api = await startServer();
    await api.put("/v1/kv/rw", "0");
    await api.get("/v1/kv/rw");
    for (let i = 1; i <= 20; i++) {
      await api.put("/v1/kv/rw", String(i));
      expect(value((await api.get<KvRow[]>("/v1/kv/rw")).body)).toBe(String(i));
    }
  });

  it("of a revoked token end with 403 ACL not found instead of waiting out", async () => {
    const { api, root } = await startAclServer();
    const policy = await api.put<{ ID: string }>(
      "/v1/acl/policy",
      { Name: "read-k", Rules: 'key "k" { policy = "read" }' },
      root,
    );
    const token = await api.put<{ AccessorID: string; SecretID: string }>(
      "/v1/acl/token",
      { Policies: [{ ID: policy.body.ID }] },
      root,
    );
    await api.put("/v1/kv/k", "v", root);
    const first = await api.get("/v1/kv/k", token.body.SecretID);
    expect(first.status).toBe(200);
    const blocked = api.get<{ error: string }>(`/v1/kv/k?index=${first.index}&wait=30s`, token.body.SecretID);
    await eventually(() => api.server.httpServer!.stats().blockedReads === 1);
    await api.call("DELETE", `/v1/acl/token/${token.body.AccessorID}`, { token: root });
    const r = await blocked;
    expect(r.status).toBe(403);
    expect(r.body.error).toBe("ACL not found");
    expect(r.ms).toBeLessThan(5_000);
  });
});

describe("blocking reads on table indexes", () => {
  it("catalog nodes wake on node changes only, with the table's index", async () => {
    const api = await startServer();
    await api.register("n1", "web");
    const first = await api.get<{ Node: string }[]>("/v1/catalog/nodes");
    expect(first.headers.get("x-consul-query-backend")).toBe("blocking-query");
    expect(first.body.map((n) => n.Node)).toEqual(["n1"]);
    const blocked = api.get<{ Node: string }[]>(`/v1/catalog/nodes?index=${first.index}&wait=10s`);
    await eventually(() => api.server.httpServer!.stats().blockedReads === 1);
    await api.put("/v1/kv/noise", "x");
    await new Promise((r) => setTimeout(r, 50));
    expect(api.server.httpServer!.stats().blockedReads).toBe(1);
    await api.register("n2", "db");
    const r = await blocked;
    expect(r.body.map((n) => n.Node)).toEqual(["n1", "n2"]);
    expect(r.index).toBeGreaterThan(first.index);
    // Unchanged: the wait runs out with the same index.
    const same = await api.get(`/v1/catalog/nodes?index=${r.index}&wait=200ms`);
    expect(same.index).toBe(r.index);
    expect(same.ms).toBeGreaterThanOrEqual(190);
  });

  it("of a revoked token end with 403 at once, and ACL changes that keep it valid do not wake them", async () => {
    const { api, root } = await startAclServer();
    const policy = await api.put<{ ID: string }>(
      "/v1/acl/policy",
      { Name: "nodes", Rules: 'node_prefix "" { policy = "read" }' },
      root,
    );
    const token = await api.put<{ AccessorID: string; SecretID: string }>(
      "/v1/acl/token",
      { Policies: [{ ID: policy.body.ID }] },
      root,
    );
    await api.register("n1", "web", { token: root });
    const first = await api.get<{ Node: string }[]>("/v1/catalog/nodes", token.body.SecretID);
    expect(first.body.map((n) => n.Node)).toEqual(["n1"]);
    const blocked = api.get<{ error: string }>(
      `/v1/catalog/nodes?index=${first.index}&wait=30s`,
      token.body.SecretID,
    );
    await eventually(() => api.server.httpServer!.stats().blockedReads === 1);
    await api.put("/v1/acl/policy", { Name: "unrelated", Rules: "" }, root);
    await new Promise((r) => setTimeout(r, 50));
    expect(api.server.httpServer!.stats().blockedReads).toBe(1);
    await api.call("DELETE", `/v1/acl/token/${token.body.AccessorID}`, { token: root });
    const r = await blocked;
    expect(r.status).toBe(403);
    expect(r.body.error).toBe("ACL not found");
    expect(r.ms).toBeLessThan(5_000);
  });

  it("health by state wakes when a check changes state", async () => {
    const api = await startServer();
    await api.register("n1", "web", { status: "passing" });
    const first = await api.get<unknown[]>("/v1/health/state/critical");
    expect(first.body).toEqual([]);
    const blocked = api.get<{ CheckID: string }[]>(`/v1/health/state/critical?index=${first.index}&wait=10s`);
    await eventually(() => api.server.httpServer!.stats().blockedReads === 1);
    await api.register("n1", "web", { status: "critical" });
    expect((await blocked).body.map((c) => c.CheckID)).toEqual(["web-check"]);
  });
});

describe("blocking parameters", () => {
  it("refuse malformed values with 400 and a JSON message", async () => {
    const api = await startServer();
    await api.put("/v1/kv/k", "v");
    for (const q of [
      "wait=abc",
      "wait=10",
      "wait=-1s",
      "index=-1",
      "index=abc",
      "index=1.5",
      "stale&consistent",
    ]) {
      const r = await api.get<{ error: string; field: string }>(`/v1/kv/k?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.headers.get("content-type")).toMatch(/^application\/json/);
      expect(r.headers.get("x-sluice-error")).toBe("BadRequestError");
      expect(r.body.error).toEqual(expect.any(String));
    }
    const state = await api.get<{ field: string }>("/v1/health/state/bogus");
    expect(state.status).toBe(400);
    expect(state.body.field).toBe("state");
    expect((await api.get("/v1/health/service/web?passing=maybe")).status).toBe(400);
    // Go durations that are fine.
    for (const w of ["1m30s", "250ms", "0", "1.5s"])
      expect((await api.get(`/v1/kv/k?wait=${w}`)).status).toBe(200);
  });
});
