/*
 * Damaged files on disk: a store builds a log, is closed, the test damages a segment or a
 * snapshot, and reopens. A torn or damaged record at the very end of the last segment is what
 * a crash leaves, so it is cut off and the store carries on; damage anywhere else would lose
 * acknowledged commits if cut, so start-up stops with CorruptLogError naming the file and
 * the record's offset. Offsets are found by parsing the record headers here, independently
 * of the store's reader:
 *
 *   u32 length | u32 ~length | u32 crc32(index ‖ payload) | u64 index | payload   (little-endian)
 */
import { spawn } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { crc32 } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import {
  CorruptLogError,
  CorruptSnapshotError,
  queries,
  Store,
  type StoreOptions,
} from "../../src/state/index.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const LOCK_HOLDER = fileURLToPath(new URL("../fixtures/lock-holder.ts", import.meta.url));
const HEADER = 20;

const dirs: string[] = [];
const pids = new Set<number>();

afterEach(() => {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  pids.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "sluice-corrupt-"));
  dirs.push(d);
  return d;
}

interface RecordAt {
  /** Offset of the record's header in its segment. */
  readonly offset: number;
  /** Offset just past its payload. */
  readonly end: number;
  readonly index: number;
}

/** Parses a segment's record headers, checking each as the format says. */
function records(file: string): RecordAt[] {
  const buf = readFileSync(file);
  const out: RecordAt[] = [];
  let off = 0;
  while (off < buf.length) {
    const len = buf.readUInt32LE(off);
    expect(buf.readUInt32LE(off + 4)).toBe(~len >>> 0);
    const end = off + HEADER + len;
    expect(crc32(buf.subarray(off + 12, end))).toBe(buf.readUInt32LE(off + 8));
    out.push({ offset: off, end, index: Number(buf.readBigUInt64LE(off + 12)) });
    off = end;
  }
  expect(off).toBe(buf.length);
  return out;
}

const segments = (dir: string): string[] =>
  readdirSync(dir)
    .filter((f) => /^wal-\d{16}\.log$/.test(f))
    .sort()
    .map((f) => join(dir, f));

const snapshots = (dir: string): string[] =>
  readdirSync(dir)
    .filter((f) => /^snapshot-\d{16}\.snap$/.test(f))
    .sort()
    .map((f) => join(dir, f));

function flipByte(file: string, offset: number): void {
  const buf = readFileSync(file);
  buf[offset] = buf[offset]! ^ 0xff;
  writeFileSync(file, buf);
}

const size = (file: string): number => statSync(file).size;
const encode = (s: string): Uint8Array => new TextEncoder().encode(s);
const decode = (v: Uint8Array): string => new TextDecoder().decode(v);

const numberedValue = (i: number): string => `value-${i}-${"v".repeat(i % 17)}`;

/** Commit i (a fresh store's index i) sets k/<i>/a and k/<i>/b to numberedValue(i). */
async function commitNumbered(store: Store, i: number): Promise<void> {
  const value = encode(numberedValue(i));
  const { index } = await store.commit([
    { op: "kv.set", key: `k/${i}/a`, value },
    { op: "kv.set", key: `k/${i}/b`, value },
  ]);
  expect(index).toBe(i);
}

/** Builds a log of commits 1..count one at a time (so one record each), then closes. */
async function build(dir: string, count: number, opts: Partial<StoreOptions> = {}): Promise<void> {
  const store = await Store.open({ dataDir: dir, fsync: "never", ...opts });
  for (let i = store.index + 1; i <= count; i++) await commitNumbered(store, i);
  await store.close();
}

/** Commits 1..upTo are all present, and nothing after them. */
function expectCommits(store: Store, upTo: number): void {
  expect(store.index).toBe(upTo);
  const kv = [...queries.kvList(store.root, "k/")];
  expect(kv.length).toBe(2 * upTo);
  for (const row of kv) {
    const i = Number(row.Key.split("/")[1]);
    expect(i).toBeLessThanOrEqual(upTo);
    expect(decode(row.Value)).toBe(numberedValue(i));
  }
}

async function open(dir: string, opts: Partial<StoreOptions> = {}): Promise<Store> {
  return Store.open({ dataDir: dir, fsync: "never", ...opts });
}

