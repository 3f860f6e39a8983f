import type * as grpc from "@grpc/grpc-js";
import type { ResolvedToken } from "../../acl/index.js";
import type { BrokerEvent, BrokerEvent__Output } from "../../generated/sluice/v1/BrokerEvent.js";
import type { SubscribeRequest__Output } from "../../generated/sluice/v1/SubscribeRequest.js";
import { encodeFrame } from "../../proto/index.js";
import { IndexAheadError, type Subscription } from "../../stream/index.js";
import { toGrpcStatus } from "../status.js";
import { subjectFromWire, topicFromWire } from "../subscribe-handler.js";
import type { ComponentBroker } from "./component-broker.js";
import { type ComponentRef, type Envelope, Kind, normalize, refText, Status } from "./envelope.js";
import type { Replica } from "./router.js";

type Call = grpc.ServerDuplexStream<BrokerEvent__Output, BrokerEvent>;

/** Ends a call with a status (grpc-js sends it as the stream's trailers). */
function endWith(call: Call, code: grpc.status, details: string, errorName: string): void {
  const s = toGrpcStatus(Object.assign(new Error(details), { name: errorName }));
  call.emit("error", { ...s, code, details });
}

/**
 * One component's broker connection: the `register` handshake, events in (checked against
 * the registered identity) and out (with back-pressure), and change-stream subscriptions
 * multiplexed on the same stream.
 */
export class ComponentConnection implements Replica {
  ref!: ComponentRef;
  concurrency = 16;
  private readonly subs = new Map<string, Subscription>();
  private closed = false;
  private registered = false;
  private stopRevoke: (() => void) | undefined;
  /** Writes waiting for the stream to drain. */
  private backlog: BrokerEvent[] = [];
  private waiting = false;
  private drainWaiters: (() => void)[] = [];

  constructor(
    private readonly broker: ComponentBroker,
    private readonly call: Call,
    private readonly resolved: ResolvedToken,
    /** The token as the component presented it. */
    private readonly token: string | undefined,
  ) {
    call.on("data", (m: BrokerEvent__Output) => this.onMessage(m));
    call.on("end", () => this.close());
    call.on("cancelled", () => this.close());
    call.on("error", () => this.close());
    call.on("drain", () => this.flush());
  }

  private onMessage(m: BrokerEvent__Output): void {
    if (this.closed) return;
    if (!this.registered) {
      if (m.msg !== "register" || !m.register?.name || !m.register.id) {
        this.fail(
          Status.UNAUTHENTICATED,
          "the first message must be register { name, id }",
          "NotRegisteredError",
        );
        return;
      }
      this.register(m.register.name, m.register.id, m.register.concurrency);
      return;
    }
    switch (m.msg) {
      case "event":
        this.onEvent(m.event!);
        return;
      case "subscribe":
        void this.subscribe(m.subscribe!.id, m.subscribe!.request);
        return;
      case "unsubscribe":
        this.subs.get(m.unsubscribe!.id)?.unsubscribe();
        return;
      case "register":
        this.fail(Status.INVALID_ARGUMENT, "already registered", "InvalidArgumentError");
        return;
      default:
        this.fail(Status.INVALID_ARGUMENT, `unexpected message ${m.msg}`, "InvalidArgumentError");
        return;
    }
  }

  private register(name: string, id: string, concurrency: number): void {
    if (!this.resolved.authorizer.allows("component", name, "write")) {
      this.fail(
        Status.PERMISSION_DENIED,
        `this token may not register component "${name}" (needs component "${name}" { policy = "write" })`,
        "PermissionDeniedError",
      );
      return;
    }
    this.ref = { name, id };
    this.concurrency = concurrency > 0 ? concurrency : 16;
    if (!this.broker.attach(this)) {
      this.fail(Status.ALREADY_EXISTS, `replica ${refText(this.ref)} is connected already`, "ConflictError");
      return;
    }
    this.registered = true;
    this.stopRevoke = this.broker.onRevoke(this.resolved.secret, (reason) =>
      this.fail(
        Status.ABORTED,
        `token revoked (${reason}): reconnect with a valid token`,
        "SubscriptionForceClosedError",
      ),
    );
    this.write({ registered: { broker_id: this.broker.id } });
  }

