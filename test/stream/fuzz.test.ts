import { setImmediate as immediate, setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { type Subject, SubjectKind, Topic } from "../../src/state/events/index.js";
import { type Op, type StateRoot, Store, type Txn } from "../../src/state/index.js";
import { EventPublisher, FrameKind, type Subscription } from "../../src/stream/index.js";
import { ClientView, project } from "../helpers/views.js";

/*
 * Many concurrent readers against one writer, through the public AsyncIterable API, with
 * random delays on both sides. Each reader is a ClientView, which checks every frame as it
 * arrives (indexes strictly increase, nothing repeats, a commit never spans frames, snapshots
 * come first or after NewSnapshotToFollow). The delays come from a seeded generator: the seed
 * is printed on failure and SLUICE_FC_SEED sets it (the interleaving still varies between runs).
 *
 * The store holds one commit before the readers subscribe, so that each reader's snapshot has
 * an index of its own and the 1,000 appends are indexes 2 to 1,001.
 */

const READERS = 1000;
const APPENDS = 1000;
const FIRST = 2;
const LAST = FIRST + APPENDS - 1;
const KEYS = 50;
const wildcard: Subject = { kind: SubjectKind.Wildcard };
const enc = new TextEncoder();
const set = (key: string, value: string): Op => ({ op: "kv.set", key, value: enc.encode(value) });

/** mulberry32: a small seeded generator, so that a failure's delays can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = process.env.SLUICE_FC_SEED
  ? Number(process.env.SLUICE_FC_SEED)
  : (Math.random() * 0x7fffffff) | 0;

/** Mostly nothing, sometimes a turn of the event loop, sometimes a timer of 0-2 ms. */
async function jitter(rand: () => number): Promise<void> {
  const r = rand();
  if (r < 0.7) return;
  if (r < 0.9) await immediate();
  else await sleep(Math.floor(rand() * 3));
}

let store: Store | undefined;
let pub: EventPublisher | undefined;

afterEach(async () => {
  pub?.shutdown();
  await store?.close();
  pub = undefined;
  store = undefined;
});

/** A store with one commit (index 1) and a publisher on it; records every root by index. */
async function open(
  maxEvents: number,
): Promise<{ s: Store; p: EventPublisher; rootAt: (i: number) => StateRoot }> {
  const s = await Store.open({ inMemory: true });
  // No progress frames: a reader that misses a wake-up must hang here, not be rescued by a tick.
  const p = EventPublisher.attach(s, { history: { maxEvents }, progressIntervalMs: 3_600_000 });
  store = s;
  pub = p;
  const roots = new Map<number, StateRoot>();
  s.onCommit((c, _before, after) => roots.set(c.index, after));
  await s.commit([set("k/seed", "0")]);
  const rootAt = (i: number): StateRoot => {
    const r = roots.get(i);
    if (!r) throw new Error(`no root at ${i}`);
    return r;
  };
  return { s, p, rootAt };
}

/** Runs `body`; on failure says which seed replays the delays. */
async function withSeed(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    console.error(`fuzz failed with SLUICE_FC_SEED=${SEED}`);
    throw err;
  }
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * Waits for every reader (each settles, so a failed one leaves no unhandled rejection), or
 * fails after `ms` saying how many still run; then throws the first reader's error.
 */
async function settleWithin<T>(readers: Promise<T>[], ms: number): Promise<T[]> {
  let pending = readers.length;
  const settled = readers.map((r) =>
    r
      .then(
        (value): Outcome<T> => ({ ok: true, value }),
        (error: unknown): Outcome<T> => ({ ok: false, error }),
      )
      .finally(() => pending--),
  );
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${pending} of ${readers.length} readers still running`)), ms);
  });
  try {
    const outcomes = await Promise.race([Promise.all(settled), timeout]);
    for (const o of outcomes) if (!o.ok) throw o.error;
    return outcomes.flatMap((o) => (o.ok ? [o.value] : []));
  } finally {
    clearTimeout(timer);
  }
}

describe("publisher fuzz", () => {
  it("1,000 readers and 1,000 appends with random delays: every reader sees every index exactly once, in order", async () => {
    await withSeed(async () => {
      const rand = seeded(SEED);
      const { s, p } = await open(4 * APPENDS);

      const read = async (n: number, sub: Subscription, rand: () => number) => {
        const view = new ClientView(`reader ${n}`, Topic.KV, wildcard);
        const indexes: number[] = [];
        let eventFrames = 0;
        for await (const f of sub) {
          view.apply(f);
          if (f.kind === FrameKind.NewSnapshotToFollow)
            throw new Error(`reader ${n} reset: the history holds all`);
          if (f.kind === FrameKind.Events) {
            eventFrames++;
            for (const e of f.events) indexes.push(e.index);
          }
          if (view.index === LAST) break; // unsubscribes
          await jitter(rand);
        }
        return { view, indexes, eventFrames };
      };
      const readers = Array.from({ length: READERS }, (_, n) =>
        read(n, p.subscribe({ topic: Topic.KV, subject: wildcard }), seeded(SEED + n + 1)),
      );

      const inflight: Promise<unknown>[] = [];
      for (let i = FIRST; i <= LAST; i++) {
        const txn: Txn = [set(`k/${i % KEYS}`, String(i))];
        // Mostly one commit at a time; sometimes several in flight (one group commit).
        if (rand() < 0.8) await s.commit(txn);
        else inflight.push(s.commit(txn));
        await jitter(rand);
      }
      await Promise.all(inflight);
      expect(s.index).toBe(LAST);

      const results = await settleWithin(readers, 10_000);
      const expected = Array.from({ length: APPENDS }, (_, i) => FIRST + i);
      const final = project(Topic.KV, wildcard, s.root);
      for (const { view, indexes } of results) {
        if (indexes.length !== expected.length || indexes.some((x, i) => x !== expected[i])) {
          expect({ reader: view.name, indexes }).toEqual({ reader: view.name, indexes: expected });
        }
        view.expectEquals(final, `at ${LAST}`);
      }
      const frames = results.reduce((n, r) => n + r.eventFrames, 0);
      console.log(`seed ${SEED}: ${frames} event frames carried ${READERS * APPENDS} events`);
      expect(p.metrics.resets).toBe(0);
      expect(p.metrics.eventsDelivered).toBe(READERS * (APPENDS + 1)); // + the snapshot's one entry
      expect(p.metrics.snapshotBuilds).toBe(1);
      expect(p.subscriptionCount).toBe(0);
      expect(p.stats().streams).toBe(0);
    });
  }, 30_000);

  it("a small history resets slow readers: indexes never repeat or go back, and every view ends equal to the store", async () => {
    await withSeed(async () => {
      const rand = seeded(SEED);
      const maxEvents = 32;
      const { s, p, rootAt } = await open(maxEvents);

      const randomTxn = (i: number): Txn => {
        // The last commit sets a key, so that every reader's index reaches it.
        if (i === LAST) return [set("k/last", String(i))];
        const op = (): Op => {
          const key = `k/${Math.floor(rand() * KEYS)}`;
          return rand() < 0.75 ? set(key, String(i)) : { op: "kv.delete", key };
        };
        return rand() < 0.1 ? [op(), op(), op()] : [op()];
      };

      /**
       * Readers join at random moments while the writer runs; a tenth of them are slow, and
       * about one in twenty stops reading for 100 commits, far more than the history holds.
       */
      const read = async (n: number, rand: () => number): Promise<ClientView> => {
        await sleep(Math.floor(rand() * 40));
        const view = new ClientView(`reader ${n}`, Topic.KV, wildcard);
        const slow = rand() < 0.1;
        let pauseAt = rand() < 0.05 ? Math.floor(rand() * (APPENDS - 200)) : -1;
        for await (const f of p.subscribe({ topic: Topic.KV, subject: wildcard })) {
          view.apply(f);
          if (f.kind === FrameKind.EndOfSnapshot) {
            view.expectEquals(project(Topic.KV, wildcard, rootAt(f.index)), `at its snapshot's ${f.index}`);
          }
          if (view.index === LAST) break; // unsubscribes
          if (pauseAt >= 0 && view.index >= pauseAt) {
            const until = Math.min(LAST, view.index + 100);
            while (s.index < until) await sleep(2);
            pauseAt = -1;
          }
          if (slow) await sleep(Math.floor(rand() * 6));
          else await jitter(rand);
        }
        return view;
      };

      const readers = Array.from({ length: READERS }, (_, n) => read(n, seeded(SEED + n + 1)));
      for (let i = FIRST; i <= LAST; i++) {
        await s.commit(randomTxn(i));
        await jitter(rand);
      }
      expect(s.index).toBe(LAST);

      const views = await settleWithin(readers, 10_000);
      const final = project(Topic.KV, wildcard, s.root);
      for (const v of views) {
        expect(v.index).toBe(LAST);
        v.expectEquals(final, `at ${LAST}`);
      }
      const reset = views.filter((v) => v.resets > 0).length;
      console.log(`seed ${SEED}: ${reset} of ${READERS} readers reset, ${p.metrics.resets} resets`);
      expect(reset).toBeGreaterThan(0);
      expect(p.metrics.resets).toBeGreaterThanOrEqual(reset);
      expect(p.subscriptionCount).toBe(0);
      expect(p.stats().historyEvents).toBeLessThanOrEqual(maxEvents);
    });
  }, 30_000);
});
