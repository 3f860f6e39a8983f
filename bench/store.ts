/**
 * Suite `store`: the durable write rate of Sluice's state store against etcd's, and the
 * scaling of a service lookup with the size of the catalog.
 *
 *   npm run bench -- store [--duration 5] [--writers 1,16,64] [--repeat 3] [--only sluice,etcd,lookup]
 *
 * Writes: single-op `kv.set` transactions from N concurrent async writers against a fresh
 * Store (fsync "always") and the same load of `put`s against a fresh single-member etcd
 * (durable by default), both with data directories under the run's temp directory, so on
 * the same filesystem. The two are interleaved per writer count, so that the noise of a
 * shared machine falls on both.
 */
import { randomBytes } from "node:crypto";
import { Etcd3 } from "etcd3";
import { type Op, queries, type StateRoot, Store } from "../src/state/index.js";
import { CpuMeter } from "./lib/cpu.js";
import { type EtcdServer, startEtcd } from "./lib/etcd.js";
import { choiceListFlag, FlagError, type FlagValues, intListFlag, numberFlag } from "./lib/flags.js";
import { type LoadResult, runLoad } from "./lib/load.js";
import { fmtFixed, fmtInt, fmtMs, fmtRatio, median, table } from "./lib/stats.js";
import type { Suite, SuiteContext } from "./lib/suite.js";

const PARTS = ["sluice", "etcd", "lookup"] as const;
type Part = (typeof PARTS)[number];

/** The target: Sluice's durable commit rate at least this many times etcd's, at TARGET_WRITERS. */
const TARGET_RATIO = 10;
const TARGET_WRITERS = 64;

/** Largest transaction the store takes (LIMITS.maxOpsPerTxn). */
const MAX_TXN_OPS = 128;
const SERVICES_PER_NODE = 10;
const SERVICE_NAMES = 1000;
/** The looked-up name has this many instances at every catalog size, so only the size varies. */
const PROBE_INSTANCES = 10;
const PROBE = "probe";
/** A name whose instance count grows with the catalog (1 at 1k services, 100 at 100k). */
const GROWING = "svc-7";

interface Config {
  readonly parts: readonly Part[];
  readonly writers: readonly number[];
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly commits: number | undefined;
  readonly keys: number;
  readonly valueBytes: number;
  readonly lookupSizes: readonly number[];
  readonly lookupIters: number;
  readonly lookupRounds: number;
  readonly repeat: number;
}

function config(flags: FlagValues): Config {
  const lookupSizes = intListFlag(flags, "lookup-sizes")!;
  for (const n of lookupSizes) {
    if (n < PROBE_INSTANCES)
      throw new FlagError("lookup-sizes", `each size must be at least ${PROBE_INSTANCES}`);
  }
  return {
    parts: choiceListFlag(flags, "only", PARTS)!,
    writers: intListFlag(flags, "writers")!,
    warmupMs: numberFlag(flags, "warmup", { min: 0 })! * 1000,
    durationMs: numberFlag(flags, "duration", { min: 0.1 })! * 1000,
    commits: numberFlag(flags, "commits", { min: 1, integer: true }),
    keys: numberFlag(flags, "keys", { min: 1, integer: true })!,
    valueBytes: numberFlag(flags, "value-bytes", { min: 0, integer: true })!,
    lookupSizes,
    lookupIters: numberFlag(flags, "lookup-iters", { min: 1, integer: true })!,
    lookupRounds: numberFlag(flags, "lookup-rounds", { min: 1, integer: true })!,
    repeat: numberFlag(flags, "repeat", { min: 1, integer: true })!,
  };
}

interface SluiceRun extends LoadResult {
  /** fsyncs completed inside the measured window. */
  readonly fsyncs: number;
  readonly fsyncsPerSec: number;
  /** Commits per fsync: the group-commit factor. */
  readonly commitsPerFsync: number;
  readonly fsyncMeanMs: number;
  /** CPU cores the bench process (Store and writers) used in the window. */
  readonly cpuCores: number;
}

