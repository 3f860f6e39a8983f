/**
 * Suite `http`: the Consul-compatible HTTP API under load (issue 6, Benchmark).
 *
 *   npm run bench -- http [--clients 10000] [--rate 100,1] [--seconds 10] [--only blocking,read,etcd]
 *
 * - blocking: a Sluice server in its own process (`lib/sluice-server-child.ts`, durable store,
 *   fsync always) with a service `web` of `--blocking-instances` instances. `--clients`
 *   blocking-query loops, spread over `--client-procs` processes (`lib/http-blocking-client.ts`,
 *   node:http keep-alive, one connection each), each doing
 *   `GET /v1/health/service/web?index=<last X-Consul-Index>&wait=<--wait>`. Once the server
 *   holds every client blocked (its own gauge, from `/v1/agent/metrics?format=prometheus`), a
 *   writer in this process (`lib/check-writer.ts`) changes one instance's check `--rate` times
 *   a second, open loop, through gRPC `UpdateCheck`, which answers the commit index. After
 *   `--warmup` seconds, a `--seconds` window counts the responses the clients complete; each
 *   response's X-Consul-Index names the change it carries, hence change-to-response latency,
 *   measured from three instants of that change on one clock (process.hrtime, CLOCK_MONOTONIC,
 *   shared by all processes): its commit in the server (the server process records when each
 *   commit is published), the writer's acknowledgement, and the writer's issue. Also: changes
 *   a client skipped (Consul's semantics allow it), the server's memory with no client, with
 *   every client blocked, at its peak while the service changes and after the clients left;
 *   the server's own count of views, ServiceHealth subscriptions and blocked queries; CPU of
 *   the server, the client processes and this process, and the server's event loop and GC.
 * - read: a fresh server with `--instances` instances of `web` (every 10th one's check
 *   critical), read by autocannon from this process with `--read-connections` keep-alive
 *   connections for `--read-seconds` (after a 2 s warm-up): `GET /v1/health/service/web`
 *   and `?passing`.
 * - etcd: the same instances (the JSON objects Sluice answered, one key each) in etcd 3.4, read
 *   as one range over its HTTP/JSON gateway (`POST /v3/kv/range`, serializable) by the same
 *   autocannon: a reference peer for an HTTP read of a service's instances, not a like-for-like
 *   one (etcd's gateway re-encodes a gRPC answer, values in base64).
 */
import { mkdirSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import { CheckWriter } from "./lib/check-writer.js";
import { Helper } from "./lib/child.js";
import { ownCpuSeconds, processCpuSeconds } from "./lib/cpu.js";
import { startEtcd } from "./lib/etcd.js";
import { choiceListFlag, FlagError, type FlagValues, intListFlag, numberFlag } from "./lib/flags.js";
import { Histogram } from "./lib/histogram.js";
import type {
  BlockingOpenRequest,
  BlockingWindow,
  ClientTotals,
  OpenResult,
} from "./lib/http-blocking-client.js";
import { ensureFdLimit, fdLimit, procMemory } from "./lib/proc.js";
import { type PromScrape, scrape } from "./lib/prometheus.js";
import type { CommitTimes, ServerMemory, ServerWindow } from "./lib/sluice-server-child.js";
import { describeSource, sourceState } from "./lib/source.js";
import { fmtFixed, fmtInt, fmtMs, fmtRatio, type LatencySummary, median, table } from "./lib/stats.js";
import type { Suite, SuiteContext } from "./lib/suite.js";

const PARTS = ["blocking", "read", "etcd"] as const;
type Part = (typeof PARTS)[number];
const STORES = ["durable", "memory"] as const;

const SERVER_MODULE = fileURLToPath(new URL("./lib/sluice-server-child.ts", import.meta.url));
const CLIENT_MODULE = fileURLToPath(new URL("./lib/http-blocking-client.ts", import.meta.url));
const SERVICE = "web";
const HEALTH_PATH = `/v1/health/service/${SERVICE}`;
const HEALTH_ROUTE = "/v1/health/service/:name";
/** Files a process needs besides its sockets. */
const FD_SLACK = 1024;

interface Config {
  readonly parts: readonly Part[];
  readonly clients: number;
  readonly clientProcs: number;
  readonly rates: readonly number[];
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly wait: string;
  readonly blockingInstances: number;
  readonly ramp: number;
  readonly settleMs: number;
  readonly instances: number;
  readonly readConnections: number;
  readonly readSeconds: number;
  readonly sluiceStore: (typeof STORES)[number];
  readonly sluiceNodeFlags: readonly string[];
  readonly cpuProf: string | undefined;
  readonly allocProf: string | undefined;
}

function config(flags: FlagValues): Config {
  const parts = choiceListFlag(flags, "only", PARTS)!;
  const store = choiceListFlag(flags, "sluice-store", STORES)!;
  const cpuProf = flags["cpu-prof"];
  const allocProf = flags["alloc-prof"];
  const wait = String(flags.wait);
  if (!/^\d+(ms|s|m)$/.test(wait)) throw new FlagError("wait", `a duration such as 60s or 5m, got ${wait}`);
  return {
    parts,
    clients: numberFlag(flags, "clients", { min: 1, integer: true })!,
    clientProcs: numberFlag(flags, "client-procs", { min: 1, integer: true })!,
    rates: intListFlag(flags, "rate")!,
    warmupMs: numberFlag(flags, "warmup", { min: 0 })! * 1000,
    durationMs: numberFlag(flags, "seconds", { min: 1 })! * 1000,
    wait,
    blockingInstances: numberFlag(flags, "blocking-instances", { min: 1, integer: true })!,
    ramp: numberFlag(flags, "ramp", { min: 1, integer: true })!,
    settleMs: numberFlag(flags, "settle", { min: 0 })! * 1000,
    instances: numberFlag(flags, "instances", { min: 1, integer: true })!,
    readConnections: numberFlag(flags, "read-connections", { min: 1, integer: true })!,
    readSeconds: numberFlag(flags, "read-seconds", { min: 1 })!,
    sluiceStore: store[store.length - 1]!,
    sluiceNodeFlags: String(flags["sluice-node-flags"] ?? "")
      .split(/\s+/)
      .filter((f) => f !== ""),
    cpuProf: typeof cpuProf === "string" && cpuProf !== "" ? cpuProf : undefined,
    allocProf: typeof allocProf === "string" && allocProf !== "" ? allocProf : undefined,
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const hrNs = () => Number(process.hrtime.bigint());
const fmtMiB = (b: number) => (Number.isFinite(b) ? `${(b / 2 ** 20).toFixed(1)} MiB` : "-");
const fmtBytes = (b: number) =>
  !Number.isFinite(b) ? "-" : Math.abs(b) >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b.toFixed(0)} B`;

// ---------------------------------------------------------------------------------------------
// The server under test

interface SluiceProc {
  readonly pid: number;
  readonly grpcAddress: string;
  /** `http://127.0.0.1:<port>` */
  readonly base: string;
  readonly httpPort: number;
  memory(): Promise<ServerMemory>;
  window(): Promise<ServerWindow>;
  /** Starts the server's record of when each commit is published; then `commitTimes` reads it. */
  recordCommitTimes(): Promise<unknown>;
  commitTimes(from: number): Promise<CommitTimes>;
  /** Allocation sampling (garbage included) in the server between start and stop. */
  startAllocationSampling(): Promise<void>;
  stopAllocationSampling(path: string): Promise<void>;
  metrics(): Promise<PromScrape>;
  stop(): Promise<void>;
}

async function startServer(ctx: SuiteContext, c: Config, label: string, fds: number): Promise<SluiceProc> {
  const dir = c.sluiceStore === "durable" ? ctx.tempDir(`sluice-${label}`) : undefined;
  const overrides = dir
    ? { dataDir: dir, dev: false, fsync: "always", shutdownGraceMs: 2000 }
    : { dev: true, shutdownGraceMs: 2000 };
  const flags = ["--expose-gc", ...c.sluiceNodeFlags];
  if (c.cpuProf)
    flags.push("--cpu-prof", `--cpu-prof-dir=${join(c.cpuProf, `sluice-${label}-${Date.now()}`)}`);
  const helper = Helper.fork(`sluice server (${label})`, SERVER_MODULE, flags, [JSON.stringify(overrides)]);
  try {
    const limit = ensureFdLimit(helper.pid, fds);
    if (limit < fds)
      throw new Error(`the server may open only ${limit} files, ${fds} needed (prlimit failed)`);
    const [grpcPort, httpPort] = await Promise.all([
      helper.call<number>("port"),
      helper.call<number>("httpPort"),
    ]);
    const base = `http://127.0.0.1:${httpPort}`;
    ctx.log(
      `[${label}] server pid ${helper.pid}: HTTP ${base}, gRPC 127.0.0.1:${grpcPort}, ` +
        `${dir ? `store in ${dir} (fsync always)` : "in-memory store (--dev)"}, open-file limit ${fmtInt(limit)}`,
    );
    return {
      pid: helper.pid,
      grpcAddress: `127.0.0.1:${grpcPort}`,
      base,
      httpPort,
      memory: () => helper.call<ServerMemory>("memory"),
      window: () => helper.call<ServerWindow>("window"),
      recordCommitTimes: () => helper.call("recordCommitTimes"),
      commitTimes: (from) => helper.call<CommitTimes>("commitTimes", from),
      startAllocationSampling: () => helper.call("startAllocationSampling"),
      stopAllocationSampling: (path) => helper.call("stopAllocationSampling", path),
      metrics: () => scrape(`${base}/v1/agent/metrics?format=prometheus`),
      stop: async () => {
        await helper.stop();
        if (dir) ctx.removeDir(dir);
      },
    };
  } catch (err) {
    await helper.stop();
    throw err;
  }
}

/** `web-<i>` on `node-<i>`, with one service check; every `criticalEvery`-th check critical. */
function registration(i: number, criticalEvery: number): object {
  const address = `10.0.${i >> 8}.${i & 255}`;
  const critical = criticalEvery > 0 && i % criticalEvery === criticalEvery - 1;
  return {
    Node: `node-${i}`,
    Address: address,
    NodeMeta: { rack: `r${i % 8}` },
    Service: {
      ID: `${SERVICE}-${i}`,
      Service: SERVICE,
      Tags: ["v1", i % 2 === 0 ? "blue" : "green"],
      Address: address,
      Port: 8080,
      Meta: { version: "1.4.2" },
    },
    Check: {
      CheckID: `service:${SERVICE}-${i}`,
      Name: "HTTP on 8080",
      ServiceID: `${SERVICE}-${i}`,
      Status: critical ? "critical" : "passing",
      Output: critical
        ? "HTTP GET http://10.0.0.1:8080/health: 503"
        : "HTTP GET http://10.0.0.1:8080/health: 200 OK",
    },
  };
}

/** Registers `n` instances through `PUT /v1/catalog/register`, 8 at a time. */
async function registerInstances(base: string, n: number, criticalEvery: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const res = await fetch(`${base}/v1/catalog/register`, {
        method: "PUT",
        body: JSON.stringify(registration(i, criticalEvery)),
      });
      const text = await res.text();
      if (!res.ok || text !== "true") throw new Error(`register ${i}: ${res.status} ${text}`);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

// ---------------------------------------------------------------------------------------------
// blocking

/** The client processes of the blocking part. */
class Clients {
  private constructor(readonly helpers: readonly Helper[]) {}

  static fork(procs: number, perProc: number): Clients {
    const helpers = Array.from({ length: procs }, (_, p) =>
      Helper.fork(`blocking client process ${p + 1}/${procs}`, CLIENT_MODULE),
    );
    for (const h of helpers) {
      const limit = ensureFdLimit(h.pid, perProc + FD_SLACK);
      if (limit < perProc + FD_SLACK) {
        for (const x of helpers) void x.stop();
        throw new Error(`a client process may open only ${limit} files, ${perProc + FD_SLACK} needed`);
      }
    }
    return new Clients(helpers);
  }

  get pids(): number[] {
    return this.helpers.map((h) => h.pid);
  }

  all<T>(method: string, arg?: (p: number) => unknown): Promise<T[]> {
    return Promise.all(this.helpers.map((h, p) => h.call<T>(method, arg?.(p))));
  }

  async count(): Promise<number> {
    return (await this.all<number>("count")).reduce((a, b) => a + b, 0);
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.helpers.map((h) => h.call("close")));
    await Promise.all(this.helpers.map((h) => h.stop()));
  }
}

/** Cores (CPU seconds per second) of the server, the client processes and this process. */
interface Cores {
  readonly server: number;
  readonly clients: number;
  readonly bench: number;
}

class CpuSplit {
  private t0 = 0;
  private r0: [number, number, number] = [0, 0, 0];
  constructor(
    private readonly server: number,
    private readonly clients: readonly number[],
  ) {}
  private read(): [number, number, number] {
    return [
      processCpuSeconds(this.server),
      this.clients.reduce((a, pid) => a + processCpuSeconds(pid), 0),
      ownCpuSeconds(),
    ];
  }
  start(): void {
    this.t0 = performance.now();
    this.r0 = this.read();
  }
  stop(): Cores {
    const secs = (performance.now() - this.t0) / 1000;
    const [s, c, o] = this.read();
    return {
      server: (s - this.r0[0]) / secs,
      clients: (c - this.r0[1]) / secs,
      bench: (o - this.r0[2]) / secs,
    };
  }
}

/** Samples a process's RSS every 200 ms; `stop` gives the largest sample. */
function rssSampler(pid: number): { stop(): number } {
  let max = procMemory(pid).rss;
  const t = setInterval(() => {
    const r = procMemory(pid).rss;
    if (r > max) max = r;
  }, 200);
  return {
    stop: () => {
      clearInterval(t);
      return Math.max(max, procMemory(pid).rss);
    },
  };
}

interface MemoryPoint {
  readonly rss: number;
  readonly heapUsed: number;
}

interface LevelResult {
  readonly rate: number;
  readonly windowMs: number;
  /** Changes committed inside the window (server commit times), per second. */
  readonly changesPerSec: number;
  /** clients × changes/s: every client seeing every change. */
  readonly expectedPerSec: number;
  readonly deliveredPerSec: number;
  /** The server's own count (HTTP 200s of the health route) over the window, per second. */
  readonly serverCountedPerSec: number;
  readonly responses: number;
  /** Change-to-response latency from the change's commit in the server (the main figure). */
  readonly fromCommitMs: LatencySummary;
  readonly fromAckMs: LatencySummary;
  readonly fromIssueMs: LatencySummary;
  readonly beforeAck: number;
  readonly missed: number;
  readonly missedPerResponse: number;
  /** Share of (client, change) pairs a client saw: new indexes / (new indexes + skipped changes). */
  readonly seenShare: number;
  readonly timeouts: number;
  readonly backwards: number;
  readonly unknown: number;
  readonly perClient: {
    readonly min: number;
    readonly median: number;
    readonly max: number;
    readonly zero: number;
  };
  readonly cores: Cores;
  readonly server: ServerWindow;
  readonly clientGcMaxMs: number;
  readonly peakRss: number;
  readonly shared: SharedCheck;
  /** Longest and p99 event-loop delay of the server over the window (prom-client's monitor, reset per scrape). */
  readonly loopLagMaxMs: number;
  readonly loopLagP99Ms: number;
}

/** What the server says about its views while the clients block. */
interface SharedCheck {
  readonly views: number;
  readonly serviceHealthSubscriptions: number;
  readonly blockedQueries: number;
  readonly snapshotBuilds: number;
}

function sharedCheck(m: PromScrape): SharedCheck {
  return {
    views: m.get("sluice_http_views"),
    serviceHealthSubscriptions: m.get("sluice_subscriptions", { topic: "ServiceHealth" }),
    blockedQueries: m.get("sluice_blocking_queries_in_flight"),
    snapshotBuilds: m.get("sluice_snapshot_builds_total"),
  };
}

const healthOk = (m: PromScrape) =>
  m.get("sluice_http_requests_total", { route: HEALTH_ROUTE, status: "200" });

interface BlockingResult {
  readonly clients: number;
  readonly clientProcs: number;
  readonly instances: number;
  readonly responseBytes: number;
  readonly openMs: number;
  readonly blockedAfterMs: number;
  readonly idleShared: SharedCheck;
  readonly memory: {
    readonly before: MemoryPoint;
    readonly blocked: MemoryPoint;
    readonly after: MemoryPoint;
    /** VmHWM of the server when the clients left (its peak over its life). */
    readonly peakRss: number;
    readonly rssPerBlockedQuery: number;
    readonly heapPerBlockedQuery: number;
  };
  readonly levels: readonly LevelResult[];
  readonly totals: ClientTotals;
}

async function memoryPoint(s: SluiceProc): Promise<MemoryPoint> {
  const m = await s.memory();
  return { rss: m.rss, heapUsed: m.heapUsed };
}

async function runBlocking(ctx: SuiteContext, c: Config): Promise<BlockingResult> {
  const label = "blocking";
  const server = await startServer(ctx, c, label, c.clients + FD_SLACK);
  let clients: Clients | undefined;
  let writer: CheckWriter | undefined;
  try {
    await registerInstances(server.base, c.blockingInstances, 0);
    const first = await fetch(`${server.base}${HEALTH_PATH}`);
    const body = await first.text();
    const count = (JSON.parse(body) as unknown[]).length;
    if (count !== c.blockingInstances)
      throw new Error(`${HEALTH_PATH} answered ${count} instances, ${c.blockingInstances} registered`);
    const backend = first.headers.get("x-consul-query-backend");
    ctx.log(
      `[${label}] ${c.blockingInstances} instances of ${SERVICE} registered; a response is ${fmtBytes(Buffer.byteLength(body))} ` +
        `(X-Consul-Query-Backend: ${backend})`,
    );
    const before = await memoryPoint(server);

    const procs = Math.min(c.clientProcs, c.clients);
    const perProc = Math.ceil(c.clients / procs);
    clients = Clients.fork(procs, perProc);
    ctx.log(
      `[${label}] ${fmtInt(c.clients)} blocking clients over ${procs} processes (pids ${clients.pids.join(", ")}; ` +
        `open-file limit ${clients.pids.map((p) => fmtInt(fdLimit(p).soft)).join(", ")}), wait=${c.wait}`,
    );
    const t0 = performance.now();
    const opening = clients.all<OpenResult>("open", (p) => {
      const n = Math.floor(c.clients / procs) + (p < c.clients % procs ? 1 : 0);
      return {
        host: "127.0.0.1",
        port: server.httpPort,
        path: HEALTH_PATH,
        wait: c.wait,
        clients: n,
        ramp: Math.max(1, Math.floor(c.ramp / procs)),
      } satisfies BlockingOpenRequest;
    });
    // Every client has had its first answer; now wait until the server holds them all blocked.
    let blocked = 0;
    let opened: OpenResult[] | undefined;
    void opening.then((o) => {
      opened = o;
    });
    for (;;) {
      ctx.signal.throwIfAborted();
      await Promise.race([opening, sleep(1000)]);
      const m = await server.metrics();
      blocked = m.get("sluice_blocking_queries_in_flight");
      const elapsed = performance.now() - t0;
      ctx.progress(
        `opening: ${opened ? "all answered" : "answering"}; ${fmtInt(blocked)} of ${fmtInt(c.clients)} blocked in the server`,
      );
      if (opened && blocked >= c.clients) break;
      if (elapsed > 120_000) throw new Error(`only ${blocked} of ${c.clients} clients blocked after 120 s`);
    }
    const openMs = Math.max(...opened!.map((o) => o.ms));
    const blockedAfterMs = performance.now() - t0;
    ctx.log(
      `[${label}] every client answered in ${fmtMs(openMs)} (first, non-blocking reads); all ${fmtInt(c.clients)} blocked after ${fmtMs(blockedAfterMs)}`,
    );
    await sleep(c.settleMs);
    const idleShared = sharedCheck(await server.metrics());
    const blockedMem = await memoryPoint(server);
    ctx.log(
      `[${label}] with ${fmtInt(c.clients)} blocked: ${idleShared.views} view(s), ${idleShared.serviceHealthSubscriptions} ServiceHealth ` +
        `subscription(s), ${fmtInt(idleShared.blockedQueries)} blocked queries; server RSS ${fmtMiB(before.rss)} → ${fmtMiB(blockedMem.rss)}, ` +
        `heap ${fmtMiB(before.heapUsed)} → ${fmtMiB(blockedMem.heapUsed)} ` +
        `(${fmtBytes((blockedMem.rss - before.rss) / c.clients)} RSS, ${fmtBytes((blockedMem.heapUsed - before.heapUsed) / c.clients)} heap per blocked query)`,
    );

    await server.recordCommitTimes();
    const levels: LevelResult[] = [];
    for (const rate of c.rates) {
      ctx.signal.throwIfAborted();
      writer = new CheckWriter(server.grpcAddress, SERVICE, c.blockingInstances);
      levels.push(await runLevel(ctx, c, server, clients, writer, rate));
      writer.close();
      writer = undefined;
      await sleep(1000);
    }

    const totals = (await clients.all<ClientTotals>("totals")).reduce((a, t) => ({
      responses: a.responses + t.responses,
      errors: a.errors + t.errors,
      non200: a.non200 + t.non200,
      firstError: a.firstError ?? t.firstError,
      connections: a.connections + t.connections,
      blocked: a.blocked + t.blocked,
    }));
    await clients.close();
    clients = undefined;
    await sleep(c.settleMs);
    const after = await memoryPoint(server);
    const peakRss = procMemory(server.pid).hwm;
    ctx.log(
      `[${label}] clients gone: server RSS ${fmtMiB(after.rss)}, heap ${fmtMiB(after.heapUsed)}; peak RSS over its life ${fmtMiB(peakRss)}; ` +
        `client connections opened ${fmtInt(totals.connections)}, errors ${totals.errors}, non-200 ${totals.non200}` +
        (totals.firstError ? ` (${totals.firstError})` : ""),
    );
    return {
      clients: c.clients,
      clientProcs: procs,
      instances: c.blockingInstances,
      responseBytes: Buffer.byteLength(body),
      openMs,
      blockedAfterMs,
      idleShared,
      memory: {
        before,
        blocked: blockedMem,
        after,
        peakRss,
        rssPerBlockedQuery: (blockedMem.rss - before.rss) / c.clients,
        heapPerBlockedQuery: (blockedMem.heapUsed - before.heapUsed) / c.clients,
      },
      levels,
      totals,
    };
  } finally {
    writer?.close();
    await clients?.close();
    await server.stop();
  }
}

async function runLevel(
  ctx: SuiteContext,
  c: Config,
  server: SluiceProc,
  clients: Clients,
  writer: CheckWriter,
  rate: number,
): Promise<LevelResult> {
  const label = `[blocking ${fmtInt(c.clients)} clients, ${rate} changes/s]`;
  const cpu = new CpuSplit(server.pid, clients.pids);
  let last = await clients.count();
  let lastT = performance.now();
  const progress = async (phase: string) => {
    const n = await clients.count();
    const now = performance.now();
    ctx.progress(
      `${phase}: ${fmtInt(writer.acknowledged)} changes acknowledged, ${fmtInt(((n - last) * 1000) / (now - lastT))} responses/s, ` +
        `server RSS ${fmtMiB(procMemory(server.pid).rss)}`,
    );
    last = n;
    lastT = now;
  };
  const phase = async (name: string, ms: number) => {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      ctx.signal.throwIfAborted();
      await sleep(Math.min(1000, end - performance.now()));
      await progress(name);
    }
  };

  writer.start(rate);
  await phase("warm-up", c.warmupMs);
  const m0 = await server.metrics();
  const m0At = hrNs();
  await clients.all("reset");
  await server.window();
  if (c.allocProf) await server.startAllocationSampling();
  const rss = rssSampler(server.pid);
  cpu.start();
  const w0 = hrNs();
  await phase("window", c.durationMs);
  await clients.all("end");
  const w1 = hrNs();
  const cores = cpu.stop();
  const serverWindow = await server.window();
  if (c.allocProf) {
    mkdirSync(c.allocProf, { recursive: true });
    const path = join(c.allocProf, `sluice-blocking-${rate}-per-s-${Date.now()}.heapprofile`);
    await server.stopAllocationSampling(path);
    ctx.log(`${label} allocation profile of the window: ${path}`);
  }
  const m1 = await server.metrics();
  const m1At = hrNs();
  const peakRss = rss.stop();
  await writer.stop();
  const changes = writer.table(await server.commitTimes(writer.firstIndex));
  const windows = await clients.all<BlockingWindow>("collect", () => changes);

  const windowMs = (w1 - w0) / 1e6;
  // Changes committed inside the window (server commit times; acknowledgements lag under load).
  const changesPerSec = (changes.commitNs.filter((t) => t >= w0 && t < w1).length * 1000) / windowMs;
  const fromCommit = new Histogram();
  const fromAck = new Histogram();
  const fromIssue = new Histogram();
  let responses = 0;
  let deliveredPerSec = 0;
  let beforeAck = 0;
  let missed = 0;
  let timeouts = 0;
  let backwards = 0;
  let unknown = 0;
  let clientGcMaxMs = 0;
  for (const w of windows) {
    fromCommit.merge(w.fromCommit);
    fromAck.merge(w.fromAck);
    fromIssue.merge(w.fromIssue);
    responses += w.responses;
    deliveredPerSec += (w.responses * 1000) / w.windowMs;
    beforeAck += w.beforeAck;
    missed += w.missed;
    timeouts += w.timeouts;
    backwards += w.backwards;
    unknown += w.unknown;
    clientGcMaxMs = Math.max(clientGcMaxMs, w.gcMaxMs);
  }
  const perClient = {
    min: Math.min(...windows.map((w) => w.perClient.min)),
    median: median(windows.map((w) => w.perClient.median)),
    max: Math.max(...windows.map((w) => w.perClient.max)),
    zero: windows.reduce((a, w) => a + w.perClient.zero, 0),
  };
  const level: LevelResult = {
    rate,
    windowMs,
    changesPerSec,
    expectedPerSec: c.clients * changesPerSec,
    deliveredPerSec,
    serverCountedPerSec: ((healthOk(m1) - healthOk(m0)) * 1e9) / (m1At - m0At),
    responses,
    fromCommitMs: fromCommit.summaryMs(),
    fromAckMs: fromAck.summaryMs(),
    fromIssueMs: fromIssue.summaryMs(),
    beforeAck,
    missed,
    missedPerResponse: responses > 0 ? missed / responses : Number.NaN,
    seenShare: (responses - timeouts - backwards) / (responses - timeouts - backwards + missed),
    timeouts,
    backwards,
    unknown,
    perClient,
    cores,
    server: serverWindow,
    clientGcMaxMs,
    peakRss,
    shared: sharedCheck(m1),
    loopLagMaxMs: m1.get("nodejs_eventloop_lag_max_seconds") * 1000,
    loopLagP99Ms: m1.get("nodejs_eventloop_lag_p99_seconds") * 1000,
  };
  ctx.log(
    `${label} ${fmtFixed(changesPerSec, 1)} changes/s → ${fmtInt(deliveredPerSec)} responses/s delivered ` +
      `(expected ${fmtInt(level.expectedPerSec)}: ${fmtFixed((deliveredPerSec / level.expectedPerSec) * 100, 1)} %; server counted ${fmtInt(level.serverCountedPerSec)}/s); ` +
      `commit-to-response p50 ${fmtMs(level.fromCommitMs.p50)} p99 ${fmtMs(level.fromCommitMs.p99)} max ${fmtMs(level.fromCommitMs.max)} ` +
      `(from the writer's acknowledgement p50 ${fmtMs(level.fromAckMs.p50)} p99 ${fmtMs(level.fromAckMs.p99)}, ` +
      `${fmtFixed((level.beforeAck / Math.max(1, level.responses)) * 100, 0)} % of responses before it; ` +
      `from issue p50 ${fmtMs(level.fromIssueMs.p50)} p99 ${fmtMs(level.fromIssueMs.p99)}); ` +
      `${fmtFixed(level.missedPerResponse, 2)} changes skipped per response (${fmtFixed(level.seenShare * 100, 1)} % of changes seen); responses per client ${perClient.min}/${perClient.median}/${perClient.max} ` +
      `(min/median/max, ${perClient.zero} with none)`,
  );
  ctx.log(
    `${label} CPU server ${fmtFixed(cores.server, 2)} + clients ${fmtFixed(cores.clients, 2)} + writer ${fmtFixed(cores.bench, 2)} cores; ` +
      `server event loop ${fmtFixed(serverWindow.eventLoop * 100, 0)} % busy, GC ${serverWindow.gcCount} pauses ${fmtMs(serverWindow.gcMs)} ` +
      `(longest ${fmtMs(serverWindow.gcMaxMs)} ${serverWindow.gcMaxKind}), event-loop delay p99 ${fmtMs(level.loopLagP99Ms)} max ${fmtMs(level.loopLagMaxMs)}; ` +
      `peak RSS ${fmtMiB(peakRss)}; ` +
      `${level.shared.views} view(s), ${level.shared.serviceHealthSubscriptions} ServiceHealth subscription(s), ` +
      `${fmtInt(level.shared.blockedQueries)} blocked at the end of the window` +
      (timeouts || backwards || unknown
        ? `; ${timeouts} timeouts, ${backwards} backwards, ${unknown} unknown indexes`
        : ""),
  );
  return level;
}

