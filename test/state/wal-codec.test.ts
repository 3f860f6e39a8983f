import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeCommit } from "../../src/state/codec.js";
import type { Change, Commit, Index } from "../../src/state/index.js";
import { HEADER_BYTES, readSegment } from "../../src/state/wal.js";
import { decodeWalCommit, encodeWalRecords } from "../../src/state/wal-codec.js";

const idx = (n: number) => n as Index;

const text = fc.string({ unit: "grapheme", maxLength: 40 });
const kvRow = fc.record({
  Key: text,
  Value: fc.uint8Array({ maxLength: 300 }),
  Flags: fc.nat(),
  LockIndex: fc.nat(),
  CreateIndex: fc.nat().map(idx),
  ModifyIndex: fc.nat().map(idx),
});
const nodeRow = fc.record({
  ID: text,
  Node: text,
  Address: text,
  Datacenter: fc.constant("dc1"),
  TaggedAddresses: fc.dictionary(text, text, { maxKeys: 3 }),
  Meta: fc.dictionary(text, text, { maxKeys: 3 }),
  CreateIndex: fc.nat().map(idx),
  ModifyIndex: fc.nat().map(idx),
});
const change: fc.Arbitrary<Change> = fc.oneof(
  fc.record({
    table: fc.constant("kv" as const),
    op: fc.constantFrom("insert" as const, "update" as const, "delete" as const),
    key: text,
    before: fc.option(kvRow, { nil: undefined }),
    after: fc.option(kvRow, { nil: undefined }),
  }),
  fc.record({
    table: fc.constant("nodes" as const),
    op: fc.constantFrom("insert" as const, "update" as const, "delete" as const),
    key: text,
    before: fc.option(nodeRow, { nil: undefined }),
    after: fc.option(nodeRow, { nil: undefined }),
  }),
) as fc.Arbitrary<Change>;
const commit: fc.Arbitrary<Commit> = fc.record({
  index: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }).map(idx),
  changes: fc.array(change, { maxLength: 6 }),
});

/** Plain data of a commit (Uint8Array values compared by content). */
const plain = (c: Commit): unknown =>
  JSON.parse(JSON.stringify(c, (_k, v) => (v instanceof Uint8Array ? [...v] : v)));

describe("write-ahead-log record codec", () => {
  it("reads back every commit it writes, through real segment framing", () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-walcodec-"));
    try {
      fc.assert(
        fc.property(fc.array(commit, { minLength: 1, maxLength: 8 }), (commits) => {
          const file = join(dir, "wal-0000000000000001.log");
          writeFileSync(file, encodeWalRecords(commits));
          const { records, truncatedBytes } = readSegment(file, true, true);
          expect(truncatedBytes).toBe(0);
          expect(records.map((r) => r.index)).toEqual(commits.map((c) => c.index));
          expect(records.map((r) => plain(decodeWalCommit(r.payload)))).toEqual(commits.map(plain));
        }),
        { numRuns: 200 },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("still reads the JSON records written before the binary format", () => {
    const c: Commit = {
      index: idx(7),
      changes: [
        {
          table: "kv",
          op: "insert",
          key: "a/b",
          before: undefined,
          after: {
            Key: "a/b",
            Value: new Uint8Array([1, 2, 3]),
            Flags: 4,
            LockIndex: 0,
            CreateIndex: idx(7),
            ModifyIndex: idx(7),
          },
        },
      ],
    };
    const legacy = Buffer.from(encodeCommit(c), "utf8");
    expect(plain(decodeWalCommit(legacy))).toEqual(plain(c));
    expect(HEADER_BYTES).toBe(20);
  });
});
