/** The state store's public face. */

export * from "./errors.js";
export * as queries from "./queries.js";
export type { Indexes, StateRoot } from "./schema.js";
export { SortedMap } from "./sorted-map.js";
export { type CommitListener, Store, type StoreLogger, type StoreOptions } from "./store.js";
export * from "./types.js";
export { LIMITS, validateTxn } from "./validate.js";