  private onEvent(raw: Envelope): void {
    const now = this.broker.now();
    const env = normalize(raw, now);
    if (env.source?.name !== this.ref.name || env.source.id !== this.ref.id) {
      this.fail(
        Status.PERMISSION_DENIED,
        `event source ${refText(env.source)} is not the registered identity ${refText(this.ref)}`,
        "PermissionDeniedError",
      );
      return;
    }
    if (env.kind === Kind.Response) this.broker.answer(env, this);
    else this.broker.submit(env, { broker: undefined, source: this.ref }, (r) => this.deliver(r));
  }

  /** Hands an envelope to the component. */
  deliver(e: Envelope): void {
    this.write({ event: e });
  }

  private async subscribe(id: string, req: SubscribeRequest__Output | null): Promise<void> {
    const end = (err: unknown): void => {
      const s = toGrpcStatus(err);
      this.write({
        frame: { subscription_id: id, ended: true, status_code: s.code, status_message: s.details },
      });
    };
    try {
      if (!req) throw Object.assign(new Error("subscribe needs a request"), { name: "InvalidArgumentError" });
      if (this.subs.has(id))
        throw Object.assign(new Error(`subscription ${id} is open already`), {
          name: "InvalidArgumentError",
        });
      const topic = topicFromWire(req.topic);
      const subject = subjectFromWire(req);
      const index = Number(req.index ?? 0);
      const publisher = this.broker.publisher;
      if (index > publisher.index) {
        const reached = await publisher.whenIndex(index, this.broker.indexAheadWaitMs);
        if (!reached) throw new IndexAheadError(index, publisher.index);
      }
      const sub = await this.broker.enforcer.subscribe({ topic, subject, index }, this.token);
      if (this.closed) {
        sub.unsubscribe();
        return;
      }
      this.subs.set(id, sub);
      try {
        for await (const frame of sub) {
          this.write({ frame: { subscription_id: id, event: Buffer.from(encodeFrame(frame)) } });
          if (this.waiting) await this.drained();
        }
        if (!this.closed)
          this.write({
            frame: { subscription_id: id, ended: true, status_code: 0, status_message: "unsubscribed" },
          });
      } finally {
        this.subs.delete(id);
      }
    } catch (err) {
      if (!this.closed) end(err);
    }
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.waiting || this.closed) resolve();
      else this.drainWaiters.push(resolve);
    });
  }

  private write(m: BrokerEvent): void {
    if (this.closed) return;
    if (this.waiting) {
      this.backlog.push(m);
      return;
    }
    // grpc-js takes the message either way; false asks us to wait for 'drain'.
    if (!this.call.write(m)) this.waiting = true;
  }

  private flush(): void {
    this.waiting = false;
    while (this.backlog.length > 0 && !this.waiting && !this.closed) {
      if (!this.call.write(this.backlog.shift()!)) this.waiting = true;
    }
    if (!this.waiting) for (const w of this.drainWaiters.splice(0)) w();
  }

  private fail(code: grpc.status, message: string, errorName: string): void {
    if (this.closed) return;
    endWith(this.call, code, message, errorName);
    this.close();
  }

  private readonly closeListeners: (() => void)[] = [];

  onClose(cb: () => void): void {
    this.closeListeners.push(cb);
  }

  /** The broker is stopping. */
  shutdown(): void {
    this.fail(Status.UNAVAILABLE, "the broker is shutting down: reconnect", "ShuttingDownError");
  }

  /** The connection ended: subscriptions close, the replica leaves its group. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const cb of this.closeListeners.splice(0)) cb();
    this.stopRevoke?.();
    for (const s of this.subs.values()) s.unsubscribe();
    this.subs.clear();
    for (const w of this.drainWaiters.splice(0)) w();
    if (this.registered) this.broker.detach(this);
  }
}
