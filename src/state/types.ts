/**
 * Contracts of the state store: rows, transactions, commits.
 *
 * Field names follow Consul's catalog, KV and ACL structures so that the HTTP layer can
 * hand rows out as Consul does.
 */

/** A commit index. Each commit gets exactly the previous index + 1; 0 means "nothing yet". */
export type Index = number & { readonly __brand: "Index" };

/** Brands a plain number as an {@link Index}. */
export function asIndex(n: number): Index {
  return n as Index;
}

/** The indexes every row carries. */
export interface RaftIndexes {
  /** Index of the commit that created the row. */
  readonly CreateIndex: Index;
  /** Index of the commit that last changed the row. */
  readonly ModifyIndex: Index;
}

export type StringMap = Readonly<Record<string, string>>;

export interface NodeRow extends RaftIndexes {
  readonly ID: string;
  readonly Node: string;
  readonly Address: string;
  readonly Datacenter: string;
  readonly TaggedAddresses: StringMap;
  readonly Meta: StringMap;
}

export interface ServiceRow extends RaftIndexes {
  readonly Node: string;
  readonly ID: string;
  readonly Service: string;
  readonly Tags: readonly string[];
  readonly Address: string;
  readonly Port: number;
  readonly Meta: StringMap;
  readonly Kind: string;
}

export const CheckStatus = {
  Passing: "passing",
  Warning: "warning",
  Critical: "critical",
  Maintenance: "maintenance",
} as const;
export type CheckStatus = (typeof CheckStatus)[keyof typeof CheckStatus];

export interface CheckRow extends RaftIndexes {
  readonly Node: string;
  readonly CheckID: string;
  readonly Name: string;
  readonly Status: CheckStatus;
  readonly Notes: string;
  readonly Output: string;
  /** Empty for a node-level check. */
  readonly ServiceID: string;
  readonly ServiceName: string;
}

export interface KVRow extends RaftIndexes {
  readonly Key: string;
  readonly Value: Uint8Array;
  readonly Flags: number;
  readonly LockIndex: number;
}

/** A token's public identifier; safe to log and show. */
export type AccessorID = string & { readonly __brand: "AccessorID" };
/** A token's secret: what a client presents. Never logged. */
export type SecretID = string & { readonly __brand: "SecretID" };

export interface ACLTokenRow extends RaftIndexes {
  readonly AccessorID: AccessorID;
  readonly SecretID: SecretID;
  readonly Description: string;
  /** IDs of linked policies. */
  readonly Policies: readonly string[];
  /** IDs of linked roles. */
  readonly Roles: readonly string[];
  /** Milliseconds since the epoch, or null for a token that never expires. */
  readonly ExpirationTime: number | null;
  readonly Local: boolean;
}

export interface ACLPolicyRow extends RaftIndexes {
  readonly ID: string;
  readonly Name: string;
  readonly Description: string;
  /** The rule document (HCL or JSON), validated by the ACL layer before it reaches the store. */
  readonly Rules: string;
}

export interface ACLRoleRow extends RaftIndexes {
  readonly ID: string;
  readonly Name: string;
  readonly Description: string;
  /** IDs of linked policies. */
  readonly Policies: readonly string[];
}

/** Row type of each table. */
export interface TableRows {
  nodes: NodeRow;
  services: ServiceRow;
  checks: CheckRow;
  kv: KVRow;
  aclTokens: ACLTokenRow;
  aclPolicies: ACLPolicyRow;
  aclRoles: ACLRoleRow;
}
export type TableName = keyof TableRows;
export const TABLE_NAMES: readonly TableName[] = [
  "nodes",
  "services",
  "checks",
  "kv",
  "aclTokens",
  "aclPolicies",
  "aclRoles",
];
export type AnyRow = TableRows[TableName];

/** Input rows: what a writer supplies (indexes are the store's business). */
type Input<T> = Omit<T, "CreateIndex" | "ModifyIndex">;
type Partially<T, K extends keyof T> = Omit<T, K> & Partial<Pick<T, K>>;

