import type { FastifyReply, FastifyRequest } from "fastify";
import {
  type AclAdmin,
  type AclEnforcer,
  type Authorizer,
  authorizeTxn,
  type ResolvedToken,
} from "../acl/index.js";
import type { Index, StateRoot, Store, TableName, Txn } from "../state/index.js";
import {
  type EventPublisher,
  ShuttingDownError,
  type SubscribeRequest,
  SubscriptionForceClosedError,
} from "../stream/index.js";
import { answersNow, type BlockingQuery, parseBlocking } from "./blocking.js";
import { has, param, type QueryParams } from "./query-params.js";
import type { TableIndex } from "./table-index.js";
import type { ViewModel } from "./view-models.js";
import type { ViewRegistry } from "./view-registry.js";

export interface HttpLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug?(obj: object, msg: string): void;
}

/** What the HTTP API works with: the same components the gRPC services use. */
export interface HttpDeps {
  readonly store: Store;
  readonly publisher: EventPublisher;
  readonly enforcer: AclEnforcer;
  readonly admin: AclAdmin;
  readonly logger: HttpLogger;
  /** Observes each HTTP write's commit: its duration in ms and whether it was applied (metrics). */
  readonly onCommitDuration?: (ms: number, ok: boolean) => void;
}

/** Facts the status and agent endpoints report. */
export interface ServerFacts {
  readonly datacenter: string;
  readonly nodeName: string;
  /** The address reported as the leader and only peer (the gRPC listener's). */
  readonly leaderAddr: string;
  /** Role and replication state (writer and its JetStream bridge, or edge and its lag), for `/v1/agent/self`. */
  readonly replication?: () => Record<string, unknown>;
  /** Why the server should not take traffic (an edge whose replication stopped), if it should not. */
  readonly unhealthy?: () => string | undefined;
}

/** How a read is served: from a shared streaming view, or by waiting on table indexes. */
export const QueryBackend = { Streaming: "streaming", BlockingQuery: "blocking-query" } as const;
export type QueryBackend = (typeof QueryBackend)[keyof typeof QueryBackend];

/** A response body, ready to send. */
export interface Rendered {
  readonly status: number;
  readonly body: string | Buffer;
  readonly contentType: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/** JSON as Consul writes it: compact, or indented by four spaces with `?pretty`. */
export function json(value: unknown, pretty: boolean, status = 200): Rendered {
  const text = pretty ? `${JSON.stringify(value, null, 4)}\n` : JSON.stringify(value);
  // Encoded to bytes once: a rendering shared by thousands of blocked requests would
  // otherwise be encoded again for each (V8 may hold it as a two-byte string, which made
  // that encoding ~16 % of the server's CPU in bench http).
  return { status, body: Buffer.from(text, "utf8"), contentType: "application/json" };
}

/** A request of a view-backed read. */
export interface ViewQuery<M extends ViewModel> {
  /** Identifies the query's subscription (topic and subject); the token is added to it. */
  readonly key: string;
  readonly subscribe: Omit<SubscribeRequest, "token" | "filter" | "index">;
  readonly model: () => M;
  /** Checks beyond per-event filtering (a single key's read permission, say); throws to refuse. */
  readonly authorize?: (authz: Authorizer) => void;
  /** The response's variant name: requests with equal variants share one rendering. */
  readonly variant: string;
  readonly render: (model: M, pretty: boolean) => Rendered;
}

/** A request of a read that waits on table indexes. */
export interface TableQuery {
  readonly tables: readonly TableName[];
  readonly authorize?: (authz: Authorizer) => void;
  readonly render: (root: StateRoot, authz: Authorizer, resolved: ResolvedToken, pretty: boolean) => Rendered;
}

/** The tables whose changes may revoke a token. */
const ACL_TABLES: readonly TableName[] = ["aclTokens", "aclPolicies", "aclRoles"];

/** How often a read retries after its view was force-closed (a token's rules changed). */
const FORCE_CLOSE_RETRIES = 3;

/**
 * What every route works with: the components, token resolution, writes, and the two ways of
 * serving a blocking read. One per HTTP server.
 */
export class RouteContext {
  private readonly inflight = new Set<AbortController>();
  private closing = false;
  /** Reads currently blocked waiting for a change (metrics). */
  blockedReads = 0;
  /** Server-Sent Event streams open: `/v1/stream` and notification channels (metrics). */
  eventStreams = 0;

  constructor(
    readonly deps: HttpDeps,
    readonly views: ViewRegistry,
    readonly tables: TableIndex,
    readonly facts: ServerFacts,
    readonly now: () => number,
    readonly random: () => number,
  ) {}

  get aclEnabled(): boolean {
    return this.deps.enforcer.resolver.enabled;
  }

  /** The request's token: `?token=`, then `X-Consul-Token`, then `Authorization: Bearer`. */
  token(req: FastifyRequest): string | undefined {
    const q = param(req.query as QueryParams, "token");
    if (q) return q;
    const h = req.headers["x-consul-token"];
    if (typeof h === "string" && h !== "") return h;
    const auth = req.headers.authorization;
    if (typeof auth === "string" && /^bearer /i.test(auth)) {
      const t = auth.slice(7).trim();
      if (t) return t;
    }
    return undefined;
  }

  /** Resolves the request's token; throws TokenNotFoundError (403 "ACL not found") for an unknown one. */
  resolve(req: FastifyRequest): Promise<ResolvedToken> {
    return this.deps.enforcer.resolve(this.token(req));
  }

