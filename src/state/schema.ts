import { SortedMap } from "./sorted-map.js";
import type { AnyRow, Index, TableName, TableRows } from "./types.js";

/** Separator of composite keys; validation keeps it out of every name and key. */
export const SEP = "\u0000";

/** The secondary indexes, each a sorted map from a composite entry key to a primary key. */
export interface Indexes {
  /** node ID → node name (unique). */
  readonly nodesById: SortedMap<string>;
  /** lower(service name) SEP node SEP service ID → service key. */
  readonly servicesByName: SortedMap<string>;
  /** node SEP service ID ("" for node-level checks) SEP check ID → check key. */
  readonly checksByService: SortedMap<string>;
  /** lower(service name) SEP node SEP check ID → check key (service checks only). */
  readonly checksByServiceName: SortedMap<string>;
  /** secret → accessor (unique). */
  readonly tokensBySecret: SortedMap<string>;
  /** policy ID SEP accessor → accessor. */
  readonly tokensByPolicy: SortedMap<string>;
  /** role ID SEP accessor → accessor. */
  readonly tokensByRole: SortedMap<string>;
  /** policy name → policy ID (unique). */
  readonly policiesByName: SortedMap<string>;
  /** role name → role ID (unique). */
  readonly rolesByName: SortedMap<string>;
  /** policy ID SEP role ID → role ID. */
  readonly rolesByPolicy: SortedMap<string>;
}
export type IndexName = keyof Indexes;

/**
 * The whole state at one index: an immutable value. A reader that holds a root sees one
 * consistent point in time however many commits follow.
 */
export type StateRoot = {
  /** Index of the last commit applied to this root (0 for an empty store). */
  readonly index: Index;
  readonly idx: Indexes;
} & { readonly [T in TableName]: SortedMap<TableRows[T]> };

export function emptyRoot(): StateRoot {
  const e = SortedMap.empty<never>();
  return Object.freeze({
    index: 0 as Index,
    nodes: e,
    services: e,
    checks: e,
    kv: e,
    aclTokens: e,
    aclPolicies: e,
    aclRoles: e,
    idx: Object.freeze({
      nodesById: e,
      servicesByName: e,
      checksByService: e,
      checksByServiceName: e,
      tokensBySecret: e,
      tokensByPolicy: e,
      tokensByRole: e,
      policiesByName: e,
      rolesByName: e,
      rolesByPolicy: e,
    }),
  });
}

type IndexEntries<R> = (row: R) => Iterable<readonly [IndexName, string, string]>;

interface TableSpec<R> {
  key(row: R): string;
  indexes: IndexEntries<R>;
}

type Specs = { readonly [T in TableName]: TableSpec<TableRows[T]> };

export const serviceKey = (node: string, id: string): string => node + SEP + id;
export const checkKey = (node: string, checkId: string): string => node + SEP + checkId;

/** How each table keys its rows and which index entries a row owns. */
export const TABLES: Specs = {
  nodes: {
    key: (r) => r.Node,
    *indexes(r) {
      if (r.ID) yield ["nodesById", r.ID, r.Node];
    },
  },
  services: {
    key: (r) => serviceKey(r.Node, r.ID),
    *indexes(r) {
      yield ["servicesByName", r.Service.toLowerCase() + SEP + r.Node + SEP + r.ID, serviceKey(r.Node, r.ID)];
    },
  },
  checks: {
    key: (r) => checkKey(r.Node, r.CheckID),
    *indexes(r) {
      const k = checkKey(r.Node, r.CheckID);
      yield ["checksByService", r.Node + SEP + r.ServiceID + SEP + r.CheckID, k];
      if (r.ServiceID !== "") {
        yield ["checksByServiceName", r.ServiceName.toLowerCase() + SEP + r.Node + SEP + r.CheckID, k];
      }
    },
  },
  kv: {
    key: (r) => r.Key,
    indexes: () => [],
  },
  aclTokens: {
    key: (r) => r.AccessorID,
    *indexes(r) {
      yield ["tokensBySecret", r.SecretID, r.AccessorID];
      for (const p of r.Policies) yield ["tokensByPolicy", p + SEP + r.AccessorID, r.AccessorID];
      for (const role of r.Roles) yield ["tokensByRole", role + SEP + r.AccessorID, r.AccessorID];
    },
  },
  aclPolicies: {
    key: (r) => r.ID,
    *indexes(r) {
      yield ["policiesByName", r.Name, r.ID];
    },
  },
  aclRoles: {
    key: (r) => r.ID,
    *indexes(r) {
      yield ["rolesByName", r.Name, r.ID];
      for (const p of r.Policies) yield ["rolesByPolicy", p + SEP + r.ID, r.ID];
    },
  },
};

/** A mutable view of a root: what an immer draft of {@link StateRoot} looks like. */
export type MutableRoot = { -readonly [T in TableName]: SortedMap<TableRows[T]> } & {
  index: Index;
  idx: { -readonly [K in IndexName]: Indexes[K] };
};

/**
 * The one mechanism that writes a row: sets or removes it in its table and keeps every
 * secondary index in step. Replay from the log and the transaction engine both go through it.
 */
export function writeRow(root: MutableRoot, table: TableName, key: string, after: AnyRow | undefined): void {
  const spec = TABLES[table] as TableSpec<AnyRow>;
  const map = root[table] as SortedMap<AnyRow>;
  const before = map.get(key);
  if (before !== undefined) {
    for (const [name, entry] of spec.indexes(before)) root.idx[name] = root.idx[name].delete(entry);
  }
  if (after === undefined) {
    (root as Record<TableName, SortedMap<AnyRow>>)[table] = map.delete(key);
  } else {
    (root as Record<TableName, SortedMap<AnyRow>>)[table] = map.set(key, after);
    for (const [name, entry, target] of spec.indexes(after))
      root.idx[name] = root.idx[name].set(entry, target);
  }
}