// ---------------------------------------------------------------------------------------------
// read

interface ReadRun {
  readonly target: string;
  readonly url: string;
  readonly method: string;
  readonly connections: number;
  readonly seconds: number;
  readonly requestsPerSec: number;
  readonly latencyMs: {
    readonly p50: number;
    readonly p90: number;
    readonly p99: number;
    readonly max: number;
  };
  readonly bytesPerSec: number;
  readonly responseBytes: number;
  readonly errors: number;
  readonly non2xx: number;
  readonly cores: { readonly server: number; readonly client: number };
  /** Sluice: the server's event loop and GC pauses during the run. */
  readonly server?: ServerWindow;
}

interface ReadTarget {
  readonly name: string;
  readonly url: string;
  readonly method?: string;
  readonly body?: string;
  readonly serverPid: number;
  readonly responseBytes: number;
  /** Sluice: the server's event-loop/GC window (reset at the start, read at the end). */
  readonly window?: () => Promise<ServerWindow>;
}

async function cannon(ctx: SuiteContext, c: Config, t: ReadTarget): Promise<ReadRun> {
  const opts = {
    url: t.url,
    connections: c.readConnections,
    method: t.method ?? "GET",
    ...(t.body ? { body: t.body, headers: { "content-type": "application/json" } } : {}),
  };
  ctx.progress(`${t.name}: warm-up 2 s`);
  await autocannon({ ...opts, duration: 2 });
  ctx.signal.throwIfAborted();
  await t.window?.();
  const s0 = processCpuSeconds(t.serverPid);
  const o0 = ownCpuSeconds();
  const t0 = performance.now();
  const tracker = autocannon({ ...opts, duration: c.readSeconds });
  let second = 0;
  tracker.on("tick", (x) => ctx.progress(`${t.name}: ${++second} s, ${fmtInt(x.counter)} requests/s`));
  const onAbort = () => tracker.stop();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  const r = await tracker;
  ctx.signal.removeEventListener("abort", onAbort);
  ctx.signal.throwIfAborted();
  const secs = (performance.now() - t0) / 1000;
  const serverCpu = processCpuSeconds(t.serverPid);
  const ownCpu = ownCpuSeconds();
  const server = await t.window?.();
  const run: ReadRun = {
    target: t.name,
    url: t.url,
    method: opts.method,
    connections: c.readConnections,
    seconds: c.readSeconds,
    requestsPerSec: r.requests.total / r.duration,
    latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max },
    bytesPerSec: r.throughput.average,
    responseBytes: t.responseBytes,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    cores: { server: (serverCpu - s0) / secs, client: (ownCpu - o0) / secs },
    server,
  };
  ctx.log(
    `[read] ${t.name}: ${fmtInt(run.requestsPerSec)} requests/s, latency p50 ${fmtMs(run.latencyMs.p50)} p99 ${fmtMs(run.latencyMs.p99)} ` +
      `max ${fmtMs(run.latencyMs.max)}, ${fmtMiB(run.bytesPerSec)}/s, ${run.errors} errors, ${run.non2xx} non-2xx; ` +
      `CPU server ${fmtFixed(run.cores.server, 2)} + autocannon ${fmtFixed(run.cores.client, 2)} cores` +
      (server
        ? `; server event loop ${fmtFixed(server.eventLoop * 100, 0)} % busy, GC ${fmtMs(server.gcMs)} in ${server.gcCount} pauses (longest ${fmtMs(server.gcMaxMs)})`
        : ""),
  );
  if (run.errors || run.non2xx)
    ctx.log(`[read] WARNING: ${t.name} had ${run.errors} errors and ${run.non2xx} non-2xx answers`);
  return run;
}

