import { closeSync, constants, fsyncSync, ftruncateSync, openSync, readdirSync, readFileSync } from "node:fs";
import { type FileHandle, open, unlink } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { CorruptLogError, StoreFailedError } from "./errors.js";
import type { FsyncMode, Index } from "./types.js";

/*
 * The write-ahead log: segment files `wal-<first index>.log` holding records
 *
 *   u32 length | u32 ~length | u32 crc32(index ‖ payload) | u64 index | payload
 *
 * (little-endian). The complemented length guards the length itself, so a damaged header
 * is told apart from a short write at the tail.
 */

export const HEADER_BYTES = 20;
const SEGMENT_RE = /^wal-(\d{16})\.log$/;
/** Segments grow by this much zero-filled space at a time, ahead of the records. */
const PREALLOC_BYTES = 4 * 1024 * 1024;
const ZEROS = Buffer.alloc(1024 * 1024);

export function segmentName(first: number): string {
  return `wal-${String(first).padStart(16, "0")}.log`;
}

export interface LogRecord {
  readonly index: Index;
  readonly payload: Buffer;
}

export interface Segment {
  readonly file: string;
  readonly first: number;
}

export function listSegments(dir: string): Segment[] {
  return readdirSync(dir)
    .flatMap((f) => {
      const m = SEGMENT_RE.exec(f);
      return m ? [{ file: join(dir, f), first: Number(m[1]) }] : [];
    })
    .sort((a, b) => a.first - b.first);
}

