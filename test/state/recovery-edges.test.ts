import { mkdtempSync, readdirSync, rmSync, statSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DataDirLockedError, queries, Store } from "../../src/state/index.js";

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), "sluice-edge-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const set = (k: string) => [{ op: "kv.set" as const, key: k, value: new Uint8Array([1]) }];

describe("recovery edges", () => {
  it("refuses a second open of the same directory in the same process", async () => {
    const dir = tmp();
    const a = await Store.open({ dataDir: dir, fsync: "never" });
    await expect(Store.open({ dataDir: dir })).rejects.toBeInstanceOf(DataDirLockedError);
    await a.commit(set("k"));
    await a.close();
    const b = await Store.open({ dataDir: dir, fsync: "never" });
    expect(b.index).toBe(1);
    await b.close();
  });

  it("opens and keeps going when the snapshot is ahead of the log's end (records lost after it)", async () => {
    const dir = tmp();
    const s = await Store.open({ dataDir: dir, fsync: "never" });
    for (let i = 0; i < 10; i++) await s.commit(set(`k${i}`));
    await s.snapshot();
    await s.close();
    // Lose the log's last two records while the snapshot survives.
    const seg = readdirSync(dir).find((f) => f.startsWith("wal-"))!;
    const file = join(dir, seg);
    const size = statSync(file).size;
    truncateSync(file, size - 2 * Math.floor(size / 10));
    const s2 = await Store.open({ dataDir: dir, fsync: "never" });
    expect(s2.index).toBe(10);
    expect((await s2.commit(set("after"))).index).toBe(11);
    await s2.close();
    const s3 = await Store.open({ dataDir: dir, fsync: "never" });
    expect(s3.index).toBe(11);
    expect(queries.kvGet(s3.root, "after")?.ModifyIndex).toBe(11);
    expect(queries.kvGet(s3.root, "k9")).toBeDefined();
    await s3.close();
  });
});