async function openError(dir: string, opts: Partial<StoreOptions> = {}): Promise<unknown> {
  try {
    const store = await open(dir, opts);
    await store.close();
  } catch (err) {
    return err;
  }
  throw new Error("Store.open succeeded on a damaged directory");
}

function expectCorruptLog(err: unknown, file: string, offset: number): void {
  expect(err).toBeInstanceOf(CorruptLogError);
  expect(err).toMatchObject({ file, offset });
}

const N = 12;

/** Reopens after a tail repair: the cut commit's index is reused, and the result survives. */
async function expectAppendsAfterRepair(dir: string, upTo: number): Promise<void> {
  const store = await open(dir);
  expectCommits(store, upTo);
  await commitNumbered(store, upTo + 1);
  await commitNumbered(store, upTo + 2);
  await store.close();
  const again = await open(dir);
  expectCommits(again, upTo + 2);
  await again.close();
  const seg = segments(dir).at(-1)!;
  expect(records(seg).at(-1)!.index).toBe(upTo + 2);
}

describe("torn or damaged tail of the last segment", () => {
  it.each([
    [
      "in the middle of the payload",
      (r: RecordAt) => r.offset + HEADER + Math.floor((r.end - r.offset - HEADER) / 2),
    ],
    ["one byte short", (r: RecordAt) => r.end - 1],
    ["right after the header", (r: RecordAt) => r.offset + HEADER],
    ["inside the header", (r: RecordAt) => r.offset + 7],
  ])("cuts a last record truncated %s, keeps the rest, and appends after it", async (_, cutAt) => {
    const dir = tempDir();
    await build(dir, N);
    const [seg, ...more] = segments(dir);
    expect(more).toEqual([]);
    const last = records(seg!).at(-1)!;
    expect(last.index).toBe(N);
    truncateSync(seg!, cutAt(last));

    const store = await open(dir);
    expectCommits(store, N - 1);
    expect(size(seg!)).toBe(last.offset);
    await store.close();
    await expectAppendsAfterRepair(dir, N - 1);
  });

  it.each([
    ["payload", (r: RecordAt) => r.end - 3],
    ["checksum", (r: RecordAt) => r.offset + 9],
    ["index", (r: RecordAt) => r.offset + 12],
  ])("cuts a last record whose %s was damaged", async (_, at) => {
    const dir = tempDir();
    await build(dir, N);
    const seg = segments(dir)[0]!;
    const last = records(seg).at(-1)!;
    flipByte(seg, at(last));

    const store = await open(dir);
    expectCommits(store, N - 1);
    expect(size(seg)).toBe(last.offset);
    await store.close();
    await expectAppendsAfterRepair(dir, N - 1);
  });

  it.each([1, 19, 20, 4096])(
    "cuts %i zero bytes after the last record (a preallocated tail)",
    async (zeros) => {
      const dir = tempDir();
      await build(dir, N);
      const seg = segments(dir)[0]!;
      const before = size(seg);
      appendFileSync(seg, Buffer.alloc(zeros));

      const store = await open(dir);
      expectCommits(store, N);
      expect(size(seg)).toBe(before);
      await store.close();
      await expectAppendsAfterRepair(dir, N);
    },
  );
});

describe("damage before the end of the last segment", () => {
  it.each([
    ["payload", (r: RecordAt) => r.offset + HEADER + 5],
    ["checksum", (r: RecordAt) => r.offset + 8],
    ["index", (r: RecordAt) => r.offset + 19],
    ["length", (r: RecordAt) => r.offset],
    ["complemented length", (r: RecordAt) => r.offset + 6],
  ])("stops at a record whose %s was damaged, naming the segment and the record's offset", async (_, at) => {
    const dir = tempDir();
    await build(dir, N);
    const seg = segments(dir)[0]!;
    const victim = records(seg)[5]!;
    flipByte(seg, at(victim));
    const damaged = readFileSync(seg);

    expectCorruptLog(await openError(dir), seg, victim.offset);
    // Nothing was cut and the directory was released: the file is as it was, and once
    // repaired the store opens with every commit.
    expect(readFileSync(seg).equals(damaged)).toBe(true);
    expect(existsSync(join(dir, "LOCK"))).toBe(false);
    flipByte(seg, at(victim));
    const store = await open(dir);
    expectCommits(store, N);
    await store.close();
  });
});

