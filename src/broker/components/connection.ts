import type * as grpc from "@grpc/grpc-js";
import { PermissionDeniedError, type ResolvedToken } from "../../acl/index.js";
import type { BrokerEvent, BrokerEvent__Output } from "../../generated/sluice/v1/BrokerEvent.js";
import type { SubscribeRequest__Output } from "../../generated/sluice/v1/SubscribeRequest.js";
import { encodeFrame } from "../../proto/index.js";
import {
  ShuttingDownError,
  type Subscription,
  SubscriptionForceClosedError,
  TooManySubscriptionsError,
} from "../../stream/index.js";
import { InvalidArgumentError } from "../errors.js";
import { openSubscription } from "../open-subscription.js";
import { toGrpcStatus } from "../status.js";
import type { ComponentBroker } from "./component-broker.js";
import { type ComponentRef, type Envelope, Kind, normalize, refText, Status } from "./envelope.js";
import {
  ComponentBacklogError,
  NotRegisteredError,
  ReplicaConflictError,
  SourceMismatchError,
  TokenRequiredError,
} from "./errors.js";
import type { Replica } from "./router.js";

type Call = grpc.ServerDuplexStream<BrokerEvent__Output, BrokerEvent>;

/** Messages held for a component that is not reading before its connection is ended. */
const MAX_BACKLOG = 10_000;

interface SubscriptionSlot {
  sub: Subscription | undefined;
  /** Unsubscribed (or the connection closed) before or while it opened. */
  cancelled: boolean;
}

/** Ends a call with a status (grpc-js sends it as the stream's trailers). */
/** Ends a call with the status its error maps to (the one mapping in ../status.ts). */
function endWith(call: Call, err: Error): void {
  call.emit("error", toGrpcStatus(err));
}

/**
 * One component's broker connection: the `register` handshake, events in (checked against
 * the registered identity) and out (with back-pressure), and change-stream subscriptions
 * multiplexed on the same stream.
 */
export class ComponentConnection implements Replica {
  ref!: ComponentRef;
  concurrency = 16;
  /** Change-stream subscriptions by id (taken while one opens, before it has a Subscription). */
  private readonly subs = new Map<string, SubscriptionSlot>();
  private closed = false;
  private registered = false;
  private stopRevoke: (() => void) | undefined;
  /** Writes waiting for the stream to drain. */
  private backlog: BrokerEvent[] = [];
  /** Index of the backlog's first unsent message (the array is compacted when drained). */
  private backlogHead = 0;
  private waiting = false;
  /** Writes wait behind `registered` until the replica is reachable from other brokers. */
  private holding = false;
  private drainWaiters: (() => void)[] = [];

  constructor(
    private readonly broker: ComponentBroker,
    private readonly call: Call,
    private readonly resolved: ResolvedToken,
    /** The token as the component presented it. */
    private readonly token: string | undefined,
  ) {
    call.on("data", (m: BrokerEvent__Output) => this.onMessage(m));
    // The component half-closed: it leaves, and its stream ends OK (else the client would
    // wait for a status forever).
    call.on("end", () => {
      if (this.closed) return;
      this.close();
      call.end();
    });
    call.on("cancelled", () => this.close());
    call.on("error", () => this.close());
    call.on("drain", () => this.flush());
  }

