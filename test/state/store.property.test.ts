import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type AnyRow,
  asIndex,
  CasFailedError,
  type CheckInput,
  type CheckRow,
  type CheckStatus,
  type Commit,
  type CommitResult,
  ConflictError,
  type KVRow,
  MissingReferenceError,
  type NodeInput,
  type NodeRow,
  type Op,
  queries,
  type ServiceInput,
  type ServiceRow,
  type SortedMap,
  type StateRoot,
  Store,
  StoreClosedError,
  type StoreOptions,
  TABLE_NAMES,
  type TableName,
} from "../../src/state/index.js";

/*
 * Model-based test of the store: random transactions against a reference model written
 * from Consul's catalog and KV rules on plain Maps. After every command the store's tables,
 * its index queries, its commit records and every root it handed out earlier must agree
 * with the model.
 *
 * Replay a failure with SLUICE_FC_SEED=<seed> (and SLUICE_FC_PATH=<path>); SLUICE_FC_RUNS
 * sets the number of runs.
 */

const SEED = process.env.SLUICE_FC_SEED === undefined ? undefined : Number(process.env.SLUICE_FC_SEED);
const RUNS = process.env.SLUICE_FC_RUNS === undefined ? undefined : Number(process.env.SLUICE_FC_RUNS);
const PATH = process.env.SLUICE_FC_PATH;
const fcParams = (defaultRuns: number): fc.Parameters<unknown> => ({
  numRuns: RUNS ?? defaultRuns,
  ...(SEED === undefined ? {} : { seed: SEED }),
  ...(PATH === undefined ? {} : { path: PATH }),
});

// Small alphabets, so that references hit, collide and miss in about equal measure.
const NODES = ["n1", "n2", "n3"] as const;
const NODE_IDS = ["id-1", "id-2", "id-3"] as const;
const SERVICE_IDS = ["s1", "s2", "s3"] as const;
/** "web" and "Web" are one service name to the catalog; "web-api" shares a prefix with it. */
const SERVICE_NAMES = ["web", "Web", "api", "web-api"] as const;
const CHECK_IDS = ["c1", "c2", "c3"] as const;
const STATUSES = ["passing", "warning", "critical", "maintenance"] as const satisfies readonly CheckStatus[];
const KV_KEYS = ["a", "a/b", "a/b/c", "ab", "b", "b/x", "c"] as const;
const KV_PREFIXES = ["", "a", "a/", "b/", "z"] as const;
const KV_PROBES = [...KV_PREFIXES, "a/b", "a/b/", "ab", "b", "c"];
const NAME_PROBES = [...SERVICE_NAMES, "WEB", "API", "nope", "we"];
const NODE_PROBES = [...NODES, "n4"];

// ---------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------

interface ModelState {
  readonly index: number;
  readonly nodes: ReadonlyMap<string, NodeRow>;
  readonly services: ReadonlyMap<string, ServiceRow>;
  readonly checks: ReadonlyMap<string, CheckRow>;
  readonly kv: ReadonlyMap<string, KVRow>;
}

interface Model {
  state: ModelState;
}

const emptyModel = (): ModelState => ({
  index: 0,
  nodes: new Map(),
  services: new Map(),
  checks: new Map(),
  kv: new Map(),
});

/** The model's own composite key, independent of how the store keys its tables. */
const pair = (a: string, b: string): string => JSON.stringify([a, b]);

/** Why the model says a transaction fails: the error class and where. */
interface Rejection {
  readonly error: typeof CasFailedError | typeof MissingReferenceError | typeof ConflictError;
  readonly table: TableName;
  /** The primary key, where the model knows the store's spelling of it (nodes, kv). */
  readonly key?: string;
  readonly expected?: number;
  readonly actual?: number;
}

class ModelRejected extends Error {
  constructor(readonly rejection: Rejection) {
    super(rejection.error.name);
  }
}

type Content<R> = Omit<R, "CreateIndex" | "ModifyIndex">;

function contentOf<R extends AnyRow>(row: R): Content<R> {
  const { CreateIndex: _c, ModifyIndex: _m, ...rest } = row;
  return rest as Content<R>;
}

