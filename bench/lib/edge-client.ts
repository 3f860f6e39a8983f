/*
 * One subscriber process of the `edge` suite (after lib/fanout-client.ts, Sluice only): opens
 * Subscribe streams (topic KV, one key each; grpc-js client built from the .proto) on ONE
 * server — the writer or an edge — and measures what arrives: the put-to-receive latency of
 * each event, from the send time the writer put into the value (CLOCK_MONOTONIC ns, the same
 * clock in every process of the machine), and whether each subscriber got every put of its
 * key once and in order, from a per-key sequence number the writer put into the value too.
 *
 * Value layout: bytes 0..7 send time (ns, little endian), bytes 8..11 the key's sequence
 * number (1, 2, … per key, uint32 LE), then padding.
 */
import * as grpc from "@grpc/grpc-js";
import type { Event__Output } from "../../src/generated/sluice/v1/Event.js";
import type { StateChangeSubscriptionClient } from "../../src/generated/sluice/v1/StateChangeSubscription.js";
import { sluiceV1 } from "../../src/proto/index.js";
import { serve } from "./child.js";
import { Histogram, type HistogramData } from "./histogram.js";

export interface EdgeOpenRequest {
  /** host:port of the server's gRPC listener. */
  readonly address: string;
  /** The key of each of this process's subscribers. */
  readonly keys: readonly string[];
  /** HTTP/2 connections this process spreads its subscribers over. */
  readonly channels: number;
}

export interface EdgeWindow {
  /** Events received inside the window. */
  readonly events: number;
  /** Stream messages (frames) received inside the window. */
  readonly messages: number;
  readonly windowMs: number;
  /** Put-to-receive latency of the events received inside the window. */
  readonly latency: HistogramData;
  /**
   * Every event received inside the window: its index and when it arrived (ns), for
   * commit-to-receive latency against the writer's commit times.
   */
  readonly indexes: Float64Array;
  readonly receivedNs: Float64Array;
}

/** Completeness of every subscriber against the last sequence number put to each key. */
export interface EdgeCheck {
  readonly subscribers: number;
  /** Subscribers that received their key's last sequence number. */
  readonly complete: number;
  /** Live events received since the subscriptions opened. */
  readonly events: number;
  /** Sequence numbers skipped (a later one arrived first) plus the ones never received. */
  readonly missing: number;
  /** Events whose sequence number or index was not above the subscriber's previous one. */
  readonly disorder: number;
  /** NewSnapshotToFollow frames (a subscriber fell off the history ring). */
  readonly resets: number;
  /** Streams that failed. */
  readonly errors: number;
  readonly firstError?: string;
}

interface Sub {
  readonly key: string;
  lastIndex: number;
  lastSeq: number;
  skipped: number;
}

