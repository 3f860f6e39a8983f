import { describe, expect, it } from "vitest";
import {
  asIndex,
  Code,
  ForceClosedError,
  type Frame,
  type KVEntry,
  PermissionDeniedError,
  type RetryNotice,
  type StreamEvent,
  type SubscribeRequest,
  Topic,
  UnavailableError,
} from "../../src/client/index.js";
import { StreamView } from "../../src/client/stream-view.js";
import { KVModel } from "../../src/client/view-models.js";

/*
 * The view's frame handling and recovery rules against a scripted frame source (each
 * subscription plays one script: frames, then an error or a hang), with a fixed clock and
 * no randomness, so each step is exact. The same rules run over real gRPC in
 * views.test.ts.
 */

type Script = { frames: Frame[]; end?: Error };

const entry = (key: string, index: number): KVEntry => ({
  key,
  value: Buffer.from(`v${index}`),
  flags: 0,
  lock_index: 0,
  create_index: index,
  modify_index: index,
});
const set = (key: string, index: number): StreamEvent => ({
  topic: Topic.KV,
  index: asIndex(index),
  payload: { op: "set", entry: entry(key, index) },
});
const del = (key: string, index: number): StreamEvent => ({
  topic: Topic.KV,
  index: asIndex(index),
  payload: { op: "delete", entry: entry(key, index) },
});
const snapshot = (index: number, ...events: StreamEvent[]): Frame[] => [
  { kind: "snapshot", index: asIndex(index), events },
  { kind: "endOfSnapshot", index: asIndex(index) },
];
const events = (index: number, ...evs: StreamEvent[]): Frame => ({
  kind: "events",
  index: asIndex(index),
  events: evs,
});
const progress = (index: number): Frame => ({ kind: "progress", index: asIndex(index) });
const unavailable = () => new UnavailableError(Code.Unavailable, "ShuttingDownError", "shutting down");

/** Plays one script per subscription and records the requested indexes; hangs when out of scripts. */
function scripted(scripts: Script[]) {
  const requested: number[] = [];
  const source = (req: SubscribeRequest, { signal }: { signal: AbortSignal }): AsyncIterable<Frame> => ({
    async *[Symbol.asyncIterator]() {
      requested.push(req.index ?? 0);
      const script = scripts.shift();
      if (!script) {
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        return;
      }
      for (const f of script.frames) {
        await Promise.resolve();
        yield f;
      }
      if (script.end) throw script.end;
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
    },
  });
  return { source, requested };
}

function view(scripts: Script[], notices: RetryNotice[] = []) {
  const { source, requested } = scripted(scripts);
  const v = new StreamView(
    source,
    { topic: Topic.KV, subject: { prefix: "" } },
    () => new KVModel(),
    { policy: { initialMs: 1, maxMs: 4, multiplier: 2, jitter: 0 }, now: () => 0, random: () => 0 },
    { onRetry: (n) => notices.push(n) },
  );
  return { v, requested };
}

const keys = (v: StreamView<ReadonlyMap<string, KVEntry>>) => [...(v.get()?.value.keys() ?? [])];

