import type { FastifyInstance } from "fastify";
import type { ServiceHealthPayload } from "../state/events/index.js";
import { SubjectKind, Topic } from "../state/events/index.js";
import { type CheckInput, type CheckStatus, type NodeRow, type Op, queries } from "../state/index.js";
import { nodeJson, serviceJson, serviceNodeJson } from "./consul-json.js";
import { json, type RouteContext } from "./context.js";
import { BadRequestError } from "./errors.js";
import { params, type QueryParams } from "./query-params.js";
import {
  type JsonObject,
  jsonBody,
  optBool,
  optNumber,
  optObject,
  optObjectList,
  optString,
  optStringList,
  reqString,
} from "./request-body.js";
import { ServiceHealthViewModel } from "./view-models.js";

/** The view of one service's instances, shared by the catalog and health endpoints. */
export function serviceView(name: string) {
  return {
    key: `ServiceHealth\u0000k\u0000${name.toLowerCase()}`,
    subscribe: { topic: Topic.ServiceHealth, subject: { kind: SubjectKind.Key, key: name } } as const,
    model: () => new ServiceHealthViewModel(),
  };
}

/** `?node-meta=key:value` filters (all must match), as Consul reads them. */
export function nodeMetaFilter(q: QueryParams): (n: NodeRow) => boolean {
  const pairs = params(q, "node-meta").map((p) => {
    const i = p.indexOf(":");
    return i < 0 ? ([p, ""] as const) : ([p.slice(0, i), p.slice(i + 1)] as const);
  });
  if (pairs.length === 0) return () => true;
  return (n) => pairs.every(([k, v]) => n.Meta[k] === v);
}

/** Instances carrying every one of `tags`. */
export function hasTags(p: ServiceHealthPayload, tags: readonly string[]): boolean {
  return tags.every((t) => p.service.Tags.includes(t));
}

/** A string map whose values may also come as `{ Address }` objects (the npm client sends those). */
function addressMap(obj: JsonObject, name: string): Record<string, string> | undefined {
  const m = optObject(obj, name);
  if (m === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m)) {
    if (typeof v === "string") out[k] = v;
    else if (typeof v === "object" && v !== null && typeof (v as JsonObject).Address === "string")
      out[k] = (v as JsonObject).Address as string;
    else throw new BadRequestError(`${name}.${k}`, "must be a string");
  }
  return out;
}

function stringMap(obj: JsonObject, name: string, path: string): Record<string, string> | undefined {
  const m = optObject(obj, name, path);
  if (m === undefined) return undefined;
  for (const [k, v] of Object.entries(m))
    if (typeof v !== "string") throw new BadRequestError(`${path}.${k}`, "must be a string");
  return m as Record<string, string>;
}

function checkOp(c: JsonObject, node: string, at: string): Op {
  const checkNode = optString(c, "Node", `${at}.Node`);
  if (checkNode && checkNode !== node)
    throw new BadRequestError(`${at}.Node`, `check is for node "${checkNode}", not "${node}"`);
  const name = optString(c, "Name", `${at}.Name`);
  // As Consul: a check without an ID takes its name as ID.
  const checkId = optString(c, "CheckID", `${at}.CheckID`) || name;
  if (!checkId) throw new BadRequestError(`${at}.CheckID`, "a check needs a CheckID or a Name");
  const check: CheckInput = {
    Node: node,
    CheckID: checkId,
    ...(name ? { Name: name } : {}),
    ...(optString(c, "Status", `${at}.Status`) ? { Status: optString(c, "Status") as CheckStatus } : {}),
    ...(optString(c, "Notes") !== undefined ? { Notes: optString(c, "Notes") } : {}),
    ...(optString(c, "Output") !== undefined ? { Output: optString(c, "Output") } : {}),
    ServiceID: optString(c, "ServiceID", `${at}.ServiceID`) ?? "",
  };
  return { op: "check.register", check };
}

