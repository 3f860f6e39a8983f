import { EventEmitter } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { WatchMux } from "../../src/client/watch-mux.js";
import type { StateChangeSubscriptionClient } from "../../src/generated/sluice/v1/StateChangeSubscription.js";
import type { WatchResponse__Output } from "../../src/generated/sluice/v1/WatchResponse.js";

/*
 * The SDK's Watch multiplexer against a scripted stream: flow control (a subscription that
 * lags pauses the shared stream; the stream resumes once no subscription lags, also when the
 * lagging one ends or its consumer leaves), and the routing of frames and ends by id. The
 * end-to-end behaviour over real gRPC is in test/client/views.test.ts and test/grpc/.
 */

class FakeCall extends EventEmitter {
  readonly writes: unknown[] = [];
  pauses = 0;
  resumes = 0;
  paused = false;
  cancelled = false;
  write(m: unknown): boolean {
    this.writes.push(m);
    return true;
  }
  pause(): this {
    this.pauses++;
    this.paused = true;
    return this;
  }
  resume(): this {
    this.resumes++;
    this.paused = false;
    return this;
  }
  cancel(): void {
    this.cancelled = true;
  }
}

function setup() {
  const calls: FakeCall[] = [];
  const client = {
    Watch: () => {
      const c = new FakeCall();
      calls.push(c);
      return c;
    },
  } as unknown as StateChangeSubscriptionClient;
  const mux = new WatchMux(client, () => ({}) as grpc.Metadata);
  return { mux, calls };
}

const kv = (id: number, index: number) => ({
  ids: [id],
  body: "event",
  event: { index, payload: "progress", progress: true },
});
const closed = (id: number, code: number) => ({
  ids: [id],
  body: "closed",
  closed: { code, message: "token deleted", error: "SubscriptionForceClosedError" },
});
const send = (c: FakeCall, frames: unknown[]) =>
  c.emit("data", { frames } as unknown as WatchResponse__Output);

describe("WatchMux", () => {
  it("routes frames by id, one stream for all, and ends a subscription with its closed frame's status", async () => {
    const { mux, calls } = setup();
    const a = mux.open({ topic: "TOPIC_KV", key: "a" });
    const b = mux.open({ topic: "TOPIC_KV", key: "b" });
    expect(calls).toHaveLength(1);
    const call = calls[0]!;
    expect(call.writes).toEqual([
      { open: { id: 1, subscribe: { topic: "TOPIC_KV", key: "a" } } },
      { open: { id: 2, subscribe: { topic: "TOPIC_KV", key: "b" } } },
    ]);
    send(call, [kv(1, 5), { ...kv(2, 5), ids: [1, 2] }, closed(2, 10)]);
    expect((await a.next()).value).toMatchObject({ index: 5 });
    expect((await a.next()).value).toMatchObject({ index: 5 });
    expect((await b.next()).value).toMatchObject({ index: 5 });
    await expect(b.next()).rejects.toMatchObject({ code: 10, kind: "SubscriptionForceClosedError" });
    a.leave();
    // The last one left: the stream is cancelled, and the next open starts a new one.
    expect(call.cancelled).toBe(true);
    mux.open({ topic: "TOPIC_KV", key: "c" });
    expect(calls).toHaveLength(2);
  });

  it("a lagging subscription pauses the stream; it resumes when that one catches up", async () => {
    const { mux, calls } = setup();
    const a = mux.open({ topic: "TOPIC_KV", key: "a" });
    mux.open({ topic: "TOPIC_KV", key: "b" });
    const call = calls[0]!;
    send(
      call,
      Array.from({ length: 1024 }, (_, i) => kv(1, i + 1)),
    );
    expect(call.paused).toBe(true);
    for (let i = 0; i < 1024; i++) await a.next();
    expect(call.paused).toBe(false);
  });

  it("resumes when the lagging subscription ends and its consumer leaves without reading", () => {
    const { mux, calls } = setup();
    const a = mux.open({ topic: "TOPIC_KV", key: "a" });
    mux.open({ topic: "TOPIC_KV", key: "b" });
    const call = calls[0]!;
    send(
      call,
      Array.from({ length: 1024 }, (_, i) => kv(1, i + 1)),
    );
    expect(call.paused).toBe(true);
    // Its end arrives: it no longer holds the others back.
    send(call, [closed(1, 10)]);
    expect(call.paused).toBe(false);
    a.leave();
    expect(call.paused).toBe(false);
  });

  it("resumes when the consumer of the lagging subscription leaves", () => {
    const { mux, calls } = setup();
    const a = mux.open({ topic: "TOPIC_KV", key: "a" });
    mux.open({ topic: "TOPIC_KV", key: "b" });
    const call = calls[0]!;
    send(
      call,
      Array.from({ length: 1024 }, (_, i) => kv(1, i + 1)),
    );
    expect(call.paused).toBe(true);
    a.leave();
    expect(call.writes.at(-1)).toEqual({ cancel: 1 });
    expect(call.paused).toBe(false);
  });

  it("a failed stream fails every subscription on it; the next open gets a new stream", async () => {
    const { mux, calls } = setup();
    const a = mux.open({ topic: "TOPIC_KV", key: "a" });
    const b = mux.open({ topic: "TOPIC_KV", key: "b" });
    calls[0]!.emit("error", { code: 14, details: "connection cut" });
    await expect(a.next()).rejects.toMatchObject({ code: 14 });
    await expect(b.next()).rejects.toMatchObject({ code: 14 });
    mux.open({ topic: "TOPIC_KV", key: "a" });
    expect(calls).toHaveLength(2);
  });
});
