import { parseArgs } from "node:util";
import { codeName, SluiceClient, SluiceError } from "../client/index.js";

/*
 * What every client command shares: connection flags, argument parsing, output, and the
 * mapping of failures to exit codes (1: the request failed; 2: the command line is wrong).
 */

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export const DEFAULT_ADDR = "127.0.0.1:8502";

export const CONNECTION_HELP = `Common flags:
  --addr host:port     server gRPC address (default $SLUICE_ADDR or ${DEFAULT_ADDR})
  --token secret       ACL token (default $SLUICE_TOKEN)
  --json               machine-readable output
`;

/** The command line is wrong; `usage` is shown with the message. */
export class UsageError extends Error {
  override readonly name = "UsageError";
  constructor(
    message: string,
    readonly usage: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

type OptionSpec = { type: "string" | "boolean"; multiple?: boolean; short?: string };

const COMMON = {
  addr: { type: "string" },
  token: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies Record<string, OptionSpec>;

/** Parsed command line: positionals and flag values (strings, booleans, or string lists). */
export interface Parsed {
  readonly positionals: string[];
  readonly values: Record<string, string | boolean | string[] | undefined>;
}

/** Parses `argv` with node:util's parseArgs; unknown flags are usage errors. */
export function parse(argv: string[], options: Record<string, OptionSpec>, usage: string): Parsed {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...COMMON, ...options },
      allowPositionals: true,
      strict: true,
    });
    return { positionals, values: values as Parsed["values"] };
  } catch (err) {
    throw new UsageError((err as Error).message, usage, { cause: err });
  }
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

export function list(p: Parsed, name: string): string[] {
  const v = p.values[name];
  return Array.isArray(v) ? v : typeof v === "string" ? [v] : [];
}

export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** A non-negative integer flag. */
export function uint(p: Parsed, name: string, usage: string): number | undefined {
  const raw = str(p, name);
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
    throw new UsageError(`--${name} must be a non-negative integer, got "${raw}"`, usage);
  }
  return Number(raw);
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90s`, `10m`, `1h30m`, `500ms` → milliseconds; undefined when malformed. */
export function parseDuration(text: string): number | undefined {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
  let total = 0;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    if (m.index !== consumed) return undefined;
    total += Number(m[1]) * (UNIT_MS[m[2]!] ?? Number.NaN);
    consumed += m[0].length;
  }
  if (consumed === 0 || consumed !== text.length || !Number.isFinite(total)) return undefined;
  return Math.round(total);
}

/** Exactly `n` positionals after the subcommand, or a usage error naming them. */
export function positionals(p: Parsed, names: readonly string[], usage: string): string[] {
  if (p.positionals.length !== names.length) {
    const want = names.map((n) => `<${n}>`).join(" ");
    throw new UsageError(
      p.positionals.length < names.length
        ? `missing ${want}`
        : `unexpected argument "${p.positionals[names.length]}"`,
      usage,
    );
  }
  return p.positionals;
}

/** A client for the connection flags (`--addr`, `--token`, or SLUICE_ADDR / SLUICE_TOKEN). */
export function connect(p: Parsed): SluiceClient {
  const address = str(p, "addr") ?? process.env.SLUICE_ADDR ?? DEFAULT_ADDR;
  const token = str(p, "token") ?? process.env.SLUICE_TOKEN;
  return new SluiceClient({ address, ...(token ? { token } : {}) });
}

export function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function outJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, jsonBytes)}\n`);
}

const utf8 = new TextDecoder();

/** Bytes (KV values) as UTF-8 text. */
export function text(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}

function jsonBytes(_key: string, value: unknown): unknown {
  if (value && typeof value === "object" && (value as { type?: unknown }).type === "Buffer") {
    return utf8.decode(Buffer.from((value as { data: number[] }).data));
  }
  return value;
}

/** `PERMISSION_DENIED`, as gRPC tools spell status codes. */
export function statusName(code: number): string {
  return codeName(code)
    .replace(/(?<=[a-z])(?=[A-Z])/g, "_")
    .toUpperCase();
}

/** One line about a failed request, for stderr. */
export function describeError(err: unknown): string {
  if (err instanceof SluiceError) return `${err.details || codeName(err.code)} (${statusName(err.code)})`;
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs a command body: prints the server's message for a failed request (exit 1) and the
 * usage for a wrong command line (exit 2).
 */
export async function run(usage: string, argv: string[], body: () => Promise<number>): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage);
    return EXIT_OK;
  }
  try {
    return await body();
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`sluice: ${err.message}\n\n${err.usage}`);
      return EXIT_USAGE;
    }
    process.stderr.write(`sluice: ${describeError(err)}\n`);
    return EXIT_FAILED;
  }
}