/** The transaction of a `PUT /v1/catalog/register` body (Consul's RegisterRequest). */
function registerTxn(ctx: RouteContext, b: JsonObject): Op[] {
  const node = reqString(b, "Node");
  const txn: Op[] = [];
  const skipNode = (optBool(b, "SkipNodeUpdate") ?? false) && queries.getNode(ctx.deps.store.root, node);
  if (!skipNode) {
    const address = optString(b, "Address");
    if (!address) throw new BadRequestError("Address", "is required unless SkipNodeUpdate is set");
    const id = optString(b, "ID");
    const tagged = addressMap(b, "TaggedAddresses");
    const meta = stringMap(b, "NodeMeta", "NodeMeta");
    txn.push({
      op: "node.register",
      node: {
        Node: node,
        Address: address,
        Datacenter: ctx.facts.datacenter,
        ...(id ? { ID: id } : {}),
        ...(tagged ? { TaggedAddresses: tagged } : {}),
        ...(meta ? { Meta: meta } : {}),
      },
    });
  }
  const s = optObject(b, "Service");
  if (s) {
    const name = reqString(s, "Service", "Service.Service");
    const port = optNumber(s, "Port", "Service.Port");
    const tags = optStringList(s, "Tags", "Service.Tags");
    const meta = stringMap(s, "Meta", "Service.Meta");
    const address = optString(s, "Address", "Service.Address");
    const kind = optString(s, "Kind", "Service.Kind");
    txn.push({
      op: "service.register",
      service: {
        Node: node,
        ID: optString(s, "ID", "Service.ID") || name,
        Service: name,
        ...(tags ? { Tags: tags } : {}),
        ...(address !== undefined ? { Address: address } : {}),
        ...(port !== undefined ? { Port: port } : {}),
        ...(meta ? { Meta: meta } : {}),
        ...(kind !== undefined ? { Kind: kind } : {}),
      },
    });
  }
  const single = optObject(b, "Check");
  if (single) txn.push(checkOp(single, node, "Check"));
  for (const [i, c] of (optObjectList(b, "Checks") ?? []).entries())
    txn.push(checkOp(c, node, `Checks[${i}]`));
  return txn;
}

/**
 * `PUT /v1/catalog/register|deregister` and the catalog reads. A service's instances come
 * from its shared ServiceHealth view; the service list, nodes and a node's services wait on
 * table indexes (no topic of the stream carries them whole).
 */
export function catalogRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.put("/v1/catalog/register", async (req, reply) => {
    await ctx.commit(req, registerTxn(ctx, jsonBody(req.body)));
    return reply.type("application/json").send("true");
  });

  app.put("/v1/catalog/deregister", async (req, reply) => {
    const b = jsonBody(req.body);
    const node = reqString(b, "Node");
    const checkId = optString(b, "CheckID");
    const serviceId = optString(b, "ServiceID");
    const op: Op = checkId
      ? { op: "check.deregister", node, checkId }
      : serviceId
        ? { op: "service.deregister", node, serviceId }
        : { op: "node.deregister", node };
    await ctx.commit(req, [op]);
    return reply.type("application/json").send("true");
  });

  app.get("/v1/catalog/services", async (req, reply) =>
    ctx.serveTables(req, reply, {
      tables: ["services"],
      render: (root, authz, _resolved, pretty) => {
        const out: Record<string, string[]> = {};
        for (const lower of queries.serviceNames(root)) {
          const tags = new Set<string>();
          let name = "";
          for (const svc of queries.serviceInstances(root, lower)) {
            name ||= svc.Service;
            for (const t of svc.Tags) tags.add(t);
          }
          if (authz.allows("service", name, "read")) out[name] = [...tags];
        }
        return json(out, pretty);
      },
    }),
  );

  app.get("/v1/catalog/service/:name", async (req, reply) => {
    const { name } = req.params as { name: string };
    const q = req.query as QueryParams;
    const tags = params(q, "tag");
    const metaOk = nodeMetaFilter(q);
    return ctx.serveView(req, reply, {
      ...serviceView(name),
      variant: `catalog\u0000${tags.join("\u0000")}\u0000${params(q, "node-meta").join("\u0000")}`,
      render: (m, pretty) => {
        const out = [];
        for (const [, p] of m.instances.entries())
          if (hasTags(p, tags) && metaOk(p.node)) out.push(serviceNodeJson(p.node, p.service));
        return json(out, pretty);
      },
    });
  });

  app.get("/v1/catalog/nodes", async (req, reply) => {
    const metaOk = nodeMetaFilter(req.query as QueryParams);
    return ctx.serveTables(req, reply, {
      tables: ["nodes"],
      render: (root, authz, _resolved, pretty) => {
        const out = [];
        for (const n of root.nodes.values())
          if (metaOk(n) && authz.allows("node", n.Node, "read")) out.push(nodeJson(n));
        return json(out, pretty);
      },
    });
  });

  app.get("/v1/catalog/node/:node", async (req, reply) => {
    const { node } = req.params as { node: string };
    return ctx.serveTables(req, reply, {
      tables: ["nodes", "services"],
      render: (root, authz, _resolved, pretty) => {
        const n = queries.getNode(root, node);
        // As Consul: an unknown (or unreadable) node is `null`, not a 404.
        if (!n || !authz.allows("node", n.Node, "read")) return json(null, pretty);
        const services: Record<string, ReturnType<typeof serviceJson>> = {};
        for (const s of queries.nodeServices(root, node))
          if (authz.allows("service", s.Service, "read")) services[s.ID] = serviceJson(s);
        return json({ Node: nodeJson(n), Services: services }, pretty);
      },
    });
  });
}
