import { afterEach, describe, expect, it, vi } from "vitest";
import {
  CasFailedError,
  ClosedError,
  InvalidArgumentError,
  PermissionDeniedError,
  SluiceClient,
  type SluiceClientOptions,
  type SluiceError,
  UnavailableError,
} from "../../src/client/index.js";
import { sluiceV1 } from "../../src/proto/index.js";
import type { SluiceServer } from "../../src/server/index.js";
import { RestartableServer, startDevServer } from "../helpers/sluice-server.js";

/*
 * The SDK's pipelined KV writer (`client.kvStore.writer()`) against real servers over real
 * gRPC on loopback: one Write stream for many writes, each with its own index or error, in
 * the order made; failures of one write leave the others alone; a server that goes away
 * fails the writes in flight and the writer goes on with a new stream; close() waits.
 */

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  vi.restoreAllMocks();
});

function client(options: SluiceClientOptions): SluiceClient {
  const c = new SluiceClient(options);
  cleanups.push(() => c.close());
  return c;
}

async function devServer(overrides: Parameters<typeof startDevServer>[0] = {}): Promise<SluiceServer> {
  const s = await startDevServer(overrides);
  cleanups.push(() => s.stop());
  return s;
}

const addr = (s: SluiceServer): string => `127.0.0.1:${s.grpcPort}`;
const text = (v: Uint8Array) => Buffer.from(v).toString();

