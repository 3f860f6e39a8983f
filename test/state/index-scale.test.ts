import { beforeAll, describe, expect, it } from "vitest";
import {
  type KVRow,
  LIMITS,
  type Op,
  queries,
  type ServiceRow,
  SortedMap,
  type StateRoot,
  Store,
} from "../../src/state/index.js";

/*
 * Lookups go through indexes, not scans. Not a timing test: a root with 100,000 service
 * instances and 20,000 keys is read through maps that count every key they are asked for,
 * and each query must touch a number of keys on the order of its answer, not of the table.
 */

const NODES = 1_000;
const SERVICES = 100_000;
const NAMES = 1_000;
const KEYS = 20_000;
const KV_DIRS = 200;

const pad = (n: number): string => String(n).padStart(4, "0");
const nodeName = (i: number): string => `node-${pad(i)}`;
/** Instance j: service `svc-(j mod 1000)` on node floor(j / 100), so each name spans 100 nodes. */
const instance = (j: number) => ({
  Node: nodeName(Math.floor(j / (SERVICES / NODES))),
  ID: `inst-${j}`,
  Service: `svc-${j % NAMES}`,
  Port: j % 65_536,
});
const kvKey = (k: number): string => `app/${k % KV_DIRS}/item-${k}`;

/**
 * A copy of a map whose chunk list and chunk key arrays count element reads. Reads the map's
 * private layout (a list of chunks of sorted keys) on purpose: that is what a scan would walk.
 */
function counting<V>(m: SortedMap<V>, tally: { reads: number }): SortedMap<V> {
  const count = <T>(a: readonly T[]): readonly T[] =>
    new Proxy(a, {
      get(target, prop, receiver) {
        if (typeof prop === "string" && /^\d+$/.test(prop)) tally.reads++;
        return Reflect.get(target, prop, receiver);
      },
    });
  const chunks = (m as unknown as { chunks: readonly { keys: readonly string[]; vals: readonly V[] }[] })
    .chunks;
  return Object.create(SortedMap.prototype, {
    chunks: { value: count(chunks.map((c) => ({ keys: count(c.keys), vals: c.vals }))) },
    size: { value: m.size },
  }) as SortedMap<V>;
}

/** The root with its services, KV and service-name index counting reads. */
function countingRoot(root: StateRoot): { root: StateRoot; tally: { reads: number } } {
  const tally = { reads: 0 };
  const r = {
    ...root,
    services: counting(root.services, tally),
    kv: counting(root.kv, tally),
    idx: { ...root.idx, servicesByName: counting(root.idx.servicesByName, tally) },
  } as StateRoot;
  return { root: r, tally };
}

/** Runs a query on the counting root: its answer and how many keys it read. */
function measure<T>(root: StateRoot, query: (r: StateRoot) => Iterable<T>): { rows: T[]; reads: number } {
  const { root: r, tally } = countingRoot(root);
  const rows = [...query(r)];
  return { rows, reads: tally.reads };
}

/**
 * What a lookup may read: a binary search per answer row (~2·log2 n key reads plus slack)
 * and a few for the search that finds the start. A scan reads the whole table.
 */
const budget = (rows: number, n: number): number => (rows + 2) * (4 * Math.ceil(Math.log2(n)) + 8);

async function build(): Promise<Store> {
  const store = await Store.open({ inMemory: true });
  const ops: Op[] = [];
  for (let i = 0; i < NODES; i++)
    ops.push({ op: "node.register", node: { Node: nodeName(i), Address: `10.0.${i >> 8}.${i & 255}` } });
  for (let j = 0; j < SERVICES; j++) ops.push({ op: "service.register", service: instance(j) });
  for (let k = 0; k < KEYS; k++)
    ops.push({ op: "kv.set", key: kvKey(k), value: Uint8Array.of(k & 255, k >> 8), flags: k });
  const txns: Op[][] = [];
  for (let i = 0; i < ops.length; i += LIMITS.maxOpsPerTxn) txns.push(ops.slice(i, i + LIMITS.maxOpsPerTxn));
  // Queued together: nodes come first, so every service's node exists when it applies.
  const results = await Promise.all(txns.map((t) => store.commit(t)));
  expect(results.map((r) => r.index)).toEqual(txns.map((_, i) => i + 1));
  return store;
}