  /** Commits `txn` if the request's token may apply every operation of it. */
  async commit(req: FastifyRequest, txn: Txn): Promise<Index> {
    const { authorizer } = await this.resolve(req);
    authorizeTxn(authorizer, this.deps.store.root, txn);
    const observe = this.deps.onCommitDuration;
    if (!observe) return (await this.deps.store.commit(txn)).index;
    const start = performance.now();
    try {
      const { index } = await this.deps.store.commit(txn);
      observe(performance.now() - start, true);
      return index;
    } catch (err) {
      observe(performance.now() - start, false);
      throw err;
    }
  }

  /** Sends a read's answer with Consul's query headers. */
  sendRead(reply: FastifyReply, index: number, out: Rendered, backend?: QueryBackend): FastifyReply {
    reply
      .code(out.status)
      .header("X-Consul-Index", String(Math.max(1, index)))
      .header("X-Consul-KnownLeader", "true")
      .header("X-Consul-LastContact", "0")
      .type(out.contentType);
    if (backend) reply.header("X-Consul-Query-Backend", backend);
    if (out.headers) reply.headers(out.headers);
    return reply.send(out.body);
  }

  /**
   * An abort signal for a request: it fires when the client goes away or the server closes
   * ({@link shuttingDown} tells which). `finish` must be called when the request is done
   * with it. Blocked reads and event streams hold one each.
   */
  track(reply: FastifyReply): { signal: AbortSignal; finish: () => void } {
    const ac = new AbortController();
    if (this.closing) ac.abort();
    const onClose = (): void => {
      if (!reply.raw.writableFinished) ac.abort();
    };
    reply.raw.once("close", onClose);
    this.inflight.add(ac);
    return {
      signal: ac.signal,
      finish: () => {
        this.inflight.delete(ac);
        reply.raw.off("close", onClose);
      },
    };
  }

  /** Whether the server is closing (a tracked request's signal fired for that reason). */
  get shuttingDown(): boolean {
    return this.closing;
  }

  /** Blocked reads answer now with what they have, event streams end; new reads do not block. */
  releaseBlocked(): void {
    this.closing = true;
    for (const ac of this.inflight) ac.abort();
  }

  private blocking(req: FastifyRequest): BlockingQuery {
    return parseBlocking(req.query as QueryParams, this.random);
  }

  /**
   * Serves a read from the shared view of its query and token: at once for `?index=0` (or
   * none) or an index the view is no longer at; otherwise when the view changes or the wait
   * runs out. A view force-closed meanwhile (the token's rules changed) is reopened with the
   * token resolved again.
   */
  async serveView<M extends ViewModel>(req: FastifyRequest, reply: FastifyReply, q: ViewQuery<M>) {
    const bq = this.blocking(req);
    const pretty = has(req.query as QueryParams, "pretty");
    const deadline = this.now() + bq.waitMs;
    const { signal, finish } = this.track(reply);
    try {
      for (let attempt = 0; ; attempt++) {
        const resolved = await this.resolve(req);
        q.authorize?.(resolved.authorizer);
        const key = `${q.key}\u0000${this.aclEnabled ? resolved.secret : ""}`;
        const secret = this.token(req);
        const view = this.views.acquire(
          key,
          () => this.deps.enforcer.subscribe(q.subscribe, secret),
          q.model,
        );
        try {
          try {
            await view.ready(this.now, signal);
          } catch (err) {
            if (signal.aborted) throw new ShuttingDownError({ cause: err });
            throw err;
          }
          if (!answersNow(bq, view.index)) {
            this.blockedReads++;
            try {
              await view.waitForChange(bq.minIndex, deadline, this.now, signal);
            } finally {
              this.blockedReads--;
            }
          }
          const out = view.render(`${q.variant}\u0000${pretty}`, (m) => q.render(m, pretty));
          return this.sendRead(reply, view.index, out, QueryBackend.Streaming);
        } catch (err) {
          if (err instanceof SubscriptionForceClosedError && attempt < FORCE_CLOSE_RETRIES) continue;
          throw err;
        } finally {
          this.views.release(view);
        }
      }
    } finally {
      finish();
    }
  }

  /**
   * Serves a read that no topic covers by waiting for a commit that changes one of its
   * tables (Consul's table-index blocking), then rendering from the publisher's state. ACL
   * changes wake it too, so that a revoked token is refused at once rather than at the end
   * of its wait.
   */
  async serveTables(req: FastifyRequest, reply: FastifyReply, q: TableQuery) {
    const bq = this.blocking(req);
    const pretty = has(req.query as QueryParams, "pretty");
    let resolved = await this.resolve(req);
    q.authorize?.(resolved.authorizer);
    let index = this.tables.indexOf(q.tables);
    if (!answersNow(bq, index)) {
      const deadline = this.now() + bq.waitMs;
      const watched = [...new Set([...q.tables, ...ACL_TABLES])];
      const { signal, finish } = this.track(reply);
      this.blockedReads++;
      try {
        while (index === bq.minIndex && (await this.tables.waitOnce(watched, deadline, this.now, signal))) {
          resolved = await this.resolve(req);
          q.authorize?.(resolved.authorizer);
          index = this.tables.indexOf(q.tables);
        }
      } finally {
        this.blockedReads--;
        finish();
      }
      // The token may have changed meanwhile without waking us (expiry): check it once more.
      resolved = await this.resolve(req);
      q.authorize?.(resolved.authorizer);
      index = this.tables.indexOf(q.tables);
    }
    const root = this.deps.publisher.state;
    return this.sendRead(
      reply,
      index,
      q.render(root, resolved.authorizer, resolved, pretty),
      QueryBackend.BlockingQuery,
    );
  }
}