/** Applies one transaction to the model, all or nothing. */
function modelApply(
  s: ModelState,
  txn: readonly Op[],
): { ok: true; state: ModelState } | { ok: false; rejection: Rejection } {
  const index = s.index + 1;
  const nodes = new Map(s.nodes);
  const services = new Map(s.services);
  const checks = new Map(s.checks);
  const kv = new Map(s.kv);

  const reject = (r: Rejection): never => {
    throw new ModelRejected(r);
  };
  const cas = (table: TableName, key: string | undefined, expected: number | undefined, row?: AnyRow) => {
    if (expected === undefined) return;
    const actual = row?.ModifyIndex ?? 0;
    if (actual !== expected)
      reject({ error: CasFailedError, table, ...(key === undefined ? {} : { key }), expected, actual });
  };
  /** Writes a row's new content; an unchanged row keeps its indexes (a no-op write). */
  function upsert<R extends AnyRow>(
    map: Map<string, R>,
    key: string,
    content: Content<R>,
    before: R | undefined,
    always = false,
  ): void {
    if (!always && before !== undefined && isDeepStrictEqual(contentOf(before), content)) return;
    map.set(key, { ...content, CreateIndex: before?.CreateIndex ?? index, ModifyIndex: index } as R);
  }

  try {
    for (const op of txn) {
      switch (op.op) {
        case "node.register": {
          const n = op.node;
          const before = nodes.get(n.Node);
          cas("nodes", n.Node, op.cas, before);
          const id = n.ID ?? before?.ID ?? "";
          // Node IDs are unique across nodes.
          if (id !== "" && [...nodes.values()].some((o) => o.ID === id && o.Node !== n.Node))
            reject({ error: ConflictError, table: "nodes" });
          upsert(
            nodes,
            n.Node,
            {
              ID: id,
              Node: n.Node,
              Address: n.Address,
              Datacenter: n.Datacenter ?? before?.Datacenter ?? "dc1",
              TaggedAddresses: { ...(n.TaggedAddresses ?? {}) },
              Meta: { ...(n.Meta ?? {}) },
            },
            before,
          );
          break;
        }
        case "node.deregister": {
          const before = nodes.get(op.node);
          cas("nodes", op.node, op.cas, before);
          if (!before) break;
          // A node takes its services and all their checks with it.
          for (const [k, c] of checks) if (c.Node === op.node) checks.delete(k);
          for (const [k, sv] of services) if (sv.Node === op.node) services.delete(k);
          nodes.delete(op.node);
          break;
        }
        case "service.register": {
          const sv = op.service;
          if (!nodes.has(sv.Node)) reject({ error: MissingReferenceError, table: "nodes", key: sv.Node });
          const key = pair(sv.Node, sv.ID);
          const before = services.get(key);
          cas("services", undefined, op.cas, before);
          const content: Content<ServiceRow> = {
            Node: sv.Node,
            ID: sv.ID,
            Service: sv.Service,
            Tags: [...(sv.Tags ?? [])],
            Address: sv.Address ?? "",
            Port: sv.Port ?? 0,
            Meta: { ...(sv.Meta ?? {}) },
            Kind: sv.Kind ?? "",
          };
          upsert(services, key, content, before);
          // A rename on the same ID: the instance's checks follow it to the new name.
          if (before && before.Service !== sv.Service) {
            for (const [k, c] of checks) {
              if (c.Node === sv.Node && c.ServiceID === sv.ID)
                checks.set(k, { ...c, ServiceName: sv.Service, ModifyIndex: asIndex(index) });
            }
          }
          break;
        }
        case "service.deregister": {
          const key = pair(op.node, op.serviceId);
          if (!services.has(key)) break;
          for (const [k, c] of checks)
            if (c.Node === op.node && c.ServiceID === op.serviceId) checks.delete(k);
          services.delete(key);
          break;
        }
        case "check.register": {
          const c = op.check;
          if (!nodes.has(c.Node)) reject({ error: MissingReferenceError, table: "nodes", key: c.Node });
          const serviceId = c.ServiceID ?? "";
          let serviceName = "";
          if (serviceId !== "") {
            const svc = services.get(pair(c.Node, serviceId));
            if (!svc) reject({ error: MissingReferenceError, table: "services" });
            serviceName = svc?.Service ?? "";
          }
          const key = pair(c.Node, c.CheckID);
          const before = checks.get(key);
          cas("checks", undefined, op.cas, before);
          upsert(
            checks,
            key,
            {
              Node: c.Node,
              CheckID: c.CheckID,
              Name: c.Name ?? c.CheckID,
              Status: c.Status ?? "critical",
              Notes: c.Notes ?? "",
              Output: c.Output ?? "",
              ServiceID: serviceId,
              ServiceName: serviceName,
            },
            before,
          );
          break;
        }
        case "check.deregister":
          checks.delete(pair(op.node, op.checkId));
          break;
        case "check.status": {
          const key = pair(op.node, op.checkId);
          const before = checks.get(key);
          if (!before) return reject({ error: MissingReferenceError, table: "checks" });
          upsert(
            checks,
            key,
            { ...contentOf(before), Status: op.status, Output: op.output ?? before.Output },
            before,
          );
          break;
        }
        case "kv.set": {
          const before = kv.get(op.key);
          cas("kv", op.key, op.cas, before);
          // Every write of a key is a modification, even of the same bytes.
          upsert(
            kv,
            op.key,
            {
              Key: op.key,
              Value: new Uint8Array(op.value),
              Flags: op.flags ?? 0,
              LockIndex: before?.LockIndex ?? 0,
            },
            before,
            true,
          );
          break;
        }
        case "kv.delete": {
          const before = kv.get(op.key);
          // The store's contract (types.ts): a non-zero cas on a missing key fails. Consul's
          // delete-cas instead succeeds as a no-op on a missing key (kvsDeleteCASTxn).
          cas("kv", op.key, op.cas, before);
          kv.delete(op.key);
          break;
        }
        case "kv.deleteTree":
          for (const k of [...kv.keys()]) if (k.startsWith(op.prefix)) kv.delete(k);
          break;
        default:
          throw new Error(`the model has no rule for ${op.op}`);
      }
    }
  } catch (err) {
    if (err instanceof ModelRejected) return { ok: false, rejection: err.rejection };
    throw err;
  }
  return { ok: true, state: { index, nodes, services, checks, kv } };
}