export type NodeInput = Partially<Input<NodeRow>, "ID" | "Datacenter" | "TaggedAddresses" | "Meta">;
export type ServiceInput = Partially<Input<ServiceRow>, "Tags" | "Address" | "Port" | "Meta" | "Kind">;
export type CheckInput = Partially<
  Omit<Input<CheckRow>, "ServiceName">,
  "Status" | "Notes" | "Output" | "ServiceID" | "Name"
>;
export type ACLTokenInput = Partially<
  Omit<Input<ACLTokenRow>, "AccessorID" | "SecretID"> & {
    readonly AccessorID: string;
    readonly SecretID: string;
  },
  "Description" | "Policies" | "Roles" | "ExpirationTime" | "Local"
>;
export type ACLPolicyInput = Partially<Input<ACLPolicyRow>, "Description">;
export type ACLRoleInput = Partially<Input<ACLRoleRow>, "Description" | "Policies">;

/**
 * One operation of a transaction. Discriminated on `op`.
 *
 * `cas` fields are check-and-set conditions on the row's ModifyIndex: `0` means
 * "only if the row does not exist", any other value "only if the row's ModifyIndex equals it".
 * A failed condition fails the whole transaction with {@link CasFailedError}.
 */
export type Op =
  | { readonly op: "node.register"; readonly node: NodeInput; readonly cas?: number }
  | { readonly op: "node.deregister"; readonly node: string; readonly cas?: number }
  | { readonly op: "service.register"; readonly service: ServiceInput; readonly cas?: number }
  | { readonly op: "service.deregister"; readonly node: string; readonly serviceId: string }
  | { readonly op: "check.register"; readonly check: CheckInput; readonly cas?: number }
  | { readonly op: "check.deregister"; readonly node: string; readonly checkId: string }
  | {
      readonly op: "check.status";
      readonly node: string;
      readonly checkId: string;
      readonly status: CheckStatus;
      readonly output?: string;
    }
  | {
      readonly op: "kv.set";
      readonly key: string;
      readonly value: Uint8Array;
      readonly flags?: number;
      readonly cas?: number;
    }
  | { readonly op: "kv.delete"; readonly key: string; readonly cas?: number }
  | { readonly op: "kv.deleteTree"; readonly prefix: string }
  | { readonly op: "acl.token.upsert"; readonly token: ACLTokenInput; readonly createOnly?: boolean }
  | { readonly op: "acl.token.delete"; readonly accessorId: string }
  | { readonly op: "acl.policy.upsert"; readonly policy: ACLPolicyInput; readonly createOnly?: boolean }
  | { readonly op: "acl.policy.delete"; readonly id: string }
  | { readonly op: "acl.role.upsert"; readonly role: ACLRoleInput }
  | { readonly op: "acl.role.delete"; readonly id: string };

export type OpKind = Op["op"];

/** A transaction: every operation applies, in order, or none does. */
export type Txn = readonly Op[];

export const ChangeOp = { Insert: "insert", Update: "update", Delete: "delete" } as const;
export type ChangeOp = (typeof ChangeOp)[keyof typeof ChangeOp];

/** One row's change within a commit. Exactly one of before/after may be undefined. */
export type Change = {
  [T in TableName]: {
    readonly table: T;
    readonly op: ChangeOp;
    /** The row's primary key in its table. */
    readonly key: string;
    readonly before: TableRows[T] | undefined;
    readonly after: TableRows[T] | undefined;
  };
}[TableName];

/** What a commit hands the stream layer: its index and every row it changed, in order. */
export interface Commit {
  readonly index: Index;
  readonly changes: readonly Change[];
}

/** The answer to a successful {@link Store.commit}. */
export interface CommitResult {
  readonly index: Index;
  readonly changes: readonly Change[];
}

export const FsyncMode = { Always: "always", Batch: "batch", Never: "never" } as const;
export type FsyncMode = (typeof FsyncMode)[keyof typeof FsyncMode];
