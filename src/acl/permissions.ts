import type { Op, StateRoot, Txn } from "../state/index.js";
import { queries } from "../state/index.js";
import type { Authorizer } from "./authorizer.js";
import { PermissionDeniedError } from "./errors.js";
import type { Resource } from "./rules.js";

type Need = readonly [Resource, string, "read" | "list" | "write"];

/** What one operation needs, looked up against the state it will apply to. */
function needsOf(op: Op, root: StateRoot): Need[] {
  switch (op.op) {
    case "node.register":
      return [["node", op.node.Node, "write"]];
    case "node.deregister":
      return [["node", op.node, "write"]];
    case "service.register": {
      const old = queries.getService(root, op.service.Node, op.service.ID);
      const needs: Need[] = [["service", op.service.Service, "write"]];
      if (old && old.Service !== op.service.Service) needs.push(["service", old.Service, "write"]);
      return needs;
    }
    case "service.deregister": {
      const svc = queries.getService(root, op.node, op.serviceId);
      return svc ? [["service", svc.Service, "write"]] : [["node", op.node, "write"]];
    }
    case "check.register": {
      if (!op.check.ServiceID) return [["node", op.check.Node, "write"]];
      const svc = queries.getService(root, op.check.Node, op.check.ServiceID);
      return [["service", svc?.Service ?? op.check.ServiceID, "write"]];
    }
    case "check.deregister":
    case "check.status": {
      const check = queries.getCheck(root, op.node, op.checkId);
      return check?.ServiceID ? [["service", check.ServiceName, "write"]] : [["node", op.node, "write"]];
    }
    case "kv.set":
    case "kv.delete":
      return [["key", op.key, "write"]];
    case "kv.deleteTree": {
      // Like Consul's KeyWritePrefix: the prefix and every key under it.
      const needs: Need[] = [["key", op.prefix, "write"]];
      for (const row of queries.kvList(root, op.prefix)) needs.push(["key", row.Key, "write"]);
      return needs;
    }
    case "acl.token.upsert":
    case "acl.token.delete":
    case "acl.policy.upsert":
    case "acl.policy.delete":
    case "acl.role.upsert":
    case "acl.role.delete":
      return [["acl", "", "write"]];
    default: {
      const never: never = op;
      return never;
    }
  }
}

/** Throws {@link PermissionDeniedError} unless the token may apply every operation of `txn`. */
export function authorizeTxn(authz: Authorizer, root: StateRoot, txn: Txn): void {
  for (const op of txn) {
    for (const [resource, name, action] of needsOf(op, root)) {
      if (!authz.allows(resource, name, action)) throw new PermissionDeniedError(resource, name, action);
    }
  }
}

/** Throws {@link PermissionDeniedError} unless the token has `action` on the resource. */
export function requirePermission(
  authz: Authorizer,
  resource: Resource,
  name: string,
  action: "read" | "list" | "write",
): void {
  if (!authz.allows(resource, name, action)) throw new PermissionDeniedError(resource, name, action);
}
