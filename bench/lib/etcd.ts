import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePorts, LOOPBACK } from "./ports.js";

/*
 * A single-member etcd on 127.0.0.1, as a comparison peer. Debian's `etcd-server` package
 * (etcd 3.4) provides the binary; it is installed on first use.
 */

export const ETCD_BIN = "/usr/bin/etcd";
const run = promisify(execFile);

export interface EtcdOptions {
  /** Data directory; a fresh temp directory when absent. Removed by {@link EtcdServer.stop}. */
  readonly dataDir?: string;
  /** Where progress lines go. */
  readonly log?: (line: string) => void;
  /** How long to wait for the member to report healthy (default 30 s). */
  readonly startTimeoutMs?: number;
  /** Keep the data directory after stopping. */
  readonly keepData?: boolean;
}

export interface EtcdServer {
  /** `http://127.0.0.1:<port>` */
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly version: string;
  readonly pid: number;
  /** SIGTERM (SIGKILL after 10 s), then removes the data directory. Idempotent. */
  stop(): Promise<void>;
}

/** The etcd build that was launched for a result. */
export interface EtcdInfo {
  readonly bin: string;
  readonly version: string;
}

/** Installs Debian's `etcd-server` if the binary is missing; returns its version. */
export async function ensureEtcd(log: (line: string) => void = () => {}): Promise<EtcdInfo> {
  if (!existsSync(ETCD_BIN)) {
    log(
      `${ETCD_BIN} is missing: installing Debian's etcd-server (apt-get update -qq && apt-get install -y etcd-server)`,
    );
    await new Promise<void>((resolve, reject) => {
      const p = spawn("sh", ["-c", "apt-get update -qq && apt-get install -y -qq etcd-server"], {
        stdio: ["ignore", "inherit", "inherit"],
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      });
      p.once("error", reject);
      p.once("exit", (code, sig) =>
        code === 0 ? resolve() : reject(new Error(`apt-get install etcd-server failed (${code ?? sig})`)),
      );
    });
    if (!existsSync(ETCD_BIN)) throw new Error(`etcd-server installed but ${ETCD_BIN} is still missing`);
  }
  const { stdout } = await run(ETCD_BIN, ["--version"], { env: etcdEnv() });
  const version = /etcd Version:\s*(\S+)/.exec(stdout)?.[1] ?? "unknown";
  if (!version.startsWith("3.4.")) log(`warning: expected etcd 3.4.x, found ${version}`);
  return { bin: ETCD_BIN, version };
}

/** The environment without ETCD_* variables, which etcd would read as flags. */
function etcdEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("ETCD")) env[k] = v;
  return env;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Last resort: no etcd outlives the harness, whatever way it exits. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const c of running) c.kill("SIGKILL");
  });
}

/**
 * Starts a single-member etcd listening on 127.0.0.1 only (free client and peer ports, a
 * temp data dir), and resolves once `/health` says so. Durability is etcd's default: the
 * WAL is fsynced before a write is acknowledged.
 */
export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdServer> {
  const info = await ensureEtcd(opts.log);
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "sluice-etcd-"));
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        return await launch(info, dataDir, opts);
      } catch (err) {
        // Another process may grab a port between picking and binding it.
        if (attempt < 3 && /address already in use/i.test(String((err as Error).message))) continue;
        throw err;
      }
    }
  } catch (err) {
    if (ownDir || !opts.keepData) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
}

async function launch(info: EtcdInfo, dataDir: string, opts: EtcdOptions): Promise<EtcdServer> {
  const [clientPort, peerPort] = (await freePorts(2)) as [number, number];
  const clientUrl = `http://${LOOPBACK}:${clientPort}`;
  const peerUrl = `http://${LOOPBACK}:${peerPort}`;
  // A fresh member directory each launch, so a failed attempt leaves no half-made cluster.
  rmSync(join(dataDir, "member"), { recursive: true, force: true });
  const args = [
    "--name=bench",
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=bench=${peerUrl}`,
    "--initial-cluster-state=new",
    "--initial-cluster-token=sluice-bench",
    "--logger=zap",
    "--log-outputs=stderr",
    "--log-level=error",
  ];
  opts.log?.(`starting etcd ${info.version}: client ${clientUrl}, peer ${peerUrl}, data ${dataDir}`);
  const child = spawn(info.bin, args, { stdio: ["ignore", "pipe", "pipe"], env: etcdEnv() });
  installExitHook();
  running.add(child);
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-16_384);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, sig) => {
      running.delete(child);
      resolve(code ?? sig ?? "unknown");
    });
    child.once("error", (err) => {
      running.delete(child);
      resolve(err.message);
    });
  });
  let exitStatus: number | string | undefined;
  void exited.then((s) => {
    exitStatus = s;
  });

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (exitStatus === undefined) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    if (!opts.keepData) rmSync(dataDir, { recursive: true, force: true });
  };

  const deadline = performance.now() + (opts.startTimeoutMs ?? 30_000);
  while (true) {
    if (exitStatus !== undefined) {
      throw new Error(`etcd exited (${exitStatus}) before becoming healthy:\n${output.trim()}`);
    }
    if (await healthy(clientUrl)) break;
    if (performance.now() > deadline) {
      await stop();
      throw new Error(`etcd did not become healthy on ${clientUrl} in time:\n${output.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { clientUrl, peerUrl, dataDir, version: info.version, pid: child.pid!, stop };
}

async function healthy(clientUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: string };
    return res.ok && body.health === "true";
  } catch {
    return false;
  }
}
