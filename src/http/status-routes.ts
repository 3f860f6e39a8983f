import type { FastifyInstance } from "fastify";
import { json, type RouteContext } from "./context.js";
import { has, type QueryParams } from "./query-params.js";

/**
 * The Consul version whose HTTP API this server mirrors, reported as `Config.Version` by
 * `/v1/agent/self`: clients gate features on it. Sluice's own version is reported beside it.
 */
export const CONSUL_API_VERSION = "1.16.0";
const SLUICE_VERSION = "0.1.0";

/**
 * `GET /v1/status/leader`, `/v1/status/peers`, `/v1/agent/self` (enough for clients that
 * probe the agent before using it) and `GET /v1/health` (liveness). A single server is its
 * own leader and only peer.
 */
export function statusRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const pretty = (q: unknown) => has(q as QueryParams, "pretty");
  const index = () => ctx.deps.publisher.index;

  app.get("/v1/status/leader", async (req, reply) =>
    ctx.sendRead(reply, index(), json(ctx.facts.leaderAddr, pretty(req.query))),
  );

  app.get("/v1/status/peers", async (req, reply) =>
    ctx.sendRead(reply, index(), json([ctx.facts.leaderAddr], pretty(req.query))),
  );

  app.get("/v1/agent/self", async (req, reply) => {
    // No agent:* permission exists in Sluice's rules; an unknown token is still refused.
    await ctx.resolve(req);
    const { datacenter, nodeName, leaderAddr } = ctx.facts;
    const [host, port] = splitHostPort(leaderAddr);
    const self = {
      Config: {
        Datacenter: datacenter,
        PrimaryDatacenter: datacenter,
        NodeName: nodeName,
        NodeID: "",
        Revision: "",
        Server: true,
        Version: CONSUL_API_VERSION,
        BuildDate: "",
      },
      Member: {
        Name: nodeName,
        Addr: host,
        Port: port,
        Tags: { role: "consul", dc: datacenter, build: CONSUL_API_VERSION, vsn: "2", port: String(port) },
        Status: 1,
      },
      Meta: {},
      Stats: {
        sluice: {
          version: SLUICE_VERSION,
          index: String(index()),
          ...(ctx.facts.replication ? { replication: ctx.facts.replication() } : {}),
        },
        consul: { server: "true", leader: "true", known_datacenters: "1" },
      },
      xDS: null,
    };
    return ctx.sendRead(reply, index(), json(self, pretty(req.query)));
  });

  app.get("/v1/health", async (req, reply) => {
    // An edge whose replication stopped serves stale data: it says so, so that load
    // balancers and orchestrators move traffic away from it.
    const problem = ctx.facts.unhealthy?.();
    const body = problem
      ? json({ status: "unhealthy", reason: problem, index: index() }, pretty(req.query), 503)
      : json({ status: "ok", index: index() }, pretty(req.query));
    return ctx.sendRead(reply, index(), body);
  });
}

function splitHostPort(addr: string): [string, number] {
  const i = addr.lastIndexOf(":");
  if (i < 0) return [addr, 0];
  return [addr.slice(0, i).replace(/^\[|\]$/g, ""), Number(addr.slice(i + 1)) || 0];
}
