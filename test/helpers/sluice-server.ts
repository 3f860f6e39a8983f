import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { DEFAULTS, type ServerConfig, SluiceServer } from "../../src/server/index.js";

/*
 * Real Sluice servers for integration tests: in memory on an ephemeral port, or on a temp
 * data dir that survives restarts on the same port.
 */

const silent = pino({ level: "silent" });

/** An in-memory server (`dev`) on an ephemeral loopback port. */
export function startDevServer(overrides: Partial<ServerConfig> = {}): Promise<SluiceServer> {
  return SluiceServer.start(
    { ...DEFAULTS, dev: true, grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", ...overrides },
    silent,
  );
}

/** A server on a temp data dir that can be stopped and started again on the same port. */
export class RestartableServer {
  server: SluiceServer | undefined;
  port = 0;
  restarts = 0;

  private constructor(
    readonly dataDir: string,
    private readonly overrides: Partial<ServerConfig>,
  ) {}

  static async start(overrides: Partial<ServerConfig> = {}): Promise<RestartableServer> {
    const s = new RestartableServer(mkdtempSync(join(tmpdir(), "sluice-client-test-")), overrides);
    await s.startAgain();
    return s;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get running(): SluiceServer {
    if (!this.server) throw new Error("server is stopped");
    return this.server;
  }

  /** Starts on the same data dir (and, after the first start, the same port). */
  async startAgain(): Promise<SluiceServer> {
    if (this.server) throw new Error("server is already running");
    const config: ServerConfig = {
      ...DEFAULTS,
      dataDir: this.dataDir,
      fsync: "never",
      grpcAddr: `127.0.0.1:${this.port}`,
      httpAddr: "127.0.0.1:0",
      ...this.overrides,
    };
    // The old listener is closed by stop(); a port freshly released can still be busy for a
    // moment on some kernels, so binding is retried briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        this.server = await SluiceServer.start(config, silent);
        break;
      } catch (err) {
        if (attempt >= 20 || !String((err as Error).message).includes("EADDRINUSE")) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    this.port = this.server.grpcPort;
    return this.server;
  }

  /** Graceful stop: open streams end with UNAVAILABLE. */
  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    await s?.stop();
  }

  async restart(): Promise<SluiceServer> {
    await this.stop();
    this.restarts++;
    return this.startAgain();
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