interface ReadResult {
  readonly instances: number;
  readonly runs: readonly ReadRun[];
  readonly etcdVersion?: string;
  /** Sluice's plain read over etcd's range read, requests/s. */
  readonly sluiceOverEtcd?: number;
  readonly serverRss: { readonly before: number; readonly after: number };
}

async function runRead(
  ctx: SuiteContext,
  c: Config,
  withEtcd: boolean,
  withSluice: boolean,
): Promise<ReadResult> {
  const server = await startServer(ctx, c, "read", FD_SLACK * 4);
  const runs: ReadRun[] = [];
  let entries: unknown[];
  const rssBefore = procMemory(server.pid).rss;
  let rssAfter = Number.NaN;
  try {
    await registerInstances(server.base, c.instances, 10);
    const url = `${server.base}${HEALTH_PATH}`;
    const body = await (await fetch(url)).text();
    entries = JSON.parse(body) as unknown[];
    const passingBody = await (await fetch(`${url}?passing`)).text();
    const passing = (JSON.parse(passingBody) as unknown[]).length;
    ctx.log(
      `[read] ${c.instances} instances of ${SERVICE} (every 10th check critical): ${HEALTH_PATH} answers ${entries.length} ` +
        `(${fmtBytes(Buffer.byteLength(body))}), ?passing ${passing} (${fmtBytes(Buffer.byteLength(passingBody))})`,
    );
    if (entries.length !== c.instances)
      throw new Error(`expected ${c.instances} instances, got ${entries.length}`);
    if (withSluice) {
      for (const [name, u, b] of [
        ["sluice GET /v1/health/service/web", url, body],
        ["sluice GET /v1/health/service/web?passing", `${url}?passing`, passingBody],
      ] as const) {
        ctx.signal.throwIfAborted();
        runs.push(
          await cannon(ctx, c, {
            name,
            url: u,
            serverPid: server.pid,
            responseBytes: Buffer.byteLength(b),
            window: () => server.window(),
          }),
        );
      }
    }
    rssAfter = procMemory(server.pid).rss;
  } finally {
    await server.stop();
  }
  let etcdVersion: string | undefined;
  if (withEtcd) {
    ctx.signal.throwIfAborted();
    const etcd = await startEtcd({
      dataDir: ctx.tempDir("etcd"),
      keepData: ctx.keep,
      log: (l) => ctx.log(`[etcd] ${l}`),
    });
    etcdVersion = etcd.version;
    try {
      const b64 = (s: string) => Buffer.from(s).toString("base64");
      const prefix = `/services/${SERVICE}/`;
      for (const [i, e] of entries.entries()) {
        const res = await fetch(`${etcd.clientUrl}/v3/kv/put`, {
          method: "POST",
          body: JSON.stringify({
            key: b64(`${prefix}${String(i).padStart(4, "0")}`),
            value: b64(JSON.stringify(e)),
          }),
        });
        if (!res.ok) throw new Error(`etcd put: ${res.status} ${await res.text()}`);
      }
      const range = JSON.stringify({
        key: b64(prefix),
        range_end: b64(prefix.replace(/\/$/, "0")),
        serializable: true,
      });
      const res = await fetch(`${etcd.clientUrl}/v3/kv/range`, { method: "POST", body: range });
      const text = await res.text();
      const kvs = (JSON.parse(text) as { kvs?: unknown[] }).kvs ?? [];
      if (kvs.length !== entries.length)
        throw new Error(`etcd range answered ${kvs.length} keys, expected ${entries.length}`);
      ctx.log(
        `[etcd] ${kvs.length} keys ${prefix}NNNN, each one instance's JSON as Sluice answered it; range read answers ${fmtBytes(Buffer.byteLength(text))} (values base64)`,
      );
      runs.push(
        await cannon(ctx, c, {
          name: "etcd POST /v3/kv/range (100 keys, serializable)",
          url: `${etcd.clientUrl}/v3/kv/range`,
          method: "POST",
          body: range,
          serverPid: etcd.pid,
          responseBytes: Buffer.byteLength(text),
        }),
      );
    } finally {
      await etcd.stop();
    }
  }
  const sluice = runs.find((r) => r.target === "sluice GET /v1/health/service/web");
  const etcdRun = runs.find((r) => r.target.startsWith("etcd"));
  return {
    instances: c.instances,
    runs,
    etcdVersion,
    sluiceOverEtcd: sluice && etcdRun ? sluice.requestsPerSec / etcdRun.requestsPerSec : undefined,
    serverRss: { before: rssBefore, after: rssAfter },
  };
}

