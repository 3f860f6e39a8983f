import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

/*
 * `sluice server` as a person runs it: the built binary, a real data dir, real signals.
 */

const ROOT = resolve(import.meta.dirname, "../..");
const BIN = join(ROOT, "dist/cli/main.js");
const dirs: string[] = [];

// dist/ is built once by the test setup (test/global-setup.ts).

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Running {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string[];
  exit: Promise<number | null>;
}

function start(args: string[], env: NodeJS.ProcessEnv = {}): Running {
  const child = spawn(process.execPath, [BIN, "server", ...args], {
    cwd: ROOT,
    // The HTTP API on a free port too, so that parallel test files never contend for 8500.
    env: { ...process.env, SLUICE_HTTP_ADDR: "127.0.0.1:0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  let buf = "";
  child.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    let nl = buf.indexOf("\n");
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
      nl = buf.indexOf("\n");
    }
  });
  child.stderr!.on("data", (d: Buffer) => stderr.push(d.toString()));
  const exit = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  return { child, lines, stderr, exit };
}

async function waitFor<T>(f: () => T | undefined, ms = 20_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 25));
  }
}

const banner = (r: Running) => r.lines.find((l) => l.msg === "Sluice server started");

describe("sluice server (built binary)", () => {
  it("logs where it listens and keeps its data, and SIGTERM drains it and exits 0", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "sluice-proc-"));
    dirs.push(dataDir);
    const first = start(["--grpc-addr", "127.0.0.1:0", "--data-dir", dataDir, "--fsync", "batch"]);
    const b = await waitFor(() => banner(first));
    expect(b).toMatchObject({ dataDir, acl: "disabled", index: 1 });
    expect(String(b.grpc)).toMatch(/^127\.0\.0\.1:\d+$/);
    // The human-readable "Sluice is up" line follows the log banner on stderr.
    await waitFor(() => (first.stderr.join("").includes(String(b.grpc)) ? true : undefined));
    first.child.kill("SIGTERM");
    expect(await first.exit).toBe(0);
    expect(first.lines.some((l) => l.msg === "stopped")).toBe(true);

    // The same data dir comes back at the same index.
    const second = start(["--grpc-addr", "127.0.0.1:0", "--data-dir", dataDir]);
    const b2 = await waitFor(() => banner(second));
    expect(b2).toMatchObject({ dataDir, index: 1 });
    second.child.kill("SIGINT");
    expect(await second.exit).toBe(0);
  });

  it("reads settings from SLUICE_* variables and says which ACL mode is in force", async () => {
    const r = start(["--dev"], { SLUICE_GRPC_ADDR: "127.0.0.1:0", SLUICE_LOG_LEVEL: "info" });
    const b = await waitFor(() => banner(r));
    expect(b).toMatchObject({ acl: "disabled", dataDir: "(in memory: --dev)" });
    r.child.kill("SIGTERM");
    expect(await r.exit).toBe(0);

    const dataDir = mkdtempSync(join(tmpdir(), "sluice-proc-"));
    dirs.push(dataDir);
    const acl = start(["--data-dir", dataDir, "--acl-enabled"], { SLUICE_GRPC_ADDR: "127.0.0.1:0" });
    expect(await waitFor(() => banner(acl))).toMatchObject({ acl: "enabled, default policy deny" });
    acl.child.kill("SIGTERM");
    expect(await acl.exit).toBe(0);
  });

  it("says which address it cannot listen on, and exits 1", async () => {
    const first = start(["--dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
    const b = await waitFor(() => banner(first));
    const second = start(["--dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", String(b.http)]);
    expect(await second.exit).toBe(1);
    expect(second.stderr.join("")).toContain(`cannot listen for HTTP on ${String(b.http)}`);
    first.child.kill("SIGTERM");
    expect(await first.exit).toBe(0);
  });

  it("refuses a bad setting at start, naming it, and exits 2", async () => {
    for (const [args, env, named] of [
      [["--fsync", "sometimes"], {}, "--fsync"],
      [["--grpc-addr", "nowhere"], {}, "--grpc-addr"],
      [[], { SLUICE_PROGRESS_INTERVAL_MS: "5" }, "SLUICE_PROGRESS_INTERVAL_MS"],
      [["--no-such-flag"], {}, "no-such-flag"],
    ] as const) {
      const r = start([...args], env);
      expect(await r.exit).toBe(2);
      expect(r.stderr.join("")).toContain(named);
    }
  });
});
