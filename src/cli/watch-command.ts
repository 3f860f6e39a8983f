import {
  type KVEntry,
  type MaterializedView,
  type RetryNotice,
  SluiceError,
  type ViewUpdate,
} from "../client/index.js";
import {
  CONNECTION_HELP,
  connect,
  describeError,
  EXIT_FAILED,
  EXIT_OK,
  flag,
  list,
  out,
  outJson,
  parse,
  positionals,
  run,
  statusName,
  text,
  UsageError,
} from "./base-command.js";
import { aggregateStatus, instanceLine } from "./catalog-command.js";

export const WATCH_USAGE = `sluice watch <service <name> [--passing] [--tag t] | kv <prefix>> [--json]

Follows a live view and prints one line per change, with the index it reflects; --json prints
one JSON object per change. Reconnects and resumes on its own; stops on Ctrl-C.

${CONNECTION_HELP}`;

/** Prints every state of a view until a signal ends it (exit 0) or it fails (exit 1). */
async function follow<V>(view: MaterializedView<V>, print: (u: ViewUpdate<V>) => void): Promise<number> {
  const stop = (): void => view.close();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  // A reader that went away (`sluice watch … | head -1`) ends the watch, not with a crash.
  process.stdout.once("error", stop);
  try {
    for await (const u of view) print(u);
    return EXIT_OK;
  } catch (err) {
    process.stderr.write(`sluice: ${describeError(err)}\n`);
    return EXIT_FAILED;
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
    process.stdout.off("error", stop);
  }
}

const kvLine = (e: KVEntry): string => `${e.key}=${text(e.value)}`;

/** `sluice watch service <name> | kv <prefix>`. */
export function watchCommand(argv: string[]): Promise<number> {
  return run(WATCH_USAGE, argv, async () => {
    const [what, ...rest] = argv;
    const p = parse(
      rest,
      { passing: { type: "boolean" }, tag: { type: "string", multiple: true } },
      WATCH_USAGE,
    );
    const json = flag(p, "json");
    if (what !== "service" && what !== "kv") {
      throw new UsageError(what ? `cannot watch "${what}"` : "missing what to watch", WATCH_USAGE);
    }
    const [subject] =
      what === "kv" && p.positionals.length === 0
        ? [""]
        : (positionals(p, [what === "kv" ? "prefix" : "name"], WATCH_USAGE) as [string]);
    const tags = list(p, "tag");
    if (tags.length > 1) throw new UsageError("at most one --tag", WATCH_USAGE);
    if (what === "kv" && (tags.length > 0 || flag(p, "passing"))) {
      throw new UsageError("--passing and --tag apply to watch service", WATCH_USAGE);
    }
    const client = connect(p);
    const onRetry = ({ error, delayMs, resumeIndex }: RetryNotice): void => {
      const code = error instanceof SluiceError ? statusName(error.code) : error.name;
      process.stderr.write(
        `sluice: stream ended (${code}: ${error.message}); ${resumeIndex > 0 ? `resuming from index ${resumeIndex}` : "resubscribing"} in ${delayMs} ms\n`,
      );
    };
    try {
      if (what === "service") {
        const view = client.serviceHealth(subject, {
          passingOnly: flag(p, "passing"),
          ...(tags[0] ? { tag: tags[0] } : {}),
          onRetry,
        });
        return await follow(view, ({ index, value }) => {
          if (json) outJson({ index, service: subject, instances: value });
          else {
            const shown = value.map((i) => `${instanceLine(i).replace(/\t/g, " ")}`).join("; ");
            const passing = value.filter((i) => aggregateStatus(i.checks) === "passing").length;
            out(
              `[${index}] ${subject}: ${value.length} instances (${passing} passing)${shown ? `: ${shown}` : ""}`,
            );
          }
        });
      }
      const view = client.kv(subject, { onRetry });
      return await follow(view, ({ index, value }) => {
        const entries = [...value.values()];
        if (json) {
          const shown = entries.map((e) => ({
            key: e.key,
            value: text(e.value),
            flags: e.flags,
            modify_index: e.modify_index,
          }));
          outJson({ index, prefix: subject, entries: shown });
        } else {
          out(
            `[${index}] ${subject}: ${entries.length} keys${entries.length > 0 ? `: ${entries.map(kvLine).join(", ")}` : ""}`,
          );
        }
      });
    } finally {
      client.close();
    }
  });
}