const hist = new Histogram();
const subs: Sub[] = [];
/** Index and arrival time (ns) of the events inside the window. */
class Arrivals {
  indexes = new Float64Array(4096);
  ns = new Float64Array(4096);
  n = 0;
  push(index: number, ns: number): void {
    if (this.n === this.indexes.length) {
      const grow = (a: Float64Array) => {
        const b = new Float64Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.indexes = grow(this.indexes);
      this.ns = grow(this.ns);
    }
    this.indexes[this.n] = index;
    this.ns[this.n++] = ns;
  }
}
let arrivals = new Arrivals();
let windowOpen = false;
let windowStart = 0;
let wEvents = 0;
let wMessages = 0;
let events = 0;
let disorder = 0;
let resets = 0;
let errors = 0;
let firstError: string | undefined;
let closeAll: (() => Promise<void>) | undefined;

const hrNs = () => Number(process.hrtime.bigint());

function fail(what: string, err: unknown): void {
  errors++;
  firstError ??= `${what}: ${(err as Error)?.message ?? String(err)}`;
}

/** One event for subscriber `s`: `live` when it came after the snapshot. */
function deliver(s: Sub, index: number, value: Uint8Array, nowNs: number, live: boolean): void {
  if (value.length < 12) return;
  const dv = new DataView(value.buffer, value.byteOffset, 12);
  const seq = dv.getUint32(8, true);
  if (live) {
    events++;
    if (index <= s.lastIndex || seq <= s.lastSeq) disorder++;
    else if (seq > s.lastSeq + 1) s.skipped += seq - s.lastSeq - 1;
    if (windowOpen) {
      wEvents++;
      const sent = dv.getUint32(0, true) + dv.getUint32(4, true) * 4294967296;
      hist.record((nowNs - sent) / 1000);
      arrivals.push(index, nowNs);
    }
  }
  if (index > s.lastIndex) s.lastIndex = index;
  if (seq > s.lastSeq) s.lastSeq = seq;
}

/** A distinct channel option per connection, so grpc-js does not share one subchannel. */
const channelOptions = (ch: number): grpc.ChannelOptions => ({
  "grpc.primary_user_agent": `sluice-bench-edge/${process.pid}/${ch}`,
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
});

async function open(r: EdgeOpenRequest): Promise<() => Promise<void>> {
  const clients: StateChangeSubscriptionClient[] = Array.from(
    { length: r.channels },
    (_, ch) =>
      new sluiceV1.StateChangeSubscription(r.address, grpc.credentials.createInsecure(), channelOptions(ch)),
  );
  const calls: grpc.ClientReadableStream<Event__Output>[] = [];
  let ready = 0;
  let failed = 0;
  let closing = false;
  await new Promise<void>((resolve, reject) => {
    r.keys.forEach((key, i) => {
      const s: Sub = { key, lastIndex: 0, lastSeq: 0, skipped: 0 };
      subs.push(s);
      const call = clients[i % clients.length]!.Subscribe({ topic: "TOPIC_KV", key });
      calls.push(call);
      let live = false;
      let everLive = false;
      call.on("data", (f: Event__Output) => {
        switch (f.payload) {
          case "kv":
            if (live && windowOpen) wMessages++;
            deliver(s, f.index, f.kv!.entry!.value, hrNs(), live);
            break;
          case "batch": {
            if (live && windowOpen) wMessages++;
            const now = hrNs();
            for (const e of f.batch!.events) if (e.kv) deliver(s, e.index, e.kv.entry!.value, now, live);
            break;
          }
          case "end_of_snapshot":
            live = true;
            if (f.index > s.lastIndex) s.lastIndex = f.index;
            if (!everLive) {
              everLive = true;
              if (++ready === r.keys.length) resolve();
            }
            break;
          case "new_snapshot_to_follow":
            live = false;
            resets++;
            break;
        }
      });
      call.on("error", (err: grpc.ServiceError) => {
        if (err.code === grpc.status.CANCELLED && closing) return;
        fail(`subscribe ${key}`, err);
        if (!everLive && ++failed === 1) reject(err);
      });
    });
  });
  return async () => {
    closing = true;
    for (const c of calls) c.cancel();
    for (const c of clients) c.close();
  };
}

serve({
  open: async (r: EdgeOpenRequest) => {
    if (closeAll) throw new Error("already open");
    const t0 = performance.now();
    closeAll = await open(r);
    return { ms: performance.now() - t0 };
  },
  reset: () => {
    hist.reset();
    arrivals = new Arrivals();
    wEvents = 0;
    wMessages = 0;
    windowStart = performance.now();
    windowOpen = true;
  },
  collect: (): EdgeWindow => {
    windowOpen = false;
    return {
      events: wEvents,
      messages: wMessages,
      windowMs: performance.now() - windowStart,
      latency: hist.toData(),
      indexes: arrivals.indexes.slice(0, arrivals.n),
      receivedNs: arrivals.ns.slice(0, arrivals.n),
    };
  },
  /** Subscribers whose key's sequence number has reached `lastSeq[key]`. */
  complete: (lastSeq: Readonly<Record<string, number>>): number =>
    subs.filter((s) => s.lastSeq >= (lastSeq[s.key] ?? 0)).length,
  check: (lastSeq: Readonly<Record<string, number>>): EdgeCheck => {
    let complete = 0;
    let missing = 0;
    for (const s of subs) {
      const want = lastSeq[s.key] ?? 0;
      if (s.lastSeq >= want) complete++;
      missing += s.skipped + Math.max(0, want - s.lastSeq);
    }
    return { subscribers: subs.length, complete, events, missing, disorder, resets, errors, firstError };
  },
  close: async () => {
    await closeAll?.();
    closeAll = undefined;
  },
});
