#!/usr/bin/env node
import { COMMANDS } from "./client-commands.js";

const USAGE = `sluice <command> [flags]

Commands:
  server                       run the server (sluice server --help)
  edge --nats url              run an edge replica of a writer (sluice edge --help)
  watch service <name> | kv <prefix>     live view, one line per change
  kv put|get|delete|list       key/value operations
  catalog register|deregister|services|service <name>
  acl bootstrap | policy create | token create|delete|list

Client commands reach the server at --addr (default 127.0.0.1:8502, or SLUICE_ADDR)
with the token from --token or SLUICE_TOKEN.
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "help" || cmd === "--help" || cmd === "-h") {
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  if (cmd === "server") {
    // Loaded only when needed: client commands start without the whole server.
    const { serverCommand } = await import("./server-command.js");
    return serverCommand(rest);
  }
  if (cmd === "edge") {
    const { serverCommand } = await import("./server-command.js");
    return serverCommand(rest, "edge");
  }
  const command = COMMANDS[cmd];
  if (!command) {
    process.stderr.write(`sluice: unknown command "${cmd}"\n\n${USAGE}`);
    return 2;
  }
  return command(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if ((err as { code?: string }).code?.startsWith?.("ERR_PARSE_ARGS")) {
      process.stderr.write(`sluice: ${(err as Error).message}\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`sluice: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