// ---------------------------------------------------------------------------------------------
// output

function blockingTable(b: BlockingResult): string {
  return table(
    [
      "clients",
      "changes/s",
      "expected responses/s",
      "delivered responses/s",
      "delivered/expected",
      "changes skipped/response",
      "changes seen",
      "commit→response p50 / p99",
      "ack→response p50 / p99",
      "issue→response p50 / p99",
      "responses/client min · med · max",
      "CPU srv + clients + writer",
      "srv event loop · delay max",
    ],
    b.levels.map((l) => [
      fmtInt(b.clients),
      fmtFixed(l.changesPerSec, 1),
      fmtInt(l.expectedPerSec),
      fmtInt(l.deliveredPerSec),
      `${fmtFixed((l.deliveredPerSec / l.expectedPerSec) * 100, 1)} %`,
      fmtFixed(l.missedPerResponse, 2),
      `${fmtFixed(l.seenShare * 100, 1)} %`,
      `${fmtMs(l.fromCommitMs.p50)} / ${fmtMs(l.fromCommitMs.p99)}`,
      `${fmtMs(l.fromAckMs.p50)} / ${fmtMs(l.fromAckMs.p99)}`,
      `${fmtMs(l.fromIssueMs.p50)} / ${fmtMs(l.fromIssueMs.p99)}`,
      `${l.perClient.min} · ${l.perClient.median} · ${l.perClient.max}`,
      `${fmtFixed(l.cores.server, 2)} + ${fmtFixed(l.cores.clients, 2)} + ${fmtFixed(l.cores.bench, 2)}`,
      `${fmtFixed(l.server.eventLoop * 100, 0)} % · ${fmtMs(l.loopLagMaxMs)}`,
    ]),
  );
}

