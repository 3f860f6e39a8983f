/**
 * Suite `edge`: the JetStream bridge and edge replicas on one machine — one writer, two edges
 * and a nats-server, with subscribers spread over the three servers.
 *
 *   npm run bench -- edge [--commits 20000] [--subscribers 100] [--rate 200] [--duration 10]
 *
 * Steps, in one run:
 * 1. bridge throughput: a writer (forked `SluiceServer`, `lib/edge-server-child.ts`, durable
 *    store in the run's temp directory, fsync `batch` by default) is started with `--nats`
 *    pointing at a nats-server that is NOT running yet; `--commits` KV puts are made through
 *    gRPC (each commit = 1 log message + 1 KV event message on the feed), so they all wait in
 *    the bridge's outbox. Then nats-server starts (`lib/nats.ts`: Debian's package, `-js` on a
 *    free loopback port, store in the run's temp directory) and the time until the bridge's
 *    published index reaches the store's index is measured in the writer (polled every 2 ms):
 *    commits/s and messages/s, over the publishing phase (bridge established → all
 *    acknowledged) and end to end (nats-server accepting clients → all acknowledged).
 * 2. JetStream's own publish rate, same nats-server, same `nats` npm client, in this process:
 *    the last log message and its event message of the writer's stream are copied (same
 *    subjects under another prefix, same bytes, same headers) and published in pairs to a fresh
 *    stream of the bridge's configuration, pipelined with the bridge's window (256 in flight):
 *    with an expected-last-sequence condition per message like the bridge, plain, and with
 *    the condition on a connection with `noAsyncTraces` (no stack captured per publish), in
 *    `--raw-rounds` rounds. messages/s (medians); the bridge's rate is reported as a ratio to
 *    the first (same client, same options, same messages, same condition, same window).
 *    With `--cpu-prof <dir>` the writer is profiled (V8 sampling profiler through the
 *    inspector) during the bridge step, and the profile is summarized.
 * 3. edge catch-up: two edges (the same child with `edge: true`) are started one after the
 *    other; each loads the newest snapshot from the object store and replays the log after it
 *    (`--snapshot-every` is larger than `--commits` by default, so the snapshot is the empty
 *    state the bridge stored when it made the stream and every commit is replayed). Time of
 *    `SluiceServer.start` in the edge (it resolves after the catch-up): commits replayed / s.
 * 4. latency: writer and both edges running; `--subscribers` KV subscriptions on each server
 *    (one subscriber process per server, `lib/edge-client.ts`) over `--keys` keys; this process
 *    puts `--rate` puts/s to the writer (open loop, never two puts of one key in flight) for
 *    `--duration` s after `--warmup` s; each value carries its send time (CLOCK_MONOTONIC ns)
 *    and a per-key sequence number, so the subscriber processes record put-to-receive latency
 *    and check that every subscriber got every put of its key once and in order; they also
 *    keep each event's index and arrival time, which against the writer's commit times (its
 *    `store.onCommit` hook, same clock) give commit-to-receive latency. Also the replication
 *    delay (writer commit → edge apply, from both processes' commit hooks) and the CPU of every
 *    process in the window.
 */
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import {
  connect,
  DiscardPolicy,
  headers,
  type JetStreamManager,
  type NatsConnection,
  nanos,
  RetentionPolicy,
  StorageType,
} from "nats";
import type { KVClient } from "../src/generated/sluice/v1/KV.js";
import { sluiceV1 } from "../src/proto/index.js";
import { Helper } from "./lib/child.js";
import { processCpuSeconds } from "./lib/cpu.js";
import type { EdgeCheck, EdgeOpenRequest, EdgeWindow } from "./lib/edge-client.js";
import type { BridgeState, BridgeWatch, CommitTimes, LogNote, ServerReady } from "./lib/edge-server-child.js";
import { choiceListFlag, type FlagValues, numberFlag } from "./lib/flags.js";
import { Histogram } from "./lib/histogram.js";
import { NatsServer } from "./lib/nats.js";
import { describeSource, sourceState } from "./lib/source.js";
import {
  fmtFixed,
  fmtInt,
  fmtMs,
  fmtRatio,
  type LatencySummary,
  median,
  Samples,
  summarize,
  table,
} from "./lib/stats.js";
import type { Suite, SuiteContext } from "./lib/suite.js";

const SERVER_MODULE = fileURLToPath(new URL("./lib/edge-server-child.ts", import.meta.url));
const CLIENT_MODULE = fileURLToPath(new URL("./lib/edge-client.ts", import.meta.url));

/** The bridge's publish window (`BridgeOptions.window` default; not a server setting). */
const BRIDGE_WINDOW = 256;
/** The bridge's per-publish timeout. */
const PUBLISH_TIMEOUT_MS = 5000;
const STREAM = "SLUICE";
const PREFIX = "sluice";
const FSYNC = ["always", "batch", "never"] as const;
type Fsync = (typeof FSYNC)[number];

interface Config {
  readonly commits: number;
  readonly fillWriters: number;
  readonly fillKeys: number;
  readonly valueBytes: number;
  readonly fsync: Fsync;
  readonly snapshotEvery: number;
  /** Messages per raw JetStream test; 0: as many as the bridge published. */
  readonly rawMessages: number;
  readonly rawRounds: number;
  readonly edges: number;
  readonly subscribers: number;
  readonly keys: number;
  readonly channels: number;
  readonly rate: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly drainTimeoutMs: number;
  readonly cpuProf: string | undefined;
}

