import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SortedMap } from "../../src/state/index.js";

/*
 * SortedMap against a plain Map: every read of the persistent map must agree with a sorted
 * view of the reference, and every version handed out must stay as it was.
 */

const SEED = process.env.SLUICE_FC_SEED === undefined ? undefined : Number(process.env.SLUICE_FC_SEED);
const RUNS = process.env.SLUICE_FC_RUNS === undefined ? undefined : Number(process.env.SLUICE_FC_RUNS);
const fcParams = (defaultRuns: number): fc.Parameters<unknown> => ({
  numRuns: RUNS ?? defaultRuns,
  ...(SEED === undefined ? {} : { seed: SEED }),
});

const CHUNK_MAX = SortedMap.CHUNK_MAX;

const byKey = (a: readonly [string, unknown], b: readonly [string, unknown]): number =>
  a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;

function sortedEntries<V>(ref: ReadonlyMap<string, V>): [string, V][] {
  return [...ref.entries()].sort(byKey);
}

/** The chunk sizes, read past the class's privacy: to prove splits and merges really happen. */
function chunkSizes(m: SortedMap<unknown>): number[] {
  const chunks = (m as unknown as { chunks: readonly { keys: readonly string[] }[] }).chunks;
  return chunks.map((c) => c.keys.length);
}

/** Every read of `m` agrees with `ref`; `probes` are extra keys for get/prefix/from. */
function expectSame<V>(m: SortedMap<V>, ref: ReadonlyMap<string, V>, probes: readonly string[]): void {
  const sorted = sortedEntries(ref);
  expect(m.size).toBe(ref.size);
  expect([...m.entries()]).toEqual(sorted);
  expect([...m]).toEqual(sorted);
  expect([...m.values()]).toEqual(sorted.map(([, v]) => v));
  const sizes = chunkSizes(m as SortedMap<unknown>);
  expect(sizes.every((n) => n > 0 && n <= CHUNK_MAX)).toBe(true);
  expect(sizes.reduce((a, b) => a + b, 0)).toBe(ref.size);
  for (const k of probes) {
    expect(m.get(k)).toBe(ref.get(k));
    expect(m.has(k)).toBe(ref.has(k));
    expect([...m.prefix(k)]).toEqual(sorted.filter(([key]) => key.startsWith(k)));
    expect([...m.from(k)]).toEqual(sorted.filter(([key]) => key >= k));
  }
}

type MapOp =
  | { readonly kind: "set"; readonly key: string; readonly val: number }
  | { readonly kind: "delete"; readonly key: string }
  /** Deletes the `nth` (modulo size) live key: a delete that always hits. */
  | { readonly kind: "deleteLive"; readonly nth: number };

const PREFIXES = ["", "a", "a/", "a/b", "ab", "b", "b/c", "\u00e9", "\ud83d\ude00"] as const;
/** ~1,800 distinct keys sharing a handful of prefixes: collisions and long runs in one chunk. */
const keyArb = fc
  .tuple(fc.constantFrom(...PREFIXES), fc.integer({ min: 0, max: 199 }))
  .map(([p, n]) => `${p}${n}`);
const setArb = fc.record({ kind: fc.constant("set" as const), key: keyArb, val: fc.nat(9) });
const deleteArb = fc.record({ kind: fc.constant("delete" as const), key: keyArb });
const deleteLiveArb = fc.record({ kind: fc.constant("deleteLive" as const), nth: fc.nat() });
/**
 * Grow, then shrink: the first part mostly writes (over a thousand live keys: many chunks),
 * the second mostly deletes live keys (chunks fall under the minimum and merge).
 */
const scriptArb: fc.Arbitrary<MapOp[]> = fc
  .tuple(
    fc.array(fc.oneof({ weight: 4, arbitrary: setArb }, { weight: 1, arbitrary: deleteArb }), {
      minLength: 1000,
      maxLength: 3000,
      size: "max",
    }),
    fc.array(
      fc.oneof(
        { weight: 1, arbitrary: setArb },
        { weight: 1, arbitrary: deleteArb },
        { weight: 6, arbitrary: deleteLiveArb },
      ),
      { minLength: 1000, maxLength: 3000, size: "max" },
    ),
  )
  .map(([grow, shrink]) => [...grow, ...shrink]);

const PROBES = [...PREFIXES, "a1", "a/1", "a/b4", "b/c49", "zzz", "\u0000", "0", "499", "\ud83d", "\uffff"];

type Write<V> = { kind: "set"; key: string; val: V } | { kind: "delete"; key: string };

function applyOp<V>(m: SortedMap<V>, ref: Map<string, V>, op: Write<V>): SortedMap<V> {
  if (op.kind === "set") {
    ref.set(op.key, op.val);
    return m.set(op.key, op.val);
  }
  ref.delete(op.key);
  return m.delete(op.key);
}

/** Turns a script step into a concrete write against the reference's live keys. */
function resolve(op: MapOp, ref: ReadonlyMap<string, number>): Write<number> {
  if (op.kind !== "deleteLive") return op;
  const live = [...ref.keys()];
  return { kind: "delete", key: live.length === 0 ? "" : (live[op.nth % live.length] as string) };
}