function memoryTable(b: BlockingResult): string {
  const m = b.memory;
  const per = (p: MemoryPoint) =>
    `${fmtBytes((p.rss - m.before.rss) / b.clients)} · ${fmtBytes((p.heapUsed - m.before.heapUsed) / b.clients)}`;
  const peak = Math.max(...b.levels.map((l) => l.peakRss));
  return table(
    ["server state", "RSS", "heap used", "per client, RSS · heap"],
    [
      ["no client", fmtMiB(m.before.rss), fmtMiB(m.before.heapUsed), "-"],
      [
        `${fmtInt(b.clients)} blocked, idle`,
        fmtMiB(m.blocked.rss),
        fmtMiB(m.blocked.heapUsed),
        per(m.blocked),
      ],
      [
        "peak while changing (sampled / VmHWM)",
        `${fmtMiB(peak)} / ${fmtMiB(m.peakRss)}`,
        "-",
        `${fmtBytes((peak - m.before.rss) / b.clients)} · -`,
      ],
      ["clients gone", fmtMiB(m.after.rss), fmtMiB(m.after.heapUsed), "-"],
    ],
    ["left"],
  );
}

function readTable(r: ReadResult): string {
  return table(
    [
      "read",
      "connections",
      "requests/s",
      "p50 / p99 / max",
      "response",
      "MiB/s",
      "CPU server + autocannon",
      "srv event loop",
      "errors",
    ],
    r.runs.map((x) => [
      x.target,
      String(x.connections),
      fmtInt(x.requestsPerSec),
      `${fmtMs(x.latencyMs.p50)} / ${fmtMs(x.latencyMs.p99)} / ${fmtMs(x.latencyMs.max)}`,
      fmtBytes(x.responseBytes),
      fmtFixed(x.bytesPerSec / 2 ** 20, 1),
      `${fmtFixed(x.cores.server, 2)} + ${fmtFixed(x.cores.client, 2)}`,
      x.server ? `${fmtFixed(x.server.eventLoop * 100, 0)} %` : "-",
      String(x.errors + x.non2xx),
    ]),
    ["left"],
  );
}

