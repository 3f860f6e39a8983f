/*
 * Crash durability: a writer process (test/fixtures/crash-writer.ts) commits with fsync
 * "always" from several concurrent loops and is killed with SIGKILL at a random moment; the
 * store reopened here must hold every commit the writer acknowledged, no part of any
 * transaction without the rest, and an index that carries on without a gap. Five kill cycles
 * run on one data directory, so recovery also starts from logs that earlier recoveries cut,
 * rotated and truncated behind snapshots.
 *
 * SLUICE_CRASH_SEED replays the writers' choices and the kill delays (the kill moment still
 * depends on timing); SLUICE_CRASH_CYCLES changes the number of cycles.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { type Commit, queries, Store } from "../../src/state/index.js";
import {
  CRASH_STORE_OPTIONS,
  nodeName,
  parseLine,
  parseTripleKey,
  prng,
  regKey,
  serviceId,
  TRIPLE_PARTS,
  type TriplePart,
  tripleKey,
  tripleValue,
  WRITERS,
  type WriterLine,
} from "../fixtures/crash-protocol.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const WRITER = fileURLToPath(new URL("../fixtures/crash-writer.ts", import.meta.url));
const SEED = Number(process.env.SLUICE_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CYCLES = Number(process.env.SLUICE_CRASH_CYCLES ?? 5);

const children = new Set<ChildProcess>();
const dirs: string[] = [];

afterEach(() => {
  for (const c of children) c.kill("SIGKILL");
  children.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "sluice-crash-"));
  dirs.push(d);
  return d;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const decode = (v: Uint8Array): string => new TextDecoder().decode(v);

interface Run {
  /** Complete lines only: a line the kill cut short was never acknowledged. */
  readonly lines: WriterLine[];
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
}

/** Starts the writer, lets it commit for `runMs` after it reports READY, then SIGKILLs it. */
async function runAndKill(dir: string, seed: number, runMs: number): Promise<Run> {
  const child = spawn(process.execPath, ["--import", "tsx", WRITER, dir, String(seed)], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let out = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8");
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (d: string) => {
    stderr += d;
  });
  const closed = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on("close", (code, signal) => resolve([code, signal])),
  );
  await new Promise<void>((resolve) => {
    child.stdout!.on("data", (d: string) => {
      out += d;
      if (out.includes("\n")) resolve();
    });
    void closed.then(() => resolve());
  });
  await sleep(runMs);
  child.kill("SIGKILL");
  // "close" comes after the exit (the pid is reaped, so its LOCK is stale) and after the
  // last byte of stdout.
  const [code, signal] = await closed;
  children.delete(child);
  const complete = out.slice(0, out.lastIndexOf("\n") + 1);
  return { lines: complete.split("\n").filter(Boolean).map(parseLine), code, signal, stderr };
}

interface WriterModel {
  /** Highest triple n known durable (-1: none). */
  lastN: number;
  /** Registration as last known durable; gen undefined when deregistered. */
  gen: string | undefined;
}

interface Observed {
  /** Per writer, the triples present: n → part → value. */
  readonly triples: Map<number, Map<number, Map<TriplePart, string>>>;
  /** Per writer, the registration: node, service and marker generations (undefined: absent). */
  readonly reg: Map<number, { node?: string; service?: string; marker?: string }>;
}

function observe(store: Store): Observed {
  const triples = new Map<number, Map<number, Map<TriplePart, string>>>();
  for (const row of queries.kvList(store.root, "w")) {
    const k = parseTripleKey(row.Key);
    expect(k, `unexpected key ${row.Key}`).toBeDefined();
    if (!k) continue;
    const byN = triples.get(k.writer) ?? new Map<number, Map<TriplePart, string>>();
    triples.set(k.writer, byN);
    const parts = byN.get(k.n) ?? new Map<TriplePart, string>();
    byN.set(k.n, parts);
    parts.set(k.part, decode(row.Value));
  }
  const reg = new Map<number, { node?: string; service?: string; marker?: string }>();
  for (let w = 0; w < WRITERS; w++) {
    const marker = queries.kvGet(store.root, regKey(w));
    reg.set(w, {
      node: queries.getNode(store.root, nodeName(w))?.Meta.gen,
      service: queries.getService(store.root, nodeName(w), serviceId(w))?.Meta.gen,
      marker: marker && decode(marker.Value),
    });
  }
  return { triples, reg };
}

