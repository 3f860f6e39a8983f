import { crc32 } from "node:zlib";
import { decodeCommit } from "./codec.js";
import { CorruptLogError } from "./errors.js";
import { deepFreeze } from "./freeze.js";
import {
  type AnyRow,
  type Change,
  ChangeOp,
  type Commit,
  type Index,
  type KVRow,
  TABLE_NAMES,
  type TableName,
} from "./types.js";
import { HEADER_BYTES } from "./wal.js";

/*
 * The write-ahead log's record payload, binary (format 1):
 *
 *   0x01 | varint index | varint changes | change*
 *   change = u8 table | u8 op | str key | u8 present (1: before, 2: after) | row(before)? | row(after)?
 *   row    = KV: str Key | bytes Value | varint Flags | varint LockIndex | varint CreateIndex | varint ModifyIndex
 *            other tables: str JSON of the row
 *   str / bytes = varint length | bytes
 *
 * KV rows, the bulk of most logs, are written field by field with their value as raw bytes:
 * JSON with base64 values was ~17 % of a commit's CPU. Records written before this format
 * (JSON, starting with `{`) are still read.
 */

const FORMAT_BINARY = 0x01;
const OPS: readonly ChangeOp[] = [ChangeOp.Insert, ChangeOp.Update, ChangeOp.Delete];
const OP_CODE: Readonly<Record<ChangeOp, number>> = { insert: 0, update: 1, delete: 2 };
const TABLE_CODE = new Map<TableName, number>(TABLE_NAMES.map((t, i) => [t, i]));
const KV = TABLE_CODE.get("kv")!;

/** A growable byte buffer that log records are encoded into directly. */
class Writer {
  buf: Buffer;
  off = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.off + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.off);
    this.buf = next;
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.off++] = v;
  }

  varint(n: number): void {
    this.ensure(10);
    while (n >= 0x80) {
      this.buf[this.off++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.off++] = n;
  }

  str(s: string): void {
    // Worst case 3 bytes per UTF-16 unit; the length prefix is written after the bytes are.
    const max = s.length * 3;
    this.ensure(max + 5);
    const lenAt = this.off;
    const prefix = max < 0x80 ? 1 : max < 0x4000 ? 2 : max < 0x200000 ? 3 : 5;
    const n = this.buf.write(s, lenAt + prefix, "utf8");
    this.fixedVarint(lenAt, n, prefix);
    this.off = lenAt + prefix + n;
  }

  bytes(b: Uint8Array): void {
    this.varint(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.off);
    this.off += b.length;
  }

  /** A varint padded to exactly `width` bytes (continuation bits on the padding). */
  private fixedVarint(at: number, n: number, width: number): void {
    for (let i = 0; i < width - 1; i++) {
      this.buf[at + i] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[at + width - 1] = n;
  }
}

class Reader {
  off = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}

  private need(n: number): void {
    if (this.off + n > this.buf.length)
      throw new CorruptLogError(this.what, this.off, "record payload ends early");
  }

  u8(): number {
    this.need(1);
    return this.buf[this.off++]!;
  }

  varint(): number {
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.u8();
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 0x80;
    }
    throw new CorruptLogError(this.what, this.off, "varint too long");
  }

  str(): string {
    const n = this.varint();
    this.need(n);
    const s = this.buf.toString("utf8", this.off, this.off + n);
    this.off += n;
    return s;
  }

  bytes(): Uint8Array {
    const n = this.varint();
    this.need(n);
    const out = new Uint8Array(n);
    out.set(this.buf.subarray(this.off, this.off + n));
    this.off += n;
    return out;
  }
}

function writeRow(w: Writer, table: number, row: AnyRow): void {
  if (table === KV) {
    const r = row as KVRow;
    w.str(r.Key);
    w.bytes(r.Value);
    w.varint(r.Flags);
    w.varint(r.LockIndex);
    w.varint(r.CreateIndex);
    w.varint(r.ModifyIndex);
  } else {
    w.str(JSON.stringify(row));
  }
}

function readRow(r: Reader, table: number): AnyRow {
  if (table === KV) {
    const Key = r.str();
    const Value = r.bytes();
    const Flags = r.varint();
    const LockIndex = r.varint();
    const CreateIndex = r.varint() as Index;
    const ModifyIndex = r.varint() as Index;
    return { Key, Value, Flags, LockIndex, CreateIndex, ModifyIndex };
  }
  return JSON.parse(r.str()) as AnyRow;
}

function writeCommit(w: Writer, c: Commit): void {
  w.u8(FORMAT_BINARY);
  w.varint(c.index);
  w.varint(c.changes.length);
  for (const ch of c.changes) {
    const t = TABLE_CODE.get(ch.table)!;
    w.u8(t);
    w.u8(OP_CODE[ch.op]);
    w.str(ch.key);
    w.u8((ch.before ? 1 : 0) | (ch.after ? 2 : 0));
    if (ch.before) writeRow(w, t, ch.before);
    if (ch.after) writeRow(w, t, ch.after);
  }
}

/**
 * Log records for commits, encoded straight into one buffer (one per group commit): the
 * header of each (`len | ~len | crc32(index‖payload) | index`) and its binary payload.
 */
export function encodeWalRecords(commits: readonly Commit[]): Buffer {
  const w = new Writer(256 * commits.length + 64);
  for (const c of commits) {
    const start = w.off;
    w.ensure(HEADER_BYTES);
    w.off += HEADER_BYTES;
    writeCommit(w, c);
    const len = w.off - start - HEADER_BYTES;
    const b = w.buf;
    b.writeUInt32LE(len, start);
    b.writeUInt32LE(~len >>> 0, start + 4);
    // The index as a u64 (little-endian) from two u32 halves: no BigInt per record.
    b.writeUInt32LE(c.index % 0x100000000, start + 12);
    b.writeUInt32LE(Math.floor(c.index / 0x100000000), start + 16);
    b.writeUInt32LE(crc32(b.subarray(start + 12, w.off)), start + 8);
  }
  return w.buf.subarray(0, w.off);
}

/** One commit's record payload alone (binary format 1), e.g. for the JetStream log. */
export function encodeWalCommit(commit: Commit): Buffer {
  const w = new Writer(256);
  writeCommit(w, commit);
  return w.buf.subarray(0, w.off);
}

/** A record payload back into its commit: binary (format 1) or the older JSON. */
export function decodeWalCommit(payload: Buffer, what = "log record"): Commit {
  if (payload[0] !== FORMAT_BINARY) return decodeCommit(payload);
  const r = new Reader(payload, what);
  r.u8();
  const index = r.varint() as Index;
  const n = r.varint();
  const changes: Change[] = [];
  for (let i = 0; i < n; i++) {
    const t = r.u8();
    const table = TABLE_NAMES[t];
    const op = OPS[r.u8()];
    if (table === undefined || op === undefined)
      throw new CorruptLogError(what, r.off, "unknown table or op");
    const key = r.str();
    const present = r.u8();
    const before = present & 1 ? readRow(r, t) : undefined;
    const after = present & 2 ? readRow(r, t) : undefined;
    changes.push(deepFreeze({ table, op, key, before, after }) as Change);
  }
  return Object.freeze({ index, changes: Object.freeze(changes) });
}
