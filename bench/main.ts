/**
 * Sluice's benchmark harness.
 *
 *   npm run bench -- <suite> [--flags]
 *   npm run bench -- <suite> --help
 *
 * A suite is a file `bench/<suite>.ts` exporting `suite` (see lib/suite.ts) plus one line in
 * the table below. Results print as they come and are written to
 * `bench/results/<suite>-<timestamp>.json`.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { boolFlag, describeFlags, FlagError, type FlagSpecs, parseFlags } from "./lib/flags.js";
import { describeMachine, machineInfo } from "./lib/machine.js";
import type { Suite, SuiteContext, SuiteEntry } from "./lib/suite.js";

const SUITES: Readonly<Record<string, SuiteEntry>> = {
  store: {
    summary: "state store commits/s (fsync always) vs etcd puts/s at 1/16/64 writers; lookup scaling",
    load: async () => (await import("./store.js")).suite,
  },
  publisher: {
    summary:
      "EventPublisher: commits/s vs idle subscriptions, deliveries/s to 1k readers, snapshot herd, memory/subscription",
    load: async () => (await import("./publisher.js")).suite,
  },
  acl: {
    summary: "ACL: filtered vs unfiltered delivery to 1k tokens; revocation latency of 10k subscriptions",
    load: async () => (await import("./acl.js")).suite,
  },
  fanout: {
    summary: "gRPC fan-out to 100/1k/10k subscribers: events/s, put-to-receive p50/p99, RSS/sub vs etcd",
    load: async () => (await import("./fanout.js")).suite,
  },
  http: {
    summary:
      "HTTP API: 10k blocking queries on one changing service (responses/s, change-to-response p99, memory); health read req/s vs etcd",
    load: async () => (await import("./http.js")).suite,
  },
  edge: {
    summary:
      "JetStream bridge + 2 edges: bridge commits/s vs JetStream's publish rate, edge catch-up commits/s, commit-to-delivery p50/p99 on edges vs writer",
    load: async () => (await import("./edge.js")).suite,
  },
  broker: {
    summary:
      "component broker request/response: round trips/s and p50/p99 through one broker, with the JetStream archive, and across two brokers over NATS, vs plain NATS request/reply",
    load: async () => (await import("./broker.js")).suite,
  },
  // add `name: { summary, load }` as each lands.
};

/** Flags every suite takes. */
const COMMON_FLAGS: FlagSpecs = {
  keep: { type: "boolean", description: "keep the temp data directories after the run" },
  tmp: { type: "string", description: "parent directory of the run's temp directory", default: tmpdir() },
  help: { type: "boolean", description: "show this suite's flags" },
};

const RESULTS_DIR = fileURLToPath(new URL("./results/", import.meta.url));

class InterruptedError extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
    this.name = "InterruptedError";
  }
}

class UnknownSuiteError extends Error {
  constructor(readonly suite: string | undefined) {
    super(suite === undefined ? "no suite given" : `unknown suite "${suite}"`);
    this.name = "UnknownSuiteError";
  }
}

function usage(): string {
  const w = Math.max(...Object.keys(SUITES).map((s) => s.length));
  return [
    "usage: npm run bench -- <suite> [--flags]     (--help after a suite lists its flags)",
    "",
    "suites:",
    ...Object.entries(SUITES).map(([name, s]) => `  ${name.padEnd(w)}  ${s.summary}`),
  ].join("\n");
}

const t0 = performance.now();
const clock = () => `${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s`;

async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  const entry = Object.hasOwn(SUITES, name) ? SUITES[name] : undefined;
  if (!entry) throw new UnknownSuiteError(name);
  const suite: Suite = await entry.load();
  const specs: FlagSpecs = { ...suite.flags, ...COMMON_FLAGS };
  const flags = parseFlags(rest, specs);
  if (boolFlag(flags, "help")) {
    console.log(`npm run bench -- ${name} [--flags]\n  ${entry.summary}\n\nflags:\n${describeFlags(specs)}`);
    return 0;
  }

  const machine = machineInfo();
  const keep = boolFlag(flags, "keep");
  const tmpParent = resolve(String(flags.tmp));
  mkdirSync(tmpParent, { recursive: true });
  const tmpRoot = mkdtempSync(join(tmpParent, `sluice-bench-${name}-`));
  const startedAt = new Date();
  console.log(`sluice bench: suite ${name}, ${startedAt.toISOString()}`);
  console.log(`machine: ${describeMachine(machine)}`);
  console.log(`data: ${tmpRoot} (${keep ? "kept afterwards" : "removed afterwards; --keep keeps it"})`);

  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (abort.signal.aborted) process.exit(130);
    console.log(`\n${sig}: stopping and cleaning up (again to quit at once)`);
    abort.abort(new InterruptedError(sig));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const cleanups: (() => unknown)[] = [];
  const ctx: SuiteContext = {
    signal: abort.signal,
    tmpRoot,
    keep,
    log: (line = "") => console.log(line),
    progress: (line) => console.log(`  ${clock()}  ${line}`),
    tempDir: (dirName) => mkdtempSync(join(tmpRoot, `${dirName}-`)),
    removeDir: (dir) => {
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
    defer: (fn) => cleanups.push(fn),
  };

  let results: unknown;
  try {
    results = await suite.run(ctx, flags);
  } finally {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        console.error(`cleanup failed: ${(err as Error).message}`);
      }
    }
    if (!keep) rmSync(tmpRoot, { recursive: true, force: true });
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }

  const finishedAt = new Date();
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}-${startedAt.toISOString().replace(/[:.]/g, "-")}.json`);
  const flagsOut = Object.fromEntries(Object.entries(flags).filter(([k]) => k !== "help"));
  const doc = {
    suite: name,
    command: `npm run bench -- ${argv.join(" ")}`,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    machine,
    flags: flagsOut,
    results,
  };
  writeFileSync(file, `${JSON.stringify(doc, null, 2)}\n`);
  console.log(
    `\nresults: ${relative(process.cwd(), file)}  (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof UnknownSuiteError) {
    console.error(`sluice bench: ${err.message}\n\n${usage()}`);
    process.exitCode = 2;
  } else if (err instanceof FlagError) {
    console.error(`sluice bench: ${err.message} (--help lists the flags)`);
    process.exitCode = 2;
  } else if (err instanceof InterruptedError) {
    console.error(`sluice bench: ${err.message}`);
    process.exitCode = 130;
  } else {
    console.error("sluice bench: failed:", err);
    process.exitCode = 1;
  }
}
