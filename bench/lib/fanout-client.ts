/*
 * One subscriber process of the `fanout` suite: opens its share of the subscriptions — Sluice
 * Subscribe streams (grpc-js client built from the .proto, as any consumer would) or etcd
 * watchers (the `etcd3` npm client) — and measures what arrives: events per subscriber in
 * index order, and the put-to-receive latency of each event, from the send time the writer
 * put into the value (CLOCK_MONOTONIC nanoseconds, process.hrtime: the same clock in every
 * process of the machine).
 */
import { PerformanceObserver } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { Etcd3, type Watcher } from "etcd3";
import type { Event__Output } from "../../src/generated/sluice/v1/Event.js";
import type { StateChangeSubscriptionClient } from "../../src/generated/sluice/v1/StateChangeSubscription.js";
import type { WatchRequest } from "../../src/generated/sluice/v1/WatchRequest.js";
import type { WatchResponse__Output } from "../../src/generated/sluice/v1/WatchResponse.js";
import { sluiceV1 } from "../../src/proto/index.js";
import { serve } from "./child.js";
import { Histogram, type HistogramData } from "./histogram.js";

export type System = "sluice" | "etcd";

export interface OpenRequest {
  readonly system: System;
  /** Sluice: host:port of the gRPC server; etcd: its client URL. */
  readonly address: string;
  /** The key of each of this process's subscribers. */
  readonly keys: readonly string[];
  /** HTTP/2 connections this process spreads its subscribers over. */
  readonly channels: number;
  /**
   * Subscriptions per multiplexed stream: etcd watchers per watch stream (one `Etcd3` client,
   * hence one stream, per group), Sluice subscriptions per Watch stream. Subscriber i joins
   * group i mod groups; group g uses connection g mod channels.
   */
  readonly watchersPerStream: number;
  /** Sluice only: one Subscribe stream per subscriber, or Watch streams shared by groups. */
  readonly sluiceRpc: SluiceRpc;
}

export type SluiceRpc = "watch" | "subscribe";

export interface WindowResult {
  /** Events received inside the window. */
  readonly events: number;
  /** Stream messages (Sluice frames, etcd watch responses) received inside the window. */
  readonly messages: number;
  readonly windowMs: number;
  /** Put-to-receive latency of the events received inside the window. */
  readonly latency: HistogramData;
  /** This process's garbage-collection pauses inside the window (total and longest, ms). */
  readonly gcMs: number;
  readonly gcMaxMs: number;
}

export interface Totals {
  /** Live events received since the subscriptions opened. */
  readonly events: number;
  /** Events whose index was not above the subscriber's previous one (0 unless broken). */
  readonly disorder: number;
  /** Sluice NewSnapshotToFollow frames (a subscriber fell off the history ring). */
  readonly resets: number;
  /** Sluice Progress frames / etcd progress notifications. */
  readonly progress: number;
  /** Streams or watchers that failed or disconnected. */
  readonly errors: number;
  readonly firstError?: string;
}

const hist = new Histogram();
let windowOpen = false;
let windowStart = 0;
let wEvents = 0;
let wMessages = 0;
let events = 0;
let disorder = 0;
let resets = 0;
let progress = 0;
let errors = 0;
let firstError: string | undefined;
let closeAll: (() => Promise<void>) | undefined;
let gcMs = 0;
let gcMaxMs = 0;
new PerformanceObserver((list) => {
  if (!windowOpen) return;
  for (const e of list.getEntries()) {
    gcMs += e.duration;
    if (e.duration > gcMaxMs) gcMaxMs = e.duration;
  }
}).observe({ entryTypes: ["gc"] });

function fail(what: string, err: unknown): void {
  errors++;
  firstError ??= `${what}: ${(err as Error)?.message ?? String(err)}`;
}

/** Send time (ns) carried in the first 8 bytes of a value. */
function sentAt(value: Uint8Array): number {
  const dv = new DataView(value.buffer, value.byteOffset, 8);
  return dv.getUint32(0, true) + dv.getUint32(4, true) * 4294967296;
}

/** One event for a subscriber whose previous index was `last`; returns the new one. */
function deliver(last: number, index: number, value: Uint8Array, nowNs: number): number {
  events++;
  if (index <= last) disorder++;
  if (windowOpen) {
    wEvents++;
    hist.record((nowNs - sentAt(value)) / 1000);
  }
  return index;
}

const hrNs = () => Number(process.hrtime.bigint());

/** A distinct channel option per connection, so grpc-js does not share one subchannel. */
const channelOptions = (ch: number): grpc.ChannelOptions => ({
  "grpc.primary_user_agent": `sluice-bench-fanout/${process.pid}/${ch}`,
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
});

/** What one Sluice subscriber has seen. */
interface SubState {
  live: boolean;
  everLive: boolean;
  last: number;
}

/**
 * One frame (a sluice.v1.Event) for a subscriber; returns true when it first went live (its
 * snapshot ended).
 */
function onFrame(s: SubState, f: Event__Output, now: number): boolean {
  switch (f.payload) {
    case "kv":
      if (s.live) s.last = deliver(s.last, f.index, f.kv!.entry!.value, now);
      return false;
    case "batch":
      if (s.live)
        for (const e of f.batch!.events) if (e.kv) s.last = deliver(s.last, e.index, e.kv.entry!.value, now);
      return false;
    case "end_of_snapshot": {
      s.live = true;
      s.last = f.index;
      const first = !s.everLive;
      s.everLive = true;
      return first;
    }
    case "new_snapshot_to_follow":
      s.live = false;
      resets++;
      return false;
    case "progress":
      progress++;
      return false;
    default:
      return false;
  }
}

