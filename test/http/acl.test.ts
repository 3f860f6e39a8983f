import { describe, expect, it } from "vitest";
import { startAclServer } from "./http-harness.js";

/* ACL management over HTTP: roles, tokens through roles, expiry, names, listings. */

type Policy = { ID: string; Name: string; Rules?: string };
type Role = { ID: string; Name: string; Policies: { ID: string; Name: string }[] };
type Token = {
  AccessorID: string;
  SecretID: string;
  Description: string;
  Roles: { ID: string; Name: string }[];
  ExpirationTime?: string;
};

describe("ACL management", () => {
  it("roles: create, read by ID and name, update, list, link to tokens, delete", async () => {
    const { api, root } = await startAclServer();
    const policy = (
      await api.put<Policy>(
        "/v1/acl/policy",
        { Name: "kv-read", Rules: 'key_prefix "" { policy = "read" }' },
        root,
      )
    ).body;
    const created = await api.put<Role>(
      "/v1/acl/role",
      { Name: "reader", Policies: [{ Name: "kv-read" }] },
      root,
    );
    expect(created.status).toBe(200);
    expect(created.body.Policies).toEqual([{ ID: policy.ID, Name: "kv-read" }]);
    const role = created.body;
    expect((await api.get<Role>(`/v1/acl/role/${role.ID}`, root)).body.Name).toBe("reader");
    expect((await api.get<Role>("/v1/acl/role/name/reader", root)).body.ID).toBe(role.ID);
    expect((await api.put("/v1/acl/role", { ID: "x", Name: "y" }, root)).status).toBe(400);

    const token = (
      await api.put<Token>("/v1/acl/token", { Description: "via role", Roles: [{ ID: role.ID }] }, root)
    ).body;
    expect(token.Roles).toEqual([{ ID: role.ID, Name: "reader" }]);
    await api.put("/v1/kv/a", "1", root);
    expect((await api.get("/v1/kv/a", token.SecretID)).status).toBe(200);

    // Dropping the role's policy takes the read away from the token at once.
    const updated = await api.put<Role>(`/v1/acl/role/${role.ID}`, { Name: "reader", Policies: [] }, root);
    expect(updated.body.Policies).toEqual([]);
    expect((await api.get("/v1/kv/a", token.SecretID)).status).toBe(403);
    expect((await api.put(`/v1/acl/role/${role.ID}`, { ID: "other", Name: "reader" }, root)).status).toBe(
      400,
    );

    expect((await api.get<Role[]>("/v1/acl/roles", root)).body.map((r) => r.Name)).toEqual(["reader"]);
    expect((await api.call("DELETE", `/v1/acl/role/${role.ID}`, { token: root })).body).toBe(true);
    expect((await api.get(`/v1/acl/role/${role.ID}`, root)).status).toBe(404);
    expect((await api.get<Token>(`/v1/acl/token/${token.AccessorID}`, root)).body.Roles).toEqual([]);
  });

  it("tokens: chosen IDs, expiry from ExpirationTTL, secrets only for acl:write, self, filters", async () => {
    const { api, root } = await startAclServer();
    const reader = (
      await api.put<Policy>("/v1/acl/policy", { Name: "acl-read", Rules: 'acl = "read"' }, root)
    ).body;
    const chosen = await api.put<Token>(
      "/v1/acl/token",
      {
        AccessorID: "11111111-2222-3333-4444-555555555555",
        SecretID: "66666666-7777-8888-9999-000000000000",
        Description: "chosen",
        Policies: [{ ID: reader.ID }],
        ExpirationTTL: "1h",
      },
      root,
    );
    expect(chosen.status).toBe(200);
    expect(chosen.body.AccessorID).toBe("11111111-2222-3333-4444-555555555555");
    const expires = Date.parse(chosen.body.ExpirationTime!);
    expect(expires).toBeGreaterThan(Date.now() + 3_500_000);
    expect(expires).toBeLessThan(Date.now() + 3_700_000);
    // The same AccessorID again is a conflict; a bad TTL a bad request.
    expect((await api.put("/v1/acl/token", { AccessorID: chosen.body.AccessorID }, root)).status).toBe(409);
    expect((await api.put("/v1/acl/token", { ExpirationTTL: "soon" }, root)).status).toBe(400);

    const secret = chosen.body.SecretID;
    const self = await api.get<Token>("/v1/acl/token/self", secret);
    expect(self.body).toMatchObject({ AccessorID: chosen.body.AccessorID, SecretID: secret });
    // acl:read sees tokens without their secrets; acl:write (the management token) sees them.
    const asReader = await api.get<Token[]>("/v1/acl/tokens", secret);
    expect(asReader.status).toBe(200);
    expect(new Set(asReader.body.map((t) => t.SecretID))).toEqual(new Set(["<hidden>"]));
    const mine = await api.get<Token>(`/v1/acl/token/${chosen.body.AccessorID}`, root);
    expect(mine.body.SecretID).toBe(secret);
    expect(
      (await api.get<Token[]>(`/v1/acl/tokens?policy=${reader.ID}`, root)).body.map((t) => t.Description),
    ).toEqual(["chosen"]);
    // The reader may not write.
    expect((await api.put("/v1/acl/token", { Description: "nope" }, secret)).status).toBe(403);

    // Update keeps the secret; the URL's ID must match the body's.
    const upd = await api.put<Token>(
      `/v1/acl/token/${chosen.body.AccessorID}`,
      { Description: "renamed" },
      root,
    );
    expect(upd.body).toMatchObject({ Description: "renamed", SecretID: secret });
    expect(
      (await api.put(`/v1/acl/token/${chosen.body.AccessorID}`, { AccessorID: "other" }, root)).status,
    ).toBe(400);

    // `?pretty` indents as Consul does.
    const pretty = await api.fetch("GET", "/v1/acl/token/self?pretty", { token: root });
    expect(await pretty.text()).toMatch(/^\{\n {4}"AccessorID"/);
  });
});
