import type { FastifyInstance } from "fastify";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { EventPublisher, PublisherMetrics } from "../stream/index.js";
import type { RouteContext } from "./context.js";
import { BadRequestError } from "./errors.js";
import type { RouteModule } from "./http-server.js";
import { param, type QueryParams } from "./query-params.js";

/** Latency buckets in seconds: 100 µs to 10 s (fsyncs and commits are usually milliseconds). */
const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
];
/** HTTP request buckets: blocking queries may be held for up to the longest wait (10 min). */
const HTTP_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600];

/** The publisher's counters exported as Prometheus counters, read at scrape time. */
const PUBLISHER_COUNTERS: readonly [
  name: string,
  help: string,
  field: keyof Omit<PublisherMetrics, "subscriptions">,
][] = [
  ["sluice_commits_published_total", "Commits the event publisher has published.", "commitsPublished"],
  ["sluice_events_published_total", "Change events published.", "eventsPublished"],
  ["sluice_events_delivered_total", "Change events delivered to subscribers.", "eventsDelivered"],
  ["sluice_snapshot_builds_total", "Topic snapshots built for new subscriptions.", "snapshotBuilds"],
  [
    "sluice_snapshot_cache_hits_total",
    "New subscriptions served from the snapshot cache.",
    "snapshotCacheHits",
  ],
  [
    "sluice_subscriber_resets_total",
    "Slow subscribers reset (told to start over from a snapshot).",
    "resets",
  ],
  ["sluice_force_closes_total", "Subscriptions force-closed (their token's rules changed).", "forceCloses"],
];

/** What the metrics read from the component broker. */
export interface BrokerFigures {
  readonly metrics: {
    readonly delivered: number;
    readonly expired: number;
    readonly deadlineExceeded: number;
    readonly unroutable: number;
    readonly lateResponses: number;
    readonly forwarded: number;
    readonly received: number;
  };
  readonly expiredInQueues: number;
  readonly connectionCount: number;
}

/** Replication figures: a writer's bridge, or an edge's lag behind its writer. */
export interface ReplicationGauges {
  readonly bridgeLagCommits?: number;
  readonly bridgePublishedIndex?: number;
  readonly replicationLagCommits?: number;
  readonly replicationLagSeconds?: number;
  readonly replicationIndex?: number;
}

/** The content type of the Prometheus text exposition format. */
export const PROMETHEUS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

/**
 * Sluice's Prometheus metrics, one registry per server: the publisher's counters and
 * subscriptions by topic (read on each scrape), blocking queries in flight, commit and WAL
 * fsync latency, HTTP request counts and durations, and Node's default process metrics.
 *
 * Created before the store (its `observeFsync` goes into `StoreOptions.onFsync`); the
 * publisher is attached once it exists, and `routes` (an `HttpServerOptions.routes` module)
 * adds the request hook and `GET /v1/agent/metrics`.
 */
export class Metrics {
  readonly registry = new Registry();
  private publisher: EventPublisher | undefined;
  private http: RouteContext | undefined;
  private readonly grpcRequests: Counter;
  private readonly grpcDuration: Histogram;
  private readonly fsync: Histogram;
  private readonly commits: Histogram<"result">;
  private readonly httpRequests: Counter<"method" | "route" | "status">;
  private readonly httpDuration: Histogram<"method" | "route" | "status">;

