import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { errorClass, Harness } from "../helpers/grpc-harness.js";

/*
 * A Subscribe whose index is ahead of the store waits up to 3 s for the store to reach it,
 * then ends with OUT_OF_RANGE. (The short pauses below only give the request time to reach
 * the server's wait; each test passes whichever way that race goes, except where noted.)
 */

const code = (c: number): string => grpc.status[c] ?? String(c);

describe("an index ahead of the store", () => {
  it("ends with OUT_OF_RANGE after about 3 s when the store never reaches it", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const i = await c.put("k", "v");
    const started = performance.now();
    const w = c.subscribe({ topic: "TOPIC_KV", key: "k", index: i + 1000 });
    const st = await w.end(6000);
    const elapsed = performance.now() - started;
    expect(code(st.code)).toBe("OUT_OF_RANGE");
    expect(errorClass(st)).toBe("IndexAheadError");
    expect(w.messages).toEqual([]);
    expect(elapsed).toBeGreaterThan(2900);
    expect(elapsed).toBeLessThan(4500);
    expect(h.server.publisher.subscriptionCount).toBe(0);
  });

  it("opens once a commit reaches the index within the wait, and goes live after it without a snapshot", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const i = await c.put("k", "v1");
    const w = c.subscribe({ topic: "TOPIC_KV", key: "k", index: i + 1 });
    await sleep(200);
    const reached = await c.put("k", "v2");
    const next = await c.put("k", "v3");
    expect(reached).toBe(i + 1);
    await w.changeCount(1);
    expect(w.frames).toEqual([`kv set k=v3@${next}`]);
  });

  it("a graceful stop while a Subscribe waits for its index ends it with UNAVAILABLE, not OUT_OF_RANGE", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const i = await c.put("k", "v");
    const w = c.subscribe({ topic: "TOPIC_KV", key: "k", index: i + 5 });
    await sleep(200); // the request must be waiting in the server when the stop begins
    const started = performance.now();
    await h.server.stop();
    const st = await w.end();
    expect(performance.now() - started).toBeLessThan(2000);
    expect(code(st.code)).toBe("UNAVAILABLE");
    expect(errorClass(st)).toBe("ShuttingDownError");
  });

  it("a client that cancels while waiting leaves nothing behind", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const i = await c.put("k", "v");
    const w = c.subscribe({ topic: "TOPIC_KV", key: "k", index: i + 1 });
    await sleep(100);
    w.cancel();
    expect(code((await w.end()).code)).toBe("CANCELLED");
    await c.put("k", "v2");
    await c.put("k", "v3");
    expect(h.server.publisher.subscriptionCount).toBe(0);
  });
});
