import { parseArgs } from "node:util";
import { ConfigError, flagName, ListenError, loadConfig, SETTINGS, SluiceServer } from "../server/index.js";

const BOOL_FLAGS = new Set(["dev", "acl-enabled", "edge"]);

export const SERVER_USAGE = `sluice server [flags]

Starts the Sluice server. Settings come from defaults, a JSON file (--config), SLUICE_*
environment variables, then flags, in that order.

  --grpc-addr host:port        gRPC address (default 127.0.0.1:8502)
  --http-addr host:port        HTTP address (default 127.0.0.1:8500)
  --data-dir path              where the log and snapshots live (default ./data)
  --dev                        in-memory store, ACLs off
  --fsync always|batch|never   when the log is synced (default always)
  --acl-enabled                enforce ACLs (default deny unless --acl-default-policy allow)
  --acl-default-policy allow|deny
  --history-max-events n       change history kept per topic (default 100000)
  --history-max-bytes n
  --snapshot-cache-ttl-ms n    --progress-interval-ms n    --snapshot-every n
  --max-subscriptions-per-token n    --max-subscriptions-per-connection n
  --shutdown-grace-ms n        --log-level debug|info|warn|error
  --config file.json
  --sse-keep-alive-ms n        SSE keep-alive comment interval (default 15000)
  --notification-channels-per-token n    --notification-subscriptions-per-token n

JetStream (see docs/ARCHITECTURE.md, "JetStream bridge and edges"):
  --nats url[,url]             publish the commit log to JetStream (off when empty)
  --nats-stream name           stream name (default SLUICE)
  --nats-prefix prefix         subject prefix (default sluice: sluice.log, sluice.events.>)
  --nats-snapshot-every n      commits between snapshots stored for edges (default 10000)
  --nats-max-age-sec n         stream retention by age (default 0: unlimited)
  --nats-max-bytes n           stream retention by size (default 0: unlimited)

Component broker (sluice.v1.Broker, /v1/invoke):
  --broker-id id               this broker's id (default host name + random suffix)
  --broker-nats-prefix p       subject prefix all joined brokers share (default sluice: sluice.broker.*)
  --broker-http-allow h[:p],…  hosts the built-in http component may call (default none)
  --broker-archive-max-age-sec n    event archive retention with --nats (default 259200)
`;

export const EDGE_USAGE = `sluice edge --nats url [flags]

Starts an edge: it loads the writer's newest snapshot from JetStream, replays the writer's
commit log after it and follows it, and serves gRPC Subscribe, the HTTP reads and blocking
queries with the writer's indexes. Writes are forwarded to the writer (read-your-writes).
The state is kept in memory; nothing is written to disk.

  --nats url[,url]             the writer's NATS (required)
  --nats-stream name           --nats-prefix prefix      (as the writer's)
  --edge-forward-writes true|false   forward writes to the writer (default true)
  --grpc-addr host:port        --http-addr host:port     --acl-default-policy allow|deny
  --log-level debug|info|warn|error   and the other \`sluice server\` flags
`;

/** `sluice server`: runs until SIGTERM/SIGINT; a second signal forces exit. */
export async function serverCommand(argv: string[], role: "server" | "edge" = "server"): Promise<number> {
  const options: Record<string, { type: "string" | "boolean" }> = {
    config: { type: "string" },
    help: { type: "boolean" },
  };
  for (const k of SETTINGS)
    options[flagName(k)] = { type: BOOL_FLAGS.has(flagName(k)) ? "boolean" : "string" };
  const { values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  if (values.help) {
    process.stdout.write(role === "edge" ? EDGE_USAGE : SERVER_USAGE);
    return 0;
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(role === "edge" ? { ...values, edge: true } : values, process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`sluice: ${err.message}\n`);
    return 2;
  }
  // Signal handlers go in before the server starts: a SIGTERM that arrives while it starts
  // (or right after its banner) must drain it, not kill the process outright.
  let signals = 0;
  let server: SluiceServer | undefined;
  let settle: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => {
    settle = resolve;
  });
  const stop = (s: SluiceServer): void => {
    s.stop().then(
      () => settle(0),
      (err) => {
        s.logger.error({ err }, "shutdown failed");
        settle(1);
      },
    );
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      server?.logger.warn({ signal: sig }, "second signal: forcing exit");
      server?.forceStop();
      settle(1);
      return;
    }
    if (server) stop(server);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    server = await SluiceServer.start(config);
  } catch (err) {
    if (!(err instanceof ListenError)) throw err;
    process.stderr.write(`sluice: ${err.message} (see --grpc-addr / --http-addr)\n`);
    return 1;
  }
  if (signals > 0) {
    stop(server);
    return done;
  }
  const where = config.edge
    ? `replicated from JetStream stream ${config.natsStream} at ${config.nats} (in memory)`
    : config.dev
      ? "in memory (--dev: nothing is kept)"
      : `in ${config.dataDir}`;
  const at = (addr: string, port: number): string => addr.replace(/:\d+$/, `:${port}`);
  process.stderr.write(
    `\nSluice is up. gRPC on ${at(config.grpcAddr, server.grpcPort)}, HTTP on ${at(config.httpAddr, server.httpPort)}; ` +
      `data ${where}.\n` +
      `Try it from another terminal:\n  npm run sluice -- kv put hello world\n  npm run sluice -- watch kv hello\n` +
      `  curl http://${at(config.httpAddr, server.httpPort)}/v1/kv/hello?raw\n` +
      "Stop with Ctrl-C (a second Ctrl-C forces exit).\n\n",
  );
  return done;
}
