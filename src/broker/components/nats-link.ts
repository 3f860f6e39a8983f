import { headers, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "nats";
import type { BrokerLogger } from "../context.js";
import { connectNats, escapeToken } from "../jetstream/index.js";
import type { ComponentBroker } from "./component-broker.js";
import {
  type ComponentRef,
  decodeEnvelope,
  type Envelope,
  encodeEnvelope,
  expired,
  refKey,
} from "./envelope.js";
import type { Origin } from "./router.js";

/*
 * How brokers reach each other through NATS (subjects under <prefix>.broker):
 *
 *   node.<broker id>            responses for requests sent from that broker (targeted)
 *   replica.<name>.<id>         events for one replica (subscribed by the broker holding it)
 *   group.<name>                events for any replica of a group (queue group per name, so
 *                               exactly one broker that has a replica takes each)
 *
 * Events travel as sluice.v1.Envelope protobuf; a forward is a request whose reply says
 * whether the receiving broker took it ({"ok":true}), so "no replica anywhere" is known
 * (no responders) rather than guessed. The deadline crosses as the time left plus the send
 * time: the receiver's budget is what was left at sending minus the transit time (its clock
 * minus the send time, so clocks are assumed synchronized, e.g. by NTP; a skew shows up as
 * that much more or less time). Whatever arrives from NATS
 * is only ever delivered locally: nothing goes back to NATS, so there are no loops.
 */

const H_ORIGIN = "Sluice-Origin-Broker";
const H_LEFT = "Sluice-Deadline-Left-Ms";
const H_SENT = "Sluice-Sent-Ms";

export class NatsLink {
  private readonly replicaSubs = new Map<string, Subscription>();
  private readonly groupSubs = new Map<string, Subscription>();
  private readonly nodeSub: Subscription;
  private readonly base: string;

  private constructor(
    private readonly broker: ComponentBroker,
    readonly connection: NatsConnection,
    prefix: string,
    private readonly logger: BrokerLogger,
  ) {
    this.base = `${prefix}.broker`;
    this.nodeSub = connection.subscribe(`${this.base}.node.${escapeToken(broker.id)}`, {
      callback: (err, msg) => {
        if (err) return;
        const resp = this.arrive(msg);
        if (resp) this.broker.complete(resp);
      },
    });
  }

  static async connect(
    broker: ComponentBroker,
    opts: { servers: string; prefix: string },
    logger: BrokerLogger,
  ): Promise<NatsLink> {
    const nc = await connectNats(opts.servers, `sluice-broker-${broker.id}`);
    return new NatsLink(broker, nc, opts.prefix, logger);
  }

  private replicaSubject(r: ComponentRef): string {
    return `${this.base}.replica.${escapeToken(r.name)}.${escapeToken(r.id)}`;
  }

  private groupSubject(name: string): string {
    return `${this.base}.group.${escapeToken(name)}`;
  }

  /** Starts taking NATS traffic for a replica connected here (and its group). */
  replicaAdded(r: ComponentRef): void {
    const key = refKey(r);
    if (!this.replicaSubs.has(key)) {
      this.replicaSubs.set(
        key,
        this.connection.subscribe(this.replicaSubject(r), { callback: (e, m) => this.take(e, m) }),
      );
    }
    if (!this.groupSubs.has(r.name)) {
      this.groupSubs.set(
        r.name,
        this.connection.subscribe(this.groupSubject(r.name), {
          queue: `g.${escapeToken(r.name)}`,
          callback: (e, m) => this.take(e, m),
        }),
      );
    }
  }

  /** Resolves once the NATS server has processed everything sent so far (subscriptions included). */
  flush(): Promise<void> {
    return this.connection.flush();
  }

  /** Stops it; the group's subscription goes when `groupLeft` is false. */
  replicaRemoved(r: ComponentRef, groupLeft: boolean): void {
    const key = refKey(r);
    this.replicaSubs.get(key)?.unsubscribe();
    this.replicaSubs.delete(key);
    if (!groupLeft) {
      this.groupSubs.get(r.name)?.unsubscribe();
      this.groupSubs.delete(r.name);
    }
  }

  private stamp(env: Envelope, origin: string): MsgHdrs {
    const h = headers();
    const now = this.broker.now();
    h.set(H_ORIGIN, origin);
    h.set(H_LEFT, String(Math.max(0, env.deadline_ms - now)));
    h.set(H_SENT, String(now));
    return h;
  }

  /** Decodes an envelope from NATS with its deadline moved to this clock, less the transit time. */
  private arrive(msg: Msg): Envelope | undefined {
    let env: Envelope;
    try {
      env = decodeEnvelope(msg.data);
    } catch (err) {
      this.logger.warn({ err: String(err), subject: msg.subject }, "undecodable envelope from NATS");
      return undefined;
    }
    this.broker.metrics.received++;
    const now = this.broker.now();
    const left = Number(msg.headers?.get(H_LEFT));
    const sent = Number(msg.headers?.get(H_SENT));
    if (Number.isFinite(left)) {
      const transit = Number.isFinite(sent) ? Math.max(0, now - sent) : 0;
      env = { ...env, deadline_ms: now + left - transit };
    }
    if (expired(env, now)) {
      this.broker.countExpired();
      return undefined;
    }
    return env;
  }

  private take(err: Error | null, msg: Msg): void {
    if (err) return;
    const env = this.arrive(msg);
    if (!env) {
      msg.respond(Buffer.from(JSON.stringify({ ok: false, reason: "expired" })));
      return;
    }
    const origin: Origin = { broker: msg.headers?.get(H_ORIGIN) || undefined, source: env.source! };
    const where = this.broker.route(env, origin, true);
    msg.respond(
      Buffer.from(JSON.stringify(where === "here" ? { ok: true } : { ok: false, reason: "no replica" })),
    );
  }

  /** Hands an envelope to a broker that has its target; false when none took it. */
  async forward(env: Envelope, origin: Origin): Promise<boolean> {
    const subject = env.target?.id
      ? this.replicaSubject(env.target)
      : this.groupSubject(env.target?.name ?? "");
    const left = env.deadline_ms - this.broker.now();
    if (left <= 0) return false;
    try {
      const reply = await this.connection.request(subject, encodeEnvelope(env), {
        timeout: Math.min(left, 5000),
        headers: this.stamp(env, origin.broker ?? this.broker.id),
      });
      return (JSON.parse(Buffer.from(reply.data).toString("utf8")) as { ok: boolean }).ok;
    } catch {
      return false; // no responders (no broker has one), or timed out
    }
  }

  /** Sends a response to the broker its request came from. */
  sendResponse(brokerId: string, resp: Envelope): void {
    this.connection.publish(`${this.base}.node.${escapeToken(brokerId)}`, encodeEnvelope(resp), {
      headers: this.stamp(resp, this.broker.id),
    });
  }

  async close(): Promise<void> {
    this.nodeSub.unsubscribe();
    await this.connection.drain().catch(() => this.connection.close());
  }
}
