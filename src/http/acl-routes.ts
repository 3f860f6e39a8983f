import type { FastifyInstance, FastifyRequest } from "fastify";
import {
  AclDisabledError,
  type Authorizer,
  type LinkRef,
  type ResolvedToken,
  requirePermission,
  type TokenInput,
} from "../acl/index.js";
import { ConflictError, queries, type StateRoot, type TableName } from "../state/index.js";
import { policyJson, policyStubJson, roleJson, tokenJson } from "./consul-json.js";
import { json, type Rendered, type RouteContext } from "./context.js";
import { BadRequestError, NotFoundError } from "./errors.js";
import { param, parseGoDuration, type QueryParams } from "./query-params.js";
import { type JsonObject, jsonBody, optBool, optObjectList, optString, reqString } from "./request-body.js";

/** ACL reads wait on all three ACL tables: a token's answer names its policies and roles. */
const ACL_TABLES: readonly TableName[] = ["aclPolicies", "aclRoles", "aclTokens"];

const idParam = (req: FastifyRequest): string => (req.params as { id: string }).id;

/** `[{ ID }|{ Name }]` links of a body field. */
function links(b: JsonObject, name: string): LinkRef[] | undefined {
  const list = optObjectList(b, name);
  return list?.map((l, i) => {
    const ID = optString(l, "ID", `${name}[${i}].ID`);
    const Name = optString(l, "Name", `${name}[${i}].Name`);
    if (!ID && !Name) throw new BadRequestError(`${name}[${i}]`, "needs an ID or a Name");
    return ID ? { ID } : { Name: Name! };
  });
}

/** A body's ID must match the URL's, when it gives one (Consul: "… in URL and payload do not match"). */
function sameId(b: JsonObject, name: string, id: string): void {
  const inBody = optString(b, name);
  if (inBody && inBody !== id) throw new BadRequestError(name, `${name} in URL and payload do not match`);
}

function tokenInput(b: JsonObject, accessor: string | undefined): TokenInput {
  const expirationTime = optString(b, "ExpirationTime");
  const ttl = optString(b, "ExpirationTTL");
  let expiresAt: number | undefined;
  if (expirationTime) {
    expiresAt = Date.parse(expirationTime);
    if (!Number.isFinite(expiresAt))
      throw new BadRequestError("ExpirationTime", `must be an RFC 3339 time, got "${expirationTime}"`);
  }
  let ttlMs: number | undefined;
  if (ttl) {
    ttlMs = parseGoDuration(ttl);
    if (ttlMs === undefined || ttlMs <= 0)
      throw new BadRequestError("ExpirationTTL", `must be a positive duration such as 1h, got "${ttl}"`);
  }
  if (expiresAt !== undefined && ttlMs !== undefined)
    throw new BadRequestError("ExpirationTTL", "cannot be given with ExpirationTime");
  const secret = optString(b, "SecretID");
  const description = optString(b, "Description");
  const local = optBool(b, "Local");
  const policies = links(b, "Policies");
  const roles = links(b, "Roles");
  return {
    ...(accessor ? { AccessorID: accessor } : {}),
    ...(secret ? { SecretID: secret } : {}),
    ...(description !== undefined ? { Description: description } : {}),
    ...(policies ? { Policies: policies } : {}),
    ...(roles ? { Roles: roles } : {}),
    ...(local !== undefined ? { Local: local } : {}),
    ...(expiresAt !== undefined ? { ExpirationTime: expiresAt } : {}),
    ...(ttlMs !== undefined ? { ExpirationTTLms: ttlMs } : {}),
  };
}

/**
 * The ACL endpoints of Consul's HTTP API: bootstrap, and policies, roles and tokens (create,
 * read, update, delete, list; by name where Consul has it). Management needs acl:write,
 * reads acl:read; `token/self` only a valid token. On a server without ACLs every one of
 * them answers 401 "ACL support disabled", as Consul's do. Reads block on the ACL tables'
 * index.
 */
