/**
 * Suite `broker`: request/response through the component broker (`sluice.v1.Broker/Connect`),
 * through one broker and across two brokers joined by NATS, side by side with plain NATS
 * request/reply measured in the same run with the same client library.
 *
 *   npm run bench -- broker [--in-flight 1,64] [--duration 8] [--payload-bytes 256]
 *
 * Processes (all on this machine): a nats-server with JetStream (`lib/nats.ts`), Sluice
 * servers (`lib/edge-server-child.ts`, in-memory `--dev`, ACLs off), and two client processes
 * (`lib/broker-client.ts`): one holds the responders, the other the requesters, so CPU splits
 * as it would between two services and their broker(s).
 *
 * Scenarios, each at every `--in-flight` load (closed loop: that many requests outstanding,
 * each worker sending the next as soon as its response is in):
 * - `nats`: plain NATS request/reply with the `nats` npm client, the client the broker uses
 *   between brokers: `--responders` connections subscribe to one subject in a queue group and
 *   answer every message with its own data; `--requesters` connections call `nc.request`.
 * - `one`: one broker without NATS; `--responders` components register as replicas of the
 *   group `echo` and answer every request at once with an OK response echoing the payload;
 *   `--requesters` components send requests to the group (target `{name: "echo"}`) with a
 *   deadline `--timeout` ahead.
 * - `one-archive`: the same through broker A, which runs with `--nats` (its events are also
 *   archived in JetStream, fire and forget): what the archive costs a local round trip.
 * - `two`: requesters on broker A, responders on broker B; A is a writer with `--nats`, B an
 *   edge of it (same stream and prefix, different broker ids: two writers cannot share a
 *   prefix, see below). They route through the nats-server: A forwards each request to B as a
 *   NATS request (B acknowledges taking it), B's responder answers, B publishes the response
 *   to A's node subject; A archives the request and B the response in JetStream.
 * The payload is `--payload-bytes` everywhere. Every scenario is measured once per load and
 * round, scenarios interleaved (rotated per round), so that the ratios to NATS compare runs
 * taken a few seconds apart. Before each measurement one request per connection is sent
 * until it is answered OK (the route exists), then `--warmup` s of load, then the `--duration`
 * s window: round trips/s and latency (send → response, in the requester process), CPU of
 * every process (/proc), and over the whole run the correctness checks: each request answered
 * exactly once, OK, with its payload; the responders saw each request once; the brokers
 * counted no unroutable, expired, DEADLINE_EXCEEDED or late events.
 *
 * `--cpu-prof <dir>`: afterwards, one more run of each Sluice scenario at the largest load with
 * V8's sampling profiler on in its broker(s) (during the window only; not part of the
 * figures), summarized by function (self and inclusive time) and area.
 */
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import type {
  BrokerOpenRequest,
  BrokerRunRequest,
  BrokerRunResult,
  ResponderStats,
  Transport,
} from "./lib/broker-client.js";
import { Helper } from "./lib/child.js";
import { processCpuSeconds } from "./lib/cpu.js";
import type { ServerReady } from "./lib/edge-server-child.js";
import { choiceListFlag, type FlagValues, intListFlag, numberFlag } from "./lib/flags.js";
import { Histogram } from "./lib/histogram.js";
import { NatsServer } from "./lib/nats.js";
import { scrape } from "./lib/prometheus.js";
import { describeSource, sourceState } from "./lib/source.js";
import { fmtFixed, fmtInt, fmtMs, fmtRatio, type LatencySummary, median, table } from "./lib/stats.js";
import type { Suite, SuiteContext } from "./lib/suite.js";

const SERVER_MODULE = fileURLToPath(new URL("./lib/edge-server-child.ts", import.meta.url));
const CLIENT_MODULE = fileURLToPath(new URL("./lib/broker-client.ts", import.meta.url));

const SCENARIOS = ["nats", "one", "one-archive", "two"] as const;
type Scenario = (typeof SCENARIOS)[number];
const LABEL: Record<Scenario, string> = {
  nats: "plain NATS request/reply",
  one: "one broker",
  "one-archive": "one broker + JetStream archive",
  two: "two brokers over NATS",
};

