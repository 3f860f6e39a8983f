import { requirePermission } from "../acl/index.js";
import type { ACLHandlers } from "../generated/sluice/v1/ACL.js";
import type { Link__Output } from "../generated/sluice/v1/Link.js";
import { type ACLPolicyRow, type ACLRoleRow, type ACLTokenRow, queries } from "../state/index.js";
import { type BrokerDeps, resolveCall, unary } from "./context.js";
import { NotFoundError } from "./errors.js";

const policyToWire = (p: ACLPolicyRow) => ({
  id: p.ID,
  name: p.Name,
  description: p.Description,
  rules: p.Rules,
  create_index: p.CreateIndex,
  modify_index: p.ModifyIndex,
});
const roleToWire = (r: ACLRoleRow) => ({
  id: r.ID,
  name: r.Name,
  description: r.Description,
  policies: [...r.Policies],
  create_index: r.CreateIndex,
  modify_index: r.ModifyIndex,
});
const tokenToWire = (t: ACLTokenRow, withSecret: boolean) => ({
  accessor_id: t.AccessorID,
  secret_id: withSecret ? t.SecretID : "",
  description: t.Description,
  policies: [...t.Policies],
  roles: [...t.Roles],
  expiration_time: t.ExpirationTime ?? 0,
  local: t.Local,
  create_index: t.CreateIndex,
  modify_index: t.ModifyIndex,
});
const links = (ls: Link__Output[]) => ls.map((l) => (l.id ? { ID: l.id } : { Name: l.name }));

/** sluice.v1.ACL: bootstrap and CRUD of policies, roles and tokens (acl:read / acl:write). */
export function aclService(deps: BrokerDeps): ACLHandlers {
  const need = async (md: Parameters<typeof resolveCall>[1], action: "read" | "write") => {
    const { authorizer } = await resolveCall(deps, md);
    requirePermission(authorizer, "acl", "", action);
  };
  const root = () => deps.store.root;
  return {
    Bootstrap: unary(async () => {
      const { index, token } = await deps.admin.bootstrap();
      return { index, token: tokenToWire(token, true) };
    }),
    UpsertPolicy: unary(async (req, call) => {
      await need(call.metadata, "write");
      const { index, policy } = await deps.admin.upsertPolicy({
        ...(req.id ? { ID: req.id } : {}),
        Name: req.name,
        Description: req.description,
        Rules: req.rules,
      });
      return { index, policy: policyToWire(policy) };
    }),
    GetPolicy: unary(async (req, call) => {
      await need(call.metadata, "read");
      const p = queries.getPolicy(root(), req.id) ?? queries.policyByName(root(), req.id);
      if (!p) throw new NotFoundError("policy", req.id);
      return { index: root().index, policy: policyToWire(p) };
    }),
    ListPolicies: unary(async (_req, call) => {
      await need(call.metadata, "read");
      return { index: root().index, policies: [...root().aclPolicies.values()].map(policyToWire) };
    }),
    DeletePolicy: unary(async (req, call) => {
      await need(call.metadata, "write");
      if (!queries.getPolicy(root(), req.id)) throw new NotFoundError("policy", req.id);
      return { index: await deps.admin.deletePolicy(req.id) };
    }),
    UpsertRole: unary(async (req, call) => {
      await need(call.metadata, "write");
      const { index, role } = await deps.admin.upsertRole({
        ...(req.id ? { ID: req.id } : {}),
        Name: req.name,
        Description: req.description,
        Policies: links(req.policies),
      });
      return { index, role: roleToWire(role) };
    }),
    GetRole: unary(async (req, call) => {
      await need(call.metadata, "read");
      const r = queries.getRole(root(), req.id) ?? queries.roleByName(root(), req.id);
      if (!r) throw new NotFoundError("role", req.id);
      return { index: root().index, role: roleToWire(r) };
    }),
    ListRoles: unary(async (_req, call) => {
      await need(call.metadata, "read");
      return { index: root().index, roles: [...root().aclRoles.values()].map(roleToWire) };
    }),
    DeleteRole: unary(async (req, call) => {
      await need(call.metadata, "write");
      if (!queries.getRole(root(), req.id)) throw new NotFoundError("role", req.id);
      return { index: await deps.admin.deleteRole(req.id) };
    }),
    UpsertToken: unary(async (req, call) => {
      await need(call.metadata, "write");
      const ttl = Number(req.expiration_ttl_ms);
      const { index, token } = await deps.admin.upsertToken({
        ...(req.accessor_id ? { AccessorID: req.accessor_id } : {}),
        ...(req.secret_id ? { SecretID: req.secret_id } : {}),
        Description: req.description,
        Policies: links(req.policies),
        Roles: links(req.roles),
        ...(ttl > 0 ? { ExpirationTTLms: ttl } : {}),
        Local: req.local,
      });
      return { index, token: tokenToWire(token, true) };
    }),
    GetToken: unary(async (req, call) => {
      await need(call.metadata, "read");
      const t = queries.getToken(root(), req.id);
      if (!t) throw new NotFoundError("token", req.id);
      const { authorizer } = await resolveCall(deps, call.metadata);
      return { index: root().index, token: tokenToWire(t, authorizer.allows("acl", "", "write")) };
    }),
    ListTokens: unary(async (_req, call) => {
      await need(call.metadata, "read");
      return {
        index: root().index,
        tokens: [...root().aclTokens.values()].map((t) => tokenToWire(t, false)),
      };
    }),
    DeleteToken: unary(async (req, call) => {
      await need(call.metadata, "write");
      if (!queries.getToken(root(), req.id)) throw new NotFoundError("token", req.id);
      return { index: await deps.admin.deleteToken(req.id) };
    }),
  };
}
