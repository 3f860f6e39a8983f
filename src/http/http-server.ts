import { hostname } from "node:os";
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from "fastify";
import { aclRoutes } from "./acl-routes.js";
import { catalogRoutes } from "./catalog-routes.js";
import { type HttpDeps, RouteContext, type ServerFacts } from "./context.js";
import { BadRequestError, MethodNotAllowedError, NotFoundError } from "./errors.js";
import { healthRoutes } from "./health-routes.js";
import { kvRoutes } from "./kv-routes.js";
import type { ChannelLimits } from "./notification-channels.js";
import { NotificationChannels } from "./notification-routes.js";
import { param, type QueryParams } from "./query-params.js";
import { RouteTable } from "./route-table.js";
import { DEFAULT_AHEAD_WAIT_MS, DEFAULT_KEEPALIVE_MS, sseRoutes } from "./sse-routes.js";
import { toHttpStatus } from "./status.js";
import { statusRoutes } from "./status-routes.js";
import { TableIndex } from "./table-index.js";
import { ViewRegistry } from "./view-registry.js";

export interface HttpServerOptions extends HttpDeps {
  /** The datacenter this server is (default "dc1", the store's default for nodes). */
  readonly datacenter?: string;
  /** The node name `/v1/agent/self` reports (default: the host name). */
  readonly nodeName?: string;
  /** The address reported as leader and peer (default: the HTTP address itself). */
  readonly leaderAddr?: string;
  /** Role and replication state reported by `/v1/agent/self` (under Stats.sluice.replication). */
  readonly replication?: () => Record<string, unknown>;
  /** Why `GET /v1/health` should answer 503, if it should. */
  readonly unhealthy?: () => string | undefined;
  /** How long an unused blocking-query view is kept (default 60 s). */
  readonly viewIdleMs?: number;
  /** Largest request body (default 1 MiB; KV values are further bounded by the store). */
  readonly bodyLimit?: number;
  /** Clock in ms (monotonic) for waits and view idleness. */
  readonly now?: () => number;
  /** Randomness in [0, 1) for the blocking-query jitter. */
  readonly random?: () => number;
  /** Event streams (`/v1/stream`, notification channels): idle time before a keep-alive comment (default 15 s). */
  readonly sseKeepAliveMs?: number;
  /** How long `/v1/stream` waits for a resume index ahead of this server (default 3 s). */
  readonly indexAheadWaitMs?: number;
  /** Quotas and lifetimes of notification channels (defaults: 16 channels, 256 subscriptions per token; 24 h). */
  readonly notifications?: Partial<ChannelLimits>;
  /** More route modules (metrics), registered after the API's own. */
  readonly routes?: readonly RouteModule[];
}

/** A route module: registers its routes on the server's fastify instance. */
export type RouteModule = (app: FastifyInstance, ctx: RouteContext) => void;

/** The route modules of the Consul-compatible API, in registration order. */
const ROUTES: readonly RouteModule[] = [statusRoutes, kvRoutes, catalogRoutes, healthRoutes, aclRoutes];

/** `host:port` or `[v6]:port` → listen options. */
function parseAddr(addr: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:]+)\]:(\d{1,5})$/.exec(addr) ?? /^([^\s:]+):(\d{1,5})$/.exec(addr);
  if (!m) throw new TypeError(`HTTP address must be host:port, got "${addr}"`);
  return { host: m[1]!, port: Number(m[2]) };
}

/**
 * Sluice's Consul-compatible HTTP API on fastify: Consul's paths, parameters, JSON shapes and
 * status codes for the catalog, health, KV, ACL and status endpoints, with blocking queries
 * answered from the change stream: service and KV reads from shared materialized views
 * (materialized-view.ts, view-registry.ts), the rest from table indexes (table-index.ts).
 *
 * Every request body is taken as raw bytes (KV values are any bytes; JSON bodies are parsed
 * by the routes, so that a malformed one is a 400 with the field named). Errors go through
 * the one mapping in status.ts and come back as JSON `{ error, ...fields }` with the error's
 * class in `X-Sluice-Error`.
 */
export class HttpServer {
  readonly app: FastifyInstance;
  readonly context: RouteContext;
  private readonly views: ViewRegistry;
  private readonly tables: TableIndex;
  private readonly notifications: NotificationChannels;
  private facts: {
    datacenter: string;
    nodeName: string;
    leaderAddr: string;
    replication?: () => Record<string, unknown>;
    unhealthy?: () => string | undefined;
  };
  private closing: Promise<void> | undefined;
  /** Requests whose response has not closed yet. */
  private active = 0;
  private onIdle: (() => void) | undefined;
  /** The port listened on (after `listen`). */
  port = 0;

  constructor(private readonly opts: HttpServerOptions) {
    const now = opts.now ?? performance.now.bind(performance);
    this.views = new ViewRegistry({ idleMs: opts.viewIdleMs, now });
    this.tables = new TableIndex(opts.publisher);
    this.facts = {
      datacenter: opts.datacenter ?? "dc1",
      nodeName: opts.nodeName ?? hostname(),
      leaderAddr: opts.leaderAddr ?? "",
      ...(opts.replication ? { replication: opts.replication } : {}),
      ...(opts.unhealthy ? { unhealthy: opts.unhealthy } : {}),
    };
    const facts: ServerFacts = this.facts;
    this.context = new RouteContext(opts, this.views, this.tables, facts, now, opts.random ?? Math.random);
    this.notifications = new NotificationChannels({
      limits: opts.notifications,
      keepAliveMs: opts.sseKeepAliveMs ?? DEFAULT_KEEPALIVE_MS,
      now,
    });
    this.app = Fastify({
      logger: false,
      bodyLimit: opts.bodyLimit ?? 1024 * 1024,
      // Keep-alive connections with no request in flight are closed by close(); blocked reads
      // are answered first (RouteContext.releaseBlocked).
      forceCloseConnections: "idle",
      return503OnClosing: true,
      routerOptions: { maxParamLength: 8192 },
    });
    this.setup();
  }