describe("indexes at scale", () => {
  let store: Store;
  let root: StateRoot;
  beforeAll(async () => {
    store = await build();
    root = store.root;
    return () => store.close();
  }, 60_000);

  it("holds every row", () => {
    expect(root.nodes.size).toBe(NODES);
    expect(root.services.size).toBe(SERVICES);
    expect(root.idx.servicesByName.size).toBe(SERVICES);
    expect(root.kv.size).toBe(KEYS);
  });

  it("finds a service's instances through the name index, reading about as many keys as it returns", () => {
    for (const name of ["svc-17", "SVC-17", "svc-1", "svc-999", "svc-0"]) {
      const n = Number(name.slice(4));
      const want: ServiceRow[] = [];
      for (let j = n; j < SERVICES; j += NAMES)
        want.push(queries.getService(root, instance(j).Node, `inst-${j}`)!);
      expect(want).toHaveLength(SERVICES / NAMES);
      const { rows, reads } = measure(root, (r) => queries.serviceInstances(r, name));
      // Exactly the instances of that name (not svc-10.. for svc-1), ordered by node then ID.
      expect(rows).toStrictEqual(want);
      for (const [i, row] of rows.entries()) {
        expect(row).toMatchObject({ ...instance(n + i * NAMES), CreateIndex: expect.any(Number) });
      }
      expect(reads).toBeLessThanOrEqual(budget(rows.length, SERVICES));
      expect(reads).toBeLessThan(SERVICES / 10);
    }
  });

  it("answers for a name with no instances without reading the table", () => {
    for (const name of ["svc-1000", "svc", "nope", ""]) {
      const { rows, reads } = measure(root, (r) => queries.serviceInstances(r, name));
      expect(rows).toEqual([]);
      expect(reads).toBeLessThanOrEqual(budget(0, SERVICES));
    }
    expect(queries.serviceExists(root, "svc-1000")).toBe(false);
    expect(queries.serviceExists(root, "Svc-999")).toBe(true);
  });

  it("finds a node's services through the table's key order", () => {
    const { rows, reads } = measure(root, (r) => queries.nodeServices(r, nodeName(42)));
    expect(rows.map((s) => s.ID).sort()).toEqual(
      Array.from({ length: 100 }, (_, i) => `inst-${4200 + i}`).sort(),
    );
    expect(reads).toBeLessThanOrEqual(budget(rows.length, SERVICES));
  });

  it("lists a KV prefix reading only the rows under it", () => {
    const all = Array.from({ length: KEYS }, (_, k) => kvKey(k)).sort();
    for (const prefix of ["app/17/", "app/1", "app/199/item-4", "app/17/item-17", "app/200/", "b", "app/"]) {
      const wantKeys = all.filter((k) => k.startsWith(prefix));
      const { rows, reads } = measure(root, (r) => queries.kvList(r, prefix));
      expect(rows.map((r) => r.Key)).toEqual(wantKeys);
      for (const row of rows.slice(0, 500)) {
        const k = Number(row.Key.slice(row.Key.lastIndexOf("-") + 1));
        expect(row).toMatchObject<Partial<KVRow>>({ Flags: k, Value: Uint8Array.of(k & 255, k >> 8) });
      }
      expect(reads).toBeLessThanOrEqual(budget(rows.length, KEYS));
    }
  });

  it("gets single rows with a logarithmic number of reads", () => {
    const { rows, reads } = measure(root, (r) => [
      queries.kvGet(r, kvKey(13_337)),
      queries.getService(r, instance(77_777).Node, "inst-77777"),
      queries.kvGet(r, "app/1/item-0"),
    ]);
    expect(rows[0]).toMatchObject({ Key: kvKey(13_337), Flags: 13_337 });
    expect(rows[1]).toMatchObject(instance(77_777));
    expect(rows[2]).toBeUndefined();
    expect(reads).toBeLessThanOrEqual(budget(3, SERVICES));
  });

  it("keeps answering the same after a commit moves instances between names", async () => {
    // Rename every instance of svc-5 on the first ten nodes to svc-6.
    const moved = Array.from({ length: 10 }, (_, i) => 5 + i * NAMES);
    await store.commit(
      moved.map((j) => ({ op: "service.register", service: { ...instance(j), Service: "svc-6" } })),
    );
    const after = store.root;
    expect([...queries.serviceInstances(after, "svc-5")].map((s) => s.ID)).toEqual(
      Array.from({ length: 90 }, (_, i) => `inst-${5 + (i + 10) * NAMES}`),
    );
    const six = [...queries.serviceInstances(after, "svc-6")];
    expect(six).toHaveLength(110);
    expect(six.filter((s) => moved.includes(Number(s.ID.slice(5))))).toHaveLength(10);
    // The root read before the commit still answers as it did.
    expect([...queries.serviceInstances(root, "svc-5")]).toHaveLength(100);
    expect([...queries.serviceInstances(root, "svc-6")]).toHaveLength(100);
  });
});
