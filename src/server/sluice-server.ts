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
    const dataDir = config.dev || config.edge ? undefined : resolve(config.dataDir);
    const metrics = new Metrics();
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
      replica = await EdgeReplica.connect({
        servers: config.nats,
        stream: config.natsStream,
        prefix: config.natsPrefix,
        forwardWrites: config.edgeForwardWrites,
        logger: logger.child({ component: "edge" }),
      });
      store = replica.store;
      const r = replica;
      metrics.attachReplication(() => {
        const lag = r.lag();
        return {
          replicationLagCommits: lag.commits,
          replicationLagSeconds: lag.seconds,
          replicationIndex: lag.index,
        };
      });
    } else {
      store = await Store.open({
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
      if (config.nats) {
        try {
          bridge = await JetStreamBridge.start({
            servers: config.nats,
            stream: config.natsStream,
            prefix: config.natsPrefix,
            snapshotEvery: config.natsSnapshotEvery,
            maxAgeMs: config.natsMaxAgeSec * 1000,
            maxBytes: config.natsMaxBytes,
            writer: addrs,
            store,
            logger: logger.child({ component: "bridge" }),
          });
        } catch (err) {
          await store.close();
          throw err;
        }
        const b = bridge;
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
    metrics.attachPublisher(publisher);
    const resolver = new TokenResolver({
      enabled: config.aclEnabled,
      defaultPolicy: config.aclDefaultPolicy,
    });
    const enforcer = new AclEnforcer(publisher, resolver, logger);
    const admin = new AclAdmin(store, config.aclEnabled, logger);
    // An edge's anonymous token comes with the writer's state.
    if (!replica) await admin.ensureAnonymous();
    // An edge serves once it has replayed what the stream held when it started.
    if (replica) await replica.follow();
    let broker: ComponentBroker;
    try {
      broker = await ComponentBroker.start({
        publisher,
        enforcer,
        logger: logger.child({ component: "broker" }),
        ...(config.brokerId ? { id: config.brokerId } : {}),
        httpAllow: config.brokerHttpAllow.split(",").filter((h) => h.trim() !== ""),
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
    } catch (err) {
      enforcer.close();
      await bridge?.close();
      await (replica ? replica.close() : store.close());
      throw err;
    }
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
    server.grpc = new GrpcServer({
      store,
      publisher,
      enforcer,
      admin,
      logger,
      maxSubscriptionsPerConnection: config.maxSubscriptionsPerConnection,
      onRequest: metrics.observeGrpc,
    });
    server.grpc.addService("sluice.v1.Broker", sluiceV1.Broker.service, broker.handlers());
    try {
      server.grpcPort = await server.grpc.listen(config.grpcAddr);
    } catch (err) {
      await broker.close();
      await bridge?.close();
      await (replica ? replica.close() : store.close());
      throw new ListenError("gRPC", config.grpcAddr, { cause: err });
    }
    const grpcAddr = config.grpcAddr.replace(/:\d+$/, `:${server.grpcPort}`);
    addrs.grpc = grpcAddr;
    server.http = new HttpServer({
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
    });
    try {
      server.httpPort = await server.http.listen(config.httpAddr);
    } catch (err) {
      await server.http.close(0).catch(() => {});
      server.grpc.forceShutdown();
      publisher.shutdown();
      await broker.close();
      enforcer.close();
      await bridge?.close();
      await (replica ? replica.close() : store.close());
      throw new ListenError("HTTP", config.httpAddr, { cause: err });
    }
    const httpAddr = config.httpAddr.replace(/:\d+$/, `:${server.httpPort}`);
    addrs.http = httpAddr;
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