  private setup(): void {
    const app = this.app;
    const ctx = this.context;
    app.removeAllContentTypeParsers();
    app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));

    const routes = new RouteTable();
    app.addHook("onRoute", (route) => routes.add(route.method, route.url));

    app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
      const out = toHttpStatus(err);
      if (err instanceof MethodNotAllowedError) reply.header("Allow", err.allowed.join(", "));
      if (out.status >= 500 && out.status !== 503) {
        this.opts.logger.error({ err, method: req.method, url: redact(req.url) }, "HTTP request failed");
      }
      return reply
        .code(out.status)
        .header("X-Sluice-Error", out.kind)
        .type("application/json")
        .send(JSON.stringify(out.body));
    });

    app.setNotFoundHandler((req, _reply) => {
      const path = req.url.split("?")[0]!;
      const allowed = routes.methodsFor(path);
      if (allowed.length > 0) throw new MethodNotAllowedError(req.method, allowed);
      throw new NotFoundError("route", `${req.method} ${path}`);
    });

    // Consul's `?dc=` names a datacenter to forward to; this server has only its own. And
    // `?filter=` expressions are not implemented: refusing them beats answering unfiltered.
    app.addHook("preHandler", async (req) => {
      const q = req.query as QueryParams;
      const dc = param(q, "dc");
      if (dc && dc !== ctx.facts.datacenter)
        throw new BadRequestError(
          "dc",
          `unknown datacenter "${dc}" (this server serves "${ctx.facts.datacenter}")`,
        );
      if (param(q, "filter")) throw new BadRequestError("filter", "filter expressions are not supported");
    });

    const streams: RouteModule[] = [
      sseRoutes({
        keepAliveMs: this.opts.sseKeepAliveMs ?? DEFAULT_KEEPALIVE_MS,
        aheadWaitMs: this.opts.indexAheadWaitMs ?? DEFAULT_AHEAD_WAIT_MS,
      }),
      this.notifications.routes,
    ];
    for (const routes of [...ROUTES, ...streams, ...(this.opts.routes ?? [])]) routes(app, ctx);

    // Requests in flight, counted on the raw server so that aborted ones count out too: a
    // graceful close waits for these, not for connections that carry no request.
    app.server.on("request", (_req, res: import("node:http").ServerResponse) => {
      this.active++;
      res.once("close", () => {
        this.active--;
        if (this.active === 0) this.onIdle?.();
      });
    });
  }

  /** Listens on `addr` (`host:port`; port 0 picks a free one) and returns the port. */
  async listen(addr: string): Promise<number> {
    const { host, port } = parseAddr(addr);
    // A large accept backlog: thousands of blocking-query clients may connect at once.
    await this.app.listen({ host, port, backlog: 4096 });
    const bound = this.app.server.address();
    this.port = typeof bound === "object" && bound ? bound.port : port;
    if (!this.facts.leaderAddr) this.facts.leaderAddr = addr.replace(/:\d+$/, `:${this.port}`);
    return this.port;
  }

  /** Counters for tests and the metrics endpoint. */
  stats(): {
    views: number;
    blockedReads: number;
    eventStreams: number;
    channels: number;
    channelSubscriptions: number;
  } {
    return {
      views: this.views.size,
      blockedReads: this.context.blockedReads,
      eventStreams: this.context.eventStreams,
      channels: this.notifications.registry.size,
      channelSubscriptions: this.notifications.registry.subscriptionCount,
    };
  }

  /** Closes idle views as of `now` (the registry also does this on its own timer). */
  sweepViews(now: number): number {
    return this.views.sweep(now);
  }

  /**
   * Stops taking requests: blocked reads answer at once with what they have, event streams
   * end at once with a `closed` event (resume: true), requests in flight finish (cut after
   * `graceMs`), views and their subscriptions close. Idempotent.
   */
  close(graceMs = 10_000): Promise<void> {
    this.closing ??= (async () => {
      this.context.releaseBlocked();
      const timer = setTimeout(() => this.forceClose(), graceMs);
      timer.unref();
      // Once no request is in flight, connections left open (keep-alive ones a client opened
      // but never used) are cut rather than waited for.
      this.onIdle = () => this.forceClose();
      try {
        const closed = this.app.close();
        if (this.active === 0) this.forceClose();
        await closed;
      } finally {
        clearTimeout(timer);
        this.notifications.close();
        this.views.close();
        this.tables.close();
      }
    })();
    return this.closing;
  }

  /** Cuts every connection at once. */
  forceClose(): void {
    this.app.server.closeAllConnections();
  }
}

/** A URL for the log, without the token a client may pass as `?token=`. */
function redact(url: string): string {
  return url.replace(/([?&]token=)[^&]*/g, "$1<hidden>");
}