// ---------------------------------------------------------------------------------------
// Views of the store and of the model, compared after every command
// ---------------------------------------------------------------------------------------

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const by2 =
  <R>(f: (r: R) => readonly [string, string]) =>
  (x: R, y: R) => {
    const [a1, a2] = f(x);
    const [b1, b2] = f(y);
    return cmp(a1, b1) || cmp(a2, b2);
  };
const serviceOrder = by2<ServiceRow>((s) => [s.Node, s.ID]);
const checkOrder = by2<CheckRow>((c) => [c.Node, c.CheckID]);

function modelTables(m: ModelState) {
  return {
    nodes: [...m.nodes.values()].sort((a, b) => cmp(a.Node, b.Node)),
    services: [...m.services.values()].sort(serviceOrder),
    checks: [...m.checks.values()].sort(checkOrder),
    kv: [...m.kv.values()].sort((a, b) => cmp(a.Key, b.Key)),
    aclTokens: [],
    aclPolicies: [],
    aclRoles: [],
  };
}

function storeTables(root: StateRoot) {
  return {
    nodes: [...root.nodes.values()],
    services: [...root.services.values()],
    checks: [...root.checks.values()],
    kv: [...root.kv.values()],
    aclTokens: [...root.aclTokens.values()],
    aclPolicies: [...root.aclPolicies.values()],
    aclRoles: [...root.aclRoles.values()],
  };
}

const table = (root: StateRoot, t: TableName): SortedMap<AnyRow> => root[t] as SortedMap<AnyRow>;

/** Every table keyed by primary key: what commit changes are replayed onto. */
function tableMaps(root: StateRoot): Record<TableName, Map<string, AnyRow>> {
  const out = {} as Record<TableName, Map<string, AnyRow>>;
  for (const t of TABLE_NAMES) out[t] = new Map(table(root, t).entries());
  return out;
}