async function run(ctx: SuiteContext, flags: FlagValues): Promise<unknown> {
  const c = config(flags);
  const source = sourceState();
  ctx.log(describeSource(source));
  ctx.log(
    `http suite: ${c.parts.join(", ")}; ${fmtInt(c.clients)} blocking clients over ${c.clientProcs} processes on ${c.blockingInstances} ` +
      `instances, ${c.rates.join(", ")} changes/s, ${c.warmupMs / 1000} s warm-up + ${c.durationMs / 1000} s window; reads of ${c.instances} ` +
      `instances with ${c.readConnections} connections for ${c.readSeconds} s; Sluice store ${c.sluiceStore}; ` +
      `this process's open-file limit ${fmtInt(fdLimit().soft)}; load ${loadavg()[0]!.toFixed(2)}`,
  );
  if (c.cpuProf) ctx.log(`Sluice server CPU profiles go to ${c.cpuProf}`);

  let blocking: BlockingResult | undefined;
  let read: ReadResult | undefined;
  if (c.parts.includes("blocking")) blocking = await runBlocking(ctx, c);
  if (c.parts.includes("read") || c.parts.includes("etcd")) {
    ctx.signal.throwIfAborted();
    read = await runRead(ctx, c, c.parts.includes("etcd"), c.parts.includes("read"));
  }

  if (blocking) {
    ctx.log(
      `\nBlocking queries: ${fmtInt(blocking.clients)} clients (${blocking.clientProcs} processes, node:http keep-alive) on ` +
        `GET ${HEALTH_PATH}?index=…&wait=${c.wait}, ${blocking.instances} instances (${fmtBytes(blocking.responseBytes)} per response); ` +
        `latency from the commit of the change named by X-Consul-Index (server side, durable and published) to the complete response\n`,
    );
    ctx.log(blockingTable(blocking));
    ctx.log("");
    ctx.log(memoryTable(blocking));
    const shared = blocking.levels.map((l) => l.shared);
    ctx.log(
      `\nshared view: ${blocking.idleShared.views} view(s) and ${blocking.idleShared.serviceHealthSubscriptions} ServiceHealth subscription(s) ` +
        `for ${fmtInt(blocking.idleShared.blockedQueries)} blocked queries at idle; under changes ` +
        shared
          .map(
            (s) =>
              `${s.views} view(s), ${s.serviceHealthSubscriptions} subscription(s), ${fmtInt(s.blockedQueries)} blocked`,
          )
          .join("; "),
    );
  }
  if (read) {
    ctx.log(
      `\nRead throughput (autocannon, ${c.readConnections} connections, ${c.readSeconds} s after a 2 s warm-up), ${read.instances} instances\n`,
    );
    ctx.log(readTable(read));
    if (read.sluiceOverEtcd !== undefined)
      ctx.log(
        `\nSluice GET /v1/health/service/web over etcd range read: ${fmtRatio(read.sluiceOverEtcd)} (requests/s)`,
      );
  }
  return { config: c, source, blocking, read };
}