const PREFIX = "sluice";
const STREAM = "BENCH";
const GROUP = "echo";
const REQUESTER = "bench-client";
const NATS_SUBJECT = "bench.echo";
/** Broker counters the checks read (deltas over a measurement). */
const COUNTERS = [
  "unroutable",
  "expired",
  "deadline_exceeded",
  "late_responses",
  "forwarded",
  "received",
  "delivered",
] as const;
type Counter = (typeof COUNTERS)[number];

interface Config {
  readonly inFlight: readonly number[];
  readonly scenarios: readonly Scenario[];
  readonly durationMs: number;
  readonly warmupMs: number;
  readonly payloadBytes: number;
  readonly requesters: number;
  readonly responders: number;
  readonly concurrency: number;
  readonly timeoutMs: number;
  readonly rounds: number;
  readonly cpuProf: string | undefined;
}

function config(flags: FlagValues): Config {
  const cpuProf = flags["cpu-prof"];
  const scenarios = choiceListFlag(flags, "scenarios", SCENARIOS)!;
  return {
    inFlight: intListFlag(flags, "in-flight")!,
    // The NATS baseline first: the ratios need it.
    scenarios: SCENARIOS.filter((s) => s === "nats" || scenarios.includes(s)),
    durationMs: numberFlag(flags, "duration", { min: 0.5 })! * 1000,
    warmupMs: numberFlag(flags, "warmup", { min: 0 })! * 1000,
    payloadBytes: numberFlag(flags, "payload-bytes", { min: 4, integer: true })!,
    requesters: numberFlag(flags, "requesters", { min: 1, integer: true })!,
    responders: numberFlag(flags, "responders", { min: 1, integer: true })!,
    concurrency: numberFlag(flags, "concurrency", { min: 1, integer: true })!,
    timeoutMs: numberFlag(flags, "timeout", { min: 0.1 })! * 1000,
    rounds: numberFlag(flags, "rounds", { min: 1, integer: true })!,
    cpuProf: typeof cpuProf === "string" && cpuProf !== "" ? cpuProf : undefined,
  };
}

/** Total CPU stall time of /proc/pressure/cpu ("some"), µs; NaN when unreadable. */
function cpuPressureUs(): number {
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync("/proc/pressure/cpu", "utf8"));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** A Sluice server child and what it said when ready. */
interface Server {
  readonly name: string;
  readonly helper: Helper;
  readonly ready: ServerReady;
}