/** A deep copy of a root as text, tables and indexes: to tell later whether it changed. */
function serialize(root: StateRoot): string {
  const idx = Object.entries(root.idx)
    .sort(([a], [b]) => cmp(a, b))
    .map(([name, m]) => [name, [...(m as SortedMap<string>).entries()]]);
  const tables = TABLE_NAMES.map((t) => [t, [...table(root, t).entries()]]);
  return JSON.stringify({ index: root.index, tables, idx }, (_k, v: unknown) =>
    v instanceof Uint8Array ? { bytes: [...v] } : v,
  );
}

function expectDeepFrozen(v: unknown, path: string): void {
  if (typeof v !== "object" || v === null || ArrayBuffer.isView(v)) return;
  if (!Object.isFrozen(v)) expect.fail(`${path} is not frozen`);
  for (const [k, x] of Object.entries(v)) expectDeepFrozen(x, `${path}.${k}`);
}

/** The store's root against the model: tables, secondary-index queries, index sizes. */
function expectAgrees(root: StateRoot, m: ModelState): void {
  expect(root.index).toBe(m.index);
  const want = modelTables(m);
  expect(storeTables(root)).toStrictEqual(want);

  for (const t of TABLE_NAMES)
    for (const [k, row] of table(root, t).entries()) expectDeepFrozen(row, `${t}[${JSON.stringify(k)}]`);

  // Secondary indexes, checked against answers computed by scanning the model.
  const lower = (s: string) => s.toLowerCase();
  for (const name of NAME_PROBES) {
    const instances = want.services.filter((s) => lower(s.Service) === lower(name));
    expect([...queries.serviceInstances(root, name)]).toStrictEqual(instances);
    expect(queries.serviceExists(root, name)).toBe(instances.length > 0);
    expect([...queries.serviceChecks(root, name)]).toStrictEqual(
      want.checks.filter((c) => c.ServiceID !== "" && lower(c.ServiceName) === lower(name)),
    );
  }
  expect([...queries.serviceNames(root)]).toStrictEqual(
    [...new Set(want.services.map((s) => lower(s.Service)))].sort(cmp),
  );
  for (const node of NODE_PROBES) {
    expect(queries.getNode(root, node)).toStrictEqual(m.nodes.get(node));
    expect([...queries.nodeServices(root, node)]).toStrictEqual(want.services.filter((s) => s.Node === node));
    const onNode = want.checks.filter((c) => c.Node === node);
    expect([...queries.nodeChecks(root, node)]).toStrictEqual(onNode);
    const nodeLevel = onNode.filter((c) => c.ServiceID === "");
    expect([...queries.nodeLevelChecks(root, node)]).toStrictEqual(nodeLevel);
    for (const sid of SERVICE_IDS) {
      expect(queries.getService(root, node, sid)).toStrictEqual(m.services.get(pair(node, sid)));
      const own = onNode.filter((c) => c.ServiceID === sid);
      expect([...queries.instanceOwnChecks(root, node, sid)]).toStrictEqual(own);
      expect(queries.instanceChecks(root, node, sid)).toStrictEqual([...nodeLevel, ...own]);
    }
    for (const cid of CHECK_IDS)
      expect(queries.getCheck(root, node, cid)).toStrictEqual(m.checks.get(pair(node, cid)));
  }
  for (const p of KV_PROBES) {
    expect([...queries.kvList(root, p)]).toStrictEqual(want.kv.filter((r) => r.Key.startsWith(p)));
    expect(queries.kvGet(root, p)).toStrictEqual(m.kv.get(p));
  }

  // No stale index entries: one entry per row that owns one.
  expect(root.idx.servicesByName.size).toBe(m.services.size);
  expect(root.idx.checksByService.size).toBe(m.checks.size);
  expect(root.idx.checksByServiceName.size).toBe(want.checks.filter((c) => c.ServiceID !== "").length);
  expect(root.idx.nodesById.size).toBe(want.nodes.filter((n) => n.ID !== "").length);
  for (const n of want.nodes) if (n.ID !== "") expect(root.idx.nodesById.get(n.ID)).toBe(n.Node);
}

