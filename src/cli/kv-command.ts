import type { KVEntry } from "../client/index.js";
import {
  CONNECTION_HELP,
  connect,
  EXIT_FAILED,
  EXIT_OK,
  flag,
  out,
  outJson,
  parse,
  positionals,
  run,
  text,
  UsageError,
  uint,
} from "./base-command.js";

export const KV_USAGE = `sluice kv <subcommand> [flags]

  put <key> <value> [--cas n] [--flags n]   set a key (--cas: only if its modify index is n; 0: only if absent)
  get <key>                                  print a key's value
  delete <key> [--recurse] [--cas n]         delete a key (--recurse: every key under it)
  list <prefix> [--keys]                     print key:value for every key under the prefix

${CONNECTION_HELP}`;

const entryJson = (e: KVEntry) => ({
  key: e.key,
  value: text(e.value),
  flags: e.flags,
  lock_index: e.lock_index,
  create_index: e.create_index,
  modify_index: e.modify_index,
});

/** `sluice kv put|get|delete|list`. */
export function kvCommand(argv: string[]): Promise<number> {
  return run(KV_USAGE, argv, async () => {
    const [sub, ...rest] = argv;
    const p = parse(
      rest,
      {
        cas: { type: "string" },
        flags: { type: "string" },
        recurse: { type: "boolean" },
        keys: { type: "boolean" },
      },
      KV_USAGE,
    );
    const json = flag(p, "json");
    const client = connect(p);
    try {
      switch (sub) {
        case "put": {
          const [key, value] = positionals(p, ["key", "value"], KV_USAGE) as [string, string];
          const cas = uint(p, "cas", KV_USAGE);
          const flags = uint(p, "flags", KV_USAGE);
          const index = await client.kvStore.put(key, value, {
            ...(cas !== undefined ? { cas } : {}),
            ...(flags !== undefined ? { flags } : {}),
          });
          if (json) outJson({ index });
          else out(`Success! Data written to: ${key} (index ${index})`);
          return EXIT_OK;
        }
        case "get": {
          const [key] = positionals(p, ["key"], KV_USAGE) as [string];
          const { index, entry } = await client.kvStore.get(key);
          if (!entry) {
            if (json) outJson({ index, entry: null });
            process.stderr.write(`sluice: no key exists at ${key}\n`);
            return EXIT_FAILED;
          }
          if (json) outJson({ index, entry: entryJson(entry) });
          else out(text(entry.value));
          return EXIT_OK;
        }
        case "delete": {
          const [key] = positionals(p, ["key"], KV_USAGE) as [string];
          const recurse = flag(p, "recurse");
          const cas = uint(p, "cas", KV_USAGE);
          if (recurse && cas !== undefined)
            throw new UsageError("--cas cannot be used with --recurse", KV_USAGE);
          const index = await client.kvStore.delete(key, { recurse, ...(cas !== undefined ? { cas } : {}) });
          if (json) outJson({ index });
          else out(`Success! Deleted ${recurse ? "keys with prefix" : "key"}: ${key} (index ${index})`);
          return EXIT_OK;
        }
        case "list": {
          const [prefix] =
            p.positionals.length === 0 ? [""] : (positionals(p, ["prefix"], KV_USAGE) as [string]);
          const keysOnly = flag(p, "keys");
          const { index, entries } = await client.kvStore.list(prefix, { keysOnly });
          if (json) outJson({ index, entries: entries.map(entryJson) });
          else for (const e of entries) out(keysOnly ? e.key : `${e.key}:${text(e.value)}`);
          return EXIT_OK;
        }
        default:
          throw new UsageError(sub ? `unknown subcommand "kv ${sub}"` : "missing subcommand", KV_USAGE);
      }
    } finally {
      client.close();
    }
  });
}