async function startServer(
  ctx: SuiteContext,
  name: string,
  overrides: Record<string, unknown>,
): Promise<Server> {
  const helper = Helper.fork(name, SERVER_MODULE, [], [JSON.stringify(overrides)]);
  ctx.defer(() => helper.stop());
  let timer: NodeJS.Timeout | undefined;
  try {
    const ready = await Promise.race([
      helper.call<ServerReady>("ready"),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${name} was not ready after 60 s`)), 60_000);
      }),
    ]);
    return { name, helper, ready };
  } finally {
    clearTimeout(timer);
  }
}

async function brokerCounters(s: Server): Promise<Record<Counter, number>> {
  const m = await scrape(`http://127.0.0.1:${s.ready.httpPort}/v1/agent/metrics?format=prometheus`);
  return Object.fromEntries(COUNTERS.map((c) => [c, m.get(`sluice_broker_${c}_total`)])) as Record<
    Counter,
    number
  >;
}

/** One measurement: a scenario at one load. */
interface Measurement {
  readonly scenario: Scenario;
  readonly inFlight: number;
  readonly round: number;
  readonly roundTrips: number;
  readonly windowMs: number;
  readonly roundTripsPerSec: number;
  readonly latencyMs: LatencySummary;
  /** Cores used in the window, by process. */
  readonly cores: Readonly<Record<string, number>>;
  /** Brokers and nats-server together, and the two client processes together. */
  readonly serverCores: number;
  readonly clientCores: number;
  /** Server-side CPU per round trip, µs. */
  readonly serverCpuUsPerRoundTrip: number;
  /** Share of the window in which some task waited for a CPU (/proc/pressure/cpu). */
  readonly cpuPressure: number;
  readonly requester: Omit<BrokerRunResult, "latency">;
  readonly responders: ResponderStats;
  /** Deltas of the brokers' counters over the measurement, by server. */
  readonly brokers: Readonly<Record<string, Record<Counter, number>>>;
  /** Everything the correctness checks found wrong (empty: each request answered once, OK). */
  readonly problems: readonly string[];
}

interface Topology {
  readonly transport: Transport;
  readonly requesterAddress: string;
  readonly responderAddress: string;
  /** Servers whose CPU counts as "server" and whose counters are checked. */
  readonly servers: readonly Server[];
  readonly natsInPath: boolean;
}

interface Env {
  readonly c: Config;
  readonly nats: NatsServer;
  readonly one?: Server;
  readonly a?: Server;
  readonly b?: Server;
  readonly requester: Helper;
  readonly responder: Helper;
}

function topology(env: Env, s: Scenario): Topology {
  const addr = (sv: Server | undefined) => {
    if (!sv) throw new Error(`scenario ${s}: server not started`);
    return `127.0.0.1:${sv.ready.grpcPort}`;
  };
  switch (s) {
    case "nats":
      return {
        transport: "nats",
        requesterAddress: env.nats.url,
        responderAddress: env.nats.url,
        servers: [],
        natsInPath: true,
      };
    case "one":
      return {
        transport: "sluice",
        requesterAddress: addr(env.one),
        responderAddress: addr(env.one),
        servers: [env.one!],
        natsInPath: false,
      };
    case "one-archive":
      return {
        transport: "sluice",
        requesterAddress: addr(env.a),
        responderAddress: addr(env.a),
        servers: [env.a!],
        natsInPath: true,
      };
    case "two":
      return {
        transport: "sluice",
        requesterAddress: addr(env.a),
        responderAddress: addr(env.b),
        servers: [env.a!, env.b!],
        natsInPath: true,
      };
  }
}

async function measure(
  ctx: SuiteContext,
  env: Env,
  scenario: Scenario,
  inFlight: number,
  round: number,
  /** Profile the brokers of the scenario during the window, into this directory. */
  profileDir?: string,
): Promise<Measurement & { latency: Histogram; profiles: string[] }> {
  const { c, requester, responder, nats } = env;
  const t = topology(env, scenario);
  const target = t.transport === "nats" ? NATS_SUBJECT : GROUP;
  const tag = `${LABEL[scenario]}, ${inFlight} in flight`;
  await responder.call("open", {
    transport: t.transport,
    role: "responder",
    address: t.responderAddress,
    connections: c.responders,
    name: t.transport === "nats" ? NATS_SUBJECT : GROUP,
    concurrency: c.concurrency,
  } satisfies BrokerOpenRequest);
  await requester.call("open", {
    transport: t.transport,
    role: "requester",
    address: t.requesterAddress,
    connections: c.requesters,
    name: REQUESTER,
    concurrency: c.concurrency,
  } satisfies BrokerOpenRequest);
  let ticker: NodeJS.Timeout | undefined;
  try {
    await requester.call("probe", { target, timeoutMs: 15_000, payloadBytes: c.payloadBytes });
    await responder.call("resetStats");
    const before = await Promise.all(t.servers.map(brokerCounters));
    const pids: Record<string, number> = {
      ...Object.fromEntries(t.servers.map((s) => [s.name, s.ready.pid])),
      ...(t.natsInPath ? { "nats-server": nats.pid! } : {}),
      requesters: requester.pid,
      responders: responder.pid,
    };
    const t0 = performance.now();
    ticker = setInterval(() => {
      void requester
        .call<{ sent: number; ok: number; errors: number }>("count")
        .then((n) =>
          ctx.progress(
            `${tag}: ${fmtInt(n.ok)} round trips (${fmtInt(n.errors)} errors) after ${((performance.now() - t0) / 1000).toFixed(0)} s`,
          ),
        )
        .catch(() => {});
    }, 2000);
    await requester.call("start", {
      target,
      inFlight,
      payloadBytes: c.payloadBytes,
      warmupMs: c.warmupMs,
      durationMs: c.durationMs,
      timeoutMs: c.timeoutMs,
    } satisfies BrokerRunRequest);
    if (profileDir) await Promise.all(t.servers.map((s) => s.helper.call("profileStart")));
    const cpu0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuSeconds(pid)]));
    const p0 = cpuPressureUs();
    const w0 = performance.now();
    await requester.call("windowEnd");
    const secs = (performance.now() - w0) / 1000;
    const cores = Object.fromEntries(
      Object.entries(pids).map(([k, pid]) => [k, (processCpuSeconds(pid) - cpu0[k]!) / secs]),
    );
    const cpuPressure = (cpuPressureUs() - p0) / 1e6 / secs;
    const profiles = profileDir
      ? await Promise.all(
          t.servers.map((s) =>
            s.helper.call<string>(
              "profileStop",
              join(profileDir, `broker-${scenario}-${inFlight}-${s.name}-${Date.now()}.cpuprofile`),
            ),
          ),
        )
      : [];
    clearInterval(ticker);
    ticker = undefined;
    const res = await requester.call<BrokerRunResult>("finish");
    const stats = await responder.call<ResponderStats>("stats");
    const after = await Promise.all(t.servers.map(brokerCounters));
    const brokers = Object.fromEntries(
      t.servers.map((s, i) => [
        s.name,
        Object.fromEntries(COUNTERS.map((k) => [k, after[i]![k] - before[i]![k]])) as Record<Counter, number>,
      ]),
    );

    const problems: string[] = [];
    if (res.errors > 0)
      problems.push(
        `${fmtInt(res.errors)} error responses (${Object.entries(res.errorKinds)
          .map(([k, v]) => `${k}: ${v}`)
          .join(", ")}; first: ${res.firstError})`,
      );
    if (res.unexpected > 0) problems.push(`${fmtInt(res.unexpected)} responses to no request in flight`);
    if (res.payloadMismatch > 0)
      problems.push(`${fmtInt(res.payloadMismatch)} responses with the wrong payload`);
    if (res.missing > 0) problems.push(`${fmtInt(res.missing)} requests never answered`);
    if (res.connectionErrors > 0) problems.push(`${res.connectionErrors} requester connections failed`);
    if (res.ok + res.errors + res.missing !== res.sent)
      problems.push(`sent ${res.sent} ≠ ok ${res.ok} + errors ${res.errors} + missing ${res.missing}`);
    if (stats.received !== res.sent)
      problems.push(`the responders received ${fmtInt(stats.received)} requests of ${fmtInt(res.sent)} sent`);
    if (stats.answered !== stats.received || stats.other > 0 || stats.connectionErrors > 0)
      problems.push(
        `responders: ${stats.answered} answered of ${stats.received}, ${stats.other} non-requests, ` +
          `${stats.connectionErrors} connection errors${stats.firstError ? ` (${stats.firstError})` : ""}`,
      );
    for (const [name, d] of Object.entries(brokers)) {
      const bad = (["unroutable", "expired", "deadline_exceeded", "late_responses"] as const).filter(
        (k) => d[k] > 0,
      );
      if (bad.length > 0) problems.push(`${name} counted ${bad.map((k) => `${d[k]} ${k}`).join(", ")}`);
    }

    const latency = new Histogram();
    latency.merge(res.latency);
    const { latency: _l, ...rest } = res;
    const roundTripsPerSec = (res.windowRoundTrips * 1000) / res.windowMs;
    const serverCores =
      t.servers.reduce((a, s) => a + cores[s.name]!, 0) + (t.natsInPath ? cores["nats-server"]! : 0);
    const clientCores = cores.requesters! + cores.responders!;
    const m = {
      scenario,
      inFlight,
      round,
      roundTrips: res.windowRoundTrips,
      windowMs: res.windowMs,
      roundTripsPerSec,
      latencyMs: latency.summaryMs(),
      cores,
      serverCores,
      clientCores,
      serverCpuUsPerRoundTrip: (serverCores * 1e6) / roundTripsPerSec,
      cpuPressure,
      requester: rest,
      responders: stats,
      brokers,
      problems,
      latency,
      profiles,
    };
    const fwd =
      scenario === "two"
        ? `; A forwarded ${fmtInt(brokers[env.a!.name]!.forwarded)}, B received ${fmtInt(brokers[env.b!.name]!.received)}`
        : "";
    ctx.log(
      `[${scenario}] ${String(inFlight).padStart(3)} in flight: ${fmtInt(roundTripsPerSec).padStart(7)} round trips/s, ` +
        `p50 ${fmtMs(m.latencyMs.p50)} p90 ${fmtMs(m.latencyMs.p90)} p99 ${fmtMs(m.latencyMs.p99)} max ${fmtMs(m.latencyMs.max)}; ` +
        `CPU ${Object.entries(cores)
          .map(([k, v]) => `${k} ${fmtFixed(v, 2)}`)
          .join(", ")} (server side ${fmtFixed(m.serverCpuUsPerRoundTrip, 0)} µs/round trip); ` +
        `CPU pressure ${fmtFixed(cpuPressure * 100, 0)} %; ${fmtInt(res.sent)} sent, ` +
        (problems.length === 0 ? "each answered once, OK" : `PROBLEMS: ${problems.join("; ")}`) +
        fwd,
    );
    return m;
  } finally {
    if (ticker) clearInterval(ticker);
    await requester.call("close");
    await responder.call("close");
  }
}

