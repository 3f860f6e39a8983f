import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type * as grpc from "@grpc/grpc-js";
import { type AclEnforcer, PermissionDeniedError, TokenNotFoundError } from "../../acl/index.js";
import type { BrokerEvent, BrokerEvent__Output } from "../../generated/sluice/v1/BrokerEvent.js";
import type { GetEventRequest__Output } from "../../generated/sluice/v1/GetEventRequest.js";
import type { EventPublisher } from "../../stream/index.js";
import { type BrokerLogger, metadataToken, unary } from "../context.js";
import { NotFoundError } from "../errors.js";
import { toGrpcStatus } from "../status.js";
import { EventArchive } from "./archive.js";
import { ComponentConnection } from "./connection.js";
import {
  BrokerErrorReason,
  type Envelope,
  errorResponse,
  expired,
  Kind,
  normalize,
  refKey,
  refText,
  Status,
} from "./envelope.js";
import { HttpEgress } from "./http-egress.js";
import { NatsLink } from "./nats-link.js";
import { ComponentRouter, type Origin, type Replica } from "./router.js";

export interface ComponentBrokerOptions {
  readonly publisher: EventPublisher;
  readonly enforcer: AclEnforcer;
  readonly logger: BrokerLogger;
  /** This broker's id (default: host name plus a random suffix). */
  readonly id?: string;
  /** Join other brokers and archive events through NATS. */
  readonly nats?: {
    readonly servers: string;
    /** Subject prefix shared by every broker that should reach the others (`<prefix>.broker.*`). */
    readonly prefix: string;
    /** Subject prefix of this server's archive (`<archivePrefix>.archive.*`; the feed's prefix). */
    readonly archivePrefix: string;
    /** JetStream stream of the event archive. */
    readonly archiveStream: string;
    readonly archiveMaxAgeMs: number;
  };
  /** Hosts (`host` or `host:port`) the built-in `http` component may call (default none). */
  readonly httpAllow?: readonly string[];
  /** How long a subscription whose index is ahead of the store waits for it (default 3 s). */
  readonly indexAheadWaitMs?: number;
  /** Most change-stream subscriptions on one component connection (default 10,000). */
  readonly maxSubscriptionsPerConnection?: number;
  /** Wall clock, ms since the epoch (deadlines are absolute). */
  readonly now?: () => number;
}

/** Counters of the broker (exported as metrics). */
export interface BrokerMetrics {
  /** Envelopes handed to a local replica. */
  delivered: number;
  /** Envelopes dropped because their deadline had passed. */
  expired: number;
  /** Requests answered with DEADLINE_EXCEEDED by this broker. */
  deadlineExceeded: number;
  /** Events and requests no replica anywhere could take. */
  unroutable: number;
  /** Responses that came after their request was answered (or for unknown requests). */
  lateResponses: number;
  /** Envelopes sent to other brokers, and received from them. */
  forwarded: number;
  received: number;
}

interface Pending {
  readonly request: Envelope;
  readonly reply: (e: Envelope) => void;
  readonly timer: NodeJS.Timeout;
  /** The sender, when it is a connected replica (its requests fail with it). */
  readonly senderKey: string | undefined;
}

/**
 * The component broker: components connect (`sluice.v1.Broker/Connect`), register an
 * identity, and exchange events routed by id or group — to a replica here (work stealing
 * within a group, see {@link ComponentRouter}), else through NATS to a broker that has one,
 * else answered UNAVAILABLE. Requests get exactly one response: the component's, or the
 * broker's error (DEADLINE_EXCEEDED when the deadline passes first, UNAVAILABLE when no
 * replica is anywhere or the replica disconnected). Expired envelopes are dropped at every
 * hop and counted. The same connection carries the component's change-stream subscriptions.
 */
