/*
 * A Sluice server in its own process, for suites that measure the server apart from its
 * clients (RSS, CPU, profiles). Forked by {@link startSluiceChild}; run with --expose-gc so
 * that memory readings are taken after full collections.
 *
 *   argv[2]: JSON of Partial<ServerConfig> laid over DEFAULTS (grpcAddr 127.0.0.1:0)
 */
import { writeHeapSnapshot } from "node:v8";
import pino from "pino";
import { DEFAULTS, type ServerConfig, SluiceServer } from "../../src/server/index.js";
import { serve } from "./child.js";

export interface ServerMemory {
  readonly rss: number;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly arrayBuffers: number;
}

const overrides = JSON.parse(process.argv[2] ?? "{}") as Partial<ServerConfig>;
const config: ServerConfig = { ...DEFAULTS, grpcAddr: "127.0.0.1:0", logLevel: "warn", ...overrides };
const server = await SluiceServer.start(config, pino({ level: config.logLevel }, pino.destination(2)));

const gc = (globalThis as { gc?: () => void }).gc;
const turn = () => new Promise((r) => setImmediate(r));

serve({
  port: () => server.grpcPort,
  index: () => server.store.index,
  /** Memory after full collections (several, with event-loop turns between them). */
  memory: async (): Promise<ServerMemory> => {
    for (let i = 0; i < 4; i++) {
      gc?.();
      await turn();
    }
    const m = process.memoryUsage();
    return {
      rss: m.rss,
      heapUsed: m.heapUsed,
      heapTotal: m.heapTotal,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
    };
  },
  /** Writes a heap snapshot (for looking into the memory per subscription). */
  heapSnapshot: (path: string) => writeHeapSnapshot(path),
  exit: () => server.stop(),
});
