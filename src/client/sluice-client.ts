import * as grpc from "@grpc/grpc-js";
import type { ACLClient } from "../generated/sluice/v1/ACL.js";
import type { CatalogClient } from "../generated/sluice/v1/Catalog.js";
import type { Event__Output } from "../generated/sluice/v1/Event.js";
import type { KVClient } from "../generated/sluice/v1/KV.js";
import type { StateChangeSubscriptionClient } from "../generated/sluice/v1/StateChangeSubscription.js";
import type { SubscribeRequest as WireSubscribeRequest } from "../generated/sluice/v1/SubscribeRequest.js";
import { sluiceV1 } from "../proto/index.js";
import { AclApi } from "./acl-api.js";
import { type BackoffPolicy, DEFAULT_BACKOFF, validatePolicy } from "./backoff.js";
import { CatalogApi } from "./catalog-api.js";
import { errorFromStatus, ProtocolError } from "./errors.js";
import { FrameDecoder } from "./frame-decoder.js";
import { KVApi } from "./kv-api.js";
import { StreamView, type ViewRuntime } from "./stream-view.js";
import {
  type Frame,
  type KVEntry,
  type MaterializedView,
  type SecretId,
  type ServiceHealthViewOptions,
  type ServiceInstance,
  type Subject,
  type SubscribeRequest,
  Topic,
  type ViewOptions,
} from "./types.js";
import type { CallContext } from "./unary-call.js";
import { KVModel, ServiceHealthModel, type ViewModel } from "./view-models.js";
import { WatchMux } from "./watch-mux.js";

export interface SluiceClientOptions {
  /** `host:port` of the server's gRPC listener. */
  readonly address: string;
  /** The ACL token's secret, sent as `x-sluice-token` on every call. */
  readonly token?: SecretId | string;
  /** Default: insecure (plain TCP). */
  readonly credentials?: grpc.ChannelCredentials;
  /** Deadline of unary calls, and of each write of a `kvStore.writer()`, in ms (default 30 s). */
  readonly callTimeoutMs?: number;
  /**
   * Unary calls (and writers' streams) made while the server cannot be reached wait for it
   * (up to their deadline) instead of failing at once with `UnavailableError`. Default false.
   */
  readonly waitForReady?: boolean;
  /** Retry spacing of views (default: immediate, then 200 ms doubling to 60 s, 20% jitter). */
  readonly backoff?: Partial<BackoffPolicy>;
  /** Clock and randomness of the retry logic; for tests. */
  readonly now?: () => number;
  readonly random?: () => number;
  /** Extra grpc-js channel options. */
  readonly channelOptions?: grpc.ChannelOptions;
  /**
   * Subscriptions share a Watch stream (default true): one server-side stream however many
   * are open, and a change several of them receive crosses the wire once. The views share
   * one, and the iterations of `subscribe()` another: a view reads as fast as frames come, but
   * an iteration whose consumer stops reading pauses its stream after 1,024 unread messages,
   * which then holds back the other iterations, never a view.
   * false: each gets its own Subscribe stream (its own HTTP/2 flow control).
   */
  readonly multiplex?: boolean;
}

export interface SubscribeOptions {
  /** Ends the stream; the iteration then finishes without an error. */
  readonly signal?: AbortSignal;
}

/** The subject of a KV view: a string is a key prefix (the key itself included). */
export type KVSubject = string | { readonly key: string } | { readonly prefix: string };

/** Channel settings chosen on purpose: snapshots as large as the server sends, dead servers noticed. */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  // The views' own backoff spaces retries; the channel should reconnect promptly when asked.
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 5_000,
};

const WIRE_TOPIC = {
  [Topic.ServiceHealth]: "TOPIC_SERVICE_HEALTH",
  [Topic.ServiceList]: "TOPIC_SERVICE_LIST",
  [Topic.KV]: "TOPIC_KV",
} as const;

function subjectToWire(s: Subject): Pick<WireSubscribeRequest, "key" | "prefix" | "wildcard"> {
  if ("key" in s) return { key: s.key };
  if ("prefix" in s) return { prefix: s.prefix };
  return { wildcard: true };
}

/**
 * A connection to a Sluice server: the raw change stream (`subscribe`), materialized views
 * (`serviceHealth`, `kv`) and unary calls (`kvStore`, `catalog`, `acl`). One HTTP/2 channel
 * carries everything; `close()` ends the views and the channel.
 */
export class SluiceClient {
  readonly kvStore: KVApi;
  readonly catalog: CatalogApi;
  readonly acl: AclApi;
  private readonly channel: grpc.Channel;
  private readonly stream: StateChangeSubscriptionClient;
  private readonly views = new Set<StreamView<unknown>>();
  private readonly runtime: ViewRuntime;
  private readonly ctx: CallContext;
  /** The Watch stream of `subscribe()` iterations. */
  private readonly mux: WatchMux | undefined;
  /** The Watch stream of views, apart from `mux`: see `multiplex`. */
  private readonly viewMux: WatchMux | undefined;
  private isClosed = false;