describe("damage in a segment that is not the last", () => {
  const small = { segmentBytes: 1024 } as const;

  async function manySegments(): Promise<{ dir: string; segs: string[] }> {
    const dir = tempDir();
    await build(dir, 40, small);
    const segs = segments(dir);
    expect(segs.length).toBeGreaterThanOrEqual(4);
    return { dir, segs };
  }

  it("stops at a damaged last record of an earlier segment instead of cutting it", async () => {
    const { dir, segs } = await manySegments();
    const victim = records(segs[1]!).at(-1)!;
    flipByte(segs[1]!, victim.end - 2);
    expectCorruptLog(await openError(dir, small), segs[1]!, victim.offset);
  });

  it("stops at a record cut short in an earlier segment", async () => {
    const { dir, segs } = await manySegments();
    const victim = records(segs[0]!).at(-1)!;
    const sizes = segs.map(size);
    truncateSync(segs[0]!, victim.end - 4);
    expectCorruptLog(await openError(dir, small), segs[0]!, victim.offset);
    expect(size(segs[0]!)).toBe(victim.end - 4);
    expect(segs.slice(1).map(size)).toEqual(sizes.slice(1));
  });

  it("stops at zero bytes after the records of an earlier segment", async () => {
    const { dir, segs } = await manySegments();
    const end = size(segs[2]!);
    appendFileSync(segs[2]!, Buffer.alloc(64));
    expectCorruptLog(await openError(dir, small), segs[2]!, end);
    expect(size(segs[2]!)).toBe(end + 64);
  });

  it("stops at a damaged record in the middle of an earlier segment", async () => {
    const { dir, segs } = await manySegments();
    const recs = records(segs[2]!);
    expect(recs.length).toBeGreaterThanOrEqual(3);
    const victim = recs[1]!;
    flipByte(segs[2]!, victim.offset + HEADER + 1);
    expectCorruptLog(await openError(dir, small), segs[2]!, victim.offset);
  });

  it("stops at a missing segment (a gap in the indexes)", async () => {
    const { dir, segs } = await manySegments();
    unlinkSync(segs[1]!);
    expectCorruptLog(await openError(dir, small), segs[2]!, 0);
  });

  describe("with a snapshot and the log truncated behind it", () => {
    const opts = { segmentBytes: 1024, historyRetain: 8, snapshotEvery: 1_000_000 } as const;

    async function snapshotted(): Promise<{ dir: string; segs: string[]; snapIndex: number }> {
      const dir = tempDir();
      await build(dir, 40, opts);
      const store = await open(dir, opts);
      const snapIndex = await store.snapshot();
      expect(snapIndex).toBe(40);
      for (let i = 41; i <= 70; i++) await commitNumbered(store, i);
      await store.close();
      const segs = segments(dir);
      // Segments wholly older than the retained history are gone; one starts right after
      // the snapshot.
      expect(records(segs[0]!)[0]!.index).toBeGreaterThan(1);
      expect(records(segs[0]!)[0]!.index).toBeLessThanOrEqual(snapIndex - opts.historyRetain + 1);
      expect(segs.map((s) => records(s)[0]!.index)).toContain(snapIndex + 1);
      const reopened = await open(dir, opts);
      expectCommits(reopened, 70);
      expect(reopened.recoveredCommits.map((c) => c.index)).toEqual(
        Array.from({ length: opts.historyRetain }, (_, i) => 70 - opts.historyRetain + 1 + i),
      );
      await reopened.close();
      return { dir, segs, snapIndex };
    }

    it("stops at damage in a segment after the snapshot", async () => {
      const { dir, segs, snapIndex } = await snapshotted();
      const i = segs.findIndex((s) => records(s)[0]!.index === snapIndex + 1);
      expect(i).toBeLessThan(segs.length - 1);
      const victim = records(segs[i]!)[0]!;
      flipByte(segs[i]!, victim.offset + HEADER + 3);
      expectCorruptLog(await openError(dir, opts), segs[i]!, victim.offset);
    });

    it("stops at damage in a retained segment the snapshot already covers", async () => {
      const { dir, segs, snapIndex } = await snapshotted();
      const recs = records(segs[0]!);
      expect(recs.at(-1)!.index).toBeLessThanOrEqual(snapIndex);
      const victim = recs.at(-1)!;
      flipByte(segs[0]!, victim.end - 1);
      expectCorruptLog(await openError(dir, opts), segs[0]!, victim.offset);
    });
  });
});