/** Handles the promise at once (so an early rejection is not an unhandled one). */
function settled<T>(p: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

/** Resolves with the error a promise rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => {
      throw new Error(`expected a rejection, got ${String(v)}`);
    },
    (e: unknown) => e,
  );
}

describe("KVWriter", () => {
  it("pipelines many writes on one stream; each resolves with its own index, in the order made", async () => {
    const s = await devServer();
    const stub = sluiceV1.KV.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
    const write = vi.spyOn(stub, "Write");
    const c = client({ address: addr(s) });
    const w = c.kvStore.writer();
    const model = new Map<string, string>();
    const made: Promise<number>[] = [];
    for (let i = 0; i < 1000; i++) {
      const key = `p/${i % 37}`;
      if (i % 7 === 3) {
        model.delete(key);
        made.push(w.delete(key));
      } else {
        model.set(key, String(i));
        made.push(w.put(key, String(i)));
      }
    }
    expect(w.inFlight).toBe(1000);
    const indexes = await Promise.all(made);
    for (let i = 1; i < indexes.length; i++) expect(indexes[i]).toBe(indexes[i - 1]! + 1);
    expect(w.inFlight).toBe(0);
    const listed = await c.kvStore.list("p/");
    expect(listed.index).toBe(indexes[indexes.length - 1]);
    expect(new Map(listed.entries.map((e) => [e.key, text(e.value)]))).toEqual(model);
    expect(write).toHaveBeenCalledTimes(1);
    await w.close();
  });

  it("a failed write (CAS, no permission) rejects alone; the writes around it commit", async () => {
    const s = await devServer({ aclEnabled: true });
    const boot = await client({ address: addr(s) }).acl.bootstrap();
    const admin = client({ address: addr(s), token: boot.token.secret_id });
    await admin.acl.createPolicy({
      name: "ok-only",
      rules: 'key_prefix "ok/" { policy = "write" }\nkey_prefix "ro/" { policy = "read" }',
    });
    const { token } = await admin.acl.createToken({ policies: ["ok-only"] });
    const first = await admin.kvStore.put("ok/cas", "v0");
    const w = client({ address: addr(s), token: token.secret_id }).kvStore.writer();

    const [a, casWrong, denied, casRight, delCasWrong, b] = await Promise.all([
      settled(w.put("ok/a", "1")),
      settled(w.put("ok/cas", "v1", { cas: first + 100 })),
      settled(w.put("ro/x", "nope")),
      settled(w.put("ok/cas", "v2", { cas: first })),
      settled(w.delete("ok/a", { cas: 1 })),
      settled(w.put("ok/b", "2")),
    ]);
    expect(casWrong!.error).toBeInstanceOf(CasFailedError);
    expect(denied!.error).toBeInstanceOf(PermissionDeniedError);
    expect(delCasWrong!.error).toBeInstanceOf(CasFailedError);
    expect(a!.value).toBeLessThan(casRight!.value!);
    expect(casRight!.value).toBeLessThan(b!.value!);

    const all = await admin.kvStore.list("");
    expect(all.entries.map((e) => [e.key, text(e.value)])).toEqual([
      ["ok/a", "1"],
      ["ok/b", "2"],
      ["ok/cas", "v2"],
    ]);
    await w.close();
  });

  it("close() waits for the writes in flight (a bad one rejects alone), then refuses new ones", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    const w = c.kvStore.writer();
    let settledCount = 0;
    const made = Array.from({ length: 50 }, (_, i) =>
      w.put(`c/${i}`, String(i)).finally(() => void settledCount++),
    );
    const bad = settled(w.put("", "no key"));
    await w.close();
    // Every write made before close() had its result when close() resolved.
    expect(settledCount).toBe(50);
    expect(w.inFlight).toBe(0);
    const indexes = await Promise.all(made);
    expect(indexes).toHaveLength(50);
    const { error } = await bad;
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as SluiceError).details).toMatch(/key/);
    expect(await rejection(w.put("c/late", "x"))).toBeInstanceOf(ClosedError);
    expect((await c.kvStore.list("c/")).entries).toHaveLength(50);
    await w.close(); // again: no-op
  });

  it("a write aborted before it is sent is never sent; its promise rejects with the reason", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    const w = c.kvStore.writer();
    const ac = new AbortController();
    const kept = w.put("a/kept", "1");
    const dropped = w.put("a/dropped", "1", { signal: ac.signal });
    ac.abort(new Error("changed my mind"));
    expect(((await rejection(dropped)) as Error).message).toBe("changed my mind");
    await kept;
    const already = new AbortController();
    already.abort(new Error("too late"));
    expect(((await rejection(w.put("a/x", "1", { signal: already.signal }))) as Error).message).toBe(
      "too late",
    );
    await w.close();
    expect((await c.kvStore.list("a/")).entries.map((e) => e.key)).toEqual(["a/kept"]);
  });

  it("a server that goes away fails the writes in flight; acknowledged ones survive; the writer goes on after a restart", async () => {
    const rs = await RestartableServer.start({ shutdownGraceMs: 8000 });
    cleanups.push(() => rs.destroy());
    // waitForReady: the write after the restart waits for the channel to reconnect.
    const c = client({ address: rs.address, waitForReady: true });
    const w = c.kvStore.writer();
    await w.put("r/0", "before");
    const acked = new Map<string, number>();
    const failures: unknown[] = [];
    const inFlight = Array.from({ length: 500 }, (_, i) =>
      w.put(`r/${i + 1}`, String(i)).then(
        (index) => void acked.set(`r/${i + 1}`, index),
        (err: unknown) => void failures.push(err),
      ),
    );
    const t0 = performance.now();
    const stopping = rs.stop();
    await Promise.all(inFlight); // every write settles: none is left hanging
    await stopping;
    // The server ended the stream when its writes were done, not after the grace period.
    expect(performance.now() - t0).toBeLessThan(6000);
    for (const f of failures) expect(f).toBeInstanceOf(UnavailableError);

    await rs.startAgain();
    const after = await w.put("r/after", "after");
    const listed = await c.kvStore.list("r/");
    const stored = new Map(listed.entries.map((e) => [e.key, e.modify_index]));
    // An acknowledged write is never lost.
    for (const [key, index] of acked) expect(stored.get(key)).toBe(index);
    expect(stored.get("r/after")).toBe(after);
    expect(stored.has("r/0")).toBe(true);
    await w.close();
  });

  it("writes of one turn well over a message's size go out in several messages; a write too big for any is refused alone", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    const w = c.kvStore.writer();
    const value = new Uint8Array(4096).fill(7);
    // 3,000 × 4 KiB in one turn: ~12 MiB, three times what the server takes in one message.
    const made = Array.from({ length: 3000 }, (_, i) => w.put(`big/${i}`, value));
    const tooBig = settled(w.put("big/huge", new Uint8Array(4 * 1024 * 1024)));
    const indexes = await Promise.all(made);
    for (let i = 1; i < indexes.length; i++) expect(indexes[i]).toBe(indexes[i - 1]! + 1);
    const { error } = await tooBig;
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as SluiceError).details).toMatch(/does not fit/);
    expect((await c.kvStore.list("big/", { keysOnly: true })).entries).toHaveLength(3000);
    await w.close();
  });

  it("a write aborted after it was sent rejects with the reason; the writes after it go on", async () => {
    const s = await devServer();
    const c = client({ address: addr(s) });
    const w = c.kvStore.writer();
    const ac = new AbortController();
    const aborted = settled(w.put("ab/1", "x", { signal: ac.signal }));
    await new Promise((r) => setImmediate(r)); // sent with this turn's message
    ac.abort(new Error("stop waiting"));
    expect(((await aborted).error as Error).message).toBe("stop waiting");
    const next = await w.put("ab/2", "y");
    expect(next).toBeGreaterThan(0);
    await w.close();
  });

  it("without a server, each write rejects with DEADLINE_EXCEEDED after its timeout instead of hanging", async () => {
    // A port nobody listens on: the stream waits for a connection that never comes.
    const probe = await devServer();
    const address = addr(probe);
    await probe.stop();
    const c = client({ address, waitForReady: true, callTimeoutMs: 300 });
    const w = c.kvStore.writer();
    const t0 = performance.now();
    const [a, b] = await Promise.all([
      settled(w.put("t/1", "x")),
      settled(w.put("t/2", "y", { timeoutMs: 100 })),
    ]);
    expect((a.error as SluiceError).code).toBe(4); // DEADLINE_EXCEEDED
    expect((b.error as SluiceError).code).toBe(4);
    expect((a.error as SluiceError).details).toMatch(/300 ms/);
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(w.inFlight).toBe(0);
  });

  it("closing the client ends its writers: their writes reject with ClosedError, and writer() throws", async () => {
    const s = await devServer();
    const c = new SluiceClient({ address: addr(s) });
    const w = c.kvStore.writer();
    await w.put("cc/0", "x");
    const pending = Array.from({ length: 20 }, (_, i) => settled(w.put(`cc/${i + 1}`, "y")));
    c.close();
    for (const p of await Promise.all(pending)) {
      if (p.error !== undefined) expect(p.error).toBeInstanceOf(ClosedError);
    }
    expect(await rejection(w.put("cc/late", "z"))).toBeInstanceOf(ClosedError);
    expect(() => c.kvStore.writer()).toThrow(ClosedError);
    await w.close(); // already ended: resolves
  });
});