  constructor(readonly options: SluiceClientOptions) {
    const creds = options.credentials ?? grpc.credentials.createInsecure();
    this.channel = new grpc.Channel(options.address, creds, {
      ...CHANNEL_OPTIONS,
      ...options.channelOptions,
    });
    const over = { channelOverride: this.channel };
    this.stream = new sluiceV1.StateChangeSubscription(options.address, creds, over);
    const token = options.token;
    this.ctx = {
      callTimeoutMs: options.callTimeoutMs ?? 30_000,
      waitForReady: options.waitForReady ?? false,
      metadata: (waitForReady = false) => {
        const md = new grpc.Metadata({ waitForReady });
        if (token) md.set("x-sluice-token", token);
        return md;
      },
    };
    this.kvStore = new KVApi(this.ctx, new sluiceV1.KV(options.address, creds, over) as KVClient);
    this.catalog = new CatalogApi(
      this.ctx,
      new sluiceV1.Catalog(options.address, creds, over) as CatalogClient,
    );
    this.acl = new AclApi(this.ctx, new sluiceV1.ACL(options.address, creds, over) as ACLClient);
    if (options.multiplex ?? true) {
      this.mux = new WatchMux(this.stream, () => this.ctx.metadata());
      this.viewMux = new WatchMux(this.stream, () => this.ctx.metadata());
    }
    this.runtime = {
      policy: validatePolicy({ ...DEFAULT_BACKOFF, ...options.backoff }),
      now: options.now ?? Date.now,
      random: options.random ?? Math.random,
    };
  }

  /**
   * The raw change stream of one topic and subject, decoded into frames. No retries: the
   * iteration throws a `SluiceError` subclass when the stream ends with an error status, and
   * finishes quietly when `signal` aborts or the consumer leaves the loop. Each iteration
   * opens its own subscription: on the client's shared Watch stream, or (`multiplex: false`)
   * on a Subscribe stream of its own.
   */
  subscribe(request: SubscribeRequest, options: SubscribeOptions = {}): AsyncIterable<Frame> {
    return { [Symbol.asyncIterator]: () => this.frames(request, options.signal, this.mux) };
  }

  private async *frames(
    request: SubscribeRequest,
    signal: AbortSignal | undefined,
    mux: WatchMux | undefined,
  ): AsyncGenerator<Frame> {
    if (signal?.aborted) return;
    const index = request.index ?? 0;
    const wire: WireSubscribeRequest = {
      topic: WIRE_TOPIC[request.topic],
      ...subjectToWire(request.subject),
      index,
    };
    if (mux) {
      yield* this.watchFrames(mux, wire, signal);
      return;
    }
    const call = this.stream.Subscribe(wire, this.ctx.metadata());
    // Errors are read through the iterator below; this keeps a late one from going unhandled.
    call.on("error", () => {});
    const onAbort = (): void => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    const decoder = new FrameDecoder(index > 0);
    try {
      for await (const message of call as AsyncIterable<Event__Output>) yield decoder.decode(message);
    } catch (err) {
      if (signal?.aborted) return;
      if (err instanceof ProtocolError) throw err;
      throw errorFromStatus(err);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      call.cancel();
    }
  }

  private async *watchFrames(
    mux: WatchMux,
    wire: WireSubscribeRequest,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Frame> {
    const sub = mux.open(wire);
    const onAbort = (): void => sub.leave();
    signal?.addEventListener("abort", onAbort, { once: true });
    const decoder = new FrameDecoder(Number(wire.index ?? 0) > 0);
    try {
      for (;;) {
        const r = await sub.next();
        if (r.done) return;
        yield decoder.decode(r.value);
      }
    } catch (err) {
      if (signal?.aborted) return;
      if (err instanceof ProtocolError) throw err;
      throw errorFromStatus(err);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      sub.leave();
    }
  }

  /** A live list of a service's instances (with nodes and checks), optionally filtered. */
  serviceHealth(
    service: string,
    options: ServiceHealthViewOptions = {},
  ): MaterializedView<readonly ServiceInstance[]> {
    const filter = {
      passingOnly: options.passingOnly ?? false,
      ...(options.tag ? { tag: options.tag } : {}),
    };
    return this.view(
      { topic: Topic.ServiceHealth, subject: { key: service } },
      () => new ServiceHealthModel(filter),
      options,
    );
  }

  /** A live map of the KV entries under a prefix (a string) or of one key (`{ key }`), in key order. */
  kv(subject: KVSubject, options: ViewOptions = {}): MaterializedView<ReadonlyMap<string, KVEntry>> {
    const s: Subject = typeof subject === "string" ? { prefix: subject } : subject;
    return this.view({ topic: Topic.KV, subject: s }, () => new KVModel(), options);
  }

  private view<V>(
    request: Omit<SubscribeRequest, "index">,
    makeModel: () => ViewModel<V>,
    options: ViewOptions,
  ): MaterializedView<V> {
    if (this.isClosed) throw new Error("SluiceClient is closed");
    const source = (req: SubscribeRequest, o: { signal: AbortSignal }): AsyncIterable<Frame> => ({
      [Symbol.asyncIterator]: () => this.frames(req, o.signal, this.viewMux),
    });
    let view: StreamView<V> | undefined;
    view = new StreamView(source, request, makeModel, this.runtime, options, () => {
      if (view) this.views.delete(view as StreamView<unknown>);
    });
    if (!view.closed) this.views.add(view as StreamView<unknown>);
    return view;
  }

  /** Closes every view and the channel. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const v of [...this.views]) v.close();
    this.kvStore.cancelWriters();
    this.mux?.close();
    this.viewMux?.close();
    this.channel.close();
  }
}