describe("damaged snapshot", () => {
  async function withSnapshot(): Promise<{ dir: string; snap: string }> {
    const dir = tempDir();
    await build(dir, 10);
    const store = await open(dir);
    await store.snapshot();
    await commitNumbered(store, 11);
    await store.close();
    const [snap, ...more] = snapshots(dir);
    expect(more).toEqual([]);
    return { dir, snap: snap! };
  }

  it.each([
    ["a flipped byte in the body", (f: string) => flipByte(f, size(f) - 5)],
    ["a flipped byte in the header", (f: string) => flipByte(f, 3)],
    ["a truncated body", (f: string) => truncateSync(f, size(f) - 10)],
    ["no header line", (f: string) => truncateSync(f, 0)],
  ])("refuses a snapshot with %s, naming the file", async (_, damage) => {
    const { dir, snap } = await withSnapshot();
    damage(snap);
    const err = await openError(dir);
    expect(err).toBeInstanceOf(CorruptSnapshotError);
    expect(err).toMatchObject({ file: snap });
    expect(existsSync(join(dir, "LOCK"))).toBe(false);
  });

  it("ignores and later removes a half-written snapshot left by a crash", async () => {
    const { dir, snap } = await withSnapshot();
    const tmp = join(dir, "snapshot-0000000000000011.snap.tmp");
    writeFileSync(tmp, '{"format":1,"index":11,"crc":0,"by');
    const store = await open(dir);
    expectCommits(store, 11);
    await commitNumbered(store, 12);
    await store.snapshot();
    expect(existsSync(tmp)).toBe(false);
    expect(snapshots(dir)).toEqual([snap, join(dir, "snapshot-0000000000000012.snap")]);
    await store.close();
  });
});

describe("the data directory lock", () => {
  /** Starts a process that holds `dir` open; resolves with its pid once the store is open. */
  async function holdInChild(dir: string): Promise<{ pid: number; kill(): Promise<void> }> {
    const child = spawn(process.execPath, ["--import", "tsx", LOCK_HOLDER, dir], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "inherit"],
    });
    pids.add(child.pid!);
    const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));
    const line = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout!.setEncoding("utf8");
      child.stdout!.on("data", (d: string) => {
        out += d;
        if (out.includes("\n")) resolve(out.trim());
      });
      void closed.then(() => reject(new Error(`lock holder exited early: ${JSON.stringify(out)}`)));
    });
    expect(line).toBe(`READY ${child.pid}`);
    return {
      pid: child.pid!,
      async kill() {
        child.kill("SIGKILL");
        await closed; // reaped: the pid no longer names a live process
        pids.delete(child.pid!);
      },
    };
  }

  it("refuses a directory a live process holds, and takes it over once that process is dead", async () => {
    const dir = tempDir();
    await build(dir, 3);
    const holder = await holdInChild(dir);
    const lock = join(dir, "LOCK");
    expect(readFileSync(lock, "utf8")).toBe(String(holder.pid));

    const err = await openError(dir);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(CorruptLogError);
    expect(err).not.toBeInstanceOf(CorruptSnapshotError);
    // The refused open left the holder's lock alone.
    expect(readFileSync(lock, "utf8")).toBe(String(holder.pid));

    await holder.kill();
    expect(readFileSync(lock, "utf8")).toBe(String(holder.pid));
    const store = await open(dir);
    expect(readFileSync(lock, "utf8")).toBe(String(process.pid));
    expectCommits(store, 3);
    await commitNumbered(store, 4);
    await store.close();
    expect(existsSync(lock)).toBe(false);
  });

  it.each([
    ["the pid of a process that has exited", async () => String(await deadPid())],
    ["nothing (a crash between creating and writing it)", async () => ""],
  ])("takes over a stale lock holding %s", async (_, content) => {
    const dir = tempDir();
    await build(dir, 3);
    const lock = join(dir, "LOCK");
    writeFileSync(lock, await content());
    const store = await open(dir);
    expect(readFileSync(lock, "utf8")).toBe(String(process.pid));
    expectCommits(store, 3);
    await store.close();
    expect(existsSync(lock)).toBe(false);
  });
});

/** The pid of a process that has run, exited and been reaped. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise<void>((resolve) => child.on("close", () => resolve()));
  return child.pid!;
}
