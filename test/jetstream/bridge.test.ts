import { describe, expect, it } from "vitest";
import { escapeToken, Header, unescapeToken } from "../../src/broker/jetstream/index.js";
import { eventBytes } from "../../src/proto/index.js";
import { decodeWalCommit } from "../../src/state/index.js";
import { type Frame, FrameKind } from "../../src/stream/index.js";
import { freshFeed, indexOf, natsClient, readSubject, startWriter, useNats } from "./jetstream-harness.js";

const nats = useNats();

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("subject escaping", () => {
  it("maps any subject to one NATS token and back", () => {
    for (const s of ["web", "web.api", "a/b c", "x*>y", "100%", "ünï ☃", "", "-_AZaz09"]) {
      const t = escapeToken(s);
      expect(t).toMatch(/^[A-Za-z0-9_%-]+$/);
      expect(unescapeToken(t)).toBe(s);
    }
    expect(escapeToken("web.api")).toBe("web%2Eapi");
  });
});

describe("JetStream bridge", () => {
  it("publishes every commit on the log exactly once and in order, across a NATS restart mid-burst and a writer restart", async () => {
    const feed = freshFeed();
    const w = await startWriter(nats().url, feed, { natsSnapshotEvery: 150 });
    const c = w.connect();
    const burst = async (n: number, prefix: string): Promise<void> => {
      for (let i = 0; i < n; i += 20) {
        await Promise.all(range(i, i + 19).map((j) => c.put(`${prefix}/${j}`, `v${j}`)));
      }
    };

    // A burst with NATS restarting in the middle of it: writes go on, nothing is lost or doubled.
    const first = burst(400, "a");
    await until(() => w.server.store.index > 120, "the burst to start");
    await nats().restart();
    await first;
    expect(await w.server.bridge!.flushed(20_000)).toBe(true);

    // NATS down: writes go on and queue; then the writer restarts (the queue is only in its
    // log) while NATS is still down, and catches the stream up when NATS is back.
    await nats().stop();
    await burst(100, "b");
    expect(w.server.bridge!.lag).toBeGreaterThanOrEqual(100);
    await w.restart();
    await burst(60, "c");
    await nats().restart();
    await burst(40, "d");
    expect(await w.server.bridge!.flushed(20_000)).toBe(true);

    const last = w.server.store.index;
    const nc = await natsClient(nats().url);
    const msgs = await readSubject(nc, feed.natsStream, `${feed.natsPrefix}.log`, (m) => m.length >= last);
    expect(msgs.map(indexOf)).toEqual(range(1, last));
    // Each log message is the commit as the writer's log has it.
    // Each log message is the commit as the writer's log record holds it.
    expect(decodeWalCommit(Buffer.from(msgs[10]!.data)).index).toBe(11);
    expect(msgs[10]!.headers?.get("Nats-Msg-Id")).toMatch(/\.11\.0$/);
  }, 90_000);

  it("publishes topic events that an external ordered consumer sees exactly as a Sluice subscriber does", async () => {
    const feed = freshFeed();
    const w = await startWriter(nats().url, feed, {}, false);
    // Resuming at the current index: the subscriber gets the events that follow, not a snapshot.
    const sub = w.server.publisher.subscribe({
      topic: "ServiceHealth",
      subject: { kind: "key", key: "web" },
      index: w.server.store.index,
    });
    const c = w.connect();
    await c.register({
      node: { node: "n1", address: "10.0.0.1" },
      service: { id: "web-1", service: "web", port: 80 },
      checks: [{ check_id: "web-1-alive", name: "alive", status: "passing", service_id: "web-1" }],
    });
    await c.register({
      node: { node: "n2", address: "10.0.0.2" },
      service: { id: "web-2", service: "Web", port: 81 },
    });
    await c.register({
      node: { node: "n3", address: "10.0.0.3" },
      service: { id: "db-1", service: "db", port: 5432 },
    });
    await c.updateCheck("n1", "web-1-alive", "critical");
    const last = await c.put("web/not-a-service", "x");

    // What a Sluice subscriber sees for web after its snapshot.
    const seen: Uint8Array[] = [];
    const frames: Frame[] = [];
    for await (const f of sub) {
      frames.push(f);
      if (f.kind === FrameKind.Events) for (const e of f.events) seen.push(eventBytes(e));
      if ("index" in f && f.index >= last - 1) break;
    }
    expect(seen.length).toBe(3);

    expect(await w.server.bridge!.flushed()).toBe(true);
    const nc = await natsClient(nats().url);
    const msgs = await readSubject(
      nc,
      feed.natsStream,
      `${feed.natsPrefix}.events.service_health.web`,
      (m) => m.length >= seen.length,
    );
    expect(msgs.map((m) => Buffer.from(m.data))).toEqual(seen.map((b) => Buffer.from(b)));
    expect(msgs.map((m) => m.headers?.get(Header.Topic))).toEqual([
      "service_health",
      "service_health",
      "service_health",
    ]);
    const kv = await readSubject(nc, feed.natsStream, `${feed.natsPrefix}.events.kv.>`, (m) => m.length >= 1);
    expect(kv[0]!.subject).toBe(`${feed.natsPrefix}.events.kv.web%2Fnot-a-service`);
    expect(indexOf(kv[0]!)).toBe(last);
  });

  it("creates a deleted stream again, starting from a snapshot of the current state", async () => {
    const feed = freshFeed();
    const w = await startWriter(nats().url, feed, {}, false);
    const c = w.connect();
    for (let i = 0; i < 5; i++) await c.put(`a${i}`, "v");
    expect(await w.server.bridge!.flushed()).toBe(true);
    const nc = await natsClient(nats().url);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.delete(feed.natsStream);
    const at = w.server.store.index;
    for (let i = 0; i < 5; i++) await c.put(`b${i}`, "v");
    expect(await w.server.bridge!.flushed(20_000)).toBe(true);
    const last = w.server.store.index;
    const info = JSON.parse(
      (await (await nc.jetstream().views.os(`${feed.natsStream}_snapshots`)).info("latest"))!.description!,
    ) as {
      index: number;
      logSeq: number;
    };
    expect(info.logSeq).toBe(0);
    expect(info.index).toBeGreaterThanOrEqual(at);
    const msgs = await readSubject(
      nc,
      feed.natsStream,
      `${feed.natsPrefix}.log`,
      (m) => m.length >= last - info.index,
    );
    expect(msgs.map(indexOf)).toEqual(range(info.index + 1, last));
  });

  it("refuses a stream that already holds commits this store does not have", async () => {
    const feed = freshFeed();
    const w = await startWriter(nats().url, feed, {}, false);
    const c = w.connect();
    for (let i = 0; i < 5; i++) await c.put(`k${i}`, "v");
    expect(await w.server.bridge!.flushed()).toBe(true);
    // A second in-memory writer on the same stream starts at index 1: the stream is ahead.
    await expect(startWriter(nats().url, feed, {}, false)).rejects.toThrow(
      /is at index \d+ but this store is at/,
    );
  });
});

describe("a writer that cannot start", () => {
  it("releases its data dir, bridge and connections when a later step fails", async () => {
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { createServer } = await import("node:net");
    const { DEFAULTS, SluiceServer, ListenError } = await import("../../src/server/index.js");
    const pino = (await import("pino")).default;
    const dir = mkdtempSync(join(tmpdir(), "sluice-failstart-"));
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", () => r()));
    const port = (busy.address() as { port: number }).port;
    try {
      const cfg = {
        ...DEFAULTS,
        dataDir: dir,
        fsync: "never" as const,
        grpcAddr: "127.0.0.1:0",
        httpAddr: `127.0.0.1:${port}`,
        nats: nats().url,
        ...freshFeed(),
      };
      // The HTTP port is taken: start fails after the store, bridge and broker are open...
      await expect(SluiceServer.start(cfg, pino({ level: "silent" }))).rejects.toBeInstanceOf(ListenError);
      // ...and everything was closed: the same data dir opens again at once.
      const again = await SluiceServer.start({ ...cfg, httpAddr: "127.0.0.1:0" }, pino({ level: "silent" }));
      await again.stop();
    } finally {
      busy.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