const kvKeys = (c: Commit): string[] => c.changes.filter((ch) => ch.table === "kv").map((ch) => ch.key);

/** The commit a printed line acknowledged must be the one the log holds at that index. */
function expectCommitMatches(commit: Commit, line: WriterLine): void {
  switch (line.kind) {
    case "ACK": {
      const keys = TRIPLE_PARTS.map((p) => tripleKey(line.writer, line.n, p));
      expect(commit.changes.map((ch) => [ch.table, ch.op, ch.key])).toEqual(
        keys.map((k) => ["kv", "insert", k]),
      );
      for (const ch of commit.changes) {
        expect(ch.table === "kv" && ch.after && decode(ch.after.Value)).toBe(
          tripleValue(line.writer, line.n),
        );
      }
      return;
    }
    case "REG":
      expect(kvKeys(commit)).toEqual([regKey(line.writer)]);
      expect(commit.changes.some((ch) => ch.table === "nodes" && ch.after?.Meta.gen === line.gen)).toBe(true);
      return;
    case "DEREG":
      expect(kvKeys(commit)).toEqual([regKey(line.writer)]);
      expect(commit.changes.some((ch) => ch.table === "nodes" && ch.op === "delete")).toBe(true);
      return;
    case "READY":
    case "ERR":
      throw new Error(`not a commit: ${line.kind}`);
    default: {
      const never: never = line;
      throw new Error(`unknown line ${String(never)}`);
    }
  }
}

type CommitLine = Extract<WriterLine, { index: number; writer: number }>;