/**
 * Sluice over Watch streams: the subscribers of a group share one stream (as etcd watchers
 * share a watch stream), each with its own id; a frame that several of them receive comes
 * once with all their ids and is handed to each.
 */
async function openSluiceWatch(r: OpenRequest): Promise<() => Promise<void>> {
  const clients: StateChangeSubscriptionClient[] = Array.from(
    { length: r.channels },
    (_, ch) =>
      new sluiceV1.StateChangeSubscription(r.address, grpc.credentials.createInsecure(), channelOptions(ch)),
  );
  const groups = Math.max(1, Math.ceil(r.keys.length / r.watchersPerStream));
  const states: SubState[] = r.keys.map(() => ({ live: false, everLive: false, last: 0 }));
  const calls: grpc.ClientDuplexStream<WatchRequest, WatchResponse__Output>[] = [];
  let ready = 0;
  let closing = false;
  await new Promise<void>((resolve, reject) => {
    for (let g = 0; g < groups; g++) {
      const call = clients[g % clients.length]!.Watch();
      calls.push(call);
      call.on("data", (m: WatchResponse__Output) => {
        if (windowOpen) wMessages++;
        const now = hrNs();
        for (const fr of m.frames) {
          if (fr.body === "closed") {
            fail(
              `watch ${r.keys[Number(fr.ids[0]) - 1]}`,
              new Error(`${fr.closed!.code} ${fr.closed!.message}`),
            );
            if (ready < r.keys.length) reject(new Error(fr.closed!.message));
            continue;
          }
          for (const id of fr.ids) {
            if (onFrame(states[Number(id) - 1]!, fr.event!, now) && ++ready === r.keys.length) resolve();
          }
        }
      });
      call.on("error", (err: grpc.ServiceError) => {
        if (err.code === grpc.status.CANCELLED && closing) return;
        fail(`watch stream ${g}`, err);
        reject(err);
      });
    }
    r.keys.forEach((key, i) => {
      calls[i % groups]!.write({ open: { id: i + 1, subscribe: { topic: "TOPIC_KV", key } } });
    });
  });
  return async () => {
    closing = true;
    for (const c of calls) c.cancel();
    for (const c of clients) c.close();
  };
}

async function openSluice(r: OpenRequest): Promise<() => Promise<void>> {
  if (r.sluiceRpc === "watch") return openSluiceWatch(r);
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
      const call = clients[i % clients.length]!.Subscribe({ topic: "TOPIC_KV", key });
      calls.push(call);
      let live = false;
      let everLive = false;
      let last = 0;
      call.on("data", (f: Event__Output) => {
        switch (f.payload) {
          case "kv":
            if (live) {
              if (windowOpen) wMessages++;
              last = deliver(last, f.index, f.kv!.entry!.value, hrNs());
            }
            break;
          case "batch":
            if (live) {
              if (windowOpen) wMessages++;
              const now = hrNs();
              for (const e of f.batch!.events)
                if (e.kv) last = deliver(last, e.index, e.kv.entry!.value, now);
            }
            break;
          case "end_of_snapshot":
            live = true;
            last = f.index;
            if (!everLive) {
              everLive = true;
              if (++ready === r.keys.length) resolve();
            }
            break;
          case "new_snapshot_to_follow":
            live = false;
            resets++;
            break;
          case "progress":
            progress++;
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

async function openEtcd(r: OpenRequest): Promise<() => Promise<void>> {
  const groups = Math.max(1, Math.ceil(r.keys.length / r.watchersPerStream));
  const clients = Array.from(
    { length: groups },
    (_, g) =>
      new Etcd3({
        hosts: r.address,
        grpcOptions: channelOptions(g % r.channels),
      }),
  );
  const watchers: Watcher[] = await Promise.all(
    r.keys.map(async (key, i) => {
      const w = await clients[i % groups]!.watch().key(key).create();
      let last = 0;
      w.on("data", () => {
        if (windowOpen) wMessages++;
      });
      w.on("put", (kv) => {
        last = deliver(last, Number(kv.mod_revision), kv.value, hrNs());
      });
      w.on("disconnected", (err) => fail(`watch ${key} disconnected`, err));
      w.on("error", (err) => fail(`watch ${key}`, err));
      return w;
    }),
  );
  return async () => {
    await Promise.allSettled(watchers.map((w) => w.cancel()));
    for (const c of clients) c.close();
  };
}

serve({
  open: async (r: OpenRequest) => {
    if (closeAll) throw new Error("already open");
    const t0 = performance.now();
    closeAll = r.system === "sluice" ? await openSluice(r) : await openEtcd(r);
    return { ms: performance.now() - t0 };
  },
  reset: () => {
    hist.reset();
    wEvents = 0;
    wMessages = 0;
    gcMs = 0;
    gcMaxMs = 0;
    windowStart = performance.now();
    windowOpen = true;
  },
  collect: (): WindowResult => {
    windowOpen = false;
    return {
      events: wEvents,
      messages: wMessages,
      windowMs: performance.now() - windowStart,
      latency: hist.toData(),
      gcMs,
      gcMaxMs,
    };
  },
  totals: (): Totals => ({ events, disorder, resets, progress, errors, firstError }),
  close: async () => {
    await closeAll?.();
    closeAll = undefined;
  },
});
