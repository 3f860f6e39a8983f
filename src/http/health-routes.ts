import type { FastifyInstance } from "fastify";
import type { Authorizer } from "../acl/index.js";
import { type CheckRow, queries } from "../state/index.js";
import { hasTags, nodeMetaFilter, serviceView } from "./catalog-routes.js";
import { checkJson, checkJsonAt, checkServiceNodeJson } from "./consul-json.js";
import { json, type RouteContext } from "./context.js";
import { BadRequestError } from "./errors.js";
import { flag, params, type QueryParams } from "./query-params.js";

/** The states `GET /v1/health/state/:state` takes (Consul's api.HealthAny and the three statuses). */
const STATES = new Set(["any", "passing", "warning", "critical"]);

/** Consul's check filtering: a node-level check needs node:read, a service check service:read. */
const mayRead = (authz: Authorizer, c: CheckRow): boolean =>
  c.ServiceID ? authz.allows("service", c.ServiceName, "read") : authz.allows("node", c.Node, "read");

/**
 * The health endpoints. A service's instances and checks come from its shared ServiceHealth
 * view (the same view the catalog's service endpoint uses); checks by node or by state wait
 * on the checks table's index.
 */
export function healthRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.get("/v1/health/service/:name", async (req, reply) => {
    const { name } = req.params as { name: string };
    const q = req.query as QueryParams;
    const passing = flag(q, "passing");
    const tags = params(q, "tag");
    const metaOk = nodeMetaFilter(q);
    return ctx.serveView(req, reply, {
      ...serviceView(name),
      variant: `health\u0000${passing}\u0000${tags.join("\u0000")}\u0000${params(q, "node-meta").join("\u0000")}`,
      render: (m, pretty) => {
        const out = [];
        for (const [, p] of m.instances.entries()) {
          if (!hasTags(p, tags) || !metaOk(p.node)) continue;
          if (passing && p.checks.some((c) => c.Status !== "passing")) continue;
          out.push(checkServiceNodeJson(p));
        }
        return json(out, pretty);
      },
    });
  });

  app.get("/v1/health/checks/:service", async (req, reply) => {
    const { service } = req.params as { service: string };
    return ctx.serveView(req, reply, {
      ...serviceView(service),
      variant: "checks",
      render: (m, pretty) => {
        const out = [];
        for (const [, p] of m.instances.entries())
          for (const c of p.checks) if (c.ServiceID) out.push(checkJson(c, p.service.Tags));
        return json(out, pretty);
      },
    });
  });

  app.get("/v1/health/node/:node", async (req, reply) => {
    const { node } = req.params as { node: string };
    return ctx.serveTables(req, reply, {
      tables: ["checks", "services"],
      render: (root, authz, _resolved, pretty) => {
        const out = [];
        for (const c of queries.nodeChecks(root, node)) if (mayRead(authz, c)) out.push(checkJsonAt(root, c));
        return json(out, pretty);
      },
    });
  });

  app.get("/v1/health/state/:state", async (req, reply) => {
    const { state } = req.params as { state: string };
    if (!STATES.has(state))
      throw new BadRequestError(
        "state",
        `Invalid check state "${state}" (want any, passing, warning or critical)`,
      );
    return ctx.serveTables(req, reply, {
      tables: ["checks", "services"],
      render: (root, authz, _resolved, pretty) => {
        const out = [];
        for (const c of root.checks.values())
          if ((state === "any" || c.Status === state) && mayRead(authz, c)) out.push(checkJsonAt(root, c));
        return json(out, pretty);
      },
    });
  });
}