interface EtcdRun extends LoadResult {
  /** CPU cores used in the window by the bench process (etcd3 client and writers). */
  readonly clientCpuCores: number;
  /** CPU cores used in the window by the etcd server. */
  readonly serverCpuCores: number;
}

/** One Sluice run and the etcd run right after it, at the same writer count. */
interface Pair {
  readonly rep: number;
  readonly sluice?: SluiceRun;
  readonly etcd?: EtcdRun;
  /** Sluice commits/s over etcd puts/s. */
  readonly ratio?: number;
}

/** Medians over the repeats of one writer count (NaN where a part did not run). */
interface WriteSummary {
  readonly sluiceOpsPerSec: number;
  readonly etcdOpsPerSec: number;
  /** Median of the paired ratios, and their range. */
  readonly ratio: number;
  readonly ratioMin: number;
  readonly ratioMax: number;
  readonly fsyncsPerSec: number;
  readonly commitsPerFsync: number;
  readonly fsyncMeanMs: number;
  /** `writers` / mean fsync time: the commit rate if everything but the fsync were free. */
  readonly fsyncBoundOpsPerSec: number;
  readonly sluiceP50Ms: number;
  readonly sluiceP99Ms: number;
  readonly etcdP50Ms: number;
  readonly etcdP99Ms: number;
  readonly sluiceCpuCores: number;
  readonly etcdClientCpuCores: number;
  readonly etcdServerCpuCores: number;
}

interface WriteRow {
  readonly writers: number;
  readonly runs: readonly Pair[];
  readonly median: WriteSummary;
}

function summarizePairs(writers: number, runs: readonly Pair[]): WriteSummary {
  const med = (f: (p: Pair) => number | undefined): number => {
    const xs = runs.map(f).filter((x): x is number => x !== undefined && Number.isFinite(x));
    return median(xs);
  };
  const ratios = runs.flatMap((p) => (p.ratio === undefined ? [] : [p.ratio]));
  const fsyncMeanMs = med((p) => p.sluice?.fsyncMeanMs);
  return {
    sluiceOpsPerSec: med((p) => p.sluice?.opsPerSec),
    etcdOpsPerSec: med((p) => p.etcd?.opsPerSec),
    ratio: median(ratios),
    ratioMin: ratios.length > 0 ? Math.min(...ratios) : Number.NaN,
    ratioMax: ratios.length > 0 ? Math.max(...ratios) : Number.NaN,
    fsyncsPerSec: med((p) => p.sluice?.fsyncsPerSec),
    commitsPerFsync: med((p) => p.sluice?.commitsPerFsync),
    fsyncMeanMs,
    fsyncBoundOpsPerSec: (writers * 1000) / fsyncMeanMs,
    sluiceP50Ms: med((p) => p.sluice?.latencyMs.p50),
    sluiceP99Ms: med((p) => p.sluice?.latencyMs.p99),
    etcdP50Ms: med((p) => p.etcd?.latencyMs.p50),
    etcdP99Ms: med((p) => p.etcd?.latencyMs.p99),
    sluiceCpuCores: med((p) => p.sluice?.cpuCores),
    etcdClientCpuCores: med((p) => p.etcd?.clientCpuCores),
    etcdServerCpuCores: med((p) => p.etcd?.serverCpuCores),
  };
}

const describeWindow = (c: Config) =>
  c.commits !== undefined ? `${fmtInt(c.commits)} commits` : `${c.durationMs / 1000} s`;

function progressOf(ctx: SuiteContext, label: string, c: Config) {
  return (p: { phase: string; elapsedMs: number; ops: number }) => {
    const rate = p.elapsedMs > 0 ? (p.ops * 1000) / p.elapsedMs : 0;
    const of = p.phase === "warmup" ? c.warmupMs / 1000 : c.commits === undefined ? c.durationMs / 1000 : "";
    ctx.progress(
      `${label} ${p.phase} ${(p.elapsedMs / 1000).toFixed(1)}${of === "" ? "" : `/${of}`} s: ${fmtInt(p.ops)} ops, ${fmtInt(rate)}/s`,
    );
  };
}