describe("StreamView", () => {
  it("applies a snapshot, then events; progress moves the index only", async () => {
    const { v } = view([
      {
        frames: [...snapshot(5, set("a", 3), set("b", 5)), events(7, set("c", 6), del("a", 7)), progress(9)],
      },
    ]);
    const u = await v.waitForIndexAbove(8, { timeout: 1000 });
    expect(u.index).toBe(9);
    expect(keys(v)).toEqual(["b", "c"]);
    expect(v.stats).toMatchObject({ snapshots: 1, eventsApplied: 2 });
    v.close();
  });

  it("resumes with the last index seen, progress included, and applies no event twice", async () => {
    const notices: RetryNotice[] = [];
    const { v, requested } = view(
      [
        { frames: [...snapshot(5, set("a", 5)), events(6, set("b", 6)), progress(8)], end: unavailable() },
        { frames: [events(9, set("c", 9))], end: unavailable() },
        // A server resending what the view has: skipped, counted.
        { frames: [events(10, set("c", 9), set("d", 10))] },
      ],
      notices,
    );
    await v.waitForIndexAbove(9, { timeout: 1000 });
    expect(requested).toEqual([0, 8, 9]);
    expect(keys(v)).toEqual(["a", "b", "c", "d"]);
    expect(v.stats).toMatchObject({ snapshots: 1, resumes: 2, eventsApplied: 3, duplicatesSkipped: 1 });
    // Reset on success: each failure came after a frame, so each retry was immediate.
    expect(notices.map((n) => [n.attempt, n.delayMs, n.resumeIndex, n.reset])).toEqual([
      [1, 0, 8, false],
      [1, 0, 9, false],
    ]);
    v.close();
  });

  it("on NewSnapshotToFollow keeps showing the old state until the new snapshot is whole", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const { source, requested } = scripted([
      { frames: snapshot(5, set("a", 4), set("gone", 5)), end: unavailable() },
    ]);
    const v = new StreamView(
      (req, o) => {
        if (requested.length === 0) return source(req, o);
        requested.push(req.index ?? 0);
        return (async function* () {
          yield { kind: "newSnapshotToFollow" } as Frame;
          yield { kind: "snapshot", index: asIndex(20), events: [set("a", 12)] } as Frame;
          await gate;
          yield { kind: "snapshot", index: asIndex(20), events: [set("new", 20)] } as Frame;
          yield { kind: "endOfSnapshot", index: asIndex(20) } as Frame;
          await new Promise((r) => o.signal.addEventListener("abort", r, { once: true }));
        })();
      },
      { topic: Topic.KV, subject: { prefix: "" } },
      () => new KVModel(),
      { policy: { initialMs: 1, maxMs: 4, multiplier: 2, jitter: 0 }, now: () => 0, random: () => 0 },
    );
    await v.waitForIndexAbove(0, { timeout: 1000 });
    await new Promise((r) => setTimeout(r, 20));
    expect(requested).toEqual([0, 5]);
    expect(keys(v)).toEqual(["a", "gone"]);
    expect(v.get()!.index).toBe(5);
    release();
    const u = await v.waitForIndexAbove(19, { timeout: 1000 });
    expect(u.index).toBe(20);
    expect(keys(v)).toEqual(["a", "new"]);
    expect(v.stats.snapshots).toBe(2);
    v.close();
  });

  it("on ABORTED resubscribes from index 0 and rebuilds; a snapshot cut short is dropped", async () => {
    const notices: RetryNotice[] = [];
    const { v, requested } = view(
      [
        {
          frames: [...snapshot(5, set("a", 5)), events(6, set("b", 6))],
          end: new ForceClosedError(Code.Aborted, "", "x"),
        },
        // Half a snapshot, then the connection drops: the view still resumes from 6.
        { frames: [{ kind: "snapshot", index: asIndex(8), events: [set("half", 8)] }], end: unavailable() },
        { frames: snapshot(8, set("b", 6), set("c", 8)) },
      ],
      notices,
    );
    const u = await v.waitForIndexAbove(7, { timeout: 1000 });
    expect(requested).toEqual([0, 0, 0]);
    expect([...u.value.keys()]).toEqual(["b", "c"]);
    expect(notices.map((n) => [n.reset, n.resumeIndex])).toEqual([
      [true, 0],
      [false, 0],
    ]);
    v.close();
  });

  it("backs off between consecutive failures and stops on PERMISSION_DENIED", async () => {
    const notices: RetryNotice[] = [];
    const denied = new PermissionDeniedError(Code.PermissionDenied, "TokenNotFoundError", "ACL not found");
    const { v, requested } = view(
      [
        { frames: snapshot(3, set("a", 3)), end: unavailable() },
        { frames: [], end: unavailable() },
        { frames: [], end: unavailable() },
        { frames: [], end: unavailable() },
        { frames: [], end: denied },
      ],
      notices,
    );
    const it = v[Symbol.asyncIterator]();
    expect((await it.next()).value?.index).toBe(3);
    await expect(it.next()).rejects.toBe(denied);
    expect(notices.map((n) => n.delayMs)).toEqual([0, 1, 2, 4]);
    expect(requested).toEqual([0, 3, 3, 3, 3]);
    expect(() => v.get()).toThrow(denied);
    expect(v.closed).toBe(true);
  });

  it("treats a stream it cannot make sense of as a protocol error: rebuilds from a snapshot", async () => {
    const { v, requested } = view([
      {
        frames: [
          {
            kind: "snapshot",
            index: asIndex(2),
            events: [{ topic: Topic.ServiceList, index: asIndex(2), payload: { op: "register", name: "x" } }],
          },
        ],
      },
    ]);
    // A ServiceList event on a KV view is a ProtocolError: reset and retry, not stop.
    await new Promise((r) => setTimeout(r, 20));
    expect(requested).toEqual([0, 0]);
    expect(v.stats.retries).toBe(1);
    expect(v.closed).toBe(false);
    v.close();
  });
});
