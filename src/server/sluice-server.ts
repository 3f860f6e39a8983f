import { resolve } from "node:path";
import pino, { type Logger } from "pino";
import { AclAdmin, AclEnforcer, TokenResolver } from "../acl/index.js";
import { ComponentBroker } from "../broker/components/index.js";
import { GrpcServer } from "../broker/index.js";
import { JetStreamBridge } from "../broker/jetstream/index.js";
import { EdgeReplica } from "../edge/index.js";
import { HttpServer, invokeRoutes, Metrics } from "../http/index.js";
import { sluiceV1 } from "../proto/index.js";
import { Store } from "../state/index.js";
import { EventPublisher } from "../stream/index.js";
import type { ServerConfig } from "./config.js";
import { ListenError } from "./errors.js";

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):/;

/**
 * The composition root: store → publisher → ACL enforcement → gRPC and the Consul-compatible
 * HTTP API. `start` brings it up; `stop` drains it (blocked HTTP reads answer, subscriptions
 * end with UNAVAILABLE, in-flight writes finish, the log is flushed).
 */
export class SluiceServer {
  private grpc: GrpcServer | undefined;
  private http: HttpServer | undefined;
  private stopping: Promise<void> | undefined;
  grpcPort = 0;
  httpPort = 0;

  private constructor(
    readonly config: ServerConfig,
    readonly logger: Logger,
    readonly store: Store,
    readonly publisher: EventPublisher,
    readonly enforcer: AclEnforcer,
    readonly admin: AclAdmin,
    /** The Prometheus registry `GET /v1/agent/metrics` serves. */
    readonly metrics: Metrics,
    /** The JetStream bridge (a writer started with --nats). */
    readonly bridge: JetStreamBridge | undefined,
    /** The replica an edge serves from (`sluice edge`). */
    readonly replica: EdgeReplica | undefined,
    /** The component broker (`sluice.v1.Broker`, `/v1/invoke`). */
    readonly broker: ComponentBroker,
  ) {}

  static async start(
    config: ServerConfig,
    logger: Logger = pino({ level: config.logLevel }),
  ): Promise<SluiceServer> {
    // Whatever has been opened so far, closed in reverse if a later step fails: no lock,
    // connection or timer outlives a failed start.
    const closers: (() => unknown)[] = [];
    try {
      return await SluiceServer.open(config, logger, closers);
    } catch (err) {
      for (const close of closers.reverse()) await Promise.resolve(close()).catch(() => {});
      throw err;
    }
  }