function allZero(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

export interface ReadResult {
  readonly records: LogRecord[];
  /** Bytes cut off a torn tail, if any. */
  readonly truncatedBytes: number;
}

/**
 * Reads one segment. A damaged record at the tail of the last segment (a write the crash
 * interrupted) is cut off; damage anywhere else throws {@link CorruptLogError} with the file
 * and offset, since cutting there would lose acknowledged commits.
 */
export function readSegment(file: string, isLast: boolean, readOnly = false): ReadResult {
  const buf = readFileSync(file);
  const records: LogRecord[] = [];
  let off = 0;
  const torn = (reason: string): ReadResult => {
    if (!isLast) throw new CorruptLogError(file, off, `${reason} in a segment that is not the last`);
    // A live segment read back while the writer appends ends in its zero preallocation (or
    // a record being written): stop there, and never cut a file someone is writing.
    if (readOnly) return { records, truncatedBytes: 0 };
    const fd = openSync(file, "r+");
    try {
      ftruncateSync(fd, off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return { records, truncatedBytes: buf.length - off };
  };
  while (off < buf.length) {
    const rest = buf.length - off;
    if (rest < HEADER_BYTES) {
      return torn("short record header");
    }
    const len = buf.readUInt32LE(off);
    const check = buf.readUInt32LE(off + 4);
    if (~len >>> 0 !== check) {
      if (allZero(buf, off)) return torn("zero-filled tail");
      // A header that fails its own check with data after it is damage, not a torn write.
      throw new CorruptLogError(file, off, "record header fails its length check");
    }
    const end = off + HEADER_BYTES + len;
    if (end > buf.length) return torn("record extends past the end of the file");
    const crc = buf.readUInt32LE(off + 8);
    if (crc32(buf.subarray(off + 12, end)) !== crc) {
      // Only zeros after it (the preallocated rest of the segment): a write the crash cut.
      if (end === buf.length || allZero(buf, end)) return torn("checksum mismatch in the last record");
      throw new CorruptLogError(file, off, "checksum mismatch");
    }
    const index = Number(buf.readBigUInt64LE(off + 12)) as Index;
    records.push({ index, payload: buf.subarray(off + HEADER_BYTES, end) });
    off = end;
  }
  return { records, truncatedBytes: 0 };
}

interface Pending {
  readonly buf: Buffer;
  readonly first: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

export interface LogWriterOptions {
  readonly dir: string;
  readonly fsync: FsyncMode;
  /** Start a new segment once the current one is this large. */
  readonly segmentBytes: number;
  /** Interval of the background fsync in `batch` mode. */
  readonly batchIntervalMs?: number;
  /** Called with the duration of each fsync, in milliseconds. */
  readonly onFsync?: (ms: number) => void;
}

/**
 * Appends records with group commit: while one write+fsync is in flight, every record that
 * arrives queues, and the next round writes and syncs them all at once. A promise returned
 * by {@link append} resolves once its records are on disk (per the fsync mode).
 */
export class LogWriter {
  private fh: FileHandle | undefined;
  private segmentSize = 0;
  private queue: Pending[] = [];
  private flushing = false;
  private rotateRequested = false;
  private failed: Error | undefined;
  private dirty = false;
  private readonly timer: NodeJS.Timeout | undefined;
  private idle: Promise<void> = Promise.resolve();
  /** Bytes of the segment that exist on disk (records plus zero-filled space). */
  private allocated = 0;
  private markIdle: () => void = () => {};
  /** A background extension of the segment in progress (see `extendAhead`). */
  private extending: Promise<void> | undefined;

  /** Writes are durable on return (O_DSYNC): fsync "always" on a system that has the flag. */
  private get syncOnWrite(): boolean {
    return this.opts.fsync === "always" && (constants.O_DSYNC ?? 0) !== 0;
  }

  private get dsyncFlag(): number {
    return this.syncOnWrite ? constants.O_DSYNC : 0;
  }

  constructor(
    private readonly opts: LogWriterOptions,
    /** The segment to append to, if one exists. */
    private current: Segment | undefined,
  ) {
    if (opts.fsync === "batch") {
      this.timer = setInterval(() => void this.backgroundSync(), opts.batchIntervalMs ?? 50);
      this.timer.unref();
    }
  }

  /** Appends records (consecutive indexes, first = `first`); resolves when durable. */
  append(first: number, buf: Buffer): Promise<void> {
    if (this.failed) return Promise.reject(new StoreFailedError({ cause: this.failed }));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ buf, first, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  /** The next append starts a new segment (after a snapshot, so old segments can go). */
  rotate(): void {
    this.rotateRequested = true;
  }

  /** Resolves when nothing is queued or in flight. */
  drained(): Promise<void> {
    return this.flushing ? this.idle : Promise.resolve();
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    this.idle = new Promise((r) => {
      this.markIdle = r;
    });
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        try {
          await this.writeBatch(batch);
          for (const p of batch) p.resolve();
        } catch (err) {
          this.failed = err as Error;
          const failure = new StoreFailedError({ cause: err });
          for (const p of batch) p.reject(failure);
          for (const p of this.queue) p.reject(failure);
          this.queue = [];
        }
      }
    } finally {
      this.flushing = false;
      this.markIdle();
    }
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    const first = batch[0]!.first;
    if (!this.fh || this.rotateRequested || this.segmentSize >= this.opts.segmentBytes) {
      await this.openSegment(first);
    }
    const fh = this.fh!;
    let bufs = batch.map((p) => p.buf);
    let bytes = 0;
    for (const b of bufs) bytes += b.length;
    if (this.segmentSize + bytes > this.allocated) {
      await this.extending;
      if (this.segmentSize + bytes > this.allocated) await this.extend(this.segmentSize + bytes);
    }
    if (this.failed) throw this.failed;
    // Positional writes into zero-filled space: the file's size does not change, so the sync
    // flushes data blocks only, not the inode. With fsync "always" the segment is open with
    // O_DSYNC: each write returns once durable (what write + fdatasync did in two trips to
    // the thread pool, in one: under CPU contention every trip back to the event loop is
    // another wait for a core).
    const t0 = performance.now();
    let written = 0;
    while (written < bytes) {
      const { bytesWritten } = await fh.writev(bufs, this.segmentSize + written);
      written += bytesWritten;
      if (written < bytes) bufs = [Buffer.concat(bufs).subarray(bytesWritten)];
    }
    this.segmentSize += bytes;
    if (this.opts.fsync === "always") {
      if (!this.syncOnWrite) await fh.datasync();
      this.opts.onFsync?.(performance.now() - t0);
    } else {
      this.dirty = true;
    }
    this.extendAhead();
  }

  /**
   * Grows the segment in the background once less than half a step of zero-filled space is
   * left, so that commits rarely wait for 4 MiB of zeros to reach the disk. A failure fails
   * the log (the next write throws it): the disk under the log is not to be trusted.
   */
  private extendAhead(): void {
    if (this.extending || this.allocated - this.segmentSize >= PREALLOC_BYTES / 2) return;
    if (this.segmentSize >= this.opts.segmentBytes) return; // the next write rotates
    this.extending = this.extend(this.allocated + 1)
      .catch((err: Error) => {
        this.failed ??= err;
      })
      .finally(() => {
        this.extending = undefined;
      });
  }

  /**
   * Fills the segment with zeros up to past `needed`, in PREALLOC_BYTES steps, and syncs
   * that — through a file descriptor of its own, so that a write-back error it meets is still
   * reported to the records' descriptor (Linux reports such an error once per open file).
   */
  private async extend(needed: number): Promise<void> {
    const target = Math.max(needed, this.allocated + PREALLOC_BYTES);
    const fh = await open(this.current!.file, constants.O_RDWR);
    try {
      for (let off = this.allocated; off < target; off += ZEROS.length) {
        await fh.write(ZEROS, 0, Math.min(ZEROS.length, target - off), off);
      }
      if (this.opts.fsync !== "never") await fh.datasync();
    } finally {
      await fh.close();
    }
    this.allocated = target;
  }

  private async openSegment(first: number): Promise<void> {
    const reuse = this.current !== undefined && !this.rotateRequested && this.fh === undefined;
    await this.extending;
    if (this.fh) {
      // Cut the unused zero-filled tail: only the last segment may end in zeros.
      await this.fh.truncate(this.segmentSize);
      await this.fh.datasync();
      await this.fh.close();
      this.fh = undefined;
    }
    if (reuse) {
      this.fh = await open(this.current!.file, constants.O_RDWR | this.dsyncFlag);
      this.segmentSize = (await this.fh.stat()).size;
    } else {
      const seg = { file: join(this.opts.dir, segmentName(first)), first };
      this.fh = await open(
        seg.file,
        constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC | this.dsyncFlag,
      );
      await syncDir(this.opts.dir);
      this.segmentSize = 0;
      this.current = seg;
    }
    this.allocated = this.segmentSize;
    this.rotateRequested = false;
  }

  private async backgroundSync(): Promise<void> {
    if (!this.dirty || !this.fh || this.flushing) return;
    this.dirty = false;
    const t0 = performance.now();
    try {
      await this.fh.datasync();
      this.opts.onFsync?.(performance.now() - t0);
    } catch (err) {
      this.failed = err as Error;
    }
  }

  /** The segment being appended to. */
  get activeSegment(): Segment | undefined {
    return this.current;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.drained();
    await this.extending;
    if (this.fh) {
      await this.fh.truncate(this.segmentSize);
      if (this.opts.fsync !== "never") await this.fh.datasync();
      await this.fh.close();
      this.fh = undefined;
    }
  }
}

/** Makes a directory's entries (a new or renamed file) durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Deletes segments whose every record is at or below `upTo`, never the active one. */
export async function deleteSegmentsUpTo(
  dir: string,
  upTo: number,
  active: Segment | undefined,
): Promise<number> {
  const segs = listSegments(dir);
  let removed = 0;
  for (let i = 0; i + 1 < segs.length; i++) {
    const seg = segs[i]!;
    const next = segs[i + 1]!;
    if (active && seg.file === active.file) break;
    if (next.first - 1 <= upTo) {
      await unlink(seg.file);
      removed++;
    } else break;
  }
  if (removed > 0) await syncDir(dir);
  return removed;
}