/** A key for writer `w`'s `seq`-th write: the writers together cycle through `keys` keys. */
function keyOf(c: Config, w: number, seq: number, writers: number): string {
  const perWriter = Math.max(1, Math.ceil(c.keys / writers));
  return `bench/${w}/${seq % perWriter}`;
}

async function runSluice(
  ctx: SuiteContext,
  c: Config,
  writers: number,
  value: Uint8Array,
): Promise<SluiceRun> {
  const dir = ctx.tempDir(`sluice-w${writers}`);
  ctx.log(
    `[sluice w=${writers}] Store (fsync always) in ${dir}; warm-up ${c.warmupMs / 1000} s, measure ${describeWindow(c)}`,
  );
  let counting = false;
  const cpu = new CpuMeter();
  let fsyncs = 0;
  let fsyncMs = 0;
  const store = await Store.open({
    dataDir: dir,
    fsync: "always",
    onFsync: (ms) => {
      if (!counting) return;
      fsyncs++;
      fsyncMs += ms;
    },
  });
  try {
    const r = await runLoad({
      writers,
      warmupMs: c.warmupMs,
      durationMs: c.durationMs,
      maxOps: c.commits,
      signal: ctx.signal,
      op: (w, seq) => store.commit([{ op: "kv.set", key: keyOf(c, w, seq, writers), value }]),
      onWindow: (open) => {
        counting = open;
        if (open) cpu.start();
        else cpu.stop();
      },
      onProgress: progressOf(ctx, `sluice w=${writers}`, c),
    });
    const secs = r.elapsedMs / 1000;
    const run: SluiceRun = {
      ...r,
      fsyncs,
      fsyncsPerSec: fsyncs / secs,
      commitsPerFsync: fsyncs > 0 ? r.ops / fsyncs : Number.NaN,
      fsyncMeanMs: fsyncs > 0 ? fsyncMs / fsyncs : Number.NaN,
      cpuCores: cpu.own,
    };
    ctx.log(
      `[sluice w=${writers}] ${fmtInt(run.opsPerSec)} commits/s, ${fmtInt(run.fsyncsPerSec)} fsyncs/s ` +
        `(${fmtFixed(run.commitsPerFsync)} commits/fsync, fsync mean ${fmtMs(run.fsyncMeanMs)}), ` +
        `latency p50 ${fmtMs(r.latencyMs.p50)} p99 ${fmtMs(r.latencyMs.p99)}, CPU ${fmtFixed(cpu.own, 2)} cores`,
    );
    return run;
  } finally {
    await store.close();
    ctx.removeDir(dir);
  }
}

async function runEtcd(ctx: SuiteContext, c: Config, writers: number, value: Uint8Array): Promise<EtcdRun> {
  const dir = ctx.tempDir(`etcd-w${writers}`);
  const server: EtcdServer = await startEtcd({
    dataDir: dir,
    keepData: ctx.keep,
    log: (l) => ctx.log(`[etcd w=${writers}] ${l}`),
  });
  const client = new Etcd3({ hosts: server.clientUrl });
  const cpu = new CpuMeter(server.pid);
  const buf = Buffer.from(value);
  try {
    ctx.log(
      `[etcd w=${writers}] put from ${writers} writers over one client; warm-up ${c.warmupMs / 1000} s, measure ${describeWindow(c)}`,
    );
    const r = await runLoad({
      writers,
      warmupMs: c.warmupMs,
      durationMs: c.durationMs,
      maxOps: c.commits,
      signal: ctx.signal,
      op: (w, seq) =>
        client
          .put(keyOf(c, w, seq, writers))
          .value(buf)
          .exec(),
      onWindow: (open) => (open ? cpu.start() : cpu.stop()),
      onProgress: progressOf(ctx, `etcd w=${writers}`, c),
    });
    ctx.log(
      `[etcd w=${writers}] ${fmtInt(r.opsPerSec)} puts/s, latency p50 ${fmtMs(r.latencyMs.p50)} p99 ${fmtMs(r.latencyMs.p99)}, ` +
        `CPU ${fmtFixed(cpu.own, 2)} cores client + ${fmtFixed(cpu.peer, 2)} server`,
    );
    return { ...r, clientCpuCores: cpu.own, serverCpuCores: cpu.peer };
  } finally {
    client.close();
    await server.stop();
  }
}

