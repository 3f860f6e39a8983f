import { describe, expect, it } from "vitest";
import { startAclServer, startServer } from "./http-harness.js";

/*
 * How the HTTP API refuses: status codes as Consul's API has them, JSON bodies with the
 * error's fields, and the error class in X-Sluice-Error. Asserted by status and class.
 */

type ErrorBody = { error: string } & Record<string, unknown>;

describe("refusals", () => {
  it("unknown path: 404 JSON naming the route", async () => {
    const api = await startServer();
    for (const [method, path] of [
      ["GET", "/v1/nope"],
      ["GET", "/"],
      ["GET", "/v1/kv"],
      ["DELETE", "/v1/catalog/nodes/extra"],
    ] as const) {
      const r = await api.call<ErrorBody>(method, path);
      expect(r.status, `${method} ${path}`).toBe(404);
      expect(r.headers.get("x-sluice-error")).toBe("NotFoundError");
      expect(r.body.error).toEqual(expect.any(String));
    }
  });

  it("known path, wrong method: 405 with Allow", async () => {
    const api = await startServer();
    const post = await api.call<ErrorBody>("POST", "/v1/kv/x");
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("DELETE, GET, HEAD, PUT");
    const get = await api.call<ErrorBody>("GET", "/v1/catalog/register");
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("PUT");
    expect(get.headers.get("x-sluice-error")).toBe("MethodNotAllowedError");
  });

  it("unknown token: 403 'ACL not found', from the header, a bearer token or ?token=", async () => {
    const { api } = await startAclServer();
    const bogus = "00000000-dead-beef-0000-000000000000";
    const answers = [
      await api.call<ErrorBody>("GET", "/v1/kv/x", { headers: { "X-Consul-Token": bogus } }),
      await api.call<ErrorBody>("GET", "/v1/kv/x", { headers: { Authorization: `Bearer ${bogus}` } }),
      await api.call<ErrorBody>("GET", `/v1/kv/x?token=${bogus}`),
      await api.call<ErrorBody>("PUT", "/v1/kv/x", { body: "v", token: bogus }),
      await api.call<ErrorBody>("GET", "/v1/catalog/nodes", { token: bogus }),
      await api.call<ErrorBody>("GET", "/v1/acl/token/self", { token: bogus }),
    ];
    for (const r of answers) {
      expect(r.status).toBe(403);
      expect(r.body.error).toBe("ACL not found");
      expect(r.headers.get("x-sluice-error")).toBe("TokenNotFoundError");
    }
  });

  it("missing permission: 403 with the resource and access named, and nothing written", async () => {
    const { api, root } = await startAclServer();
    const policy = await api.put<{ ID: string }>(
      "/v1/acl/policy",
      { Name: "web-only", Rules: 'service "web" { policy = "write" }\nnode_prefix "" { policy = "write" }' },
      root,
    );
    const token = await api.put<{ SecretID: string }>(
      "/v1/acl/token",
      { Policies: [{ ID: policy.body.ID }] },
      root,
    );
    const t = token.body.SecretID;

    const kv = await api.call<ErrorBody>("PUT", "/v1/kv/x", { body: "v", token: t });
    expect(kv.status).toBe(403);
    expect(kv.headers.get("x-sluice-error")).toBe("PermissionDeniedError");
    expect(kv.body).toMatchObject({ resource: "key", segment: "x", access: "write" });
    expect((await api.get("/v1/kv/x", root)).status).toBe(404);

    expect((await api.register("n1", "web", { token: t })).status).toBe(200);
    const db = await api.register("n1", "db", { token: t });
    expect(db.status).toBe(403);
    expect(db.body).toMatchObject({ resource: "service", segment: "db" });
    // ACL management needs acl:write; reading it acl:read.
    expect((await api.put("/v1/acl/policy", { Name: "p", Rules: "" }, t)).status).toBe(403);
    expect((await api.get("/v1/acl/policies", t)).status).toBe(403);
    expect((await api.get("/v1/acl/tokens", t)).status).toBe(403);
    // Reads the token may not make are filtered out of listings, not refused.
    await api.register("n1", "db", { token: root });
    const services = await api.get<Record<string, string[]>>("/v1/catalog/services", t);
    expect(services.status).toBe(200);
    expect(Object.keys(services.body)).toEqual(["web"]);
    expect((await api.get<unknown[]>("/v1/health/service/db", t)).body).toEqual([]);
  });

  it("ACL endpoints on a server without ACLs: 401 'ACL support disabled'", async () => {
    const api = await startServer();
    for (const [method, path] of [
      ["PUT", "/v1/acl/bootstrap"],
      ["PUT", "/v1/acl/policy"],
      ["GET", "/v1/acl/policies"],
      ["GET", "/v1/acl/token/self"],
    ] as const) {
      const r = await api.call<ErrorBody>(method, path, method === "PUT" ? { body: "{}" } : {});
      expect(r.status, path).toBe(401);
      expect(r.body.error).toBe("ACL support disabled");
    }
  });

  it("bad input: 400 with the field named, and nothing changes", async () => {
    const api = await startServer();
    const before = api.server.store.index;
    const cases: [string, string, string | object | undefined, string][] = [
      ["PUT", "/v1/catalog/register", "{not json", "body"],
      ["PUT", "/v1/catalog/register", "[1]", "body"],
      ["PUT", "/v1/catalog/register", { Address: "10.0.0.1" }, "Node"],
      [
        "PUT",
        "/v1/catalog/register",
        { Node: "n", Address: "a", Service: { Service: "s", Port: "80" } },
        "Service.Port",
      ],
      ["PUT", "/v1/catalog/deregister", {}, "Node"],
      ["PUT", "/v1/kv/", "v", "key"],
      ["DELETE", "/v1/kv/", undefined, "key"],
      ["PUT", "/v1/kv/x?cas=abc", "v", "cas"],
      ["PUT", "/v1/kv/x?flags=-1", "v", "flags"],
      ["PUT", "/v1/kv/x?acquire=abc", "v", "acquire"],
      ["DELETE", "/v1/kv/x?recurse&cas=1", undefined, "cas"],
      ["GET", "/v1/kv/", undefined, "key"],
      ["GET", "/v1/kv/x?dc=elsewhere", undefined, "dc"],
      ["GET", "/v1/health/service/web?filter=Service.Port%20%3D%3D%2080", undefined, "filter"],
    ];
    for (const [method, path, body, field] of cases) {
      const r = await api.call<ErrorBody>(method, path, body === undefined ? {} : { body });
      expect(r.status, `${method} ${path}`).toBe(400);
      expect(r.body.field, `${method} ${path}`).toBe(field);
    }
    // The store's own validation (a bad check status) is a 400 too.
    const status = await api.put<ErrorBody>("/v1/catalog/register", {
      Node: "n",
      Address: "a",
      Check: { CheckID: "c", Status: "sideways" },
    });
    expect(status.status).toBe(400);
    expect(status.headers.get("x-sluice-error")).toBe("ValidationError");
    expect(api.server.store.index).toBe(before);
  });

  it("a KV value above the store's limit: 413", async () => {
    const api = await startServer();
    const r = await api.call<ErrorBody>("PUT", "/v1/kv/big", { body: Buffer.alloc(512 * 1024 + 1) });
    expect(r.status).toBe(413);
    expect(r.body).toMatchObject({ limit: 512 * 1024 });
    expect((await api.get("/v1/kv/big")).status).toBe(404);
  });

  it("ACL objects that do not exist: 404; a second bootstrap: 403", async () => {
    const { api, root } = await startAclServer();
    expect((await api.get("/v1/acl/policy/nope", root)).status).toBe(404);
    expect((await api.get("/v1/acl/token/nope", root)).status).toBe(404);
    expect((await api.call("DELETE", "/v1/acl/role/nope", { token: root })).status).toBe(404);
    expect((await api.put("/v1/acl/policy/nope", { Name: "x", Rules: "" }, root)).status).toBe(404);
    const again = await api.put<ErrorBody>("/v1/acl/bootstrap");
    expect(again.status).toBe(403);
    expect(again.headers.get("x-sluice-error")).toBe("BootstrapDoneError");
    const bad = await api.put<ErrorBody>(
      "/v1/acl/policy",
      { Name: "bad", Rules: 'key "x" { policy = ' },
      root,
    );
    expect(bad.status).toBe(400);
    expect(bad.headers.get("x-sluice-error")).toBe("PolicyRulesError");
    const dup = await api.put<ErrorBody>("/v1/acl/policy", { Name: "global-management", Rules: "" }, root);
    expect(dup.status).toBe(409);
  });
});
