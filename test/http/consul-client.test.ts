import type Consul from "consul";
import { describe, expect, it } from "vitest";
import { startServer } from "./http-harness.js";

/*
 * The real Consul client from npm (`consul`) against Sluice's HTTP API, unchanged: catalog,
 * health, KV with CAS, ACL management, and its `watch` helper following blocking queries.
 */

type Row = Record<string, unknown>;
/** The npm client's results, seen as plain JSON rows. */
const row = (x: unknown): Row => x as Row;
const rows = (x: unknown): Row[] => x as Row[];

/**
 * An endpoint the npm client has no method for (its ACL support stops at bootstrap), sent
 * through the client's own request pipeline: its transport, its token header, its errors.
 */
function consulCall<T>(
  consul: Consul,
  method: "GET" | "PUT" | "DELETE",
  path: string,
  body?: object,
): Promise<T> {
  type Request = { err?: Error; res: { body: unknown } };
  type Next = (err?: unknown, value?: unknown, result?: unknown) => void;
  const client = consul as unknown as Record<
    string,
    (opts: object, after: (r: Request, next: Next) => void) => Promise<T>
  >;
  const fn = { GET: "_get", PUT: "_put", DELETE: "_delete" }[method];
  const token = (consul as unknown as { _defaults?: { token?: string } })._defaults?.token;
  return client[fn]!.call(
    consul,
    {
      name: `sluice.test ${method} ${path}`,
      path,
      ...(body ? { type: "json", body } : {}),
      ...(token ? { headers: { "x-consul-token": token } } : {}),
    },
    (request, next) => (request.err ? next(request.err) : next(false, undefined, request.res.body)),
  );
}

/** The status code of a rejected client call. */
async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    return (err as { statusCode?: number; response?: { statusCode: number } }).response?.statusCode ?? -1;
  }
  return 200;
}