/** A catalog of `total` services on nodes of SERVICES_PER_NODE, built in transactions of <= 128 ops. */
async function buildCatalog(total: number): Promise<StateRoot> {
  const store = await Store.open({ inMemory: true });
  const probeEvery = Math.floor(total / PROBE_INSTANCES);
  const nodes = Math.ceil(total / SERVICES_PER_NODE);
  const pending: Promise<unknown>[] = [];
  let txn: Op[] = [];
  for (let n = 0; n < nodes; n++) {
    if (txn.length + 1 + SERVICES_PER_NODE > MAX_TXN_OPS) {
      pending.push(store.commit(txn));
      txn = [];
    }
    const node = `node-${n}`;
    txn.push({
      op: "node.register",
      node: { Node: node, Address: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}` },
    });
    for (let k = 0; k < SERVICES_PER_NODE; k++) {
      const j = n * SERVICES_PER_NODE + k;
      if (j >= total) break;
      const name =
        j % probeEvery === 0 && j / probeEvery < PROBE_INSTANCES ? PROBE : `svc-${j % SERVICE_NAMES}`;
      txn.push({
        op: "service.register",
        service: { Node: node, ID: `${name}-${j}`, Service: name, Port: 8000 + k },
      });
    }
  }
  if (txn.length > 0) pending.push(store.commit(txn));
  await Promise.all(pending);
  const root = store.root;
  await store.close();
  return root;
}

interface LookupRow {
  readonly services: number;
  readonly buildMs: number;
  readonly probeInstances: number;
  /** Median over rounds of the time per `serviceInstances(root, "probe")`, fully iterated. */
  readonly probeNs: number;
  readonly growingInstances: number;
  readonly growingNs: number;
}

let sink = 0;

/** Nanoseconds per full iteration of serviceInstances(root, name), over `iters` calls. */
function timeLookup(root: StateRoot, name: string, iters: number): number {
  let rows = 0;
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) for (const _row of queries.serviceInstances(root, name)) rows++;
  const ns = ((performance.now() - t0) * 1e6) / iters;
  sink += rows;
  return ns;
}

async function runLookup(ctx: SuiteContext, c: Config): Promise<LookupRow[]> {
  ctx.log(
    `[lookup] in-memory catalogs of ${c.lookupSizes.map(fmtInt).join(", ")} services (${SERVICES_PER_NODE} per node, ` +
      `${SERVICE_NAMES} names, "${PROBE}" has ${PROBE_INSTANCES} instances in each)`,
  );
  const built: { services: number; root: StateRoot; buildMs: number }[] = [];
  for (const total of c.lookupSizes) {
    ctx.signal.throwIfAborted();
    const t0 = performance.now();
    const root = await buildCatalog(total);
    const buildMs = performance.now() - t0;
    ctx.progress(
      `lookup: built ${fmtInt(total)} services (${fmtInt(root.services.size)} rows) in ${fmtMs(buildMs)}`,
    );
    built.push({ services: total, root, buildMs });
  }
  const probe = built.map(() => [] as number[]);
  const growing = built.map(() => [] as number[]);
  // Round 0 warms the JIT and is discarded; sizes alternate within a round to share the noise.
  for (let round = 0; round <= c.lookupRounds; round++) {
    ctx.signal.throwIfAborted();
    built.forEach((b, i) => {
      const p = timeLookup(b.root, PROBE, c.lookupIters);
      const g = timeLookup(b.root, GROWING, c.lookupIters);
      if (round > 0) {
        probe[i]!.push(p);
        growing[i]!.push(g);
      }
    });
    if (round > 0)
      ctx.progress(`lookup: round ${round}/${c.lookupRounds} of ${fmtInt(c.lookupIters)} lookups per size`);
  }
  return built.map((b, i) => ({
    services: b.services,
    buildMs: b.buildMs,
    probeInstances: [...queries.serviceInstances(b.root, PROBE)].length,
    probeNs: median(probe[i]!),
    growingInstances: [...queries.serviceInstances(b.root, GROWING)].length,
    growingNs: median(growing[i]!),
  }));
}

function writeTable(rows: readonly WriteRow[]): string {
  const pair = (a: number, b: number, f: (x: number) => string, sep = " / ") =>
    Number.isFinite(a) || Number.isFinite(b) ? `${f(a)}${sep}${f(b)}` : "-";
  return table(
    [
      "writers",
      "Sluice commits/s",
      "etcd puts/s",
      "Sluice/etcd",
      "ratio range",
      "Sluice fsyncs/s",
      "commits/fsync",
      "fsync mean",
      "Sluice p50 / p99",
      "etcd p50 / p99",
      "CPU Sluice",
      "CPU etcd client + server",
    ],
    rows.map(({ writers, median: m }) => [
      String(writers),
      fmtInt(m.sluiceOpsPerSec),
      fmtInt(m.etcdOpsPerSec),
      fmtRatio(m.ratio),
      Number.isFinite(m.ratio) ? `${fmtRatio(m.ratioMin)}–${fmtRatio(m.ratioMax)}` : "-",
      fmtInt(m.fsyncsPerSec),
      fmtFixed(m.commitsPerFsync),
      fmtMs(m.fsyncMeanMs),
      pair(m.sluiceP50Ms, m.sluiceP99Ms, fmtMs),
      pair(m.etcdP50Ms, m.etcdP99Ms, fmtMs),
      fmtFixed(m.sluiceCpuCores, 2),
      pair(m.etcdClientCpuCores, m.etcdServerCpuCores, (x) => fmtFixed(x, 2), " + "),
    ]),
  );
}

function lookupTable(rows: readonly LookupRow[]): string {
  const base = rows[0];
  return table(
    [
      "services",
      `"${PROBE}" instances`,
      "time per lookup",
      `vs ${fmtInt(base?.services ?? 0)}`,
      `"${GROWING}" instances`,
      "time per lookup",
      "per instance",
    ],
    rows.map((r) => [
      fmtInt(r.services),
      String(r.probeInstances),
      fmtMs(r.probeNs / 1e6),
      fmtRatio(base ? r.probeNs / base.probeNs : Number.NaN),
      String(r.growingInstances),
      fmtMs(r.growingNs / 1e6),
      fmtMs(r.growingNs / Math.max(1, r.growingInstances) / 1e6),
    ]),
  );
}

async function run(ctx: SuiteContext, flags: FlagValues): Promise<unknown> {
  const c = config(flags);
  const has = (p: Part) => c.parts.includes(p);
  const value = new Uint8Array(randomBytes(c.valueBytes));
  ctx.log(
    `store suite: ${c.parts.join(", ")}; writers ${c.writers.join(", ")}; kv.set of ${c.valueBytes}-byte values ` +
      `over ${fmtInt(c.keys)} keys, one op per transaction`,
  );

  const writes: WriteRow[] = [];
  if (has("sluice") || has("etcd")) {
    for (const w of c.writers) {
      const runs: Pair[] = [];
      for (let rep = 1; rep <= c.repeat; rep++) {
        ctx.signal.throwIfAborted();
        if (c.repeat > 1) ctx.log(`--- writers ${w}, repeat ${rep}/${c.repeat}`);
        const sluice = has("sluice") ? await runSluice(ctx, c, w, value) : undefined;
        const etcd = has("etcd") ? await runEtcd(ctx, c, w, value) : undefined;
        const ratio = sluice && etcd ? sluice.opsPerSec / etcd.opsPerSec : undefined;
        if (ratio !== undefined) ctx.log(`[w=${w}] Sluice/etcd ${fmtRatio(ratio)}`);
        runs.push({ rep, sluice, etcd, ratio });
      }
      writes.push({ writers: w, runs, median: summarizePairs(w, runs) });
    }
    ctx.log(
      `\nDurable single-op writes (Sluice: Store.commit kv.set, fsync always; etcd: put), ` +
        `median of ${c.repeat} paired run${c.repeat > 1 ? "s" : ""}\n`,
    );
    ctx.log(writeTable(writes));
  }

  const atTarget = writes.find((r) => r.writers === TARGET_WRITERS)?.median;
  const target =
    atTarget === undefined || !Number.isFinite(atTarget.ratio)
      ? undefined
      : {
          writers: TARGET_WRITERS,
          required: TARGET_RATIO,
          ratio: atTarget.ratio,
          ratioMin: atTarget.ratioMin,
          ratioMax: atTarget.ratioMax,
          met: atTarget.ratio >= TARGET_RATIO,
          /** The ratio Sluice would reach if nothing but its fsyncs took time. */
          fsyncBoundRatio: atTarget.fsyncBoundOpsPerSec / atTarget.etcdOpsPerSec,
        };
  if (target && atTarget) {
    ctx.log(
      `\ntarget: Sluice >= ${TARGET_RATIO}x etcd at ${TARGET_WRITERS} writers: ` +
        `${fmtRatio(target.ratio)} (range ${fmtRatio(target.ratioMin)}–${fmtRatio(target.ratioMax)}) -> ` +
        `${target.met ? "MET" : "MISSED"}`,
    );
    ctx.log(
      `fsync bound at ${TARGET_WRITERS} writers: ${TARGET_WRITERS} commits per fsync of ${fmtMs(atTarget.fsyncMeanMs)} ` +
        `= ${fmtInt(atTarget.fsyncBoundOpsPerSec)} commits/s if all else were free (${fmtRatio(target.fsyncBoundRatio)} etcd)`,
    );
  }

  let lookup: LookupRow[] | undefined;
  if (has("lookup")) {
    lookup = await runLookup(ctx, c);
    ctx.log("\nService lookup: queries.serviceInstances(root, name), fully iterated (median of rounds)\n");
    ctx.log(lookupTable(lookup));
    const first = lookup[0];
    const last = lookup.at(-1);
    if (first && last && last !== first) {
      ctx.log(
        `\nlookup scaling ${fmtInt(last.services)}/${fmtInt(first.services)}: ${fmtRatio(last.probeNs / first.probeNs)} (~1x expected)`,
      );
    }
  }
  if (sink < 0) ctx.log(String(sink));

  return {
    config: { ...c, durationMs: c.commits === undefined ? c.durationMs : undefined },
    writes,
    target,
    lookup,
  };
}

export const suite: Suite = {
  flags: {
    duration: { type: "string", description: "measured seconds per write run", default: "5" },
    warmup: { type: "string", description: "warm-up seconds before each measured run", default: "1" },
    commits: { type: "string", description: "measure this many commits per run instead of --duration" },
    writers: { type: "string", description: "concurrent async writers, comma-separated", default: "1,16,64" },
    repeat: {
      type: "string",
      description: "paired Sluice+etcd runs per writer count (medians reported)",
      default: "3",
    },
    keys: { type: "string", description: "distinct keys the writers cycle through", default: "10000" },
    "value-bytes": { type: "string", description: "size of each written value", default: "128" },
    only: {
      type: "string",
      description: `parts to run, some of ${PARTS.join(",")}`,
      default: PARTS.join(","),
    },
    "lookup-sizes": {
      type: "string",
      description: "catalog sizes in services",
      default: "1000,10000,100000",
    },
    "lookup-iters": { type: "string", description: "lookups per size per round", default: "20000" },
    "lookup-rounds": { type: "string", description: "measured rounds (median reported)", default: "5" },
  },
  run,
};
