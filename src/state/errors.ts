import type { TableName } from "./types.js";

/** An operation or transaction is malformed: a name, a size, a status or a shape is wrong. */
export class ValidationError extends Error {
  override readonly name = "ValidationError";
  constructor(
    /** Dotted path of the offending field, e.g. `ops[2].service.Port`. */
    readonly field: string,
    /** What is wrong with it. */
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`${field}: ${reason}`, options);
  }
}

/** An operation needs a row that does not exist (a service without its node, say). */
export class MissingReferenceError extends Error {
  override readonly name = "MissingReferenceError";
  constructor(
    readonly table: TableName,
    readonly key: string,
    /** Field of the operation that names the missing row. */
    readonly field: string,
    options?: ErrorOptions,
  ) {
    super(`${field}: no ${table} row "${key}"`, options);
  }
}

/** A check-and-set condition failed; the transaction changed nothing. */
export class CasFailedError extends Error {
  override readonly name = "CasFailedError";
  constructor(
    readonly table: TableName,
    readonly key: string,
    /** The ModifyIndex the writer expected (0: row must not exist). */
    readonly expected: number,
    /** The row's actual ModifyIndex (0: no row). */
    readonly actual: number,
    options?: ErrorOptions,
  ) {
    super(`check-and-set failed on ${table} "${key}": expected index ${expected}, found ${actual}`, options);
  }
}

/** A unique field would be duplicated (a token secret, a policy name, a node ID). */
export class ConflictError extends Error {
  override readonly name = "ConflictError";
  constructor(
    readonly table: TableName,
    readonly field: string,
    readonly value: string,
    options?: ErrorOptions,
  ) {
    super(`${table}.${field} "${value}" is already in use`, options);
  }
}

/** A log record in the middle of the log is damaged: start-up stops rather than lose commits. */
export class CorruptLogError extends Error {
  override readonly name = "CorruptLogError";
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`corrupt write-ahead log ${file} at offset ${offset}: ${reason}`, options);
  }
}

/** A snapshot file cannot be read. */
export class CorruptSnapshotError extends Error {
  override readonly name = "CorruptSnapshotError";
  constructor(
    readonly file: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`corrupt snapshot ${file}: ${reason}`, options);
  }
}

/** The store was closed; no more commits are taken. */
export class StoreClosedError extends Error {
  override readonly name = "StoreClosedError";
  constructor(options?: ErrorOptions) {
    super("the store is closed", options);
  }
}

/**
 * Writing the log failed (disk full, I/O error). The store stops taking commits: what it
 * holds in memory may be ahead of the disk, so it fails stop instead of guessing.
 */
export class StoreFailedError extends Error {
  override readonly name = "StoreFailedError";
  constructor(options?: ErrorOptions) {
    super(
      `the store failed and takes no more commits${options?.cause ? `: ${String(options.cause)}` : ""}`,
      options,
    );
  }
}

/** Another process (or another store in this process) holds the data directory. */
export class DataDirLockedError extends Error {
  override readonly name = "DataDirLockedError";
  constructor(
    readonly dir: string,
    /** The holder's pid, when known (0 otherwise). */
    readonly pid: number,
    options?: ErrorOptions,
  ) {
    super(`data directory ${dir} is in use${pid ? ` by process ${pid}` : ""}`, options);
  }
}

/** A replica was handed a commit that does not follow its last one. */
export class ReplicationGapError extends Error {
  override readonly name = "ReplicationGapError";
  constructor(
    /** The replica's last applied index. */
    readonly applied: number,
    /** The index of the commit it was handed. */
    readonly received: number,
  ) {
    super(`replication gap: applied up to ${applied}, received commit ${received}`);
  }
}