/** Replays a commit's changes onto the tables as they were; checks each change's shape on the way. */
function replay(tables: Record<TableName, Map<string, AnyRow>>, result: CommitResult | Commit): void {
  for (const c of result.changes) {
    const t = tables[c.table];
    // The before-image is exactly the row a reader of the previous state saw.
    expect(c.before).toBe(t.get(c.key));
    expect(c.op).toBe(c.before === undefined ? "insert" : c.after === undefined ? "delete" : "update");
    if (c.after === undefined) {
      expect(c.before).toBeDefined();
      t.delete(c.key);
    } else {
      expect(c.after.ModifyIndex).toBe(result.index);
      expect(c.after.CreateIndex).toBe(c.before?.CreateIndex ?? result.index);
      t.set(c.key, c.after);
    }
  }
}

function expectSameTables(a: Record<TableName, Map<string, AnyRow>>, root: StateRoot): void {
  const sorted = (m: Map<string, AnyRow>) => [...m.entries()].sort(([x], [y]) => cmp(x, y));
  const now = tableMaps(root);
  for (const t of TABLE_NAMES) expect(sorted(a[t]), `table ${t}`).toStrictEqual(sorted(now[t]));
}

// ---------------------------------------------------------------------------------------
// The real system and the commands
// ---------------------------------------------------------------------------------------

interface Published {
  readonly commit: Commit;
  readonly before: StateRoot;
  readonly after: StateRoot;
}

interface Real {
  store: Store;
  readonly reopen?: () => Promise<Store>;
  readonly historyRetain: number;
  /** Every root the store handed out (one per index), with its contents as text at the time. */
  readonly roots: Map<number, { readonly root: StateRoot; readonly text: string }>;
  /** Every successful commit's answer, by index. */
  readonly results: Map<number, CommitResult>;
  /** What the commit listener of the current store instance saw, in order. */
  published: Published[];
  /** How many of `published` the invariants have looked at. */
  seen: number;
  /** The root the current store instance opened with. */
  openedWith: StateRoot;
}

/** Starts watching the current store instance's commits. */
function listen(real: Real): void {
  real.published = [];
  real.seen = 0;
  real.openedWith = real.store.root;
  const { index } = real.openedWith;
  if (!real.roots.has(index))
    real.roots.set(index, { root: real.openedWith, text: serialize(real.openedWith) });
  // Listener exceptions are the store's to swallow: record here, assert in expectInvariants.
  real.store.onCommit((commit, before, after) => real.published.push({ commit, before, after }));
}

/** Checks run after every command. */
function expectInvariants(m: Model, r: Real): void {
  const root = r.store.root;
  expect(r.store.index).toBe(m.state.index);
  expectAgrees(root, m.state);

  // The listener saw every durable commit once, in order, with no gap, each with the roots
  // just before and after it, chained: one commit's `after` is the next one's `before`.
  expect(r.published.map((p) => p.commit.index)).toStrictEqual(
    Array.from({ length: m.state.index - r.openedWith.index }, (_, i) => r.openedWith.index + 1 + i),
  );
  for (; r.seen < r.published.length; r.seen++) {
    const { commit, before, after } = r.published[r.seen]!;
    expect(before).toBe(r.seen === 0 ? r.openedWith : r.published[r.seen - 1]!.after);
    expect(before.index).toBe(commit.index - 1);
    expect(after.index).toBe(commit.index);
    expect(commit.changes).toBe(r.results.get(commit.index)?.changes);
    const tables = tableMaps(before);
    replay(tables, commit);
    expectSameTables(tables, after);
    r.roots.set(after.index, { root: after, text: serialize(after) });
  }
  expect(r.published.at(-1)?.after ?? r.openedWith).toBe(root);

  // Readers' roots never change, however many commits follow.
  for (const { root: old, text } of r.roots.values()) expect(serialize(old)).toBe(text);
}

type CasSpec = "none" | "zero" | "current" | "stale";

/** A generated operation; its `cas` is resolved against the model when the command runs. */
interface OpTemplate {
  readonly op: Op;
  readonly cas: CasSpec;
}

/** The row a `cas` of this operation is about, as the model has it. */
function casTarget(op: Op, s: ModelState): AnyRow | undefined | null {
  switch (op.op) {
    case "node.register":
      return s.nodes.get(op.node.Node);
    case "node.deregister":
      return s.nodes.get(op.node);
    case "service.register":
      return s.services.get(pair(op.service.Node, op.service.ID));
    case "check.register":
      return s.checks.get(pair(op.check.Node, op.check.CheckID));
    case "kv.set":
    case "kv.delete":
      return s.kv.get(op.key);
    default:
      return null;
  }
}

