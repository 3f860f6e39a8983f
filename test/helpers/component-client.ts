import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { onTestFinished } from "vitest";
import type { BrokerClient } from "../../src/generated/sluice/v1/Broker.js";
import type { BrokerEvent, BrokerEvent__Output } from "../../src/generated/sluice/v1/BrokerEvent.js";
import type { ComponentRef } from "../../src/generated/sluice/v1/ComponentRef.js";
import type { Envelope, Envelope__Output } from "../../src/generated/sluice/v1/Envelope.js";
import type { Event__Output } from "../../src/generated/sluice/v1/Event.js";
import type { SubscribeRequest } from "../../src/generated/sluice/v1/SubscribeRequest.js";
import { EventType, sluiceV1 } from "../../src/proto/index.js";
import { flatten, metadataFor, render, withTimeout } from "./grpc-harness.js";

/*
 * A component as the broker sees it, over a real grpc-js connection (its own TCP connection):
 * it registers, sends events and requests with its identity as source, records everything
 * delivered to it, answers requests (optionally slowly, to play a slow replica), opens
 * change-stream subscriptions on the same stream, and records the stream's final status.
 * Every client is cancelled and closed when the test finishes.
 */

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.use_local_subchannel_pool": 1,
  "grpc.initial_reconnect_backoff_ms": 50,
  "grpc.max_reconnect_backoff_ms": 200,
};

export const Kind = {
  Event: "ENVELOPE_KIND_EVENT",
  Request: "ENVELOPE_KIND_REQUEST",
  Response: "ENVELOPE_KIND_RESPONSE",
} as const;

/** What a request handler answers: response fields, or `undefined` for no answer at all. */
export type Answer = Partial<Pick<Envelope, "headers" | "content_type" | "payload" | "type">> & {
  readonly status_code?: number;
  readonly status_message?: string;
};

export type RequestHandler = (req: Envelope__Output) => Answer | undefined | Promise<Answer | undefined>;

export interface ComponentOptions {
  readonly name: string;
  readonly id: string;
  readonly token?: string;
  /** Requests the broker hands it at once (the broker's default when left out). */
  readonly concurrency?: number;
  /** How requests are answered (default: an OK response echoing the payload). */
  readonly handler?: RequestHandler;
  /** Time each request takes before it is answered, ms (a slow replica). */
  readonly delayMs?: number;
  /** Send `register` (default true); false leaves the first message to the test. */
  readonly register?: boolean;
}

const echo: RequestHandler = (req) => ({ payload: req.payload, content_type: req.content_type });

/** One change-stream subscription on a broker connection, decoded like a Subscribe stream. */
export class BrokerSubscription {
  readonly messages: Event__Output[] = [];
  /** The end frame's status (code and message), once it came. */
  ended: { code: number; message: string } | undefined;

  constructor(
    readonly id: string,
    private readonly notify: () => void,
  ) {}

  push(bytes: Buffer): void {
    const m = EventType.toObject(EventType.decode(bytes), {
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    }) as Event__Output;
    this.messages.push(m);
    this.notify();
  }

  end(code: number, message: string): void {
    this.ended = { code, message };
    this.notify();
  }

  get frames(): string[] {
    return this.messages.map(render);
  }

  get lines(): string[] {
    return flatten(this.messages);
  }

  get changes(): string[] {
    return this.lines.filter((l) => !l.startsWith("P@"));
  }
}

/** A connected component replica. */
export class ComponentClient {
  readonly client: BrokerClient;
  readonly call: grpc.ClientDuplexStream<BrokerEvent, BrokerEvent__Output>;
  readonly ref: { name: string; id: string };
  /** Events and requests delivered to it, in order. */
  readonly received: Envelope__Output[] = [];
  /** Responses to its own requests, in order. */
  readonly responses: Envelope__Output[] = [];
  /** Ids of the requests it answered. */
  readonly served: string[] = [];
  /** Requests being worked on now, and the most at once. */
  busy = 0;
  maxBusy = 0;
  /** The broker id from `registered`. */
  brokerId: string | undefined;
  status: grpc.StatusObject | undefined;
  readonly ended: Promise<grpc.StatusObject>;
  readonly subscriptions = new Map<string, BrokerSubscription>();
  /** Set false to stop answering (requests are still recorded). */
  answering = true;
  private readonly waiters = new Set<() => void>();
  private readonly replies = new Map<string, (e: Envelope__Output) => void>();
  private closed = false;

