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
  /** etcd only: watchers per watch stream (one `Etcd3` client, hence one stream, per group). */
  readonly watchersPerStream: number;
}

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

async function openSluice(r: OpenRequest): Promise<() => Promise<void>> {
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
