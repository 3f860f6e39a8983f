import { readdirSync, readFileSync } from "node:fs";
import { open, readdir, rename, unlink } from "node:fs/promises";
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

/** Longest stretch of encoding before `encodeSnapshot` lets the event loop run, ms. */
const SLICE_MS = 4;

const yieldTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * A root as snapshot bytes: the header line, then the JSON body. The same bytes go to a
 * snapshot file and, through the JetStream bridge, to edges. Encoded row by row in slices of
 * a few milliseconds with event-loop turns between them, so that a big state does not stall
 * every stream while it is written; the root is immutable, so commits may land meanwhile.
 * The final join, checksum and copy are still one synchronous pass each over the body.
 */
export async function encodeSnapshot(root: StateRoot): Promise<Buffer> {
  const parts: string[] = ['{"tables":{'];
  let t0 = performance.now();
  let n = 0;
  for (let i = 0; i < TABLE_NAMES.length; i++) {
    const t = TABLE_NAMES[i]!;
    parts.push(`${i > 0 ? "," : ""}${JSON.stringify(t)}:[`);
    let first = true;
    for (const row of (root[t] as SortedMap<AnyRow>).values()) {
      parts.push(first ? encodeJson(row) : `,${encodeJson(row)}`);
      first = false;
      if (++n % 256 === 0 && performance.now() - t0 >= SLICE_MS) {
        await yieldTurn();
        t0 = performance.now();
      }
    }
    parts.push("]");
  }
  parts.push("}}");
  const body = Buffer.from(parts.join(""), "utf8");
  const header = Buffer.from(
    `${JSON.stringify({ format: FORMAT, index: root.index, crc: crc32(body), bytes: body.length })}\n`,
  );
  return Buffer.concat([header, body]);
}

/**
 * Writes a snapshot file without blocking the event loop: encoded in slices, written, synced,
 * then renamed from a temporary name (a crash leaves the old snapshot or the new one).
 */
export async function writeSnapshot(dir: string, root: StateRoot): Promise<string> {
  const bytes = await encodeSnapshot(root);
  const file = join(dir, snapshotName(root.index));
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, "w");
  try {
    let off = 0;
    while (off < bytes.length) off += (await fh.write(bytes, off)).bytesWritten;
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  await syncDir(dir);
  return file;
}

/** Keeps the newest `keep` snapshots and removes stale temporary files. */
export async function pruneSnapshots(dir: string, keep: number): Promise<void> {
  const snaps = listSnapshots(dir);
  for (const s of snaps.slice(0, Math.max(0, snaps.length - keep))) await unlink(s.file);
  for (const f of await readdir(dir)) if (f.endsWith(".snap.tmp")) await unlink(join(dir, f));
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