export class ComponentBroker {
  readonly id: string;
  readonly router: ComponentRouter;
  readonly metrics: BrokerMetrics = {
    delivered: 0,
    expired: 0,
    deadlineExceeded: 0,
    unroutable: 0,
    lateResponses: 0,
    forwarded: 0,
    received: 0,
  };
  readonly now: () => number;
  readonly publisher: EventPublisher;
  readonly enforcer: AclEnforcer;
  readonly indexAheadWaitMs: number;
  readonly maxSubscriptionsPerConnection: number;
  /** Requests sent from here and not answered yet (by request id). */
  private readonly pending = new Map<string, Pending>();
  private readonly revokeWatch = new Map<string, Set<(reason: string) => void>>();
  private readonly stopRevoke: () => void;
  private link: NatsLink | undefined;
  /** The NATS link coming up (with --nats). */
  linking: Promise<void> | undefined;
  closed = false;
  private readonly archive: EventArchive;
  private readonly egress: HttpEgress;
  private readonly connections = new Set<ComponentConnection>();

  private constructor(opts: ComponentBrokerOptions) {
    this.id = opts.id ?? `${hostname()}-${randomBytes(3).toString("hex")}`;
    this.now = opts.now ?? Date.now;
    this.router = new ComponentRouter(this.now);
    this.publisher = opts.publisher;
    this.enforcer = opts.enforcer;
    this.indexAheadWaitMs = opts.indexAheadWaitMs ?? 3000;
    this.maxSubscriptionsPerConnection = opts.maxSubscriptionsPerConnection ?? 10_000;
    this.archive = new EventArchive(opts.logger);
    this.stopRevoke = opts.enforcer.onRevoke((secret, reason) => {
      for (const cb of this.revokeWatch.get(secret) ?? []) cb(reason);
    });
    this.egress = new HttpEgress(this, opts.httpAllow ?? []);
  }

  /**
   * Starts the broker. With NATS, the link to other brokers comes up in the background (NATS
   * may be down: local routing works meanwhile, and remote targets count as unreachable);
   * `start` waits up to `natsWaitMs` (default 2 s) for it.
   */
  static async start(opts: ComponentBrokerOptions & { natsWaitMs?: number }): Promise<ComponentBroker> {
    const b = new ComponentBroker(opts);
    b.attach(b.egress);
    const nats = opts.nats;
    if (nats) {
      b.linking = (async () => {
        const link = await NatsLink.connect(b, { servers: nats.servers, prefix: nats.prefix }, opts.logger);
        try {
          if (b.closed) throw new Error("closed while joining NATS");
          await b.archive.useJetStream(
            link.connection,
            nats.archivePrefix,
            nats.archiveStream,
            nats.archiveMaxAgeMs,
          );
          if (b.closed) throw new Error("closed while joining NATS");
        } catch (err) {
          // Not joined after all: the connection must not outlive the broker.
          await link.close();
          if (b.closed) return;
          throw err;
        }
        for (const r of b.router.replicas()) link.replicaAdded(r.ref);
        b.link = link;
        opts.logger.info({ broker: b.id, nats: nats.servers }, "component broker joined NATS");
      })().catch((err) => opts.logger.error({ err: String(err) }, "component broker could not join NATS"));
      await Promise.race([b.linking, new Promise((r) => setTimeout(r, opts.natsWaitMs ?? 2000))]);
    }
    opts.logger.info(
      { broker: b.id, nats: opts.nats ? opts.nats.servers : "off", httpAllow: opts.httpAllow ?? [] },
      "component broker ready",
    );
    return b;
  }

  /** gRPC handlers of `sluice.v1.Broker`. */
  handlers(): grpc.UntypedServiceImplementation {
    return {
      Connect: (call: grpc.ServerDuplexStream<BrokerEvent__Output, BrokerEvent>) => void this.connect(call),
      GetEvent: unary<GetEventRequest__Output, Envelope>(async (req, call) => {
        const { authorizer } = await this.enforcer.resolve(metadataToken(call.metadata));
        const e = await this.archive.get(req.id);
        if (!e) throw new NotFoundError("event", req.id);
        // An archived event is readable by whoever may read its sender or its target.
        const names = [e.source?.name, e.target?.name].filter((n): n is string => !!n);
        if (!names.some((n) => authorizer.allows("component", n, "read"))) {
          throw new PermissionDeniedError("component", names[0] ?? "", "read");
        }
        return e;
      }),
    };
  }

