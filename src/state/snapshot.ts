import {
  closeSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { decodeJson, encodeJson } from "./codec.js";
import { CorruptSnapshotError } from "./errors.js";
import { deepFreeze } from "./freeze.js";
import { emptyRoot, type Indexes, type IndexName, type StateRoot, TABLES } from "./schema.js";
import { SortedMap } from "./sorted-map.js";
import { type AnyRow, type Index, TABLE_NAMES, type TableName } from "./types.js";
import { syncDir } from "./wal.js";

/*
 * A snapshot file is one header line {"format":1,"index":N,"crc":C,"bytes":B} and a JSON
 * body holding every table's rows. Indexes are rebuilt from the rows on load. Written to a
 * temporary name, synced, then renamed: a crash leaves the old snapshot or the new one.
 */

const SNAP_RE = /^snapshot-(\d{16})\.snap$/;
const FORMAT = 1;

export function snapshotName(index: number): string {
  return `snapshot-${String(index).padStart(16, "0")}.snap`;
}

export function listSnapshots(dir: string): { file: string; index: number }[] {
  return readdirSync(dir)
    .flatMap((f) => {
      const m = SNAP_RE.exec(f);
      return m ? [{ file: join(dir, f), index: Number(m[1]) }] : [];
    })
    .sort((a, b) => a.index - b.index);
}

/**
 * A root as snapshot bytes: the header line, then the JSON body. The same bytes go to a
 * snapshot file and, through the JetStream bridge, to edges.
 */
export function encodeSnapshot(root: StateRoot): Buffer {
  const tables: Record<string, AnyRow[]> = {};
  for (const t of TABLE_NAMES) tables[t] = [...(root[t] as SortedMap<AnyRow>).values()];
  const body = Buffer.from(encodeJson({ tables }), "utf8");
  const header = Buffer.from(
    `${JSON.stringify({ format: FORMAT, index: root.index, crc: crc32(body), bytes: body.length })}\n`,
  );
  return Buffer.concat([header, body]);
}

/** Reads snapshot bytes back into a root; `source` names them in a {@link CorruptSnapshotError}. */
export function decodeSnapshot(buf: Buffer, source: string): StateRoot {
  const nl = buf.indexOf(10);
  if (nl < 0) throw new CorruptSnapshotError(source, "no header line");
  let header: { format: number; index: number; crc: number; bytes: number };
  try {
    header = JSON.parse(buf.subarray(0, nl).toString("utf8"));
  } catch (err) {
    throw new CorruptSnapshotError(source, "unreadable header", { cause: err });
  }
  if (header.format !== FORMAT) throw new CorruptSnapshotError(source, `unknown format ${header.format}`);
  const body = buf.subarray(nl + 1);
  if (body.length !== header.bytes)
    throw new CorruptSnapshotError(source, `body is ${body.length} bytes, expected ${header.bytes}`);
  if (crc32(body) !== header.crc) throw new CorruptSnapshotError(source, "checksum mismatch");
  const { tables } = decodeJson<{ tables: Record<TableName, AnyRow[]> }>(body.toString("utf8"));
  return buildRoot(header.index as Index, tables);
}

export function writeSnapshot(dir: string, root: StateRoot): string {
  const bytes = encodeSnapshot(root);
  const file = join(dir, snapshotName(root.index));
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, "w");
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  syncDir(dir);
  return file;
}

export function readSnapshot(file: string): StateRoot {
  return decodeSnapshot(readFileSync(file), file);
}

/** Builds a root from whole tables in one pass per table and index (no per-row copying). */
export function buildRoot(index: Index, tables: Partial<Record<TableName, AnyRow[]>>): StateRoot {
  const indexEntries = new Map<IndexName, [string, string][]>();
  const out: Record<string, unknown> = { index };
  for (const t of TABLE_NAMES) {
    const spec = TABLES[t] as {
      key(r: AnyRow): string;
      indexes(r: AnyRow): Iterable<readonly [IndexName, string, string]>;
    };
    const rows = tables[t] ?? [];
    out[t] = SortedMap.from(
      rows.map((r) => {
        deepFreeze(r);
        for (const [name, entry, target] of spec.indexes(r)) {
          const list = indexEntries.get(name) ?? [];
          if (list.length === 0) indexEntries.set(name, list);
          list.push([entry, target]);
        }
        return [spec.key(r), r] as const;
      }),
    );
  }
  const names = Object.keys(emptyRoot().idx) as IndexName[];
  const idx: Record<string, SortedMap<string>> = {};
  for (const n of names) idx[n] = SortedMap.from(indexEntries.get(n) ?? []);
  out.idx = Object.freeze(idx as unknown as Indexes);
  return Object.freeze(out) as StateRoot;
}

/** Keeps the newest `keep` snapshots and removes stale temporary files. */
export function pruneSnapshots(dir: string, keep: number): void {
  const snaps = listSnapshots(dir);
  for (const s of snaps.slice(0, Math.max(0, snaps.length - keep))) unlinkSync(s.file);
  for (const f of readdirSync(dir)) if (f.endsWith(".snap.tmp")) unlinkSync(join(dir, f));
}
