import { resolve } from "node:path";
import pino, { type Logger } from "pino";
import { AclAdmin, AclEnforcer, TokenResolver } from "../acl/index.js";
import { GrpcServer } from "../broker/index.js";
import { HttpServer, Metrics } from "../http/index.js";
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
  ) {}

  static async start(
    config: ServerConfig,
    logger: Logger = pino({ level: config.logLevel }),
  ): Promise<SluiceServer> {
    const dataDir = config.dev ? undefined : resolve(config.dataDir);
    const metrics = new Metrics();
    const store = await Store.open({
      ...(dataDir ? { dataDir } : { inMemory: true }),
      fsync: config.fsync,
      snapshotEvery: config.snapshotEvery,
      historyRetain: config.historyMaxEvents,
      initialize: true,
      logger,
      onFsync: metrics.observeFsync,
    });
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
    await admin.ensureAnonymous();
    const server = new SluiceServer(config, logger, store, publisher, enforcer, admin, metrics);
    server.grpc = new GrpcServer({
      store,
      publisher,
      enforcer,
      admin,
      logger,
      maxSubscriptionsPerConnection: config.maxSubscriptionsPerConnection,
      onRequest: metrics.observeGrpc,
    });
    try {
      server.grpcPort = await server.grpc.listen(config.grpcAddr);
    } catch (err) {
      await store.close();
      throw new ListenError("gRPC", config.grpcAddr, { cause: err });
    }
    const grpcAddr = config.grpcAddr.replace(/:\d+$/, `:${server.grpcPort}`);
    server.http = new HttpServer({
      store,
      publisher,
      enforcer,
      admin,
      logger: logger.child({ component: "http" }),
      leaderAddr: grpcAddr,
      onCommitDuration: metrics.observeCommit,
      routes: [metrics.routes],
    });
    try {
      server.httpPort = await server.http.listen(config.httpAddr);
    } catch (err) {
      await server.http.close(0).catch(() => {});
      server.grpc.forceShutdown();
      publisher.shutdown();
      enforcer.close();
      await store.close();
      throw new ListenError("HTTP", config.httpAddr, { cause: err });
    }
    const httpAddr = config.httpAddr.replace(/:\d+$/, `:${server.httpPort}`);
    logger.info(
      {
        grpc: grpcAddr,
        http: httpAddr,
        dataDir: dataDir ?? "(in memory: --dev)",
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
      await this.http?.close(this.config.shutdownGraceMs);
      this.publisher.shutdown();
      await this.grpc?.shutdown(this.config.shutdownGraceMs);
      this.enforcer.close();
      await this.store.close();
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
