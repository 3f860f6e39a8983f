/** The state store's public face. */

export { decodeCommit, decodeJson, encodeCommit, encodeJson } from "./codec.js";
export * from "./errors.js";
export * as queries from "./queries.js";
export type { Indexes, StateRoot } from "./schema.js";
export { emptyRoot } from "./schema.js";
export { decodeSnapshot, encodeSnapshot } from "./snapshot.js";
export { SortedMap } from "./sorted-map.js";
export {
  type CommitListener,
  type ReplicaOptions,
  Store,
  type StoreLogger,
  type StoreOptions,
} from "./store.js";
export * from "./types.js";
export { LIMITS, validateTxn } from "./validate.js";
export { decodeWalCommit, encodeWalCommit } from "./wal-codec.js";
