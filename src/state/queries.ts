import { checkKey, SEP, type StateRoot, serviceKey } from "./schema.js";
import type { ACLPolicyRow, ACLRoleRow, ACLTokenRow, CheckRow, KVRow, NodeRow, ServiceRow } from "./types.js";

/*
 * Point-in-time reads of a root. Every lookup goes through a primary key or a secondary
 * index: none scans a whole table.
 */

export function getNode(root: StateRoot, node: string): NodeRow | undefined {
  return root.nodes.get(node);
}

export function getService(root: StateRoot, node: string, serviceId: string): ServiceRow | undefined {
  return root.services.get(serviceKey(node, serviceId));
}

export function getCheck(root: StateRoot, node: string, checkId: string): CheckRow | undefined {
  return root.checks.get(checkKey(node, checkId));
}

/** Every instance of a service, by name (case-insensitive), ordered by node then ID. */
export function* serviceInstances(root: StateRoot, name: string): IterableIterator<ServiceRow> {
  for (const [, key] of root.idx.servicesByName.prefix(name.toLowerCase() + SEP)) {
    const row = root.services.get(key);
    if (row) yield row;
  }
}

/** The services registered on a node. */
export function* nodeServices(root: StateRoot, node: string): IterableIterator<ServiceRow> {
  for (const [, row] of root.services.prefix(node + SEP)) yield row;
}

/** Every check on a node, node-level and service-level. */
export function* nodeChecks(root: StateRoot, node: string): IterableIterator<CheckRow> {
  for (const [, row] of root.checks.prefix(node + SEP)) yield row;
}

/** The node-level checks of a node (those with no ServiceID). */
export function* nodeLevelChecks(root: StateRoot, node: string): IterableIterator<CheckRow> {
  yield* instanceOwnChecks(root, node, "");
}

/** The checks of one service instance (not including node-level checks). */
export function* instanceOwnChecks(
  root: StateRoot,
  node: string,
  serviceId: string,
): IterableIterator<CheckRow> {
  for (const [, key] of root.idx.checksByService.prefix(node + SEP + serviceId + SEP)) {
    const row = root.checks.get(key);
    if (row) yield row;
  }
}

/** Consul's CheckServiceNode checks: the node's node-level checks, then the instance's own. */
export function instanceChecks(root: StateRoot, node: string, serviceId: string): CheckRow[] {
  return [...nodeLevelChecks(root, node), ...instanceOwnChecks(root, node, serviceId)];
}

/** Every check of every instance of a service name (case-insensitive). */
export function* serviceChecks(root: StateRoot, name: string): IterableIterator<CheckRow> {
  for (const [, key] of root.idx.checksByServiceName.prefix(name.toLowerCase() + SEP)) {
    const row = root.checks.get(key);
    if (row) yield row;
  }
}

/** Distinct service names (lower-cased) with at least one instance, in order: one seek per name. */
export function* serviceNames(root: StateRoot): IterableIterator<string> {
  let from = "";
  for (;;) {
    const next = root.idx.servicesByName.from(from).next();
    if (next.done) return;
    const entry = next.value[0];
    const name = entry.slice(0, entry.indexOf(SEP));
    yield name;
    // Every entry of this name starts with name + SEP (U+0000): skip past them all.
    from = `${name}\u0001`;
  }
}

/** Whether a service name (case-insensitive) has any instance. */
export function serviceExists(root: StateRoot, name: string): boolean {
  return !root.idx.servicesByName.prefix(name.toLowerCase() + SEP).next().done;
}

export function kvGet(root: StateRoot, key: string): KVRow | undefined {
  return root.kv.get(key);
}

/** KV entries whose key starts with `prefix`, in key order (O(log n + matches)). */
export function* kvList(root: StateRoot, prefix: string): IterableIterator<KVRow> {
  for (const [, row] of root.kv.prefix(prefix)) yield row;
}

export function getToken(root: StateRoot, accessorId: string): ACLTokenRow | undefined {
  return root.aclTokens.get(accessorId);
}

export function tokenBySecret(root: StateRoot, secret: string): ACLTokenRow | undefined {
  const accessor = root.idx.tokensBySecret.get(secret);
  return accessor === undefined ? undefined : root.aclTokens.get(accessor);
}

export function getPolicy(root: StateRoot, id: string): ACLPolicyRow | undefined {
  return root.aclPolicies.get(id);
}

export function policyByName(root: StateRoot, name: string): ACLPolicyRow | undefined {
  const id = root.idx.policiesByName.get(name);
  return id === undefined ? undefined : root.aclPolicies.get(id);
}

export function getRole(root: StateRoot, id: string): ACLRoleRow | undefined {
  return root.aclRoles.get(id);
}

export function roleByName(root: StateRoot, name: string): ACLRoleRow | undefined {
  const id = root.idx.rolesByName.get(name);
  return id === undefined ? undefined : root.aclRoles.get(id);
}

/** Accessor IDs of the tokens that link a policy directly. */
export function* tokensUsingPolicy(root: StateRoot, policyId: string): IterableIterator<string> {
  for (const [, accessor] of root.idx.tokensByPolicy.prefix(policyId + SEP)) yield accessor;
}

/** Accessor IDs of the tokens that link a role. */
export function* tokensUsingRole(root: StateRoot, roleId: string): IterableIterator<string> {
  for (const [, accessor] of root.idx.tokensByRole.prefix(roleId + SEP)) yield accessor;
}

/** IDs of the roles that link a policy. */
export function* rolesUsingPolicy(root: StateRoot, policyId: string): IterableIterator<string> {
  for (const [, role] of root.idx.rolesByPolicy.prefix(policyId + SEP)) yield role;
}

/** Accessor IDs of every token affected by a policy: linked directly or through a role. */
export function tokensAffectedByPolicy(root: StateRoot, policyId: string): Set<string> {
  const out = new Set(tokensUsingPolicy(root, policyId));
  for (const role of rolesUsingPolicy(root, policyId))
    for (const t of tokensUsingRole(root, role)) out.add(t);
  return out;
}