describe("crash durability (SIGKILL during commits)", () => {
  it(
    `keeps every acknowledged commit over ${CYCLES} kill cycles (SLUICE_CRASH_SEED=${SEED})`,
    async () => {
      const dir = tempDir();
      const rand = prng(SEED);
      const model: WriterModel[] = Array.from({ length: WRITERS }, () => ({ lastN: -1, gen: undefined }));
      let prevIndex = 0;
      let acked = 0;
      let lastSeen: Observed | undefined;

      for (let cycle = 0; cycle < CYCLES; cycle++) {
        const runMs = 100 + Math.floor(rand() * 600);
        const run = await runAndKill(dir, (SEED + cycle) % 2 ** 31, runMs);
        const where = `cycle ${cycle}, ran ${runMs} ms, seed ${SEED}; writer stderr: ${run.stderr}`;

        // The writer ran until the kill: it neither failed a commit nor exited by itself.
        expect(run.signal, where).toBe("SIGKILL");
        expect(
          run.lines.filter((l) => l.kind === "ERR"),
          where,
        ).toEqual([]);
        const [ready, ...rest] = run.lines;
        // The writer recovered exactly what this test recovered after the previous kill.
        expect(ready, where).toEqual({ kind: "READY", index: prevIndex });
        const commits = rest as CommitLine[];
        // Acknowledgements come in index order, each the previous + 1, starting right after the
        // recovered index: no index skipped or reused across the restart.
        expect(
          commits.map((c) => c.index),
          where,
        ).toEqual(commits.map((_, i) => prevIndex + 1 + i));
        acked += commits.length;

        const store = await Store.open({ dataDir: dir, fsync: "always", ...CRASH_STORE_OPTIONS });
        try {
          const lastAck = commits.at(-1)?.index ?? prevIndex;
          expect(store.index, where).toBeGreaterThanOrEqual(lastAck);
          // Durable but unacknowledged: at most the one commit each writer had in flight.
          expect(store.index - lastAck, where).toBeLessThanOrEqual(WRITERS);

          // The recovered history is consecutive, ends at the index and holds, at each index,
          // the commit that was acknowledged with it.
          const history = store.recoveredCommits;
          expect(history.length, where).toBe(Math.min(CRASH_STORE_OPTIONS.historyRetain, store.index));
          expect(
            history.map((c) => c.index),
            where,
          ).toEqual(history.map((_, i) => store.index - history.length + 1 + i));
          const first = history[0]?.index ?? store.index + 1;
          for (const line of commits) {
            if (line.index >= first) expectCommitMatches(history[line.index - first]!, line);
          }

          const seen = observe(store);
          lastSeen = seen;
          for (let w = 0; w < WRITERS; w++) {
            const m = model[w]!;
            const mine = commits.filter((c) => c.writer === w);
            let unacked = 0;

            // Triples: all three parts with the right value or none, n contiguous from 0 (each
            // writer commits one at a time, so the log holds a prefix of its sequence), and
            // every acknowledged n present.
            const byN = seen.triples.get(w) ?? new Map<number, Map<TriplePart, string>>();
            const ns = [...byN.keys()].sort((a, b) => a - b);
            expect(ns, `${where}; writer ${w}`).toEqual(ns.map((_, i) => i));
            for (const [n, parts] of byN) {
              const v = tripleValue(w, n);
              expect(Object.fromEntries(parts), `${where}; writer ${w} triple ${n}`).toEqual({
                a: v,
                b: v,
                c: v,
              });
            }
            const top = ns.length - 1;
            const ackedTop = Math.max(m.lastN, ...mine.flatMap((c) => (c.kind === "ACK" ? [c.n] : [])));
            expect(top, `${where}; writer ${w}`).toBeGreaterThanOrEqual(ackedTop);
            unacked += top - ackedTop;

            // Registration: node, service and marker together, with one generation.
            const r = seen.reg.get(w)!;
            expect(r.service, `${where}; writer ${w} registration`).toBe(r.node);
            expect(r.marker, `${where}; writer ${w} registration`).toBe(r.node);
            const lastReg = mine.filter((c) => c.kind !== "ACK").at(-1);
            const expectedGen = lastReg ? (lastReg.kind === "REG" ? lastReg.gen : undefined) : m.gen;
            if (r.node !== expectedGen) {
              // Only an unacknowledged toggle may differ from what was acknowledged.
              expect(r.node === undefined || expectedGen === undefined, `${where}; writer ${w}`).toBe(true);
              unacked++;
            }
            expect(unacked, `${where}; writer ${w}: commits beyond its last ack`).toBeLessThanOrEqual(1);

            m.lastN = top;
            m.gen = r.node;
          }
          prevIndex = store.index;
        } finally {
          await store.close();
        }

        // Recovery is repeatable: a second open finds the same state and cuts nothing more.
        const again = await Store.open({ dataDir: dir, fsync: "always", ...CRASH_STORE_OPTIONS });
        try {
          expect(again.index, where).toBe(prevIndex);
          expect(observe(again), where).toEqual(lastSeen);
        } finally {
          await again.close();
        }
      }

      // Enough commits went by that snapshots were taken and the log was truncated behind them.
      expect(acked).toBeGreaterThan(4 * CRASH_STORE_OPTIONS.snapshotEvery);
      const files = readdirSync(dir);
      expect(files.filter((f) => /^snapshot-\d{16}\.snap$/.test(f)).length).toBeGreaterThanOrEqual(1);
      const segments = files.filter((f) => /^wal-\d{16}\.log$/.test(f)).sort();
      expect(segments[0]).not.toBe("wal-0000000000000001.log");
    },
    10_000 + CYCLES * 6_000,
  );
});