  private constructor(
    address: string,
    private readonly opts: ComponentOptions,
  ) {
    this.ref = { name: opts.name, id: opts.id };
    this.client = new sluiceV1.Broker(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    this.call = this.client.Connect(metadataFor(opts.token));
    this.call.on("data", (m: BrokerEvent__Output) => this.onMessage(m));
    // The status event carries the same information; without a listener 'error' would throw.
    this.call.on("error", () => {});
    this.ended = new Promise((resolve) => {
      this.call.on("status", (s: grpc.StatusObject) => {
        this.status = s;
        resolve(s);
        this.notify();
      });
    });
    if (opts.register !== false) {
      this.write({ register: { name: opts.name, id: opts.id, concurrency: opts.concurrency ?? 0 } });
    }
  }

  /** Connects and registers; resolves once the broker answered `registered`. */
  static async connect(address: string, opts: ComponentOptions): Promise<ComponentClient> {
    const c = ComponentClient.open(address, opts);
    await c.until(() => c.brokerId !== undefined, `${opts.name}/${opts.id} to be registered`);
    return c;
  }

  /** Opens the stream (and sends `register` unless told not to) without waiting for anything. */
  static open(address: string, opts: ComponentOptions): ComponentClient {
    const c = new ComponentClient(address, opts);
    onTestFinished(() => c.close());
    return c;
  }

  private onMessage(m: BrokerEvent__Output): void {
    switch (m.msg) {
      case "registered":
        this.brokerId = m.registered!.broker_id;
        break;
      case "event": {
        const e = m.event!;
        if (e.kind === Kind.Response) {
          this.responses.push(e);
          const reply = this.replies.get(e.parent_id);
          this.replies.delete(e.parent_id);
          reply?.(e);
        } else {
          this.received.push(e);
          if (e.kind === Kind.Request && this.answering) void this.answer(e);
        }
        break;
      }
      case "frame": {
        const f = m.frame!;
        const sub = this.subscriptions.get(f.subscription_id);
        if (!sub) break;
        if (f.ended) sub.end(f.status_code, f.status_message);
        else sub.push(f.event);
        break;
      }
      default:
        break;
    }
    this.notify();
  }

  private async answer(req: Envelope__Output): Promise<void> {
    this.busy++;
    this.maxBusy = Math.max(this.maxBusy, this.busy);
    try {
      if (this.opts.delayMs) await new Promise((r) => setTimeout(r, this.opts.delayMs));
      const a = await (this.opts.handler ?? echo)(req);
      if (a === undefined || this.closed) return;
      this.served.push(req.id);
      this.send({
        kind: Kind.Response,
        parent_id: req.id,
        target: req.source,
        type: a.type ?? req.type,
        ...a,
      });
    } finally {
      this.busy--;
    }
  }

  write(m: BrokerEvent): void {
    if (!this.closed) this.call.write(m);
  }

  /** Sends an envelope with this replica as source (unless the test gives another one). */
  send(e: Envelope): string {
    const id = e.id || randomUUID();
    this.write({ event: { source: this.ref, ...e, id } });
    return id;
  }

  /** Sends a one-way event to `target`. */
  emit(target: ComponentRef, e: Envelope = {}): string {
    return this.send({ kind: Kind.Event, target, ...e });
  }

  /** Sends a request to `target` and resolves with its one response. */
  request(target: ComponentRef, e: Envelope = {}): Promise<Envelope__Output> {
    const id = e.id || randomUUID();
    const p = new Promise<Envelope__Output>((resolve) => this.replies.set(id, resolve));
    this.send({ kind: Kind.Request, target, ...e, id });
    return p;
  }

  /** `Broker/GetEvent` on this client's connection, with its token. */
  getEvent(id: string, token = this.opts.token): Promise<Envelope__Output> {
    return new Promise((resolve, reject) =>
      this.client.GetEvent({ id }, metadataFor(token), (err, e) => (err ? reject(err) : resolve(e!))),
    );
  }

  /** Opens a change-stream subscription on this connection. */
  subscribe(id: string, request: SubscribeRequest): BrokerSubscription {
    const sub = new BrokerSubscription(id, () => this.notify());
    this.subscriptions.set(id, sub);
    this.write({ subscribe: { id, request } });
    return sub;
  }

  unsubscribe(id: string): void {
    this.write({ unsubscribe: { id } });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Waits until `pred` holds; fails after `ms`, or when the stream ends first. */
  until(pred: () => boolean, what: string, ms = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (pred()) finish();
        else if (this.status)
          finish(
            new Error(
              `stream of ${this.ref.name}/${this.ref.id} ended (${grpc.status[this.status.code]}: ${this.status.details}) before ${what}`,
            ),
          );
      };
      const timer = setTimeout(() => finish(new Error(`timed out waiting for ${what}`)), ms);
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Waits for the stream to end and returns its status. */
  end(ms = 5000): Promise<grpc.StatusObject> {
    return withTimeout(this.ended, ms, `the stream of ${this.ref.name}/${this.ref.id} to end`);
  }

  /** Drops the connection (the replica goes away). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.call.cancel();
    this.client.close();
  }
}

/** A counter or gauge from `GET /v1/agent/metrics?format=prometheus` (0 when absent). */
export async function promMetric(httpPort: number, name: string, token?: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${httpPort}/v1/agent/metrics?format=prometheus`, {
    headers: token ? { "X-Consul-Token": token } : {},
  });
  if (res.status !== 200) throw new Error(`metrics: HTTP ${res.status}`);
  const line = (await res.text()).split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : 0;
}

/** Polls `pred` until it holds (for state the test cannot be told about), failing after `ms`. */
export async function eventually(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
