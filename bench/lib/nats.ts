import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { connect } from "nats";
import { freePort, LOOPBACK } from "./ports.js";

/*
 * nats-server with JetStream on 127.0.0.1, for the suites that need a NATS (the JetStream
 * bridge and edges). Debian's `nats-server` package provides the binary; it is installed on
 * first use. Started as `nats-server -js -a 127.0.0.1 -p <port> -sd <dir>`; the port and the
 * store directory stay across stop/start, so streams survive a restart as they would on a
 * real server.
 */

const CANDIDATES = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"];
const run = promisify(execFile);

/** The nats-server build that was launched for a result. */
export interface NatsInfo {
  readonly bin: string;
  readonly version: string;
}

function findBinary(): string | undefined {
  return CANDIDATES.find((p) => existsSync(p));
}

/** Installs Debian's `nats-server` if the binary is missing; returns where it is and its version. */
export async function ensureNats(log: (line: string) => void = () => {}): Promise<NatsInfo> {
  let bin = findBinary();
  if (bin === undefined) {
    log(
      "nats-server is missing: installing Debian's nats-server (apt-get update -qq && apt-get install -y nats-server)",
    );
    await new Promise<void>((resolve, reject) => {
      const p = spawn("sh", ["-c", "apt-get update -qq && apt-get install -y -qq nats-server"], {
        stdio: ["ignore", "inherit", "inherit"],
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      });
      p.once("error", reject);
      p.once("exit", (code, sig) =>
        code === 0 ? resolve() : reject(new Error(`apt-get install nats-server failed (${code ?? sig})`)),
      );
    });
    bin = findBinary();
    if (bin === undefined) throw new Error("nats-server installed but its binary is still missing");
  }
  const { stdout } = await run(bin, ["--version"]);
  const version = /v?(\d+\.\d+\.\d+\S*)/.exec(stdout)?.[1] ?? "unknown";
  return { bin, version };
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Last resort: no nats-server outlives the harness, whatever way it exits. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const c of running) c.kill("SIGKILL");
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: LOOPBACK, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export interface NatsOptions {
  /** JetStream store directory; a fresh temp directory when absent. */
  readonly storeDir?: string;
  /** Keep the store directory after {@link NatsServer.destroy}. */
  readonly keepData?: boolean;
  readonly log?: (line: string) => void;
  /** How long `start` waits for JetStream to answer (default 15 s). */
  readonly startTimeoutMs?: number;
}

/**
 * One nats-server with JetStream on a fixed free loopback port. Made stopped ({@link prepare}),
 * so a client can be pointed at its URL before it runs; `start`, `stop` and `restart` keep the
 * port and the store.
 */
export class NatsServer {
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private output = "";
  readonly url: string;

  private constructor(
    readonly info: NatsInfo,
    readonly port: number,
    readonly storeDir: string,
    private readonly opts: NatsOptions,
  ) {
    this.url = `nats://${LOOPBACK}:${port}`;
  }

  /** Picks the port and store directory (installing nats-server if needed) without starting it. */
  static async prepare(opts: NatsOptions = {}): Promise<NatsServer> {
    const info = await ensureNats(opts.log);
    const dir = opts.storeDir ?? mkdtempSync(join(tmpdir(), "sluice-nats-"));
    return new NatsServer(info, await freePort(), dir, opts);
  }

  /** Prepares and starts one. */
  static async start(opts: NatsOptions = {}): Promise<NatsServer> {
    const s = await NatsServer.prepare(opts);
    await s.start();
    return s;
  }

  get version(): string {
    return this.info.version;
  }

  /** The running process's id (undefined while stopped). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  get isRunning(): boolean {
    return this.child !== undefined;
  }

  /**
   * Starts the server and resolves once it accepts connections and JetStream answers
   * (account info through the `nats` client).
   */
  async start(): Promise<void> {
    if (this.child) return;
    const args = ["-js", "-a", LOOPBACK, "-p", String(this.port), "-sd", this.storeDir];
    this.opts.log?.(
      `starting nats-server ${this.info.version}: ${this.url}, JetStream store ${this.storeDir}`,
    );
    const child = spawn(this.info.bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    installExitHook();
    running.add(child);
    this.child = child;
    this.output = "";
    const keep = (chunk: Buffer) => {
      this.output = (this.output + chunk.toString("utf8")).slice(-16_384);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    let exitStatus: string | undefined;
    this.exited = new Promise<void>((resolve) => {
      child.once("exit", (code, sig) => {
        running.delete(child);
        exitStatus = String(code ?? sig);
        if (this.child === child) this.child = undefined;
        resolve();
      });
      child.once("error", (err) => {
        running.delete(child);
        exitStatus = err.message;
        if (this.child === child) this.child = undefined;
        resolve();
      });
    });
    const deadline = performance.now() + (this.opts.startTimeoutMs ?? 15_000);
    const failed = (why: string) => new Error(`nats-server ${why} (${this.url}):\n${this.output.trim()}`);
    while (!(await canConnect(this.port))) {
      if (exitStatus !== undefined) throw failed(`exited (${exitStatus}) before listening`);
      if (performance.now() > deadline) {
        await this.stop();
        throw failed("did not listen in time");
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    for (;;) {
      try {
        const nc = await connect({ servers: this.url, name: "sluice-bench-probe", timeout: 2000 });
        try {
          await (await nc.jetstreamManager()).getAccountInfo();
          return;
        } finally {
          await nc.close();
        }
      } catch (err) {
        if (exitStatus !== undefined) throw failed(`exited (${exitStatus}) before JetStream answered`);
        if (performance.now() > deadline) {
          await this.stop();
          throw failed(`JetStream did not answer in time: ${(err as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** SIGTERM (SIGKILL after 5 s); the store stays. Idempotent. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(timer);
    this.child = undefined;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Stops it and removes the store directory (unless `keepData`). */
  async destroy(): Promise<void> {
    await this.stop();
    if (!this.opts.keepData) rmSync(this.storeDir, { recursive: true, force: true });
  }
}
