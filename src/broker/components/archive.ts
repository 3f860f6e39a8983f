import { LRUCache } from "lru-cache";
import {
  DiscardPolicy,
  type JetStreamManager,
  type NatsConnection,
  nanos,
  RetentionPolicy,
  StorageType,
} from "nats";
import type { BrokerLogger } from "../context.js";
import { escapeToken, isNoMessage, isStreamNotFound } from "../jetstream/index.js";
import { decodeEnvelope, type Envelope, encodeEnvelope } from "./envelope.js";

/**
 * Every broker event, kept for `Broker/GetEvent`: in a JetStream stream when the broker runs
 * with NATS (subject `<prefix>.archive.<id>`, retention by age, 3 days by default), else the
 * last 10,000 in memory.
 */
export class EventArchive {
  private readonly memory = new LRUCache<string, Envelope>({ max: 10_000 });
  private nc: NatsConnection | undefined;
  private jsm: JetStreamManager | undefined;
  private stream = "";
  private prefix = "";
  private failures = 0;

  constructor(private readonly logger: BrokerLogger) {}

  async useJetStream(nc: NatsConnection, prefix: string, stream: string, maxAgeMs: number): Promise<void> {
    const jsm = await nc.jetstreamManager();
    const cfg = {
      name: stream,
      subjects: [`${prefix}.archive.>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: nanos(maxAgeMs),
      // GetEvent reads the newest message of an event's subject.
      max_msgs_per_subject: 1,
    };
    try {
      await jsm.streams.info(stream);
      await jsm.streams.update(stream, cfg);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      await jsm.streams.add(cfg);
    }
    this.nc = nc;
    this.jsm = jsm;
    this.stream = stream;
    this.prefix = prefix;
  }

  /** Keeps an event (fire and forget: an archive failure never blocks delivery). */
  put(e: Envelope): void {
    if (!this.nc) {
      this.memory.set(e.id, e);
      return;
    }
    // A core publish the stream captures, not a JetStream publish awaiting its ack: the ack's
    // round trip and promise cost more than routing the event did (bench broker). The
    // archive is best effort; delivery never waits for it.
    try {
      this.nc!.publish(`${this.prefix}.archive.${escapeToken(e.id)}`, encodeEnvelope(e));
    } catch (err) {
      if (this.failures++ % 1000 === 0) {
        this.logger.warn({ err: String(err), failures: this.failures }, "could not archive a broker event");
      }
    }
  }

  async get(id: string): Promise<Envelope | undefined> {
    if (!this.jsm) return this.memory.get(id);
    try {
      const m = await this.jsm.streams.getMessage(this.stream, {
        last_by_subj: `${this.prefix}.archive.${escapeToken(id)}`,
      });
      return decodeEnvelope(m.data);
    } catch (err) {
      if (isNoMessage(err)) return undefined;
      throw err;
    }
  }
}