/** What a client would send, having read the state as the model has it now. */
function resolve(t: OpTemplate, s: ModelState): Op {
  const row = casTarget(t.op, s);
  if (row === null || t.cas === "none") return t.op;
  const current = row?.ModifyIndex ?? 0;
  const cas = t.cas === "zero" ? 0 : t.cas === "current" ? current : current + 1;
  return { ...t.op, cas } as Op;
}

const fmtOp = (t: OpTemplate): string =>
  `${JSON.stringify(t.op, (_k, v: unknown) => (v instanceof Uint8Array ? `bytes(${[...v]})` : v))}${
    t.cas === "none" ? "" : `@cas:${t.cas}`
  }`;

type Outcome = { ok: true; v: CommitResult } | { ok: false; e: unknown };

function settle(p: Promise<CommitResult>): Promise<Outcome> {
  return p.then(
    (v) => ({ ok: true, v }),
    (e: unknown) => ({ ok: false, e }),
  );
}

/** Checks what the store answered for a transaction against what the model expects. */
function expectOutcome(
  m: Model,
  r: Real,
  txn: readonly Op[],
  got: Outcome,
  tables: Record<TableName, Map<string, AnyRow>>,
): void {
  const want = modelApply(m.state, txn);
  if (want.ok) {
    if (!got.ok) throw new Error(`the store rejected a transaction the model accepts: ${String(got.e)}`);
    // Gapless: each successful commit gets the previous index + 1.
    expect(got.v.index).toBe(m.state.index + 1);
    replay(tables, got.v);
    r.results.set(got.v.index, got.v);
    m.state = want.state;
  } else {
    if (got.ok)
      throw new Error(`the store accepted a transaction the model rejects with ${want.rejection.error.name}`);
    const { error, table, key, expected, actual } = want.rejection;
    expect(got.e).toBeInstanceOf(error);
    const e = got.e as { table: string; key: string; expected?: number; actual?: number };
    expect(e.table).toBe(table);
    if (key !== undefined) expect(e.key).toBe(key);
    if (expected !== undefined)
      expect({ expected: e.expected, actual: e.actual }).toEqual({ expected, actual });
  }
}

class TxnCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly ops: readonly OpTemplate[]) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    const before = r.store.root;
    const tables = tableMaps(before);
    const txn = this.ops.map((t) => resolve(t, m.state));
    const outcome = await settle(r.store.commit(txn));
    expectOutcome(m, r, txn, outcome, tables);
    if (!outcome.ok) expect(r.store.root).toBe(before);
    expectSameTables(tables, r.store.root);
    expectInvariants(m, r);
  }
  toString(): string {
    return `txn[${this.ops.map(fmtOp).join(", ")}]`;
  }
}

/** Several transactions queued at once: they land in one group commit, each all-or-nothing. */
class BatchCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly txns: readonly (readonly OpTemplate[])[]) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    const before = r.store.root;
    const tables = tableMaps(before);
    // Each client read the state before any of them wrote.
    const txns = this.txns.map((ops) => ops.map((t) => resolve(t, m.state)));
    const outcomes = await Promise.all(txns.map((txn) => settle(r.store.commit(txn))));
    for (const [i, outcome] of outcomes.entries()) expectOutcome(m, r, txns[i]!, outcome, tables);
    if (outcomes.every((o) => !o.ok)) expect(r.store.root).toBe(before);
    expectSameTables(tables, r.store.root);
    expectInvariants(m, r);
  }
  toString(): string {
    return `batch{${this.txns.map((ops) => `[${ops.map(fmtOp).join(", ")}]`).join(" | ")}}`;
  }
}