  constructor(opts: { readonly defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    // Bound as functions so that the collect callbacks (called with the metric as `this`) see them.
    const publisherMetrics = (): PublisherMetrics | undefined => this.publisher?.metrics;
    const httpContext = (): RouteContext | undefined => this.http;

    new Gauge({
      name: "sluice_subscriptions",
      help: "Open change-stream subscriptions, by topic.",
      labelNames: ["topic"],
      registers,
      collect() {
        const m = publisherMetrics();
        if (!m) return;
        for (const [topic, n] of Object.entries(m.subscriptions)) this.set({ topic }, n);
      },
    });
    for (const [name, help, field] of PUBLISHER_COUNTERS) {
      new Counter({
        name,
        help,
        registers,
        collect() {
          const m = publisherMetrics();
          this.reset();
          if (m) this.inc(m[field]);
        },
      });
    }
    new Gauge({
      name: "sluice_blocking_queries_in_flight",
      help: "HTTP blocking queries currently waiting for a change.",
      registers,
      collect() {
        this.set(httpContext()?.blockedReads ?? 0);
      },
    });
    new Gauge({
      name: "sluice_http_event_streams",
      help: "Server-Sent Event streams open (/v1/stream and notification channels).",
      registers,
      collect() {
        this.set(httpContext()?.eventStreams ?? 0);
      },
    });
    new Gauge({
      name: "sluice_http_views",
      help: "Shared materialized views serving blocking queries.",
      registers,
      collect() {
        this.set(httpContext()?.views.size ?? 0);
      },
    });
    this.commits = new Histogram({
      name: "sluice_commit_duration_seconds",
      help: "Time from a write's commit call to durable (or refused), on the HTTP write path.",
      labelNames: ["result"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.fsync = new Histogram({
      name: "sluice_wal_fsync_seconds",
      help: "Duration of each write-ahead-log fsync.",
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.httpRequests = new Counter({
      name: "sluice_http_requests_total",
      help: "HTTP requests answered, by method, route pattern and status.",
      labelNames: ["method", "route", "status"],
      registers,
    });
    this.httpDuration = new Histogram({
      name: "sluice_http_request_duration_seconds",
      help: "HTTP request durations (blocking queries included), by method, route pattern and status.",
      labelNames: ["method", "route", "status"],
      buckets: HTTP_BUCKETS,
      registers,
    });
    this.grpcRequests = new Counter({
      name: "sluice_grpc_requests_total",
      help: "Unary gRPC calls answered, by method and status code.",
      labelNames: ["method", "code"],
      registers,
    });
    this.grpcDuration = new Histogram({
      name: "sluice_grpc_request_duration_seconds",
      help: "Unary gRPC call durations, by method and status code.",
      labelNames: ["method", "code"],
      buckets: HTTP_BUCKETS,
      registers,
    });
    const replication = (): ReplicationGauges => this.replication?.() ?? {};
    const gauges: readonly [string, string, keyof ReplicationGauges][] = [
      [
        "sluice_bridge_lag_commits",
        "Writer: commits not yet acknowledged by JetStream (waiting in the bridge's outbox).",
        "bridgeLagCommits",
      ],
      [
        "sluice_bridge_published_index",
        "Writer: index of the last commit JetStream acknowledged.",
        "bridgePublishedIndex",
      ],
      [
        "sluice_replication_lag_commits",
        "Edge: commits of the writer's log not applied here yet.",
        "replicationLagCommits",
      ],
      [
        "sluice_replication_lag_seconds",
        "Edge: how far behind the writer this edge is, in seconds.",
        "replicationLagSeconds",
      ],
      ["sluice_replication_index", "Edge: index of the last commit applied here.", "replicationIndex"],
    ];
    for (const [name, help, field] of gauges) {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const v = replication()[field];
          if (v !== undefined) this.set(v);
        },
      });
    }
    const broker = (): BrokerFigures | undefined => this.broker;
    const brokerCounters: readonly [string, string, (b: BrokerFigures) => number][] = [
      [
        "sluice_broker_delivered_total",
        "Broker events handed to a local component replica.",
        (b) => b.metrics.delivered,
      ],
      [
        "sluice_broker_expired_total",
        "Broker events dropped because their deadline had passed (at any hop here).",
        (b) => b.metrics.expired + b.expiredInQueues,
      ],
      [
        "sluice_broker_deadline_exceeded_total",
        "Requests answered DEADLINE_EXCEEDED by the broker.",
        (b) => b.metrics.deadlineExceeded,
      ],
      [
        "sluice_broker_unroutable_total",
        "Broker events no replica anywhere could take.",
        (b) => b.metrics.unroutable,
      ],
      [
        "sluice_broker_late_responses_total",
        "Responses that came after their request was answered.",
        (b) => b.metrics.lateResponses,
      ],
      [
        "sluice_broker_forwarded_total",
        "Broker events sent to other brokers over NATS.",
        (b) => b.metrics.forwarded,
      ],
      [
        "sluice_broker_received_total",
        "Broker events received from other brokers over NATS.",
        (b) => b.metrics.received,
      ],
    ];
    for (const [name, help, read] of brokerCounters) {
      new Counter({
        name,
        help,
        registers,
        collect() {
          const b = broker();
          this.reset();
          if (b) this.inc(read(b));
        },
      });
    }
    new Gauge({
      name: "sluice_broker_connections",
      help: "Components connected to this broker.",
      registers,
      collect() {
        this.set(broker()?.connectionCount ?? 0);
      },
    });
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  private replication: (() => ReplicationGauges) | undefined;
  private broker: BrokerFigures | undefined;

  /** Reads the component broker's counters at each scrape. */
  attachBroker(broker: BrokerFigures): void {
    this.broker = broker;
  }

  /** Reads the JetStream bridge's or the edge's replication figures at each scrape. */
  attachReplication(read: () => ReplicationGauges): void {
    this.replication = read;
  }

  /** Reads the publisher's counters from now on. */
  attachPublisher(publisher: EventPublisher): void {
    this.publisher = publisher;
  }

  /** For `StoreOptions.onFsync`: one fsync took `ms`. */
  readonly observeFsync = (ms: number): void => {
    this.fsync.observe(ms / 1000);
  };

  /** For `BrokerDeps.onRequest`: one unary gRPC call ended with `code` after `ms`. */
  readonly observeGrpc = (method: string, code: string, ms: number): void => {
    this.grpcRequests.inc({ method, code });
    this.grpcDuration.observe({ method, code }, ms / 1000);
  };

  /** For `HttpDeps.onCommitDuration`: one commit took `ms` and was applied or refused. */
  readonly observeCommit = (ms: number, ok: boolean): void => {
    this.commits.observe({ result: ok ? "ok" : "error" }, ms / 1000);
  };

  /** The text exposition format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** The same, as prom-client's JSON. */
  json(): Promise<unknown> {
    return this.registry.getMetricsAsJSON();
  }

  /**
   * The route module: counts every response (route pattern, not path, as the label; requests
   * that match no route are "unmatched") and serves `GET /v1/agent/metrics`, as JSON or with
   * `?format=prometheus` as text.
   */
  readonly routes: RouteModule = (app: FastifyInstance, ctx: RouteContext): void => {
    this.http = ctx;
    app.addHook("onResponse", async (req, reply) => {
      const labels = {
        method: req.method,
        route: req.routeOptions.url ?? "unmatched",
        status: String(reply.statusCode),
      };
      this.httpRequests.inc(labels);
      this.httpDuration.observe(labels, reply.elapsedTime / 1000);
    });

    app.get("/v1/agent/metrics", async (req, reply) => {
      // No agent:* permission exists in Sluice's rules; an unknown token is still refused.
      await ctx.resolve(req);
      const format = param(req.query as QueryParams, "format");
      if (format === "prometheus") {
        return reply
          .code(200)
          .type(PROMETHEUS_CONTENT_TYPE)
          .send(await this.text());
      }
      if (format !== undefined && format !== "" && format !== "json") {
        throw new BadRequestError("format", `unknown format "${format}" (use "prometheus" or leave it out)`);
      }
      return reply
        .code(200)
        .type("application/json")
        .send(JSON.stringify(await this.json()));
    });
  };

  /** Drops every metric (the registry is not used after the server stops). */
  close(): void {
    this.registry.clear();
  }
}
