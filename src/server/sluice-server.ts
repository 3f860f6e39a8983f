import { resolve } from "node:path";
import pino, { type Logger } from "pino";
import { AclAdmin, AclEnforcer, TokenResolver } from "../acl/index.js";
import { GrpcServer } from "../broker/index.js";
import { Store } from "../state/index.js";
import { EventPublisher } from "../stream/index.js";
import type { ServerConfig } from "./config.js";

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):/;

/**
 * The composition root: store → publisher → ACL enforcement → gRPC. `start` brings it up;
 * `stop` drains it (subscriptions end with UNAVAILABLE, in-flight writes finish, the log
 * is flushed).
 */
export class SluiceServer {
  private grpc: GrpcServer | undefined;
  private stopping: Promise<void> | undefined;
  grpcPort = 0;

  private constructor(
    readonly config: ServerConfig,
    readonly logger: Logger,
    readonly store: Store,
    readonly publisher: EventPublisher,
    readonly enforcer: AclEnforcer,
    readonly admin: AclAdmin,
  ) {}

  static async start(
    config: ServerConfig,
    logger: Logger = pino({ level: config.logLevel }),
  ): Promise<SluiceServer> {
    const dataDir = config.dev ? undefined : resolve(config.dataDir);
    const store = await Store.open({
      ...(dataDir ? { dataDir } : { inMemory: true }),
      fsync: config.fsync,
      snapshotEvery: config.snapshotEvery,
      historyRetain: config.historyMaxEvents,
      initialize: true,
      logger,
    });
    const publisher = EventPublisher.attach(store, {
      history: { maxEvents: config.historyMaxEvents, maxBytes: config.historyMaxBytes },
      snapshotCache: { ttlMs: config.snapshotCacheTtlMs },
      progressIntervalMs: config.progressIntervalMs,
      maxSubscriptionsPerToken: config.maxSubscriptionsPerToken,
    });
    const resolver = new TokenResolver({
      enabled: config.aclEnabled,
      defaultPolicy: config.aclDefaultPolicy,
    });
    const enforcer = new AclEnforcer(publisher, resolver, logger);
    const admin = new AclAdmin(store, config.aclEnabled, logger);
    await admin.ensureAnonymous();
    const server = new SluiceServer(config, logger, store, publisher, enforcer, admin);
    server.grpc = new GrpcServer({
      store,
      publisher,
      enforcer,
      admin,
      logger,
      maxSubscriptionsPerConnection: config.maxSubscriptionsPerConnection,
    });
    try {
      server.grpcPort = await server.grpc.listen(config.grpcAddr);
    } catch (err) {
      await store.close();
      throw err;
    }
    const grpcAddr = config.grpcAddr.replace(/:\d+$/, `:${server.grpcPort}`);
    logger.info(
      {
        grpc: grpcAddr,
        dataDir: dataDir ?? "(in memory: --dev)",
        fsync: dataDir ? config.fsync : "n/a",
        acl: config.aclEnabled ? `enabled, default policy ${config.aclDefaultPolicy}` : "disabled",
        index: store.index,
        recoveredHistory: store.recoveredCommits.length,
      },
      "Sluice server started",
    );
    if (!config.aclEnabled && !LOOPBACK.test(config.grpcAddr)) {
      logger.warn(
        { grpc: grpcAddr },
        "ACLs are DISABLED on a non-loopback address: anyone who can reach it can read and write everything",
      );
    }
    return server;
  }

  /** Graceful stop; a second call returns the same promise. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.logger.info({}, "shutting down: ending subscriptions, finishing writes, flushing the log");
      this.publisher.shutdown();
      await this.grpc?.shutdown(this.config.shutdownGraceMs);
      this.enforcer.close();
      await this.store.close();
      this.logger.info({ index: this.store.index }, "stopped");
    })();
    return this.stopping;
  }

  /** Cuts every connection at once (a second signal). */
  forceStop(): void {
    this.grpc?.forceShutdown();
  }
}
