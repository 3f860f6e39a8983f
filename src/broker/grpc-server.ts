import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { packageDefinition, sluiceV1 } from "../proto/index.js";
import { aclService } from "./acl-service.js";
import { catalogService } from "./catalog-service.js";
import { ConnectionLimit } from "./connection-limit.js";
import type { BrokerDeps } from "./context.js";
import { kvService } from "./kv-service.js";
import { makeSubscribeHandler } from "./subscribe-handler.js";
import { makeWatchHandler } from "./watch-handler.js";
import { makeWriteHandler } from "./write-stream.js";

/** Channel settings chosen on purpose: dead peers are found, big snapshots fit. */
export const SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 5_000,
  "grpc.max_receive_message_length": 4 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
  // Channelz keeps per-call bookkeeping and a callback per write: memory and CPU per
  // subscription that a server with thousands of open streams does not want.
  "grpc.enable_channelz": 0,
};

const SERVICES = ["sluice.v1.StateChangeSubscription", "sluice.v1.Catalog", "sluice.v1.KV", "sluice.v1.ACL"];

/** Wraps a service's unary handlers so that each call's method, status and duration are observed. */
function instrument<T extends object>(
  service: string,
  impl: T,
  observe: ((method: string, code: string, ms: number) => void) | undefined,
): T {
  if (!observe) return impl;
  const out: Record<string, unknown> = {};
  for (const [name, handler] of Object.entries(impl)) {
    const h = handler as grpc.handleUnaryCall<unknown, unknown>;
    out[name] = ((call, callback) => {
      const t0 = performance.now();
      h(call, (err, res) => {
        const code = err ? grpc.status[(err as { code?: number }).code ?? grpc.status.UNKNOWN] : "OK";
        observe(`/${service}/${name}`, String(code), performance.now() - t0);
        callback(err, res);
      });
    }) satisfies grpc.handleUnaryCall<unknown, unknown>;
  }
  return out as T;
}

/** The gRPC face of Sluice: Subscribe, the write and read APIs, health and reflection. */
export class GrpcServer {
  private readonly server = new grpc.Server(SERVER_OPTIONS);
  private readonly health = new HealthImplementation(
    Object.fromEntries([["", "SERVING"], ...SERVICES.map((s) => [s, "SERVING"])]),
  );

  constructor(private readonly deps: BrokerDeps) {
    // Subscribe and Watch write messages that are already encoded: the serializer passes
    // bytes through.
    const passThrough = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    const streamDef = { ...sluiceV1.StateChangeSubscription.service };
    streamDef.Subscribe = {
      ...streamDef.Subscribe,
      responseSerialize: passThrough,
    } as unknown as typeof streamDef.Subscribe;
    streamDef.Watch = {
      ...streamDef.Watch,
      responseSerialize: passThrough,
    } as unknown as typeof streamDef.Watch;
    // One limit per connection for Subscribe streams and Watch subscriptions together.
    const limit = new ConnectionLimit(deps.maxSubscriptionsPerConnection ?? 10_000);
    const watch = makeWatchHandler(deps, limit);
    this.endWatches = watch.shutdown;
    this.server.addService(streamDef, {
      Subscribe: makeSubscribeHandler(deps, limit),
      Watch: watch.handler,
    } as grpc.UntypedServiceImplementation);
    const observe = deps.onRequest;
    this.server.addService(
      sluiceV1.Catalog.service,
      instrument("sluice.v1.Catalog", catalogService(deps), observe),
    );
    const writes = makeWriteHandler(deps);
    this.endWrites = writes.shutdown;
    this.server.addService(sluiceV1.KV.service, instrument("sluice.v1.KV", kvService(deps, writes), observe));
    this.server.addService(sluiceV1.ACL.service, instrument("sluice.v1.ACL", aclService(deps), observe));
    this.health.addToServer(this.server);
    new ReflectionService(packageDefinition).addToServer(this.server);
  }

  /** Adds another service (the component broker) before `listen`; health reports it SERVING. */
  addService(name: string, def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void {
    this.server.addService(def, impl);
    this.extra.push(name);
    this.health.setStatus(name, "SERVING");
  }

  private readonly extra: string[] = [];
  private readonly endWatches: () => void;
  private readonly endWrites: () => void;

  /** Reports every service NOT_SERVING (an edge whose replication stopped), or SERVING again. */
  setServing(serving: boolean): void {
    for (const s of ["", ...SERVICES, ...this.extra])
      this.health.setStatus(s, serving ? "SERVING" : "NOT_SERVING");
  }

  /** Binds `host:port` (port 0 picks a free one) and returns the bound port. */
  listen(address: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err) reject(err);
        else resolve(port);
      });
    });
  }

  /**
   * Drain → grace → force: reports NOT_SERVING, lets in-flight calls finish (open
   * subscriptions are ended by the publisher's shutdown with UNAVAILABLE), and cuts what is
   * left after `graceMs`.
   */
  async shutdown(graceMs: number): Promise<void> {
    for (const s of ["", ...SERVICES, ...this.extra]) this.health.setStatus(s, "NOT_SERVING");
    this.endWatches();
    this.endWrites();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.deps.logger.warn({ graceMs }, "gRPC calls still open after the grace period: forcing");
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      timer.unref();
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Cuts every call at once (a second signal). */
  forceShutdown(): void {
    this.server.forceShutdown();
  }
}
