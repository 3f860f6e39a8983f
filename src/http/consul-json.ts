import type { ServiceHealthPayload } from "../state/events/index.js";
import {
  type ACLPolicyRow,
  type ACLRoleRow,
  type ACLTokenRow,
  type CheckRow,
  type KVRow,
  type NodeRow,
  queries,
  type ServiceRow,
  type StateRoot,
} from "../state/index.js";

/*
 * Rows in the JSON shapes of Consul's HTTP API (structs.Node, AgentService, HealthCheck,
 * ServiceNode, CheckServiceNode, DirEntry, ACLPolicy/Role/Token). Fields Sluice does not
 * model are given Consul's zero values so that clients that read them find them.
 */

const WEIGHTS = Object.freeze({ Passing: 1, Warning: 1 });

export function nodeJson(n: NodeRow) {
  return {
    ID: n.ID,
    Node: n.Node,
    Address: n.Address,
    Datacenter: n.Datacenter,
    TaggedAddresses: n.TaggedAddresses,
    Meta: n.Meta,
    CreateIndex: n.CreateIndex,
    ModifyIndex: n.ModifyIndex,
  };
}

/** A service as the health and node endpoints show it (Consul's NodeService). */
export function serviceJson(s: ServiceRow) {
  return {
    ID: s.ID,
    Service: s.Service,
    Tags: s.Tags,
    Address: s.Address,
    Meta: s.Meta,
    Port: s.Port,
    Weights: WEIGHTS,
    EnableTagOverride: false,
    ...(s.Kind ? { Kind: s.Kind } : {}),
    CreateIndex: s.CreateIndex,
    ModifyIndex: s.ModifyIndex,
  };
}

export function checkJson(c: CheckRow, serviceTags: readonly string[]) {
  return {
    Node: c.Node,
    CheckID: c.CheckID,
    Name: c.Name,
    Status: c.Status,
    Notes: c.Notes,
    Output: c.Output,
    ServiceID: c.ServiceID,
    ServiceName: c.ServiceName,
    ServiceTags: c.ServiceID ? serviceTags : [],
    Type: "",
    Definition: {},
    CreateIndex: c.CreateIndex,
    ModifyIndex: c.ModifyIndex,
  };
}

/** A check with its service's tags looked up in `root`. */
export function checkJsonAt(root: StateRoot, c: CheckRow) {
  const tags = c.ServiceID ? (queries.getService(root, c.Node, c.ServiceID)?.Tags ?? []) : [];
  return checkJson(c, tags);
}

/** One instance as `GET /v1/catalog/service/:name` shows it (Consul's ServiceNode). */
export function serviceNodeJson(n: NodeRow, s: ServiceRow) {
  return {
    ID: n.ID,
    Node: n.Node,
    Address: n.Address,
    Datacenter: n.Datacenter,
    TaggedAddresses: n.TaggedAddresses,
    NodeMeta: n.Meta,
    ServiceKind: s.Kind,
    ServiceID: s.ID,
    ServiceName: s.Service,
    ServiceTags: s.Tags,
    ServiceAddress: s.Address,
    ServiceTaggedAddresses: {},
    ServiceWeights: WEIGHTS,
    ServiceMeta: s.Meta,
    ServicePort: s.Port,
    ServiceEnableTagOverride: false,
    CreateIndex: s.CreateIndex,
    ModifyIndex: s.ModifyIndex,
  };
}

/** One instance as `GET /v1/health/service/:name` shows it (Consul's CheckServiceNode). */
export function checkServiceNodeJson(p: ServiceHealthPayload) {
  return {
    Node: nodeJson(p.node),
    Service: serviceJson(p.service),
    Checks: p.checks.map((c) => checkJson(c, p.service.Tags)),
  };
}

/** A KV entry (Consul's DirEntry): the value in base64, null when empty. */
export function kvJson(e: KVRow) {
  return {
    LockIndex: e.LockIndex,
    Key: e.Key,
    Flags: e.Flags,
    Value:
      e.Value.byteLength === 0
        ? null
        : Buffer.from(e.Value.buffer, e.Value.byteOffset, e.Value.byteLength).toString("base64"),
    CreateIndex: e.CreateIndex,
    ModifyIndex: e.ModifyIndex,
  };
}

export function policyJson(p: ACLPolicyRow) {
  return {
    ID: p.ID,
    Name: p.Name,
    Description: p.Description,
    Rules: p.Rules,
    Datacenters: [],
    Hash: "",
    CreateIndex: p.CreateIndex,
    ModifyIndex: p.ModifyIndex,
  };
}

/** A policy in a listing: everything but its rules, as Consul's ACLPolicyListStub. */
export function policyStubJson(p: ACLPolicyRow) {
  const { Rules: _rules, ...stub } = policyJson(p);
  return stub;
}

/** `{ ID, Name }` links, names looked up in `root` (a dangling ID keeps an empty name). */
function policyLinks(root: StateRoot, ids: readonly string[]) {
  return ids.map((ID) => ({ ID, Name: queries.getPolicy(root, ID)?.Name ?? "" }));
}

export function roleJson(root: StateRoot, r: ACLRoleRow) {
  return {
    ID: r.ID,
    Name: r.Name,
    Description: r.Description,
    Policies: policyLinks(root, r.Policies),
    Hash: "",
    CreateIndex: r.CreateIndex,
    ModifyIndex: r.ModifyIndex,
  };
}

/** A token; its SecretID only for callers that may see it (Consul shows `<hidden>` otherwise). */
export function tokenJson(root: StateRoot, t: ACLTokenRow, withSecret: boolean) {
  return {
    AccessorID: t.AccessorID,
    SecretID: withSecret ? t.SecretID : "<hidden>",
    Description: t.Description,
    Policies: policyLinks(root, t.Policies),
    Roles: t.Roles.map((ID) => ({ ID, Name: queries.getRole(root, ID)?.Name ?? "" })),
    Local: t.Local,
    ...(t.ExpirationTime !== null ? { ExpirationTime: new Date(t.ExpirationTime).toISOString() } : {}),
    Hash: "",
    CreateIndex: t.CreateIndex,
    ModifyIndex: t.ModifyIndex,
  };
}