  private onMessage(m: BrokerEvent__Output): void {
    if (this.closed) return;
    if (!this.registered) {
      if (m.msg !== "register" || !m.register?.name || !m.register.id) {
        this.fail(
          new NotRegisteredError(m.msg === "register" ? "a register without name or id" : String(m.msg)),
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
        this.unsubscribe(m.unsubscribe!.id);
        return;
      case "register":
        this.fail(new InvalidArgumentError("register", "already registered"));
        return;
      default:
        this.fail(new InvalidArgumentError("msg", `unexpected message ${m.msg}`));
        return;
    }
  }

  private register(name: string, id: string, concurrency: number): void {
    if (!this.resolved.authorizer.allows("component", name, "write")) {
      // No token presented: the anonymous token may not register, so the component has not
      // authenticated at all (a token that was presented and lacks the rule is denied).
      if (this.token === undefined) {
        this.fail(new TokenRequiredError(name));
      } else {
        this.fail(new PermissionDeniedError("component", name, "write"));
      }
      return;
    }
    this.ref = { name, id };
    this.concurrency = concurrency > 0 ? concurrency : 16;
    if (!this.broker.attach(this)) {
      this.fail(new ReplicaConflictError(name, id));
      return;
    }
    this.registered = true;
    this.stopRevoke = this.broker.onRevoke(this.resolved.secret, (reason) =>
      this.fail(new SubscriptionForceClosedError(`${reason}: reconnect with a valid token`)),
    );
    // `registered` goes out once other brokers can reach the replica (its NATS subscriptions
    // are in place); whatever is delivered meanwhile follows it.
    this.holding = true;
    void this.broker.reachable().then(() => {
      this.holding = false;
      this.backlog.splice(this.backlogHead, 0, { registered: { broker_id: this.broker.id } });
      this.flush();
    });
  }

  private onEvent(raw: Envelope): void {
    const now = this.broker.now();
    const env = normalize(raw, now);
    if (env.source?.name !== this.ref.name || env.source.id !== this.ref.id) {
      this.fail(new SourceMismatchError(refText(env.source), refText(this.ref)));
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
    const endFrame = (code: grpc.status, message: string): void =>
      this.write({ frame: { subscription_id: id, ended: true, status_code: code, status_message: message } });
    if (!req || this.subs.has(id)) {
      // A duplicate id is refused without touching the open subscription of that id.
      const err = req
        ? new InvalidArgumentError("id", `subscription ${id} is open already`)
        : new InvalidArgumentError("request", "subscribe needs a request");
      endFrame(Status.INVALID_ARGUMENT, err.message);
      return;
    }
    const limit = this.broker.maxSubscriptionsPerConnection;
    if (this.subs.size >= limit) {
      endFrame(Status.RESOURCE_EXHAUSTED, new TooManySubscriptionsError(limit, "connection").message);
      return;
    }
    // The id is taken from now on, while the subscription opens (an unsubscribe meanwhile
    // cancels it as soon as it is open).
    const slot: SubscriptionSlot = { sub: undefined, cancelled: false };
    this.subs.set(id, slot);
    try {
      const sub = await openSubscription(this.broker, req, this.token, this.broker.indexAheadWaitMs);
      slot.sub = sub;
      if (this.closed || slot.cancelled) sub.unsubscribe();
      for await (const frame of sub) {
        const bytes = encodeFrame(frame);
        // A view over the shared encoded bytes, not a copy per subscriber.
        const event = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        this.write({ frame: { subscription_id: id, event } });
        if (this.waiting) await this.drained();
      }
      if (!this.closed) endFrame(Status.OK, "unsubscribed");
    } catch (err) {
      if (!this.closed) {
        const s = toGrpcStatus(err);
        endFrame(s.code, s.details);
      }
    } finally {
      if (this.subs.get(id) === slot) this.subs.delete(id);
    }
  }

  private unsubscribe(id: string): void {
    const slot = this.subs.get(id);
    if (!slot) return;
    slot.cancelled = true;
    slot.sub?.unsubscribe();
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.waiting || this.closed) resolve();
      else this.drainWaiters.push(resolve);
    });
  }

  private write(m: BrokerEvent): void {
    if (this.closed) return;
    if (this.waiting || this.holding) {
      // A component that does not read cannot make the broker hold without limit.
      if (this.backlog.length - this.backlogHead >= MAX_BACKLOG) {
        this.fail(new ComponentBacklogError(MAX_BACKLOG));
        return;
      }
      this.backlog.push(m);
      return;
    }
    // grpc-js takes the message either way; false asks us to wait for 'drain'.
    if (!this.call.write(m)) this.waiting = true;
  }

  private flush(): void {
    if (this.holding) return;
    this.waiting = false;
    while (this.backlogHead < this.backlog.length && !this.waiting && !this.closed) {
      const m = this.backlog[this.backlogHead]!;
      (this.backlog as (BrokerEvent | undefined)[])[this.backlogHead++] = undefined;
      if (!this.call.write(m)) this.waiting = true;
    }
    if (this.backlogHead === this.backlog.length) {
      this.backlog = [];
      this.backlogHead = 0;
    }
    if (!this.waiting) for (const w of this.drainWaiters.splice(0)) w();
  }

  private fail(err: Error): void {
    if (this.closed) return;
    endWith(this.call, err);
    this.close();
  }

  private readonly closeListeners: (() => void)[] = [];

  onClose(cb: () => void): void {
    this.closeListeners.push(cb);
  }

  /** The broker is stopping. */
  shutdown(): void {
    this.fail(new ShuttingDownError());
  }

  /** The connection ended: subscriptions close, the replica leaves its group. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const cb of this.closeListeners.splice(0)) cb();
    this.stopRevoke?.();
    for (const id of [...this.subs.keys()]) this.unsubscribe(id);
    this.subs.clear();
    for (const w of this.drainWaiters.splice(0)) w();
    if (this.registered) this.broker.detach(this);
  }
}