describe("the npm Consul client against Sluice", () => {
  it("registers and deregisters services and reads them back from catalog and health", async () => {
    const api = await startServer();
    const consul = api.consul();
    await consul.catalog.register({
      node: "node-1",
      address: "10.0.0.1",
      service: { id: "web-1", service: "web", tags: ["v1", "blue"], port: 8080 },
      check: { checkid: "web-1-alive", name: "alive", status: "passing", serviceid: "web-1" },
    });
    await consul.catalog.register({
      node: "node-2",
      address: "10.0.0.2",
      service: { id: "web-2", service: "web", tags: ["v1"], port: 8080 },
      check: { checkid: "web-2-alive", name: "alive", status: "critical", serviceid: "web-2" },
    });
    await consul.catalog.register({
      node: "node-2",
      address: "10.0.0.2",
      service: { service: "db", port: 5432 },
    });

    expect(await consul.catalog.service.list()).toEqual({ db: [], web: ["v1", "blue"] });
    const nodes = rows(await consul.catalog.service.nodes("web"));
    expect(nodes.map((n) => [n.Node, n.ServiceID, n.ServicePort, n.ServiceTags])).toEqual([
      ["node-1", "web-1", 8080, ["v1", "blue"]],
      ["node-2", "web-2", 8080, ["v1"]],
    ]);
    const blue = rows(await consul.catalog.service.nodes({ service: "web", tag: "blue" }));
    expect(blue.map((n) => n.ServiceID)).toEqual(["web-1"]);
    expect(rows(await consul.catalog.node.list()).map((n) => n.Node)).toEqual(["node-1", "node-2"]);
    const node2 = (await consul.catalog.node.services("node-2")) as {
      Node: Row;
      Services: Record<string, Row>;
    };
    expect(node2.Node.Address).toBe("10.0.0.2");
    expect(Object.keys(node2.Services).sort()).toEqual(["db", "web-2"]);

    const all = (await consul.health.service("web")) as { Node: Row; Service: Row; Checks: Row[] }[];
    expect(all.map((e) => [e.Node.Node, e.Service.ID, e.Checks.map((c) => c.Status)])).toEqual([
      ["node-1", "web-1", ["passing"]],
      ["node-2", "web-2", ["critical"]],
    ]);
    const passing = (await consul.health.service({ service: "web", passing: true })) as { Service: Row }[];
    expect(passing.map((e) => e.Service.ID)).toEqual(["web-1"]);
    const checks = rows(await consul.health.checks("web"));
    expect(checks.map((c) => [c.CheckID, c.ServiceName, c.Status])).toEqual([
      ["web-1-alive", "web", "passing"],
      ["web-2-alive", "web", "critical"],
    ]);
    expect(rows(await consul.health.node("node-2")).map((c) => c.CheckID)).toEqual(["web-2-alive"]);
    expect(rows(await consul.health.state("critical")).map((c) => c.CheckID)).toEqual(["web-2-alive"]);

    await consul.catalog.deregister({ node: "node-2", serviceid: "web-2" });
    expect(((await consul.health.service("web")) as { Service: Row }[]).map((e) => e.Service.ID)).toEqual([
      "web-1",
    ]);
    await consul.catalog.deregister("node-2");
    expect(await consul.catalog.service.list()).toEqual({ web: ["v1", "blue"] });
    expect(rows(await consul.catalog.node.list()).map((n) => n.Node)).toEqual(["node-1"]);
  });

  it("gets, sets and deletes keys, lists them with recurse, keys and separator, and honours CAS", async () => {
    const api = await startServer();
    const consul = api.consul();
    for (const [k, v] of [
      ["app/config/db", "postgres"],
      ["app/config/cache", "redis"],
      ["app/name", "shop"],
      ["other", "x"],
    ] as const) {
      expect(await consul.kv.set(k, v)).toBe(true);
    }
    const one = row(await consul.kv.get("app/name"));
    expect(one).toMatchObject({ Key: "app/name", Value: "shop", Flags: 0 });
    expect(await consul.kv.get("missing")).toBeUndefined();

    const tree = rows(await consul.kv.get({ key: "app/", recurse: true }));
    expect(tree.map((e) => [e.Key, e.Value])).toEqual([
      ["app/config/cache", "redis"],
      ["app/config/db", "postgres"],
      ["app/name", "shop"],
    ]);
    expect(await consul.kv.keys("app/")).toEqual(["app/config/cache", "app/config/db", "app/name"]);
    expect(await consul.kv.keys({ key: "app/", separator: "/" })).toEqual(["app/config/", "app/name"]);
    expect(await consul.kv.keys({ key: "", separator: "/" })).toEqual(["app/", "other"]);
    const raw: unknown = await consul.kv.get({ key: "app/name", raw: true });
    expect(Buffer.from(raw as Buffer).toString()).toBe("shop");

    // CAS: the current ModifyIndex wins once; a stale one answers false and changes nothing.
    // (The npm client turns a `false` body into undefined: its pipeline drops falsy results.)
    const modify = one.ModifyIndex as number;
    expect(await consul.kv.set({ key: "app/name", value: "shop2", cas: modify })).toBe(true);
    expect(await consul.kv.set({ key: "app/name", value: "shop3", cas: modify })).toBeFalsy();
    expect((await api.put(`/v1/kv/app/name?cas=${modify}`, "shop3")).body).toBe(false);
    expect(row(await consul.kv.get("app/name")).Value).toBe("shop2");
    // cas=0: only if the key does not exist yet.
    expect(await consul.kv.set({ key: "fresh", value: "1", cas: 0 })).toBe(true);
    expect(await consul.kv.set({ key: "fresh", value: "2", cas: 0 })).toBeFalsy();
    // Flags round-trip.
    await consul.kv.set({ key: "flagged", value: "v", flags: 42 });
    expect(row(await consul.kv.get("flagged")).Flags).toBe(42);

    const current = row(await consul.kv.get("fresh")).ModifyIndex as number;
    expect(await consul.kv.del({ key: "fresh", cas: current + 100 })).toBeFalsy();
    expect(row(await consul.kv.get("fresh")).Value).toBe("1");
    expect(await consul.kv.del({ key: "fresh", cas: current })).toBe(true);
    expect(await consul.kv.get("fresh")).toBeUndefined();
    expect(await consul.kv.del({ key: "app/", recurse: true })).toBe(true);
    expect(await consul.kv.get({ key: "app/", recurse: true })).toBeUndefined();
    expect(await consul.kv.keys("")).toEqual(["flagged", "other"]);
  });

  it("bootstraps ACLs, creates a policy and a token, and the token reads and writes what its rules allow", async () => {
    const api = await startServer({ aclEnabled: true, aclDefaultPolicy: "deny" });
    const anon = api.consul();
    const boot = (await anon.acl.bootstrap()) as Row;
    expect(boot.SecretID).toEqual(expect.any(String));
    expect(boot.Policies).toEqual([
      { ID: "00000000-0000-0000-0000-000000000001", Name: "global-management" },
    ]);
    // Only once.
    expect(await statusOf(anon.acl.bootstrap())).toBe(403);

    const admin = api.consul(boot.SecretID as string);
    const policy = await consulCall<Row>(admin, "PUT", "/acl/policy", {
      Name: "app-rw",
      Description: "app keys",
      Rules:
        'key_prefix "app/" { policy = "write" }\nservice_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }',
    });
    expect(policy).toMatchObject({ Name: "app-rw", Description: "app keys", ID: expect.any(String) });
    expect((await consulCall<Row>(admin, "GET", `/acl/policy/${policy.ID}`)).Rules).toContain("app/");
    expect((await consulCall<Row[]>(admin, "GET", "/acl/policies")).map((p) => p.Name).sort()).toEqual([
      "app-rw",
      "global-management",
    ]);
    const token = await consulCall<Row>(admin, "PUT", "/acl/token", {
      Description: "app token",
      Policies: [{ Name: "app-rw" }],
    });
    expect(token.Policies).toEqual([{ ID: policy.ID, Name: "app-rw" }]);
    const listed = await consulCall<Row[]>(admin, "GET", "/acl/tokens");
    expect(listed.map((t) => t.AccessorID)).toContain(token.AccessorID);

    const app = api.consul(token.SecretID as string);
    expect((await consulCall<Row>(app, "GET", "/acl/token/self")).AccessorID).toBe(token.AccessorID);
    expect(await app.kv.set("app/a", "1")).toBe(true);
    expect(row(await app.kv.get("app/a")).Value).toBe("1");
    expect(await statusOf(app.kv.set("secret/x", "1"))).toBe(403);
    expect(await statusOf(app.kv.get("secret/x"))).toBe(403);
    expect(await statusOf(anon.kv.get("app/a"))).toBe(403);
    // Listings are filtered, not refused.
    await admin.kv.set("secret/y", "2");
    expect(await app.kv.keys("")).toEqual(["app/a"]);
    expect(await statusOf(consulCall(app, "GET", "/acl/policies"))).toBe(403);

    // Updating the token to drop its policy takes its rights away at once.
    await consulCall(admin, "PUT", `/acl/token/${token.AccessorID}`, {
      Description: "no rights",
      Policies: [],
    });
    expect(await statusOf(app.kv.get("app/a"))).toBe(403);
    expect(await consulCall<boolean>(admin, "DELETE", `/acl/token/${token.AccessorID}`)).toBe(true);
    expect(await statusOf(app.kv.get("app/a"))).toBe(403);
    expect(await statusOf(consulCall(admin, "GET", `/acl/token/${token.AccessorID}`))).toBe(404);
    expect(await consulCall<boolean>(admin, "DELETE", `/acl/policy/${policy.ID}`)).toBe(true);
    expect(await statusOf(consulCall(admin, "GET", `/acl/policy/${policy.ID}`))).toBe(404);
  });

  it("watch sees every change of a key, in order, through blocking queries", async () => {
    const api = await startServer();
    const consul = api.consul();
    await consul.kv.set("cfg/flag", "v0");
    const seen: (string | undefined)[] = [];
    const indexes: bigint[] = [];
    const watch = consul.watch({ method: consul.kv.get, options: { key: "cfg/flag", wait: "5s" } as never });
    watch.on("change", (data: Row | undefined, res: { headers: Record<string, string> }) => {
      seen.push(data?.Value as string | undefined);
      indexes.push(BigInt(res.headers["x-consul-index"]!));
    });
    const errors: unknown[] = [];
    watch.on("error", (e: unknown) => errors.push(e));
    const waitSeen = async (n: number) => {
      const until = Date.now() + 5_000;
      while (seen.length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
      expect(seen.length).toBe(n);
    };
    await waitSeen(1);
    const expected: (string | undefined)[] = ["v0"];
    for (let i = 1; i <= 6; i++) {
      // Unrelated writes between changes must not show up as changes.
      await consul.kv.set(`cfg/other-${i}`, "noise");
      await consul.kv.set("cfg/flag", `v${i}`);
      expected.push(`v${i}`);
      await waitSeen(expected.length);
    }
    await consul.kv.del("cfg/flag");
    expected.push(undefined);
    await waitSeen(expected.length);
    await consul.kv.set("cfg/flag", "back");
    expected.push("back");
    await waitSeen(expected.length);
    watch.end();
    expect(seen).toEqual(expected);
    for (let i = 1; i < indexes.length; i++) expect(indexes[i]! > indexes[i - 1]!).toBe(true);
    expect(errors).toEqual([]);
  });

  it("watch sees every change of a service's health, in order", async () => {
    const api = await startServer();
    const consul = api.consul();
    const reg = (status: "passing" | "critical", port = 80) =>
      consul.catalog.register({
        node: "n1",
        address: "10.0.0.1",
        service: { id: "api-1", service: "api", port },
        check: { checkid: "api-1-check", name: "api", status, serviceid: "api-1" },
      });
    await reg("passing");
    type Entry = { Service: Row; Checks: Row[] };
    const seen: string[] = [];
    const watch = consul.watch({
      method: consul.health.service,
      options: { service: "api", wait: "5s" } as never,
    });
    watch.on("change", (data: Entry[]) => {
      seen.push(
        data
          .map((e) => `${e.Service.ID}:${e.Service.Port}:${e.Checks.map((c) => c.Status).join(",")}`)
          .join(" "),
      );
    });
    const errors: unknown[] = [];
    watch.on("error", (e: unknown) => errors.push(e));
    const waitSeen = async (n: number) => {
      const until = Date.now() + 5_000;
      while (seen.length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
      expect(seen.length).toBe(n);
    };
    await waitSeen(1);
    await reg("critical");
    await waitSeen(2);
    await consul.kv.set("noise", "x");
    await reg("critical", 81);
    await waitSeen(3);
    await consul.catalog.register({
      node: "n2",
      address: "10.0.0.2",
      service: { id: "api-2", service: "api", port: 90 },
    });
    await waitSeen(4);
    await consul.catalog.register({ node: "n3", address: "10.0.0.3", service: { service: "unrelated" } });
    await consul.catalog.deregister({ node: "n1", serviceid: "api-1" });
    await waitSeen(5);
    watch.end();
    expect(seen).toEqual([
      "api-1:80:passing",
      "api-1:80:critical",
      "api-1:81:critical",
      "api-1:81:critical api-2:90:",
      "api-2:90:",
    ]);
    expect(errors).toEqual([]);
  });
});