describe("SortedMap", () => {
  it("is empty to begin with", () => {
    const m = SortedMap.empty<number>();
    expect(m.size).toBe(0);
    expect(m.get("a")).toBeUndefined();
    expect(m.has("")).toBe(false);
    expect([...m.entries()]).toEqual([]);
    expect([...m.prefix("")]).toEqual([]);
    expect([...m.from("")]).toEqual([]);
    expect(m.delete("a")).toBe(m);
  });

  it("keeps keys in code-unit order, the order of <", () => {
    const keys = ["b", "a", "", "a/b", "ab", "A", "\u00e9", "\ud83d\ude00", "\uffff", "a\u0000", "10", "9"];
    let m = SortedMap.empty<string>();
    for (const k of keys) m = m.set(k, k.toUpperCase());
    expect([...m.entries()].map(([k]) => k)).toEqual([...keys].sort());
    expect(m.get("")).toBe("");
    expect([...m.prefix("a")].map(([k]) => k)).toEqual(["a", "a\u0000", "a/b", "ab"]);
    expect([...m.from("a/")].map(([k]) => k)).toEqual([...keys].sort().filter((k) => k >= "a/"));
  });

  it("returns itself for a write that changes nothing", () => {
    const v = { x: 1 };
    const m = SortedMap.empty<object>().set("a", v);
    expect(m.set("a", v)).toBe(m);
    expect(m.delete("b")).toBe(m);
    expect(m.set("a", { x: 1 })).not.toBe(m);
  });

  it("builds from unsorted entries, later duplicates winning", () => {
    const entries: [string, number][] = [];
    for (let i = 0; i < 1000; i++) entries.push([`k${(i * 7919) % 600}`, i]);
    const m = SortedMap.from(entries);
    const ref = new Map(entries);
    expectSame(m, ref, ["k1", "k10", "k599", "k", "j", "l", "k600"]);
    // A map built in bulk behaves like one built a key at a time afterwards.
    let m2 = m;
    const ref2 = new Map(ref);
    for (let i = 0; i < 600; i += 2) m2 = applyOp(m2, ref2, { kind: "delete", key: `k${i}` });
    expectSame(m2, ref2, ["k1", "k10", "k599", "k"]);
    expectSame(m, ref, ["k1", "k10"]);
  });

  it("splits chunks on the way up and merges them on the way down", () => {
    let m = SortedMap.empty<number>();
    const ref = new Map<string, number>();
    let maxChunks = 0;
    for (let i = 0; i < 5000; i++) {
      m = applyOp(m, ref, { kind: "set", key: String((i * 2654435761) % 5003).padStart(4, "0"), val: i });
      maxChunks = Math.max(maxChunks, chunkSizes(m).length);
    }
    expect(maxChunks).toBeGreaterThan(5000 / CHUNK_MAX);
    expectSame(m, ref, ["0", "00", "01", "4999", "5", "9"]);
    const full = m;
    const fullRef = new Map(ref);
    let merges = 0;
    for (const k of [...ref.keys()]
      .sort()
      .reverse()
      .filter((_, i) => i % 3 !== 0)) {
      const before = chunkSizes(m).length;
      m = applyOp(m, ref, { kind: "delete", key: k });
      if (chunkSizes(m).length < before) merges++;
    }
    expect(merges).toBeGreaterThan(0);
    expectSame(m, ref, ["0", "00", "01", "4999", "5", "9"]);
    for (const k of [...ref.keys()]) m = applyOp(m, ref, { kind: "delete", key: k });
    expect(m.size).toBe(0);
    expect(chunkSizes(m)).toEqual([]);
    expectSame(full, fullRef, ["0", "1", "2"]);
  });

  it("agrees with a Map over random writes and deletes, and keeps every old version", () => {
    let sawSplit = false;
    let sawMerge = false;
    fc.assert(
      fc.property(scriptArb, (script) => {
        let m = SortedMap.empty<number>();
        const ref = new Map<string, number>();
        const versions: { map: SortedMap<number>; ref: Map<string, number> }[] = [];
        for (const [i, op] of script.entries()) {
          const chunksBefore = chunkSizes(m as SortedMap<unknown>).length;
          const prev = m;
          const prevSize = prev.size;
          const w = resolve(op, ref);
          m = applyOp(m, ref, w);
          const chunksAfter = chunkSizes(m as SortedMap<unknown>).length;
          if (chunksAfter > chunksBefore && chunksBefore > 0) sawSplit = true;
          if (w.kind === "delete" && chunksAfter < chunksBefore && m.size > 0) sawMerge = true;
          // Cheap per-step checks; the full comparison runs at checkpoints.
          expect(m.size).toBe(ref.size);
          expect(m.get(w.key)).toBe(ref.get(w.key));
          expect(prev.size).toBe(prevSize);
          if (i % 400 === 0) versions.push({ map: m, ref: new Map(ref) });
        }
        expectSame(m, ref, PROBES);
        for (const v of versions) expectSame(v.map, v.ref, PROBES);
      }),
      fcParams(12),
    );
    expect(sawSplit).toBe(true);
    expect(sawMerge).toBe(true);
  });

  it("answers prefix and from for arbitrary strings like a filtered sorted Map", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.string({ unit: "binary", maxLength: 4 }), fc.nat()), { maxLength: 400 }),
        fc.array(fc.string({ unit: "binary", maxLength: 3 }), { maxLength: 10 }),
        (entries, probes) => {
          let m = SortedMap.empty<number>();
          const ref = new Map<string, number>();
          for (const [k, v] of entries) m = applyOp(m, ref, { kind: "set", key: k, val: v });
          expectSame(m, ref, [...probes, ...entries.slice(0, 5).map(([k]) => k)]);
          expectSame(SortedMap.from(entries), ref, probes);
        },
      ),
      fcParams(200),
    );
  });

  it("hands out no internal structure: tuples from entries() are fresh", () => {
    let m = SortedMap.empty<number>();
    for (let i = 0; i < 300; i++) m = m.set(`k${String(i).padStart(3, "0")}`, i);
    const [first] = m.entries();
    first![0] = "zzz";
    first![1] = -1;
    expect(m.get("k000")).toBe(0);
    expect([...m.entries()][0]).toEqual(["k000", 0]);
  });
});