export function aclRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { admin } = ctx.deps;
  const root = (): StateRoot => ctx.deps.store.root;

  const enabled = (): void => {
    if (!ctx.aclEnabled) throw new AclDisabledError();
  };
  /** Checks the request's token for acl:`action`; returns its resolution. */
  const need = async (req: FastifyRequest, action: "read" | "write"): Promise<ResolvedToken> => {
    enabled();
    const resolved = await ctx.resolve(req);
    requirePermission(resolved.authorizer, "acl", "", action);
    return resolved;
  };
  const readAcl = (authz: Authorizer) => requirePermission(authz, "acl", "", "read");
  const read = (
    req: FastifyRequest,
    reply: Parameters<RouteContext["serveTables"]>[1],
    render: (root: StateRoot, authz: Authorizer, resolved: ResolvedToken, pretty: boolean) => Rendered,
    /** null: any valid token may read (token/self). */
    authorize: ((authz: Authorizer) => void) | null = readAcl,
  ) => {
    enabled();
    return ctx.serveTables(req, reply, { tables: ACL_TABLES, ...(authorize ? { authorize } : {}), render });
  };
  const ok = (reply: Parameters<RouteContext["serveTables"]>[1]) =>
    reply.type("application/json").send("true");

  app.put("/v1/acl/bootstrap", async (req, reply) => {
    enabled();
    if (optString(jsonBody(req.body), "BootstrapSecret"))
      throw new BadRequestError("BootstrapSecret", "choosing the bootstrap secret is not supported");
    const { token } = await admin.bootstrap();
    return reply.send({ ID: token.SecretID, ...tokenJson(root(), token, true) });
  });

  // ---- policies ----

  const writePolicy = async (req: FastifyRequest, id: string | undefined) => {
    const b = jsonBody(req.body);
    const description = optString(b, "Description");
    const { policy } = await admin.upsertPolicy({
      ...(id ? { ID: id } : {}),
      Name: reqString(b, "Name"),
      ...(description !== undefined ? { Description: description } : {}),
      Rules: optString(b, "Rules") ?? "",
    });
    return policyJson(policy);
  };

  app.put("/v1/acl/policy", async (req, reply) => {
    await need(req, "write");
    if (optString(jsonBody(req.body), "ID"))
      throw new BadRequestError("ID", "Cannot specify the ID when creating a new policy");
    return reply.send(await writePolicy(req, undefined));
  });

  app.get("/v1/acl/policy/:id", async (req, reply) =>
    read(req, reply, (r, _a, _t, pretty) => {
      const p = queries.getPolicy(r, idParam(req));
      if (!p) throw new NotFoundError("ACL policy", idParam(req));
      return json(policyJson(p), pretty);
    }),
  );

  app.get("/v1/acl/policy/name/:name", async (req, reply) => {
    const { name } = req.params as { name: string };
    return read(req, reply, (r, _a, _t, pretty) => {
      const p = queries.policyByName(r, name);
      if (!p) throw new NotFoundError("ACL policy", name);
      return json(policyJson(p), pretty);
    });
  });

  app.put("/v1/acl/policy/:id", async (req, reply) => {
    await need(req, "write");
    const id = idParam(req);
    sameId(jsonBody(req.body), "ID", id);
    if (!queries.getPolicy(root(), id)) throw new NotFoundError("ACL policy", id);
    return reply.send(await writePolicy(req, id));
  });

  app.delete("/v1/acl/policy/:id", async (req, reply) => {
    await need(req, "write");
    const id = idParam(req);
    if (!queries.getPolicy(root(), id)) throw new NotFoundError("ACL policy", id);
    await admin.deletePolicy(id);
    return ok(reply);
  });

  app.get("/v1/acl/policies", async (req, reply) =>
    read(req, reply, (r, _a, _t, pretty) => json([...r.aclPolicies.values()].map(policyStubJson), pretty)),
  );

  // ---- roles ----

  const writeRole = async (req: FastifyRequest, id: string | undefined) => {
    const b = jsonBody(req.body);
    const description = optString(b, "Description");
    const policies = links(b, "Policies");
    const { role } = await admin.upsertRole({
      ...(id ? { ID: id } : {}),
      Name: reqString(b, "Name"),
      ...(description !== undefined ? { Description: description } : {}),
      ...(policies ? { Policies: policies } : {}),
    });
    return roleJson(root(), role);
  };

  app.put("/v1/acl/role", async (req, reply) => {
    await need(req, "write");
    if (optString(jsonBody(req.body), "ID"))
      throw new BadRequestError("ID", "Cannot specify the ID when creating a new role");
    return reply.send(await writeRole(req, undefined));
  });

  app.get("/v1/acl/role/:id", async (req, reply) =>
    read(req, reply, (r, _a, _t, pretty) => {
      const role = queries.getRole(r, idParam(req));
      if (!role) throw new NotFoundError("ACL role", idParam(req));
      return json(roleJson(r, role), pretty);
    }),
  );

  app.get("/v1/acl/role/name/:name", async (req, reply) => {
    const { name } = req.params as { name: string };
    return read(req, reply, (r, _a, _t, pretty) => {
      const role = queries.roleByName(r, name);
      if (!role) throw new NotFoundError("ACL role", name);
      return json(roleJson(r, role), pretty);
    });
  });

  app.put("/v1/acl/role/:id", async (req, reply) => {
    await need(req, "write");
    const id = idParam(req);
    sameId(jsonBody(req.body), "ID", id);
    if (!queries.getRole(root(), id)) throw new NotFoundError("ACL role", id);
    return reply.send(await writeRole(req, id));
  });

  app.delete("/v1/acl/role/:id", async (req, reply) => {
    await need(req, "write");
    const id = idParam(req);
    if (!queries.getRole(root(), id)) throw new NotFoundError("ACL role", id);
    await admin.deleteRole(id);
    return ok(reply);
  });

  app.get("/v1/acl/roles", async (req, reply) => {
    const policy = param(req.query as QueryParams, "policy");
    return read(req, reply, (r, _a, _t, pretty) => {
      const roles = [...r.aclRoles.values()].filter((role) => !policy || role.Policies.includes(policy));
      return json(
        roles.map((role) => roleJson(r, role)),
        pretty,
      );
    });
  });

  // ---- tokens ----

  app.put("/v1/acl/token", async (req, reply) => {
    await need(req, "write");
    const b = jsonBody(req.body);
    const accessor = optString(b, "AccessorID");
    if (accessor && queries.getToken(root(), accessor))
      throw new ConflictError("aclTokens", "AccessorID", accessor);
    const { token } = await admin.upsertToken(tokenInput(b, accessor));
    return reply.send(tokenJson(root(), token, true));
  });

  app.get("/v1/acl/token/self", async (req, reply) =>
    read(
      req,
      reply,
      (r, _a, resolved, pretty) => {
        const t = queries.tokenBySecret(r, resolved.secret);
        if (!t) throw new NotFoundError("ACL token", "self");
        return json(tokenJson(r, t, true), pretty);
      },
      null,
    ),
  );

  app.get("/v1/acl/token/:id", async (req, reply) =>
    read(req, reply, (r, authz, _t, pretty) => {
      const t = queries.getToken(r, idParam(req));
      if (!t) throw new NotFoundError("ACL token", idParam(req));
      return json(tokenJson(r, t, authz.allows("acl", "", "write")), pretty);
    }),
  );

  app.put("/v1/acl/token/:id", async (req, reply) => {
    await need(req, "write");
    const id = idParam(req);
    const b = jsonBody(req.body);
    sameId(b, "AccessorID", id);
    if (!queries.getToken(root(), id)) throw new NotFoundError("ACL token", id);
    const { token } = await admin.upsertToken(tokenInput(b, id));
    return reply.send(tokenJson(root(), token, true));
  });

  app.delete("/v1/acl/token/:id", async (req, reply) => {
    await need(req, "write");
    const id = idParam(req);
    if (!queries.getToken(root(), id)) throw new NotFoundError("ACL token", id);
    await admin.deleteToken(id);
    return ok(reply);
  });

  app.get("/v1/acl/tokens", async (req, reply) => {
    const q = req.query as QueryParams;
    const policy = param(q, "policy");
    const role = param(q, "role");
    return read(req, reply, (r, authz, _t, pretty) => {
      const secrets = authz.allows("acl", "", "write");
      const tokens = [...r.aclTokens.values()].filter(
        (t) => (!policy || t.Policies.includes(policy)) && (!role || t.Roles.includes(role)),
      );
      return json(
        tokens.map((t) => tokenJson(r, t, secrets)),
        pretty,
      );
    });
  });
}
