import { deepFreeze } from "./freeze.js";
import type { Change, Commit, Index } from "./types.js";

/*
 * JSON with bytes: Uint8Array values travel as {"$b":"<base64>"}. Used by the log and
 * snapshots, so both read back exactly the rows that were written.
 */

function replacer(this: unknown, _key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) {
    return { $b: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  }
  return value;
}

function reviver(_key: string, value: unknown): unknown {
  if (value !== null && typeof value === "object" && typeof (value as { $b?: unknown }).$b === "string") {
    return new Uint8Array(Buffer.from((value as { $b: string }).$b, "base64"));
  }
  return value;
}

export function encodeJson(value: unknown): string {
  return JSON.stringify(value, replacer);
}

export function decodeJson<T>(text: string): T {
  return JSON.parse(text, reviver) as T;
}

interface WireChange {
  t: Change["table"];
  o: Change["op"];
  k: string;
  b?: unknown;
  a?: unknown;
}

const b64 = (v: Uint8Array): { $b: string } => ({
  $b: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64"),
});

/** Only KV rows hold bytes; converting them up front keeps JSON.stringify on its fast path (no replacer). */
function wireRow(table: Change["table"], row: Change["before"]): unknown {
  if (row === undefined || table !== "kv") return row;
  return { ...row, Value: b64((row as { Value: Uint8Array }).Value) };
}

/**
 * A commit as the log stores it (JSON text): before- and after-images, so history can be
 * rebuilt from the log alone.
 */
export function encodeCommit(commit: Commit): string {
  const c: WireChange[] = commit.changes.map((ch) => ({
    t: ch.table,
    o: ch.op,
    k: ch.key,
    b: wireRow(ch.table, ch.before),
    a: wireRow(ch.table, ch.after),
  }));
  return JSON.stringify({ i: commit.index, c });
}

export function decodeCommit(buf: Buffer): Commit {
  const w = decodeJson<{ i: number; c: WireChange[] }>(buf.toString("utf8"));
  const changes = w.c.map(
    (ch) => deepFreeze({ table: ch.t, op: ch.o, key: ch.k, before: ch.b, after: ch.a }) as Change,
  );
  return Object.freeze({ index: w.i as Index, changes: Object.freeze(changes) });
}