  private static async open(
    config: ServerConfig,
    logger: Logger,
    closers: (() => unknown)[],
  ): Promise<SluiceServer> {
    const dataDir = config.dev || config.edge ? undefined : resolve(config.dataDir);
    const metrics = new Metrics();
    closers.push(() => metrics.close());
    // How this server is reached: the configured addresses until the listeners are up.
    const addrs = { grpc: config.grpcAddr, http: config.httpAddr };
    let bridge: JetStreamBridge | undefined;
    let replica: EdgeReplica | undefined;
    let store: Store;
    if (config.edge) {
      logger.info(
        { nats: config.nats, stream: config.natsStream },
        "edge: loading the writer's state from JetStream",
      );
      const r = await EdgeReplica.connect({
        servers: config.nats,
        stream: config.natsStream,
        prefix: config.natsPrefix,
        forwardWrites: config.edgeForwardWrites,
        logger: logger.child({ component: "edge" }),
      });
      replica = r;
      closers.push(() => r.close());
      store = r.store;
      metrics.attachReplication(() => {
        const lag = r.lag();
        return {
          replicationLagCommits: lag.commits,
          replicationLagSeconds: lag.seconds,
          replicationIndex: lag.index,
        };
      });
    } else {
      const s = await Store.open({
        ...(dataDir ? { dataDir } : { inMemory: true }),
        fsync: config.fsync,
        snapshotEvery: config.snapshotEvery,
        historyRetain: config.historyMaxEvents,
        initialize: true,
        logger,
        onFsync: metrics.observeFsync,
        // Log segments stay until JetStream has their commits (the bridge's outbox).
        retainLogFrom: () => bridge?.retainFrom() ?? Number.POSITIVE_INFINITY,
      });
      store = s;
      closers.push(() => s.close());
      if (config.nats) {
        const b = await JetStreamBridge.start({
          servers: config.nats,
          stream: config.natsStream,
          prefix: config.natsPrefix,
          snapshotEvery: config.natsSnapshotEvery,
          maxAgeMs: config.natsMaxAgeSec * 1000,
          maxBytes: config.natsMaxBytes,
          writer: addrs,
          store: s,
          logger: logger.child({ component: "bridge" }),
        });
        bridge = b;
        closers.push(() => b.close());
        metrics.attachReplication(() => ({
          bridgeLagCommits: b.lag,
          bridgePublishedIndex: b.publishedIndex,
        }));
      }
    }
    const publisher = EventPublisher.attach(store, {
      history: { maxEvents: config.historyMaxEvents, maxBytes: config.historyMaxBytes },
      snapshotCache: { ttlMs: config.snapshotCacheTtlMs },
      progressIntervalMs: config.progressIntervalMs,
      maxSubscriptionsPerToken: config.maxSubscriptionsPerToken,
    });
    closers.push(() => publisher.shutdown());
    metrics.attachPublisher(publisher);
    const resolver = new TokenResolver({
      enabled: config.aclEnabled,
      defaultPolicy: config.aclDefaultPolicy,
    });
    const enforcer = new AclEnforcer(publisher, resolver, logger);
    closers.push(() => enforcer.close());
    const admin = new AclAdmin(store, config.aclEnabled, logger);
    // An edge's anonymous token comes with the writer's state.
    if (!replica) await admin.ensureAnonymous();
    // An edge serves once it has replayed what the stream held when it started.
    if (replica) await replica.follow();
    const broker = await ComponentBroker.start({
      publisher,
      enforcer,
      logger: logger.child({ component: "broker" }),
      ...(config.brokerId ? { id: config.brokerId } : {}),
      httpAllow: config.brokerHttpAllow.split(",").filter((h) => h.trim() !== ""),
      maxSubscriptionsPerConnection: config.maxSubscriptionsPerConnection,
      ...(config.nats
        ? {
            nats: {
              servers: config.nats,
              prefix: config.brokerNatsPrefix,
              archivePrefix: config.natsPrefix,
              archiveStream: `${config.natsStream}_EVENTS`,
              archiveMaxAgeMs: config.brokerArchiveMaxAgeSec * 1000,
            },
          }
        : {}),
    });
    closers.push(() => broker.close());
    metrics.attachBroker(broker);
    const server = new SluiceServer(
      config,
      logger,
      store,
      publisher,
      enforcer,
      admin,
      metrics,
      bridge,
      replica,
      broker,
    );
    const grpc = new GrpcServer({
      store,
      publisher,
      enforcer,
      admin,
      logger,
      maxSubscriptionsPerConnection: config.maxSubscriptionsPerConnection,
      onRequest: metrics.observeGrpc,
    });
    server.grpc = grpc;
    grpc.addService("sluice.v1.Broker", sluiceV1.Broker.service, broker.handlers());
    closers.push(() => grpc.forceShutdown());
    try {
      server.grpcPort = await grpc.listen(config.grpcAddr);
    } catch (err) {
      throw new ListenError("gRPC", config.grpcAddr, { cause: err });
    }
    const grpcAddr = config.grpcAddr.replace(/:\d+$/, `:${server.grpcPort}`);
    addrs.grpc = grpcAddr;
    const http = new HttpServer({
      store,
      publisher,
      enforcer,
      admin,
      logger: logger.child({ component: "http" }),
      leaderAddr: grpcAddr,
      onCommitDuration: metrics.observeCommit,
      sseKeepAliveMs: config.sseKeepAliveMs,
      notifications: {
        maxChannelsPerToken: config.notificationChannelsPerToken,
        maxSubscriptionsPerToken: config.notificationSubscriptionsPerToken,
      },
      routes: [metrics.routes, invokeRoutes(broker)],
      replication: () =>
        replica
          ? { role: "edge", writer: replica.writer ?? null, ...replica.lag() }
          : bridge
            ? {
                role: "writer",
                nats: config.nats,
                stream: config.natsStream,
                bridgeLagCommits: bridge.lag,
                publishedIndex: bridge.publishedIndex,
              }
            : { role: "writer", nats: null },
      unhealthy: () => (replica?.stoppedBy ? `replication stopped: ${replica.stoppedBy.message}` : undefined),
    });
    server.http = http;
    closers.push(() => http.close(0));
    try {
      server.httpPort = await http.listen(config.httpAddr);
    } catch (err) {
      throw new ListenError("HTTP", config.httpAddr, { cause: err });
    }
    const httpAddr = config.httpAddr.replace(/:\d+$/, `:${server.httpPort}`);
    addrs.http = httpAddr;
    replica?.onStopped((err) => {
      grpc.setServing(false);
      logger.error({ err: err.message }, "edge replication stopped: reporting unhealthy (restart the edge)");
    });
    logger.info(
      {
        grpc: grpcAddr,
        http: httpAddr,
        role: replica ? "edge" : "writer",
        dataDir: replica ? "(edge: in memory, replicated)" : (dataDir ?? "(in memory: --dev)"),
        nats: config.nats ? `${config.nats} stream ${config.natsStream}` : "off",
        fsync: dataDir ? config.fsync : "n/a",
        acl: config.aclEnabled ? `enabled, default policy ${config.aclDefaultPolicy}` : "disabled",
        index: store.index,
        recoveredHistory: store.recoveredCommits.length,
      },
      "Sluice server started",
    );
    if (!config.aclEnabled && (!LOOPBACK.test(config.grpcAddr) || !LOOPBACK.test(config.httpAddr))) {
      logger.warn(
        { grpc: grpcAddr, http: httpAddr },
        "ACLs are DISABLED on a non-loopback address: anyone who can reach it can read and write everything",
      );
    }
    return server;
  }

  /** Graceful stop; a second call returns the same promise. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.logger.info({}, "shutting down: ending subscriptions, finishing writes, flushing the log");
      // HTTP first: blocked reads answer with what they have and writes in flight reach the
      // store while it still takes them.
      // The broker first: requests waiting in it (HTTP invokes among them) are answered
      // UNAVAILABLE at once, so HTTP's drain does not wait for them.
      await this.broker.close();
      await this.http?.close(this.config.shutdownGraceMs);
      this.publisher.shutdown();
      await this.grpc?.shutdown(this.config.shutdownGraceMs);
      this.enforcer.close();
      // Give the bridge a moment to hand what is queued to JetStream; the rest stays in the
      // local log and is published at the next start.
      await this.bridge?.close(Math.min(this.config.shutdownGraceMs, 2000));
      await (this.replica ? this.replica.close() : this.store.close());
      this.metrics.close();
      this.logger.info({ index: this.store.index }, "stopped");
    })();
    return this.stopping;
  }

  /** Cuts every connection at once (a second signal). */
  forceStop(): void {
    this.http?.forceClose();
    this.grpc?.forceShutdown();
  }

  /** The HTTP API (views and blocked-read counters, for tests and metrics). */
  get httpServer(): HttpServer | undefined {
    return this.http;
  }
}