/** Closes the store and opens it again on the same directory: the state must survive. */
class RestartCommand implements fc.AsyncCommand<Model, Real> {
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    if (!r.reopen) throw new Error("restart needs a store on disk");
    const text = serialize(r.store.root);
    const old = r.store;
    await old.close();
    await expect(old.commit([{ op: "kv.set", key: "x", value: new Uint8Array() }])).rejects.toBeInstanceOf(
      StoreClosedError,
    );
    r.store = await r.reopen();
    expect(serialize(r.store.root)).toBe(text);
    // The log hands back the most recent history, exactly as it was committed.
    const recovered = r.store.recoveredCommits;
    expect(recovered.length).toBe(Math.min(r.historyRetain, m.state.index));
    recovered.forEach((c, i) => {
      expect(c.index).toBe(m.state.index - recovered.length + 1 + i);
      expect(c.changes).toStrictEqual(r.results.get(c.index)?.changes);
    });
    // Replaying it rebuilds, newest first, the very roots the store had at each index.
    const visited: number[] = [];
    r.store.replayRecovered((commit, before, after) => {
      visited.push(commit.index);
      expect(before.index).toBe(commit.index - 1);
      expect(serialize(after)).toBe(r.roots.get(commit.index)?.text);
      expect(serialize(before)).toBe(r.roots.get(commit.index - 1)?.text);
    });
    expect(visited).toStrictEqual(recovered.map((c) => c.index).reverse());
    listen(r);
    expectInvariants(m, r);
  }
  toString(): string {
    return "restart";
  }
}

// ---------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------

const casArb: fc.Arbitrary<CasSpec> = fc.oneof(
  { weight: 6, arbitrary: fc.constant("none" as const) },
  { weight: 1, arbitrary: fc.constant("zero" as const) },
  { weight: 2, arbitrary: fc.constant("current" as const) },
  { weight: 1, arbitrary: fc.constant("stale" as const) },
);
const metaArb = fc.constantFrom({ v: "1" }, { v: "2", w: "x" });

const nodeRegister = fc.record({
  op: fc.record(
    {
      op: fc.constant("node.register" as const),
      node: fc.record(
        {
          Node: fc.constantFrom(...NODES),
          Address: fc.constantFrom("10.0.0.1", "10.0.0.2"),
          ID: fc.constantFrom(...NODE_IDS),
          Datacenter: fc.constantFrom("dc1", "dc2"),
          Meta: metaArb,
        },
        { requiredKeys: ["Node", "Address"] },
      ) as fc.Arbitrary<NodeInput>,
    },
    { requiredKeys: ["op", "node"] },
  ),
  cas: casArb,
});
const nodeDeregister = fc.record({
  op: fc.record({ op: fc.constant("node.deregister" as const), node: fc.constantFrom(...NODES) }),
  cas: casArb,
});
const serviceRegister = fc.record({
  op: fc.record({
    op: fc.constant("service.register" as const),
    service: fc.record(
      {
        Node: fc.constantFrom(...NODES),
        ID: fc.constantFrom(...SERVICE_IDS),
        Service: fc.constantFrom(...SERVICE_NAMES),
        Tags: fc.constantFrom([], ["x"], ["x", "y"]),
        Port: fc.constantFrom(80, 8080),
        Meta: metaArb,
      },
      { requiredKeys: ["Node", "ID", "Service"] },
    ) as fc.Arbitrary<ServiceInput>,
  }),
  cas: casArb,
});
const serviceDeregister = fc.record({
  op: fc.record({
    op: fc.constant("service.deregister" as const),
    node: fc.constantFrom(...NODES),
    serviceId: fc.constantFrom(...SERVICE_IDS),
  }),
  cas: fc.constant<CasSpec>("none"),
});
const checkRegister = fc.record({
  op: fc.record({
    op: fc.constant("check.register" as const),
    check: fc.record(
      {
        Node: fc.constantFrom(...NODES),
        CheckID: fc.constantFrom(...CHECK_IDS),
        Name: fc.constantFrom("ping", "http"),
        Status: fc.constantFrom(...STATUSES),
        Output: fc.constantFrom("", "ok"),
        ServiceID: fc.constantFrom("", "s1", "s1", "s2"),
      },
      { requiredKeys: ["Node", "CheckID"] },
    ) as fc.Arbitrary<CheckInput>,
  }),
  cas: casArb,
});
const checkDeregister = fc.record({
  op: fc.record({
    op: fc.constant("check.deregister" as const),
    node: fc.constantFrom(...NODES),
    checkId: fc.constantFrom(...CHECK_IDS),
  }),
  cas: fc.constant<CasSpec>("none"),
});
const checkStatus = fc.record({
  op: fc.record(
    {
      op: fc.constant("check.status" as const),
      node: fc.constantFrom(...NODES),
      checkId: fc.constantFrom(...CHECK_IDS),
      status: fc.constantFrom(...STATUSES),
      output: fc.constantFrom("", "ok", "timeout"),
    },
    { requiredKeys: ["op", "node", "checkId", "status"] },
  ),
  cas: fc.constant<CasSpec>("none"),
});
const kvSet = fc.record({
  op: fc.record(
    {
      op: fc.constant("kv.set" as const),
      key: fc.constantFrom(...KV_KEYS),
      value: fc.uint8Array({ maxLength: 3, max: 3 }),
      flags: fc.nat(3),
    },
    { requiredKeys: ["op", "key", "value"] },
  ),
  cas: casArb,
});
const kvDelete = fc.record({
  op: fc.record({ op: fc.constant("kv.delete" as const), key: fc.constantFrom(...KV_KEYS) }),
  cas: casArb,
});
const kvDeleteTree = fc.record({
  op: fc.record({ op: fc.constant("kv.deleteTree" as const), prefix: fc.constantFrom(...KV_PREFIXES) }),
  cas: fc.constant<CasSpec>("none"),
});