export const suite: Suite = {
  flags: {
    only: {
      type: "string",
      description: `parts to run, some of ${PARTS.join(",")}`,
      default: "blocking,read,etcd",
    },
    clients: { type: "string", description: "concurrent blocking-query clients", default: "10000" },
    "client-procs": {
      type: "string",
      description: "processes the blocking clients are spread over",
      default: "2",
    },
    rate: {
      type: "string",
      description: "changes/s of the watched service, comma-separated levels",
      default: "100,1",
    },
    warmup: { type: "string", description: "seconds of changes before each window", default: "2" },
    seconds: { type: "string", description: "seconds of each measured window", default: "10" },
    wait: { type: "string", description: "?wait= of the blocking queries", default: "60s" },
    "blocking-instances": {
      type: "string",
      description: "instances of the watched service in the blocking part",
      default: "10",
    },
    ramp: {
      type: "string",
      description: "clients started per 10 ms while opening (all processes)",
      default: "500",
    },
    settle: { type: "string", description: "seconds idle before a memory reading", default: "2" },
    instances: { type: "string", description: "instances of the service in the read part", default: "100" },
    "read-connections": { type: "string", description: "autocannon connections", default: "50" },
    "read-seconds": { type: "string", description: "seconds of each autocannon run", default: "10" },
    "sluice-store": {
      type: "string",
      description: "Sluice store: durable (data dir, fsync always) or memory (--dev)",
      default: "durable",
    },
    "sluice-node-flags": { type: "string", description: "extra node flags for the Sluice server process" },
    "cpu-prof": { type: "string", description: "directory for a --cpu-prof profile of each Sluice server" },
    "alloc-prof": {
      type: "string",
      description:
        "directory for an allocation profile (garbage included) of the server in each blocking window",
    },
  },
  run,
};