// ---------------------------------------------------------------------------------------------
// CPU profile summary (as in edge.ts)

interface ProfileSummary {
  readonly path: string;
  readonly totalMs: number;
  /** Self time by function (name, file:line), largest first. */
  readonly top: readonly { frame: string; selfMs: number; share: number }[];
  /** Time with the function on the stack (self plus callees), largest first; idle, GC and the root left out. */
  readonly inclusive: readonly { frame: string; totalMs: number; share: number }[];
  /** Self time by where the code lives. */
  readonly byArea: readonly { area: string; selfMs: number; share: number }[];
}

function areaOf(url: string, fn: string): string {
  if (url === "") return fn.startsWith("(") ? fn : "(native)";
  if (url.includes("/node_modules/")) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
    return `package ${m?.[1] ?? "?"}`;
  }
  if (url.startsWith("node:")) return "node internals";
  const m = /\/src\/(.+)\/[^/]+$/.exec(url);
  if (m) return `src/${m[1]}`;
  return "other";
}

function summarizeProfile(path: string): ProfileSummary {
  const p = JSON.parse(readFileSync(path, "utf8")) as {
    nodes: {
      id: number;
      callFrame: { functionName: string; url: string; lineNumber: number };
      children?: number[];
    }[];
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const ch of n.children ?? []) parent.set(ch, n.id);
  const nameOf = (n: (typeof p.nodes)[number]) => {
    const { functionName, url, lineNumber } = n.callFrame;
    const file = url.replace(/^file:\/\//, "").replace(/^.*?\/(src|bench|node_modules)\//, "$1/");
    return `${functionName || "(anonymous)"} ${file ? `${file}:${lineNumber + 1}` : ""}`.trim();
  };
  const frames = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const areas = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    if (!n) continue;
    total += dt;
    const frame = nameOf(n);
    frames.set(frame, (frames.get(frame) ?? 0) + dt);
    const area = areaOf(n.callFrame.url, n.callFrame.functionName);
    areas.set(area, (areas.get(area) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const f = nameOf(byId.get(id)!);
      if (seen.has(f) || f.startsWith("(")) continue;
      seen.add(f);
      inclusive.set(f, (inclusive.get(f) ?? 0) + dt);
    }
  }
  const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return {
    path,
    totalMs: total,
    top: sorted(frames)
      .slice(0, 25)
      .map(([frame, selfMs]) => ({ frame, selfMs, share: selfMs / total })),
    inclusive: sorted(inclusive)
      .slice(0, 40)
      .map(([frame, totalMs]) => ({ frame, totalMs, share: totalMs / total })),
    byArea: sorted(areas).map(([area, selfMs]) => ({ area, selfMs, share: selfMs / total })),
  };
}

// ---------------------------------------------------------------------------------------------

interface Row {
  readonly scenario: Scenario;
  readonly inFlight: number;
  /** Medians over the rounds. */
  readonly roundTripsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly serverCores: number;
  readonly clientCores: number;
  readonly serverCpuUsPerRoundTrip: number;
  /** Round trips/s ÷ NATS's in the same round (median, min, max over the rounds). */
  readonly vsNats: { median: number; min: number; max: number };
  /** p50 latency ÷ NATS's in the same round (median). */
  readonly p50VsNats: number;
  readonly p99VsNats: number;
  readonly problems: number;
}

async function run(ctx: SuiteContext, flags: FlagValues): Promise<unknown> {
  const c = config(flags);
  const source = sourceState();
  ctx.log(describeSource(source));
  const needOne = c.scenarios.includes("one") || c.cpuProf !== undefined;
  const needA = c.scenarios.includes("one-archive") || c.scenarios.includes("two");
  const needB = c.scenarios.includes("two");
  ctx.log(
    `broker suite: ${c.scenarios.map((s) => LABEL[s]).join(" | ")}; ${c.inFlight.join(", ")} requests in flight, ` +
      `${c.payloadBytes}-byte payloads, ${c.requesters} requester and ${c.responders} responder connections ` +
      `(register concurrency ${c.concurrency}), warm-up ${c.warmupMs / 1000} s + ${c.durationMs / 1000} s measured, ` +
      `${c.rounds} round(s) (load ${loadavg()[0]!.toFixed(2)})`,
  );

  const nats = await NatsServer.start({
    storeDir: ctx.tempDir("nats"),
    keepData: ctx.keep,
    log: (l) => ctx.log(`[nats] ${l}`),
  });
  ctx.defer(() => nats.destroy());
  const base = { dev: true, logLevel: "warn", shutdownGraceMs: 1000 };
  // Broker B is an edge of A's server: two writers cannot share a NATS prefix (their
  // commit-log streams, and the brokers' archive streams, would claim the same subjects),
  // and brokers only reach each other under one prefix. A writer plus an edge is the
  // deployment the multi-broker design expects; both archive into A's `<stream>_EVENTS`.
  const viaNats = (id: string) => ({
    ...base,
    nats: nats.url,
    natsPrefix: PREFIX,
    natsStream: STREAM,
    brokerId: `bench-${id}`,
  });
  const [one, a] = await Promise.all([
    needOne ? startServer(ctx, "broker", base) : undefined,
    needA ? startServer(ctx, "broker-a", viaNats("a")) : undefined,
  ]);
  const b = needB ? await startServer(ctx, "broker-b", { ...viaNats("b"), edge: true }) : undefined;
  for (const s of [one, a, b]) {
    if (s)
      ctx.log(
        `[servers] ${s.name}: pid ${s.ready.pid}, gRPC 127.0.0.1:${s.ready.grpcPort}` +
          (s === one
            ? ", no NATS"
            : `, ${s.ready.role} with --nats (stream ${STREAM}, prefix ${PREFIX}, broker id bench-${s === a ? "a" : "b"})`),
      );
  }
  const requester = Helper.fork("requesters", CLIENT_MODULE);
  ctx.defer(() => requester.stop());
  const responder = Helper.fork("responders", CLIENT_MODULE);
  ctx.defer(() => responder.stop());
  const env: Env = {
    c,
    nats,
    ...(one ? { one } : {}),
    ...(a ? { a } : {}),
    ...(b ? { b } : {}),
    requester,
    responder,
  };

  const results: (Measurement & { latency: Histogram; profiles: string[] })[] = [];
  for (let round = 1; round <= c.rounds; round++) {
    for (const inFlight of c.inFlight) {
      const k = (round - 1) % c.scenarios.length;
      const order = [...c.scenarios.slice(k), ...c.scenarios.slice(0, k)];
      for (const s of order) {
        ctx.signal.throwIfAborted();
        ctx.progress(`round ${round}/${c.rounds}: ${LABEL[s]}, ${inFlight} in flight`);
        results.push(await measure(ctx, env, s, inFlight, round));
      }
    }
  }

  const profiles: (ProfileSummary & { scenario: Scenario; roundTripsPerSec: number })[] = [];
  if (c.cpuProf) {
    const inFlight = Math.max(...c.inFlight);
    for (const s of c.scenarios.filter((x) => x !== "nats")) {
      ctx.signal.throwIfAborted();
      ctx.progress(`profiling the brokers: one more ${LABEL[s]} run at ${inFlight} in flight`);
      const m = await measure(ctx, env, s, inFlight, 0, c.cpuProf);
      for (const path of m.profiles) {
        const profile = summarizeProfile(path);
        profiles.push({ ...profile, scenario: s, roundTripsPerSec: m.roundTripsPerSec });
        ctx.log(
          `[profile] ${LABEL[s]}: ${relative(process.cwd(), path)} (${fmtInt(m.roundTripsPerSec)} round trips/s with the profiler on)`,
        );
        ctx.log(
          `  by area: ${profile.byArea
            .slice(0, 12)
            .map((x) => `${x.area} ${fmtFixed(x.share * 100, 1)} %`)
            .join(", ")}`,
        );
        ctx.log("  self time:");
        for (const f of profile.top)
          ctx.log(
            `  ${fmtFixed(f.share * 100, 1).padStart(5)} %  ${fmtMs(f.selfMs).padStart(9)}  ${f.frame}`,
          );
        ctx.log("  inclusive (self + callees):");
        for (const f of profile.inclusive)
          ctx.log(
            `  ${fmtFixed(f.share * 100, 1).padStart(5)} %  ${fmtMs(f.totalMs).padStart(9)}  ${f.frame}`,
          );
      }
    }
  }

  // Summary: medians over rounds, ratios to NATS taken within a round.
  const rows: Row[] = [];
  for (const inFlight of c.inFlight) {
    for (const s of c.scenarios) {
      const ms = results.filter((r) => r.scenario === s && r.inFlight === inFlight);
      const ratio = (f: (r: Measurement) => number) =>
        ms.map((r) => {
          const n = results.find(
            (x) => x.scenario === "nats" && x.inFlight === inFlight && x.round === r.round,
          )!;
          return f(r) / f(n);
        });
      const rts = ratio((r) => r.roundTripsPerSec);
      rows.push({
        scenario: s,
        inFlight,
        roundTripsPerSec: median(ms.map((r) => r.roundTripsPerSec)),
        p50Ms: median(ms.map((r) => r.latencyMs.p50)),
        p99Ms: median(ms.map((r) => r.latencyMs.p99)),
        serverCores: median(ms.map((r) => r.serverCores)),
        clientCores: median(ms.map((r) => r.clientCores)),
        serverCpuUsPerRoundTrip: median(ms.map((r) => r.serverCpuUsPerRoundTrip)),
        vsNats: { median: median(rts), min: Math.min(...rts), max: Math.max(...rts) },
        p50VsNats: median(ratio((r) => r.latencyMs.p50)),
        p99VsNats: median(ratio((r) => r.latencyMs.p99)),
        problems: ms.reduce((a, r) => a + r.problems.length, 0),
      });
    }
  }
  const totalSent = results.reduce((a, r) => a + r.requester.sent, 0);
  const withProblems = results.filter((r) => r.problems.length > 0);
  ctx.log(
    `\nBroker suite: request/response, ${c.payloadBytes}-byte payloads, closed loop; nats-server ${nats.version}; ` +
      `${c.rounds > 1 ? `medians of ${c.rounds} rounds` : "one round"}; ratios to plain NATS in the same round\n`,
  );
  const range = (x: Row["vsNats"]) =>
    c.rounds > 1 ? `${fmtRatio(x.median)} (${fmtRatio(x.min)}–${fmtRatio(x.max)})` : fmtRatio(x.median);
  ctx.log(
    table(
      [
        "scenario",
        "in flight",
        "round trips/s",
        "÷ NATS",
        "p50",
        "p99",
        "p50 ÷ NATS",
        "server CPU",
        "server µs/rt",
        "client CPU",
        "check",
      ],
      rows.map((r) => [
        LABEL[r.scenario],
        String(r.inFlight),
        fmtInt(r.roundTripsPerSec),
        r.scenario === "nats" ? "1" : range(r.vsNats),
        fmtMs(r.p50Ms),
        fmtMs(r.p99Ms),
        r.scenario === "nats" ? "1" : fmtRatio(r.p50VsNats),
        fmtFixed(r.serverCores, 2),
        fmtFixed(r.serverCpuUsPerRoundTrip, 0),
        fmtFixed(r.clientCores, 2),
        r.problems === 0 ? "ok" : `${r.problems} PROBLEMS`,
      ]),
    ),
  );
  ctx.log(
    `\nserver CPU: brokers + nats-server where they are in the path (cores, in the window); server µs/rt: that CPU ` +
      `per round trip. client CPU: the requester and responder processes.`,
  );
  ctx.log(
    withProblems.length === 0
      ? `correctness: all ${fmtInt(totalSent)} requests answered exactly once, OK, with their payload; ` +
          `responders saw each once; no unroutable, expired, DEADLINE_EXCEEDED or late events`
      : `correctness: PROBLEMS in ${withProblems.length} measurements: ${withProblems
          .map((r) => `${r.scenario}@${r.inFlight}: ${r.problems.join("; ")}`)
          .join(" | ")}`,
  );
  return {
    config: c,
    source,
    nats: { version: nats.version, url: nats.url },
    servers: Object.fromEntries(
      [one, a, b].filter((s) => s !== undefined).map((s) => [s.name, { pid: s.ready.pid }]),
    ),
    measurements: results.map(({ latency: _l, profiles: _p, ...m }) => m),
    summary: rows,
    correct: withProblems.length === 0,
    ...(profiles.length > 0 ? { profiles } : {}),
  };
}

export const suite: Suite = {
  flags: {
    "in-flight": {
      type: "string",
      description: "requests in flight (closed loop), comma-separated loads",
      default: "1,64",
    },
    scenarios: {
      type: "string",
      description: `what to measure besides plain NATS (always measured): ${SCENARIOS.filter((s) => s !== "nats").join(", ")}`,
      default: "one,one-archive,two",
    },
    duration: { type: "string", description: "seconds of each measured window", default: "8" },
    warmup: { type: "string", description: "seconds of load before each window", default: "1" },
    "payload-bytes": {
      type: "string",
      description: "request (and echoed response) payload size",
      default: "256",
    },
    requesters: { type: "string", description: "requester connections (components)", default: "2" },
    responders: {
      type: "string",
      description: "responder connections (replicas of one group / one NATS queue group)",
      default: "2",
    },
    concurrency: {
      type: "string",
      description: "register.concurrency of each component (above the load: the broker never queues)",
      default: "256",
    },
    timeout: {
      type: "string",
      description: "request deadline / NATS request timeout, seconds",
      default: "10",
    },
    rounds: {
      type: "string",
      description: "rounds of all measurements (scenario order rotated; medians)",
      default: "1",
    },
    "cpu-prof": {
      type: "string",
      description:
        "directory for CPU profiles of the brokers: one extra run per Sluice scenario at the largest load, summarized",
    },
  },
  run,
};