const opArb: fc.Arbitrary<OpTemplate> = fc.oneof(
  { weight: 4, arbitrary: nodeRegister },
  { weight: 1, arbitrary: nodeDeregister },
  { weight: 4, arbitrary: serviceRegister },
  { weight: 1, arbitrary: serviceDeregister },
  { weight: 3, arbitrary: checkRegister },
  { weight: 1, arbitrary: checkDeregister },
  { weight: 2, arbitrary: checkStatus },
  { weight: 3, arbitrary: kvSet },
  { weight: 2, arbitrary: kvDelete },
  { weight: 1, arbitrary: kvDeleteTree },
) as fc.Arbitrary<OpTemplate>;
const txnArb = fc.array(opArb, { minLength: 1, maxLength: 4 });

const txnCommand = txnArb.map((ops) => new TxnCommand(ops));
const batchCommand = fc.array(txnArb, { minLength: 2, maxLength: 4 }).map((txns) => new BatchCommand(txns));
const restartCommand = fc.constant(new RestartCommand());

// ---------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------

async function runModel(
  cmds: Iterable<fc.AsyncCommand<Model, Real>>,
  options: { disk?: Omit<StoreOptions, "dataDir" | "inMemory"> },
): Promise<void> {
  const dir = options.disk ? mkdtempSync(join(tmpdir(), "sluice-store-model-")) : undefined;
  const open = () => (dir ? Store.open({ ...options.disk, dataDir: dir }) : Store.open({ inMemory: true }));
  const real: Real = {
    store: await open(),
    ...(dir ? { reopen: open } : {}),
    historyRetain: options.disk?.historyRetain ?? 10_000,
    roots: new Map(),
    results: new Map(),
    published: [],
    seen: 0,
    openedWith: undefined as unknown as StateRoot,
  };
  listen(real);
  try {
    const model: Model = { state: emptyModel() };
    expectInvariants(model, real);
    await fc.asyncModelRun(() => ({ model, real }), cmds);
  } finally {
    await real.store.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

describe("store against a reference model", () => {
  it("agrees with the model in memory", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.commands([txnCommand, txnCommand, txnCommand, batchCommand], { maxCommands: 60, size: "max" }),
        (cmds) => runModel(cmds, {}),
      ),
      fcParams(120),
    );
  });

  it("keeps its state across restarts (log replay only)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.commands([txnCommand, txnCommand, batchCommand, restartCommand], { maxCommands: 40, size: "max" }),
        (cmds) => runModel(cmds, { disk: { fsync: "never" } }),
      ),
      fcParams(25),
    );
  });

  it("keeps its state across restarts with snapshots, small segments and short history", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.commands([txnCommand, txnCommand, batchCommand, restartCommand], { maxCommands: 40, size: "max" }),
        (cmds) =>
          runModel(cmds, {
            disk: {
              fsync: "never",
              snapshotEvery: 5,
              snapshotMinIntervalMs: 0,
              historyRetain: 3,
              segmentBytes: 1024,
            },
          }),
      ),
      fcParams(25),
    );
  });
});