function config(flags: FlagValues): Config {
  const fsync = choiceListFlag(flags, "fsync", FSYNC)!;
  const raw = String(flags["raw-messages"] ?? "auto");
  const cpuProf = flags["cpu-prof"];
  return {
    commits: numberFlag(flags, "commits", { min: 1, integer: true })!,
    fillWriters: numberFlag(flags, "fill-writers", { min: 1, integer: true })!,
    fillKeys: numberFlag(flags, "fill-keys", { min: 1, integer: true })!,
    valueBytes: numberFlag(flags, "value-bytes", { min: 12, integer: true })!,
    fsync: fsync[fsync.length - 1]!,
    snapshotEvery: numberFlag(flags, "snapshot-every", { min: 1, integer: true })!,
    rawMessages: raw === "auto" ? 0 : numberFlag(flags, "raw-messages", { min: 2, integer: true })!,
    rawRounds: numberFlag(flags, "raw-rounds", { min: 1, integer: true })!,
    edges: numberFlag(flags, "edges", { min: 1, integer: true })!,
    subscribers: numberFlag(flags, "subscribers", { min: 1, integer: true })!,
    keys: numberFlag(flags, "keys", { min: 1, integer: true })!,
    channels: numberFlag(flags, "channels", { min: 1, integer: true })!,
    rate: numberFlag(flags, "rate", { min: 1 })!,
    warmupMs: numberFlag(flags, "warmup", { min: 0 })! * 1000,
    durationMs: numberFlag(flags, "duration", { min: 0.5 })! * 1000,
    drainTimeoutMs: numberFlag(flags, "drain-timeout", { min: 1 })! * 1000,
    cpuProf: typeof cpuProf === "string" && cpuProf !== "" ? cpuProf : undefined,
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const hrNs = () => Number(process.hrtime.bigint());
const secsBetween = (fromNs: number, toNs: number) => (toNs - fromNs) / 1e9;

/** A value of `bytes` bytes: send time (CLOCK_MONOTONIC ns, LE) in 0..7, `seq` (uint32 LE) in 8..11. */
function stampedValue(bytes: number, seq: number): Buffer {
  const buf = Buffer.alloc(bytes, 0x61);
  const ns = hrNs();
  buf.writeUInt32LE(ns % 4294967296, 0);
  buf.writeUInt32LE(Math.floor(ns / 4294967296), 4);
  buf.writeUInt32LE(seq, 8);
  return buf;
}

function kvPut(kv: KVClient, key: string, value: Buffer): Promise<number> {
  return new Promise((resolve, reject) =>
    kv.Put({ key, value }, (err, res) => (err ? reject(err) : resolve(Number(res!.index)))),
  );
}

/** A forked writer or edge and what it said when ready. */
interface Node {
  readonly name: string;
  readonly helper: Helper;
  readonly ready: ServerReady;
  /** Fork to ready as seen from here (node and tsx start-up included), ms. */
  readonly forkToReadyMs: number;
}

/**
 * Forks a server child and waits for `ready`, printing a progress line every second (with its
 * latest note: the edge's replay progress).
 */
async function startNode(
  ctx: SuiteContext,
  name: string,
  overrides: Record<string, unknown>,
  timeout: { ms: number; hint: string } = { ms: 120_000, hint: "" },
): Promise<Node> {
  const t0 = performance.now();
  const helper = Helper.fork(name, SERVER_MODULE, [], [JSON.stringify(overrides)]);
  ctx.defer(() => helper.stop());
  let done = false;
  const ticker = setInterval(() => {
    if (done) return;
    void helper
      .call<LogNote[]>("notes")
      .then((ns) => {
        const last = ns[ns.length - 1];
        const f = last?.fields ?? {};
        const detail =
          last?.msg === "replaying the writer's log from JetStream"
            ? `: replaying, index ${fmtInt(Number(f.index))} of ${fmtInt(Number(f.target))}`
            : last
              ? `: ${last.msg}`
              : "";
        if (!done)
          ctx.progress(`${name} starting (${((performance.now() - t0) / 1000).toFixed(0)} s)${detail}`);
      })
      .catch(() => {});
  }, 1000);
  let timer: NodeJS.Timeout | undefined;
  try {
    const ready = await Promise.race([
      helper.call<ServerReady>("ready"),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${name} was not ready after ${timeout.ms / 1000} s${timeout.hint}`)),
          timeout.ms,
        );
      }),
    ]);
    return { name, helper, ready, forkToReadyMs: performance.now() - t0 };
  } finally {
    clearTimeout(timer);
    done = true;
    clearInterval(ticker);
  }
}

// ---------------------------------------------------------------------------------------------
// Step 1: bridge throughput

interface BridgeResult {
  readonly fsync: Fsync;
  readonly commits: number;
  readonly fillMs: number;
  /** Puts/s while NATS was down (writes go on; commits wait in the outbox). */
  readonly fillPerSec: number;
  /** Stream messages after the catch-up, and the stored bytes. */
  readonly messages: number;
  readonly streamBytes: number;
  readonly messagesPerCommit: number;
  /** nats-server accepting clients → bridge established (connect, stream made, tail read, snapshot stored). */
  readonly establishMs: number;
  /** Established → every commit acknowledged: the publishing phase. */
  readonly publishMs: number;
  /** nats-server accepting clients → every commit acknowledged. */
  readonly totalMs: number;
  readonly commitsPerSec: number;
  readonly messagesPerSec: number;
  readonly commitsPerSecTotal: number;
  /** CPU of the writer and of nats-server during the catch-up, in cores. */
  readonly writerCores: number;
  readonly natsCores: number;
  readonly snapshotsStored: number;
  readonly profile?: ProfileSummary;
}

interface SampleMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: readonly (readonly [string, string])[];
}

async function fill(ctx: SuiteContext, c: Config, kv: KVClient): Promise<number> {
  let issued = 0;
  let acked = 0;
  const t0 = performance.now();
  const ticker = setInterval(
    () => ctx.progress(`filling: ${fmtInt(acked)} of ${fmtInt(c.commits)} puts acknowledged (NATS down)`),
    1000,
  );
  try {
    await Promise.all(
      Array.from({ length: c.fillWriters }, async () => {
        while (issued < c.commits) {
          ctx.signal.throwIfAborted();
          const i = issued++;
          await kvPut(
            kv,
            `fill/${i % c.fillKeys}`,
            stampedValue(c.valueBytes, Math.floor(i / c.fillKeys) + 1),
          );
          acked++;
        }
      }),
    );
  } finally {
    clearInterval(ticker);
  }
  return performance.now() - t0;
}

/** Reads the last log message of the feed and the event message after it. */
async function sampleMessages(jsm: JetStreamManager): Promise<{ log: SampleMessage; event: SampleMessage }> {
  const copy = (m: { subject: string; data: Uint8Array; header: Iterable<[string, string[]]> }) => ({
    subject: m.subject,
    data: Uint8Array.from(m.data),
    headers: [...m.header]
      .filter(([k]) => !k.startsWith("Nats-"))
      .flatMap(([k, vs]) => vs.map((v) => [k, v] as const)),
  });
  const log = await jsm.streams.getMessage(STREAM, { last_by_subj: `${PREFIX}.log` });
  let event = log;
  try {
    const next = await jsm.streams.getMessage(STREAM, { seq: log.seq + 1 });
    if (next.subject.startsWith(`${PREFIX}.events.`)) event = next;
  } catch {
    // The last commit had no event: publish log messages only.
  }
  return { log: copy(log), event: copy(event) };
}

async function bridgeStep(
  ctx: SuiteContext,
  c: Config,
  nats: NatsServer,
): Promise<{ writer: Node; kv: KVClient; result: BridgeResult; nc: NatsConnection; jsm: JetStreamManager }> {
  const dataDir = ctx.tempDir("writer");
  ctx.log(
    `[bridge] writer: store in ${dataDir} (fsync ${c.fsync}), --nats ${nats.url} (not running yet), ` +
      `stream ${STREAM}, snapshot every ${fmtInt(c.snapshotEvery)} commits`,
  );
  const writer = await startNode(
    ctx,
    "writer",
    {
      dataDir,
      dev: false,
      fsync: c.fsync,
      nats: nats.url,
      natsStream: STREAM,
      natsPrefix: PREFIX,
      natsSnapshotEvery: c.snapshotEvery,
      shutdownGraceMs: 2000,
    },
    {
      ms: 60_000,
      hint:
        ": a writer started with --nats must start while NATS is down (the bridge waits 2 s, then " +
        "queues commits in its outbox); something in SluiceServer.start is waiting for NATS",
    },
  );
  const address = `127.0.0.1:${writer.ready.grpcPort}`;
  ctx.log(`[bridge] writer pid ${writer.ready.pid} on ${address}, started in ${fmtMs(writer.ready.startMs)}`);
  const kv: KVClient = new sluiceV1.KV(address, grpc.credentials.createInsecure());
  ctx.defer(() => kv.close());

  ctx.log(
    `[bridge] ${fmtInt(c.commits)} KV puts over ${fmtInt(c.fillKeys)} keys (${c.valueBytes}-byte values, ` +
      `${c.fillWriters} in flight) while NATS is down`,
  );
  const fillMs = await fill(ctx, c, kv);
  const before = await writer.helper.call<BridgeState>("bridge");
  ctx.log(
    `[bridge] ${fmtInt(c.commits)} puts in ${fmtMs(fillMs)} (${fmtInt((c.commits * 1000) / fillMs)}/s): ` +
      `store index ${fmtInt(before.index)}, published ${fmtInt(before.publishedIndex)}, lag ${fmtInt(before.lag)} commits`,
  );
  const target = before.index;
  const notesFrom = (await writer.helper.call<LogNote[]>("notes")).length;
  await writer.helper.call("watchBridge", target);
  if (c.cpuProf) await writer.helper.call("profileStart");
  const w0 = processCpuSeconds(writer.ready.pid);
  const startNs = hrNs();
  await nats.start();
  const upNs = hrNs();
  const natsPid = nats.pid!;
  ctx.log(
    `[bridge] nats-server ${nats.version} pid ${natsPid} up in ${fmtMs(secsBetween(startNs, upNs) * 1000)}`,
  );
  let watch: BridgeWatch;
  const deadline = performance.now() + 180_000;
  for (;;) {
    ctx.signal.throwIfAborted();
    watch = await writer.helper.call<BridgeWatch>("waitBridge", 1000);
    if (watch.reached) break;
    if (performance.now() > deadline)
      throw new Error(`the bridge did not catch up in 180 s: ${JSON.stringify(watch)}`);
    ctx.progress(`bridge: published index ${fmtInt(watch.publishedIndex)} of ${fmtInt(target)}`);
  }
  const writerCpu = processCpuSeconds(writer.ready.pid) - w0;
  const natsCpu = processCpuSeconds(natsPid);
  let profile: ProfileSummary | undefined;
  if (c.cpuProf) {
    const path = join(c.cpuProf, `writer-bridge-${Date.now()}.cpuprofile`);
    await writer.helper.call("profileStop", path);
    profile = summarizeProfile(path);
  }
  const notes = (await writer.helper.call<LogNote[]>("notes")).slice(notesFrom);
  const established = notes.find((n) => n.msg === "JetStream bridge established");
  const snapshotsStored = notes.filter((n) => n.msg === "stored a state snapshot in JetStream").length;
  const establishedNs = established?.ns ?? watch.firstAckNs;

  const nc = await connect({ servers: nats.url, name: "sluice-bench-edge" });
  ctx.defer(() => nc.close());
  const jsm = await nc.jetstreamManager();
  const info = await jsm.streams.info(STREAM);
  const commits = target - watch.fromIndex;
  const publishS = secsBetween(establishedNs, watch.doneNs);
  const totalS = secsBetween(upNs, watch.doneNs);
  const result: BridgeResult = {
    fsync: c.fsync,
    commits,
    fillMs,
    fillPerSec: (c.commits * 1000) / fillMs,
    messages: info.state.messages,
    streamBytes: info.state.bytes,
    messagesPerCommit: info.state.messages / commits,
    establishMs: secsBetween(upNs, establishedNs) * 1000,
    publishMs: publishS * 1000,
    totalMs: totalS * 1000,
    commitsPerSec: commits / publishS,
    messagesPerSec: info.state.messages / publishS,
    commitsPerSecTotal: commits / totalS,
    writerCores: writerCpu / secsBetween(startNs, watch.doneNs),
    natsCores: natsCpu / secsBetween(startNs, watch.doneNs),
    snapshotsStored,
    ...(profile ? { profile } : {}),
  };
  ctx.log(
    `[bridge] caught up: ${fmtInt(commits)} commits = ${fmtInt(result.messages)} messages ` +
      `(${fmtFixed(result.messagesPerCommit, 2)}/commit, ${fmtInt(result.streamBytes / result.messages)} B stored each) ` +
      `in ${fmtMs(result.publishMs)} after the bridge was established (${fmtMs(result.establishMs)} after nats-server came up): ` +
      `${fmtInt(result.commitsPerSec)} commits/s = ${fmtInt(result.messagesPerSec)} messages/s ` +
      `(end to end ${fmtInt(result.commitsPerSecTotal)} commits/s); CPU writer ${fmtFixed(result.writerCores, 2)} + ` +
      `nats-server ${fmtFixed(result.natsCores, 2)} cores`,
  );
  return { writer, kv, result, nc, jsm };
}

// ---------------------------------------------------------------------------------------------
// Step 2: JetStream's own publish rate

/**
 * The JetStream publish tests: `conditional` publishes like the bridge (expected-last-sequence
 * on every message, default client options); `plain` without the condition; `fast` with the
 * condition on a connection made with `noAsyncTraces: true` (the nats client then does not
 * capture two stack traces per publish: what the bridge could gain from that option).
 */
const VARIANTS = ["conditional", "plain", "fast"] as const;
type Variant = (typeof VARIANTS)[number];
const VARIANT_LABEL: Record<Variant, string> = {
  conditional: "expected-last-sequence",
  plain: "no condition",
  fast: "expected-last-seq, noAsyncTraces",
};

interface RawResult {
  readonly variant: Variant;
  readonly messages: number;
  readonly ms: number;
  readonly messagesPerSec: number;
  /** What was published, in pairs: the bridge's last log message and its event message. */
  readonly logBytes: number;
  readonly eventBytes: number;
  readonly headers: number;
  readonly natsCores: number;
  readonly clientCores: number;
}

/**
 * Publishes `count` messages (alternately `log` and `event`, re-prefixed) to a fresh stream of
 * the bridge's configuration through `nc`, `BRIDGE_WINDOW` in flight, with or without an
 * expected-last-sequence condition on each, and deletes the stream afterwards.
 */
async function rawPublish(
  nc: NatsConnection,
  jsm: JetStreamManager,
  nats: NatsServer,
  sample: { log: SampleMessage; event: SampleMessage },
  count: number,
  variant: Variant,
): Promise<RawResult> {
  const conditional = variant !== "plain";
  const name = `RAW_${variant.toUpperCase()}`;
  const prefix = `raw${variant}`;
  await jsm.streams.add({
    name,
    subjects: [`${prefix}.log`, `${prefix}.events.>`],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(0),
    max_bytes: -1,
    max_msgs: -1,
  });
  const js = nc.jetstream();
  const msgs = [sample.log, sample.event].map((m) => ({
    subject: prefix + m.subject.slice(PREFIX.length),
    data: m.data,
    headers: m.headers,
  }));
  let issued = 0;
  let acked = 0;
  let failure: unknown;
  const n0 = processCpuSeconds(nats.pid!);
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const pump = () => {
      if (failure) return;
      while (issued < count && issued - acked < BRIDGE_WINDOW) {
        const i = issued++;
        const m = msgs[i & 1]!;
        const h = headers();
        for (const [k, v] of m.headers) h.set(k, v);
        js.publish(m.subject, m.data, {
          headers: h,
          timeout: PUBLISH_TIMEOUT_MS,
          ...(conditional ? { expect: { lastSequence: i, streamName: name } } : {}),
        }).then(
          () => {
            acked++;
            if (acked === count) resolve();
            else pump();
          },
          (err) => {
            failure ??= err;
            reject(err);
          },
        );
      }
    };
    pump();
  });
  const ms = performance.now() - t0;
  const u = process.cpuUsage(u0);
  const natsCpu = processCpuSeconds(nats.pid!) - n0;
  const info = await jsm.streams.info(name);
  if (info.state.messages !== count)
    throw new Error(`${name} holds ${info.state.messages} of ${count} messages`);
  await jsm.streams.delete(name);
  return {
    variant,
    messages: count,
    ms,
    messagesPerSec: (count * 1000) / ms,
    logBytes: sample.log.data.length,
    eventBytes: sample.event.data.length,
    headers: sample.log.headers.length,
    natsCores: natsCpu / (ms / 1000),
    clientCores: (u.user + u.system) / 1e6 / (ms / 1000),
  };
}

// ---------------------------------------------------------------------------------------------
// Step 3: edge catch-up

interface CatchUpResult {
  readonly edge: string;
  readonly pid: number;
  readonly snapshotIndex: number;
  readonly index: number;
  readonly replayed: number;
  /** `SluiceServer.start` in the edge: snapshot load, log replay, listeners. */
  readonly startMs: number;
  readonly commitsPerSec: number;
  /** The replica's own figure for the replay (follow() called → caught up), from its log. */
  readonly replayCommitsPerSec?: number;
  /** Snapshot load (decode) time, from its log. */
  readonly snapshotLoadMs?: number;
  readonly snapshotBytes?: number;
  /** Fork to ready, as seen from the harness (node + tsx start-up included). */
  readonly forkToReadyMs: number;
  readonly cores: number;
  readonly natsCores: number;
}

async function startEdge(
  ctx: SuiteContext,
  nats: NatsServer,
  i: number,
): Promise<{ node: Node; r: CatchUpResult }> {
  const name = `edge-${i}`;
  const n0 = processCpuSeconds(nats.pid!);
  const t0 = performance.now();
  const node = await startNode(ctx, name, {
    edge: true,
    nats: nats.url,
    natsStream: STREAM,
    natsPrefix: PREFIX,
    shutdownGraceMs: 2000,
  });
  const wall = (performance.now() - t0) / 1000;
  const natsCpu = processCpuSeconds(nats.pid!) - n0;
  const { ready } = node;
  const notes = await node.helper.call<LogNote[]>("notes");
  const caught = notes.find((n) => n.msg === "edge caught up with the writer's log");
  const loaded = notes.find((n) => n.msg === "loaded the writer's snapshot from JetStream");
  const replayed = ready.index - (ready.snapshotIndex ?? 0);
  const r: CatchUpResult = {
    edge: name,
    pid: ready.pid,
    snapshotIndex: ready.snapshotIndex ?? 0,
    index: ready.index,
    replayed,
    startMs: ready.startMs,
    commitsPerSec: (replayed * 1000) / ready.startMs,
    ...(caught ? { replayCommitsPerSec: Number(caught.fields.commitsPerSec) } : {}),
    ...(loaded
      ? { snapshotLoadMs: Number(loaded.fields.ms), snapshotBytes: Number(loaded.fields.bytes) }
      : {}),
    forkToReadyMs: node.forkToReadyMs,
    cores: processCpuSeconds(ready.pid) / wall,
    natsCores: natsCpu / wall,
  };
  ctx.log(
    `[catch-up] ${name} (pid ${r.pid}): snapshot at index ${fmtInt(r.snapshotIndex)}` +
      (r.snapshotIndex === 0
        ? " (the empty state)"
        : r.snapshotBytes !== undefined
          ? ` (${fmtInt(r.snapshotBytes)} B, decoded in ${fmtMs(r.snapshotLoadMs!)})`
          : "") +
      `, replayed ${fmtInt(r.replayed)} commits to index ${fmtInt(r.index)}: start → ready ${fmtMs(r.startMs)} = ` +
      `${fmtInt(r.commitsPerSec)} commits/s` +
      (r.replayCommitsPerSec !== undefined ? ` (replay alone ${fmtInt(r.replayCommitsPerSec)}/s)` : "") +
      `; fork → ready ${fmtMs(r.forkToReadyMs)}`,
  );
  return { node, r };
}

// ---------------------------------------------------------------------------------------------
// Step 4: latency with subscribers on the writer and the edges

interface GroupLatency {
  /** `writer`, or `edges` (all edges together), or an edge's name. */
  readonly group: string;
  readonly subscribers: number;
  readonly events: number;
  readonly eventsPerSec: number;
  readonly eventsPerMessage: number;
  /** Put issued (send time in the value) → event received. */
  readonly putToReceiveMs: LatencySummary;
  /** Writer commit (its commit hook) → event received. */
  readonly commitToReceiveMs: LatencySummary;
}

interface LatencyResult {
  readonly offeredPerSec: number;
  readonly commits: number;
  readonly commitsPerSec: number;
  readonly keys: number;
  readonly subscribersPerServer: number;
  readonly openMs: number;
  readonly groups: readonly GroupLatency[];
  /** Put issued → acknowledged by the writer, ms. */
  readonly putAckMs: LatencySummary;
  /** Writer commit → edge apply, per edge, ms (commits of the whole phase). */
  readonly replicationMs: readonly { edge: string; delay: LatencySummary }[];
  /** Largest bridge lag (commits) and edge lag (commits) sampled every 250 ms. */
  readonly maxBridgeLag: number;
  readonly maxEdgeLag: number;
  readonly drainMs: number;
  readonly checks: readonly (EdgeCheck & { server: string })[];
  readonly cores: Readonly<Record<string, number>>;
}

/** Puts at `rate`/s without waiting (never two puts of one key in flight) for warm-up + duration. */
async function pacedWriter(
  ctx: SuiteContext,
  c: Config,
  put: (k: number) => Promise<void>,
  onWindow: () => Promise<void>,
  onWindowEnd: () => Promise<void>,
): Promise<{ commits: number; ms: number }> {
  const busy = new Uint8Array(c.keys);
  let next = 0;
  let issued = 0;
  let acked = 0;
  let failure: unknown;
  const pending = new Set<Promise<void>>();
  const t0 = performance.now();
  let wStart = Number.NaN;
  let wAcked0 = 0;
  let wEnd = Number.NaN;
  let wAcked1 = 0;
  let windowing: Promise<void> | undefined;
  const ticker = setInterval(
    () => ctx.progress(`latency: ${fmtInt(acked)} puts acknowledged (${fmtInt(c.rate)}/s offered)`),
    1000,
  );
  try {
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const now = performance.now();
        if (failure || ctx.signal.aborted || now - t0 >= c.warmupMs + c.durationMs) {
          clearInterval(tick);
          resolve();
          return;
        }
        if (windowing === undefined && now - t0 >= c.warmupMs) {
          windowing = onWindow().then(() => {
            wStart = performance.now();
            wAcked0 = acked;
          });
        }
        const due = Math.floor(((now - t0) / 1000) * c.rate);
        while (issued < due) {
          let k = -1;
          for (let j = 0; j < c.keys; j++) {
            const cand = (next + j) % c.keys;
            if (!busy[cand]) {
              k = cand;
              break;
            }
          }
          if (k < 0) break;
          next = (k + 1) % c.keys;
          busy[k] = 1;
          issued++;
          const p = put(k).then(
            () => {
              busy[k] = 0;
              acked++;
            },
            (err) => {
              busy[k] = 0;
              failure ??= err;
            },
          );
          pending.add(p);
          void p.finally(() => pending.delete(p));
        }
      }, 2);
    });
    await windowing;
    wEnd = performance.now();
    wAcked1 = acked;
    await onWindowEnd();
    await Promise.all(pending);
  } finally {
    clearInterval(ticker);
  }
  ctx.signal.throwIfAborted();
  if (failure) throw failure;
  return { commits: wAcked1 - wAcked0, ms: wEnd - wStart };
}

function delays(writer: CommitTimes, edge: CommitTimes): LatencySummary {
  const at = new Map<number, number>();
  for (let i = 0; i < writer.indexes.length; i++) at.set(writer.indexes[i]!, writer.ns[i]!);
  const out = new Samples();
  for (let i = 0; i < edge.indexes.length; i++) {
    const w = at.get(edge.indexes[i]!);
    if (w !== undefined) out.push((edge.ns[i]! - w) / 1e6);
  }
  return summarize(out.view());
}

async function latencyStep(
  ctx: SuiteContext,
  c: Config,
  nats: NatsServer,
  writer: Node,
  kv: KVClient,
  edges: readonly Node[],
): Promise<LatencyResult> {
  const servers = [writer, ...edges];
  const keyName = (k: number) => `lat/${k}`;
  const keysOf = (n: number) => Array.from({ length: n }, (_, i) => keyName(i % c.keys));
  const subsOfKey = c.subscribers / c.keys;
  ctx.log(
    `[latency] ${fmtInt(c.subscribers)} subscribers on each of ${servers.length} servers (${servers.map((s) => s.name).join(", ")}), ` +
      `${fmtInt(c.keys)} keys (~${fmtFixed(subsOfKey, 1)} subscribers per key per server), one subscriber process per ` +
      `server × ${c.channels} connections; ${fmtInt(c.rate)} puts/s to the writer, warm-up ${c.warmupMs / 1000} s, ` +
      `measured ${c.durationMs / 1000} s`,
  );
  const clients = servers.map((s) => {
    const h = Helper.fork(`subscribers of ${s.name}`, CLIENT_MODULE);
    ctx.defer(() => h.stop());
    return h;
  });
  const o0 = performance.now();
  await Promise.all(
    clients.map((h, i) =>
      h.call("open", {
        address: `127.0.0.1:${servers[i]!.ready.grpcPort}`,
        keys: keysOf(c.subscribers),
        channels: c.channels,
      } satisfies EdgeOpenRequest),
    ),
  );
  const openMs = performance.now() - o0;
  ctx.log(`[latency] ${fmtInt(c.subscribers * servers.length)} subscriptions open in ${fmtMs(openMs)}`);
  await sleep(500);

  const fromIndex = (await writer.helper.call<number>("index")) + 1;
  const seqs = new Uint32Array(c.keys);
  const putMs = new Samples();
  let timing = false;
  const put = async (k: number) => {
    const seq = ++seqs[k]!;
    const p0 = performance.now();
    await kvPut(kv, keyName(k), stampedValue(c.valueBytes, seq));
    if (timing) putMs.push(performance.now() - p0);
  };
  const pids: Record<string, number> = {
    writer: writer.ready.pid,
    ...Object.fromEntries(edges.map((e) => [e.name, e.ready.pid])),
    "nats-server": nats.pid!,
    ...Object.fromEntries(servers.map((s, i) => [`subscribers of ${s.name}`, clients[i]!.pid])),
  };
  let cpu0: Record<string, number> = {};
  let own0 = process.cpuUsage();
  let cpuT0 = 0;
  let cores: Record<string, number> = {};
  let windows: EdgeWindow[] = [];
  let maxBridgeLag = 0;
  let maxEdgeLag = 0;
  const lagTimer = setInterval(() => {
    void writer.helper
      .call<BridgeState>("bridge")
      .then((b) => {
        maxBridgeLag = Math.max(maxBridgeLag, b.lag);
      })
      .catch(() => {});
    for (const e of edges) {
      void e.helper
        .call<{ commits: number }>("replica")
        .then((l) => {
          maxEdgeLag = Math.max(maxEdgeLag, l.commits);
        })
        .catch(() => {});
    }
  }, 250);
  let run: { commits: number; ms: number };
  try {
    run = await pacedWriter(
      ctx,
      c,
      put,
      async () => {
        await Promise.all(clients.map((h) => h.call("reset")));
        cpu0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuSeconds(pid)]));
        own0 = process.cpuUsage();
        cpuT0 = performance.now();
        putMs.clear();
        timing = true;
      },
      async () => {
        timing = false;
        windows = await Promise.all(clients.map((h) => h.call<EdgeWindow>("collect")));
        const secs = (performance.now() - cpuT0) / 1000;
        cores = Object.fromEntries(
          Object.entries(pids).map(([k, pid]) => [k, (processCpuSeconds(pid) - cpu0[k]!) / secs]),
        );
        const own = process.cpuUsage(own0);
        cores["bench (puts)"] = (own.user + own.system) / 1e6 / secs;
      },
    );
  } finally {
    clearInterval(lagTimer);
  }

  // Drain: every subscriber must get its key's last sequence number.
  const lastSeq: Record<string, number> = {};
  for (let k = 0; k < c.keys; k++) lastSeq[keyName(k)] = seqs[k]!;
  const d0 = performance.now();
  let drainMs = Number.NaN;
  for (;;) {
    const done = await Promise.all(clients.map((h) => h.call<number>("complete", lastSeq)));
    if (done.every((n) => n === c.subscribers)) {
      drainMs = performance.now() - d0;
      break;
    }
    if (performance.now() - d0 > c.drainTimeoutMs) {
      ctx.log(`[latency] drain timed out after ${fmtMs(c.drainTimeoutMs)}: complete ${done.join(", ")}`);
      break;
    }
    await sleep(20);
  }
  const checks = await Promise.all(
    clients.map(async (h, i) => ({
      server: servers[i]!.name,
      ...(await h.call<EdgeCheck>("check", lastSeq)),
    })),
  );

  const writerTimes = await writer.helper.call<CommitTimes>("commitTimes", fromIndex);
  const committedNs = new Map<number, number>();
  for (let i = 0; i < writerTimes.indexes.length; i++)
    committedNs.set(writerTimes.indexes[i]!, writerTimes.ns[i]!);
  const group = (name: string, ws: readonly EdgeWindow[]): GroupLatency => {
    const hist = new Histogram();
    const fromCommit = new Histogram();
    let events = 0;
    let messages = 0;
    let perSec = 0;
    for (const w of ws) {
      hist.merge(w.latency);
      for (let i = 0; i < w.indexes.length; i++) {
        const c0 = committedNs.get(w.indexes[i]!);
        if (c0 !== undefined) fromCommit.record((w.receivedNs[i]! - c0) / 1000);
      }
      events += w.events;
      messages += w.messages;
      perSec += (w.events * 1000) / w.windowMs;
    }
    return {
      group: name,
      subscribers: c.subscribers * ws.length,
      events,
      eventsPerSec: perSec,
      eventsPerMessage: messages > 0 ? events / messages : Number.NaN,
      putToReceiveMs: hist.summaryMs(),
      commitToReceiveMs: fromCommit.summaryMs(),
    };
  };
  const groups = [
    group("writer", windows.slice(0, 1)),
    group("edges", windows.slice(1)),
    ...edges.map((e, i) => group(e.name, windows.slice(i + 1, i + 2))),
  ];
  const replicationMs = await Promise.all(
    edges.map(async (e) => ({
      edge: e.name,
      delay: delays(writerTimes, await e.helper.call<CommitTimes>("commitTimes", fromIndex)),
    })),
  );
  const result: LatencyResult = {
    offeredPerSec: c.rate,
    commits: run.commits,
    commitsPerSec: (run.commits * 1000) / run.ms,
    keys: c.keys,
    subscribersPerServer: c.subscribers,
    openMs,
    groups,
    putAckMs: summarize(putMs.view()),
    replicationMs,
    maxBridgeLag,
    maxEdgeLag,
    drainMs,
    checks,
    cores,
  };
  for (const g of groups) {
    ctx.log(
      `[latency] ${g.group.padEnd(7)}: ${fmtInt(g.subscribers)} subscribers, ${fmtInt(g.eventsPerSec)} events/s ` +
        `(${fmtFixed(g.eventsPerMessage, 2)}/frame); commit-to-receive p50 ${fmtMs(g.commitToReceiveMs.p50)} ` +
        `p90 ${fmtMs(g.commitToReceiveMs.p90)} p99 ${fmtMs(g.commitToReceiveMs.p99)} max ${fmtMs(g.commitToReceiveMs.max)}; ` +
        `put-to-receive p50 ${fmtMs(g.putToReceiveMs.p50)} p90 ${fmtMs(g.putToReceiveMs.p90)} ` +
        `p99 ${fmtMs(g.putToReceiveMs.p99)} max ${fmtMs(g.putToReceiveMs.max)}`,
    );
  }
  ctx.log(
    `[latency] ${fmtInt(result.commitsPerSec)} puts/s acknowledged (p50 ${fmtMs(result.putAckMs.p50)}, p99 ${fmtMs(result.putAckMs.p99)}); ` +
      replicationMs
        .map(
          (r) =>
            `${r.edge} applies p50 ${fmtMs(r.delay.p50)} p99 ${fmtMs(r.delay.p99)} after the writer's commit`,
        )
        .join("; ") +
      `; largest lag seen: bridge ${fmtInt(maxBridgeLag)}, edge ${fmtInt(maxEdgeLag)} commits; drained in ${fmtMs(drainMs)}`,
  );
  ctx.log(
    `[latency] CPU in the window (cores): ${Object.entries(cores)
      .map(([k, v]) => `${k} ${fmtFixed(v, 2)}`)
      .join(", ")}`,
  );
  for (const ch of checks) {
    const ok = ch.complete === ch.subscribers && ch.missing === 0 && ch.disorder === 0 && ch.errors === 0;
    ctx.log(
      `[latency] ${ch.server}: ${ok ? "every subscriber got every event in order" : "WARNING"} — ` +
        `${fmtInt(ch.complete)}/${fmtInt(ch.subscribers)} complete, ${fmtInt(ch.events)} events, ${fmtInt(ch.missing)} missing, ` +
        `${fmtInt(ch.disorder)} out of order, ${ch.resets} resets, ${ch.errors} errors${ch.firstError ? ` (${ch.firstError})` : ""}`,
    );
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// CPU profile summary

interface ProfileSummary {
  readonly path: string;
  readonly totalMs: number;
  /** Self time by function (name, file:line), largest first. */
  readonly top: readonly { frame: string; selfMs: number; share: number }[];
  /** Self time by where the code lives: Sluice src/, the nats client, other packages, node, GC, idle. */
  readonly byArea: readonly { area: string; selfMs: number; share: number }[];
}

interface CpuProfileNode {
  readonly id: number;
  readonly callFrame: { functionName: string; url: string; lineNumber: number };
}

function areaOf(url: string, fn: string): string {
  if (url === "") return fn.startsWith("(") ? fn : "(native)";
  if (url.includes("/node_modules/nats/")) return "nats client";
  if (url.includes("/node_modules/")) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
    return `package ${m?.[1] ?? "?"}`;
  }
  if (url.startsWith("node:")) return "node internals";
  const m = /\/src\/([^/]+)\//.exec(url);
  if (m) return `src/${m[1]}`;
  return "other";
}

function summarizeProfile(path: string): ProfileSummary {
  const p = JSON.parse(readFileSync(path, "utf8")) as {
    nodes: CpuProfileNode[];
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const frames = new Map<string, number>();
  const areas = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    if (!n) continue;
    total += dt;
    const { functionName, url, lineNumber } = n.callFrame;
    const file = url.replace(/^file:\/\//, "").replace(/^.*?\/(src|bench|node_modules)\//, "$1/");
    const frame = `${functionName || "(anonymous)"} ${file ? `${file}:${lineNumber + 1}` : ""}`.trim();
    frames.set(frame, (frames.get(frame) ?? 0) + dt);
    const area = areaOf(url, functionName);
    areas.set(area, (areas.get(area) ?? 0) + dt);
  }
  const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return {
    path,
    totalMs: total,
    top: sorted(frames)
      .slice(0, 20)
      .map(([frame, selfMs]) => ({ frame, selfMs, share: selfMs / total })),
    byArea: sorted(areas).map(([area, selfMs]) => ({ area, selfMs, share: selfMs / total })),
  };
}

// ---------------------------------------------------------------------------------------------

async function run(ctx: SuiteContext, flags: FlagValues): Promise<unknown> {
  const c = config(flags);
  const source = sourceState();
  ctx.log(describeSource(source));
  ctx.log(
    `edge suite: writer + ${c.edges} edges + nats-server on this machine; ${fmtInt(c.commits)} commits for the bridge ` +
      `and catch-up steps (fsync ${c.fsync}); ${fmtInt(c.subscribers)} subscribers per server at ${fmtInt(c.rate)} puts/s ` +
      `(load ${loadavg()[0]!.toFixed(2)})`,
  );
  const nats = await NatsServer.prepare({
    storeDir: ctx.tempDir("nats"),
    keepData: ctx.keep,
    log: (l) => ctx.log(`[nats] ${l}`),
  });
  ctx.defer(() => nats.destroy());

  // 1. Bridge throughput.
  const { writer, kv, result: bridge, nc, jsm } = await bridgeStep(ctx, c, nats);
  if (bridge.profile) {
    ctx.log(
      `[bridge] writer CPU profile during the catch-up: ${relative(process.cwd(), bridge.profile.path)}`,
    );
    ctx.log(
      `  by area: ${bridge.profile.byArea
        .slice(0, 10)
        .map((a) => `${a.area} ${fmtFixed(a.share * 100, 1)} %`)
        .join(", ")}`,
    );
    for (const f of bridge.profile.top.slice(0, 15))
      ctx.log(`  ${fmtFixed(f.share * 100, 1).padStart(5)} %  ${fmtMs(f.selfMs).padStart(9)}  ${f.frame}`);
  }

  // 2. JetStream's own publish rate with the same client and messages.
  const sample = await sampleMessages(jsm);
  const rawCount = c.rawMessages > 0 ? c.rawMessages : bridge.messages;
  const raw: RawResult[] = [];
  const ncFast = await connect({ servers: nats.url, name: "sluice-bench-edge-fast", noAsyncTraces: true });
  ctx.defer(() => ncFast.close());
  for (let round = 1; round <= c.rawRounds; round++) {
    // Rotate which variant goes first, so that a drift of the machine falls on each.
    const order = VARIANTS.map((_, i) => VARIANTS[(i + round - 1) % VARIANTS.length]!);
    for (const variant of order) {
      ctx.signal.throwIfAborted();
      const what = VARIANT_LABEL[variant];
      ctx.progress(`JetStream publish round ${round}/${c.rawRounds}, ${what}: ${fmtInt(rawCount)} messages`);
      const r = await rawPublish(variant === "fast" ? ncFast : nc, jsm, nats, sample, rawCount, variant);
      raw.push(r);
      ctx.log(
        `[jetstream] round ${round}, ${what.padEnd(33)}: ${fmtInt(r.messages)} messages ` +
          `(pairs of ${r.logBytes} + ${r.eventBytes} B payload, ${r.headers} headers) in ${fmtMs(r.ms)} = ` +
          `${fmtInt(r.messagesPerSec)} messages/s; CPU client ${fmtFixed(r.clientCores, 2)} + nats-server ${fmtFixed(r.natsCores, 2)} cores`,
      );
    }
  }
  const rawOf = (variant: Variant) => {
    const rs = raw.filter((r) => r.variant === variant).map((r) => r.messagesPerSec);
    return { median: median(rs), min: Math.min(...rs), max: Math.max(...rs) };
  };
  const rawCond = rawOf("conditional");
  const rawPlain = rawOf("plain");
  const rawFast = rawOf("fast");
  const bridgeRatio = bridge.messagesPerSec / rawCond.median;
  ctx.log(
    `[bridge] bridge ${fmtInt(bridge.messagesPerSec)} messages/s vs JetStream ${fmtInt(rawCond.median)} messages/s ` +
      `(median of ${c.rawRounds}) with the same client, messages, condition and window: ${fmtRatio(bridgeRatio)}`,
  );

  // 3. Edge catch-up.
  const edges: Node[] = [];
  const catchUp: CatchUpResult[] = [];
  for (let i = 1; i <= c.edges; i++) {
    ctx.signal.throwIfAborted();
    const { node, r } = await startEdge(ctx, nats, i);
    edges.push(node);
    catchUp.push(r);
  }

  // 4. Latency.
  const latency = await latencyStep(ctx, c, nats, writer, kv, edges);

  // Summary.
  const g = (name: string) => latency.groups.find((x) => x.group === name)!;
  const w = g("writer");
  const e = g("edges");
  const problems = latency.checks.filter(
    (ch) => ch.complete !== ch.subscribers || ch.missing > 0 || ch.disorder > 0 || ch.errors > 0,
  );
  ctx.log(
    `\nEdge suite: one writer (fsync ${c.fsync}) + ${c.edges} edges + nats-server ${nats.version}, all on this machine\n`,
  );
  ctx.log(
    table(
      ["measure", "result"],
      [
        [
          "JetStream publish, expected-last-seq, 256 in flight",
          `${fmtInt(rawCond.median)} msgs/s (${fmtInt(rawCond.min)}–${fmtInt(rawCond.max)}; ${fmtInt(rawCount)} msgs, ` +
            `${sample.log.data.length}/${sample.event.data.length} B payloads)`,
        ],
        [
          "JetStream publish, no condition, 256 in flight",
          `${fmtInt(rawPlain.median)} msgs/s (${fmtInt(rawPlain.min)}–${fmtInt(rawPlain.max)})`,
        ],
        [
          "JetStream publish, expected-last-seq, client noAsyncTraces",
          `${fmtInt(rawFast.median)} msgs/s (${fmtInt(rawFast.min)}–${fmtInt(rawFast.max)})`,
        ],
        [
          `bridge catch-up, ${fmtInt(bridge.commits)} commits`,
          `${fmtInt(bridge.commitsPerSec)} commits/s = ${fmtInt(bridge.messagesPerSec)} msgs/s ` +
            `(${fmtRatio(bridgeRatio)} of JetStream's); end to end ${fmtInt(bridge.commitsPerSecTotal)} commits/s`,
        ],
        ...catchUp.map((r) => [
          `${r.edge} catch-up`,
          `${fmtInt(r.commitsPerSec)} commits/s replayed (${fmtInt(r.replayed)} from the log after a snapshot at ` +
            `${fmtInt(r.snapshotIndex)}, ${fmtMs(r.startMs)})`,
        ]),
        [
          `latency, ${fmtInt(w.subscribers)} subscribers on the writer`,
          `commit→receive p50 ${fmtMs(w.commitToReceiveMs.p50)} / p99 ${fmtMs(w.commitToReceiveMs.p99)}; ` +
            `put→receive p50 ${fmtMs(w.putToReceiveMs.p50)} / p99 ${fmtMs(w.putToReceiveMs.p99)}; ${fmtInt(w.eventsPerSec)} events/s`,
        ],
        [
          `latency, ${fmtInt(e.subscribers)} subscribers on ${c.edges} edges`,
          `commit→receive p50 ${fmtMs(e.commitToReceiveMs.p50)} / p99 ${fmtMs(e.commitToReceiveMs.p99)}; ` +
            `put→receive p50 ${fmtMs(e.putToReceiveMs.p50)} / p99 ${fmtMs(e.putToReceiveMs.p99)}; ${fmtInt(e.eventsPerSec)} events/s`,
        ],
        [
          "writer commit → edge apply",
          latency.replicationMs
            .map((r) => `${r.edge} p50 ${fmtMs(r.delay.p50)} / p99 ${fmtMs(r.delay.p99)}`)
            .join("; "),
        ],
        [
          "delivery check",
          problems.length === 0
            ? `every subscriber got every event once, in order (${fmtInt(latency.checks.reduce((a, ch) => a + ch.events, 0))} events)`
            : `PROBLEMS on ${problems.map((p) => p.server).join(", ")}`,
        ],
      ],
      ["left", "left"],
    ),
  );
  return {
    config: c,
    source,
    nats: { version: nats.version, url: nats.url },
    bridge,
    jetstream: { rounds: raw, conditional: rawCond, plain: rawPlain, noAsyncTraces: rawFast },
    bridgeToJetStream: bridgeRatio,
    catchUp,
    latency,
  };
}

export const suite: Suite = {
  flags: {
    commits: {
      type: "string",
      description: "KV put commits made while NATS is down (bridge catch-up, then edge catch-up)",
      default: "20000",
    },
    "fill-writers": { type: "string", description: "puts in flight while filling", default: "64" },
    "fill-keys": { type: "string", description: "keys the fill puts cycle over", default: "1000" },
    "value-bytes": {
      type: "string",
      description: "value size (bytes 0-7: send time, 8-11: per-key sequence)",
      default: "64",
    },
    fsync: { type: "string", description: `the writer's fsync mode: ${FSYNC.join(", ")}`, default: "batch" },
    "snapshot-every": {
      type: "string",
      description: "the writer's natsSnapshotEvery (above --commits: edges replay every commit from the log)",
      default: "1000000",
    },
    "raw-messages": {
      type: "string",
      description: "messages per JetStream publish test (auto: as many as the bridge published)",
      default: "auto",
    },
    "raw-rounds": {
      type: "string",
      description: "rounds of the three JetStream publish tests (medians)",
      default: "3",
    },
    edges: { type: "string", description: "edges", default: "2" },
    subscribers: {
      type: "string",
      description: "subscribers on each server (writer and every edge)",
      default: "100",
    },
    keys: { type: "string", description: "keys the subscribers and the paced writer use", default: "20" },
    channels: { type: "string", description: "HTTP/2 connections per subscriber process", default: "2" },
    rate: { type: "string", description: "puts/s of the paced writer", default: "200" },
    warmup: {
      type: "string",
      description: "seconds of paced writing before the measured window",
      default: "1",
    },
    duration: { type: "string", description: "seconds of the measured window", default: "10" },
    "drain-timeout": {
      type: "string",
      description: "seconds to wait for every event to arrive",
      default: "30",
    },
    "cpu-prof": {
      type: "string",
      description: "directory for a CPU profile of the writer during the bridge catch-up (summarized too)",
    },
  },
  run,
};
