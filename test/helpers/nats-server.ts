import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A free loopback TCP port (bound, then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * A real nats-server (Debian's package, installed by the test setup) with JetStream, on a
 * free loopback port, storing in a temp dir. `restart` keeps the port and the store dir, so
 * streams survive it as they would a real server restart.
 */
export class NatsServer {
  private child: ChildProcess | undefined;
  readonly url: string;

  private constructor(
    readonly port: number,
    readonly storeDir: string,
  ) {
    this.url = `nats://127.0.0.1:${port}`;
  }

  static async start(): Promise<NatsServer> {
    const s = new NatsServer(await freePort(), mkdtempSync(join(tmpdir(), "sluice-nats-")));
    await s.up();
    return s;
  }

  private async up(): Promise<void> {
    const child = spawn(
      "nats-server",
      ["-js", "-a", "127.0.0.1", "-p", String(this.port), "-sd", this.storeDir],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let stderr = "";
    child.stderr?.on("data", (d) => {
      stderr += String(d);
    });
    this.child = child;
    const t0 = Date.now();
    while (!(await canConnect(this.port))) {
      if (child.exitCode !== null) throw new Error(`nats-server exited (${child.exitCode}): ${stderr}`);
      if (Date.now() - t0 > 10_000) throw new Error(`nats-server did not listen on ${this.port}: ${stderr}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Stops the server (SIGTERM, then SIGKILL); its data stays. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.up();
  }

  /** Stops it and removes its store. */
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.storeDir, { recursive: true, force: true });
  }
}