  private async connect(call: grpc.ServerDuplexStream<BrokerEvent__Output, BrokerEvent>): Promise<void> {
    const token = metadataToken(call.metadata);
    try {
      const resolved = await this.enforcer.resolve(token);
      if (call.cancelled || this.closed) return;
      this.enforcer.watchExpiry(resolved);
      const conn = new ComponentConnection(this, call, resolved, token);
      this.connections.add(conn);
      conn.onClose(() => this.connections.delete(conn));
    } catch (err) {
      const s = toGrpcStatus(err);
      call.emit("error", {
        ...s,
        code: err instanceof TokenNotFoundError ? Status.UNAUTHENTICATED : s.code,
      });
    }
  }

  /** A registered replica joins its group (false: its identity is taken). */
  attach(r: Replica): boolean {
    if (!this.router.add(r)) return false;
    this.link?.replicaAdded(r.ref);
    return true;
  }

  /**
   * Resolves when replicas attached so far are reachable from other brokers (the NATS
   * server has their subscriptions), at once without NATS, and after at most 1 s when NATS
   * does not answer (local routing does not wait for it).
   */
  reachable(): Promise<void> {
    const link = this.link;
    if (!link) return Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      link.flush().catch(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 1000);
        timer.unref();
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /** A replica left: its in-flight requests and its group's orphaned work get error responses. */
  detach(r: Replica): void {
    const { inflight, orphaned } = this.router.remove(r);
    this.link?.replicaRemoved(r.ref, this.router.has({ name: r.ref.name, id: "" }));
    const now = this.now();
    for (const f of inflight) {
      this.respond(
        errorResponse(
          f.request,
          Status.UNAVAILABLE,
          `replica ${refText(r.ref)} disconnected`,
          now,
          BrokerErrorReason.Disconnected,
        ),
        f.origin,
      );
    }
    for (const q of orphaned) {
      if (q.env.kind === Kind.Request) {
        this.respond(
          errorResponse(
            q.env,
            Status.UNAVAILABLE,
            `no replica of ${q.env.target?.name} left`,
            now,
            BrokerErrorReason.Disconnected,
          ),
          q.origin,
        );
      }
    }
    // Requests it sent have no one to answer to any more.
    const key = refKey(r.ref);
    for (const [id, p] of this.pending) {
      if (p.senderKey === key) {
        clearTimeout(p.timer);
        this.pending.delete(id);
      }
    }
  }

  /** Calls `cb` when the token with this secret is revoked or expires. */
  onRevoke(secret: string, cb: (reason: string) => void): () => void {
    let set = this.revokeWatch.get(secret);
    if (!set) {
      set = new Set();
      this.revokeWatch.set(secret, set);
    }
    set.add(cb);
    return () => {
      set.delete(cb);
      if (set.size === 0) this.revokeWatch.delete(secret);
    };
  }

  /**
   * An event or request from a sender here (a component, the HTTP ingress): routed, and for
   * a request, `reply` gets its one response.
   */
  submit(env: Envelope, origin: Origin, reply: (e: Envelope) => void): void {
    const now = this.now();
    if (this.closed) {
      if (env.kind === Kind.Request) {
        reply(
          errorResponse(
            env,
            Status.UNAVAILABLE,
            "the broker is shutting down",
            now,
            BrokerErrorReason.Disconnected,
          ),
        );
      }
      return;
    }
    if (env.kind === Kind.Request) {
      if (this.pending.has(env.id)) {
        reply(errorResponse(env, Status.INVALID_ARGUMENT, `request id ${env.id} is in flight already`, now));
        return;
      }
      if (!env.target?.name) {
        reply(errorResponse(env, Status.INVALID_ARGUMENT, "a request needs target.name", now));
        return;
      }
      const timer = setTimeout(
        () => {
          if (!this.pending.has(env.id)) return;
          this.metrics.deadlineExceeded++;
          this.complete(
            errorResponse(env, Status.DEADLINE_EXCEEDED, "the deadline passed before a response", this.now()),
          );
        },
        Math.max(0, env.deadline_ms - now),
      );
      timer.unref?.();
      this.pending.set(env.id, {
        request: env,
        reply,
        timer,
        senderKey: origin.broker === undefined && origin.source.id ? refKey(origin.source) : undefined,
      });
    }
    if (expired(env, now)) {
      this.metrics.expired++;
      this.archive.put(env);
      return; // a request's timer (due now) answers DEADLINE_EXCEEDED
    }
    this.route(env, origin, false);
    // Archived once it is on its way: archiving never delays delivery.
    this.archive.put(env);
  }

  /** Routes locally, else (unless it came from NATS) to another broker, else unroutable. */
  route(env: Envelope, origin: Origin, fromNats: boolean): "here" | "nowhere" | "forwarded" {
    const routed = this.router.route(env, origin, this.now());
    if (routed.to !== "nowhere") {
      if (routed.to === "replica") this.metrics.delivered++;
      return "here";
    }
    if (!fromNats && this.link) {
      this.metrics.forwarded++;
      void this.link.forward(env, origin).then((ok) => {
        if (!ok) this.unroutable(env, origin);
      });
      return "forwarded";
    }
    if (!fromNats) this.unroutable(env, origin);
    return "nowhere";
  }

  private unroutable(env: Envelope, origin: Origin): void {
    this.metrics.unroutable++;
    if (env.kind === Kind.Request) {
      this.respond(
        errorResponse(
          env,
          Status.UNAVAILABLE,
          `no replica of ${refText(env.target)}`,
          this.now(),
          BrokerErrorReason.NoRoute,
        ),
        origin,
      );
    }
  }

  /** A local replica answered a request it was given. */
  answer(resp: Envelope, from: Replica): void {
    const origin = this.router.answered(resp.parent_id, from, this.now());
    if (!origin) {
      this.metrics.lateResponses++;
      return;
    }
    this.respond({ ...resp, target: origin.source }, origin);
    // Archived after it is on its way: archiving never delays delivery.
    this.archive.put(resp);
  }

  /** Sends a response towards its request's origin: here, or the origin broker over NATS. */
  respond(resp: Envelope, origin: Origin): void {
    if (origin.broker === undefined || origin.broker === this.id) this.complete(resp);
    else this.link?.sendResponse(origin.broker, resp);
  }

  /** A response reached the broker its request came from: the sender gets it, once. */
  complete(resp: Envelope): void {
    const p = this.pending.get(resp.parent_id);
    if (!p) {
      this.metrics.lateResponses++;
      return;
    }
    clearTimeout(p.timer);
    this.pending.delete(resp.parent_id);
    p.reply(resp);
  }

  /** Drops an envelope that arrived expired from another broker. */
  countExpired(): void {
    this.metrics.expired++;
  }

  /** An in-process request (the HTTP ingress): resolves with its one response. */
  request(e: Partial<Envelope>): Promise<Envelope> {
    const env = normalize({ ...e, kind: Kind.Request }, this.now());
    return new Promise((resolve) => this.submit(env, { broker: undefined, source: env.source! }, resolve));
  }

  /** Requests waiting for responses (tests and metrics). */
  get pendingCount(): number {
    return this.pending.size;
  }

  get expiredInQueues(): number {
    return this.router.droppedExpired;
  }

  /** Connected components (not counting the built-in ones). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Ends every component connection with UNAVAILABLE (they reconnect elsewhere or later), then closes. */
  async close(): Promise<void> {
    this.closed = true;
    for (const c of [...this.connections]) c.shutdown();
    this.stopRevoke();
    // Requests waiting here are answered, not dropped: an HTTP invoke in flight gets its 503
    // at once instead of holding the server's shutdown for its whole grace period.
    const now = this.now();
    for (const p of [...this.pending.values()]) {
      clearTimeout(p.timer);
      p.reply(
        errorResponse(
          p.request,
          Status.UNAVAILABLE,
          "the broker is shutting down",
          now,
          BrokerErrorReason.Disconnected,
        ),
      );
    }
    this.pending.clear();
    await this.link?.close();
  }
}
