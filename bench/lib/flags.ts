import { type ParseArgsConfig, parseArgs } from "node:util";

/** One command-line flag of a suite (`--name value` or `--name`). */
export interface FlagSpec {
  readonly type: "string" | "boolean";
  readonly description: string;
  /** Shown in help and used when the flag is absent. */
  readonly default?: string;
}

export type FlagSpecs = Readonly<Record<string, FlagSpec>>;
export type FlagValues = Readonly<Record<string, string | boolean | undefined>>;

/** A flag that is unknown or whose value does not parse. */
export class FlagError extends Error {
  constructor(
    readonly flag: string | undefined,
    reason: string,
    options?: ErrorOptions,
  ) {
    super(flag === undefined ? reason : `--${flag}: ${reason}`, options);
    this.name = "FlagError";
  }
}

/** Parses `args` against the given specs; unknown flags and stray positionals are errors. */
export function parseFlags(args: readonly string[], specs: FlagSpecs): FlagValues {
  const options: NonNullable<ParseArgsConfig["options"]> = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] =
      spec.type === "boolean"
        ? { type: "boolean" }
        : spec.default === undefined
          ? { type: "string" }
          : { type: "string", default: spec.default };
  }
  try {
    const { values, positionals } = parseArgs({
      args: [...args],
      options,
      strict: true,
      allowPositionals: true,
    });
    if (positionals.length > 0) throw new FlagError(undefined, `unexpected argument ${positionals[0]}`);
    return values as FlagValues;
  } catch (err) {
    if (err instanceof FlagError) throw err;
    throw new FlagError(undefined, (err as Error).message, { cause: err });
  }
}

/** Help text for a set of flags, one per line. */
export function describeFlags(specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, s]) => [
    `  --${name}${s.type === "string" ? " <value>" : ""}`,
    s.description + (s.default === undefined ? "" : ` (default ${s.default})`),
  ]);
  const w = Math.max(0, ...rows.map((r) => r[0]!.length));
  return rows.map(([a, b]) => `${a!.padEnd(w)}  ${b}`).join("\n");
}

function raw(values: FlagValues, name: string): string | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new FlagError(name, "expects a value");
  return v;
}

/** A numeric flag (`undefined` when absent and without default). */
export function numberFlag(
  values: FlagValues,
  name: string,
  opts: { min?: number; integer?: boolean } = {},
): number | undefined {
  const v = raw(values, name);
  if (v === undefined) return undefined;
  const n = Number(v.replaceAll("_", ""));
  if (v.trim() === "" || !Number.isFinite(n)) throw new FlagError(name, `not a number: ${v}`);
  if (opts.integer && !Number.isInteger(n)) throw new FlagError(name, `not an integer: ${v}`);
  if (opts.min !== undefined && n < opts.min) throw new FlagError(name, `must be at least ${opts.min}`);
  return n;
}

/** A comma-separated list of positive integers, e.g. `--writers 1,16,64`. */
export function intListFlag(values: FlagValues, name: string): number[] | undefined {
  const v = raw(values, name);
  if (v === undefined) return undefined;
  const parts = v.split(",").map((s) => s.trim().replaceAll("_", ""));
  const out = parts.map((p) => Number(p));
  if (out.length === 0 || out.some((n, i) => parts[i] === "" || !Number.isInteger(n) || n < 1)) {
    throw new FlagError(name, `expects positive integers separated by commas, got ${v}`);
  }
  return out;
}

/** A comma-separated list of words drawn from `allowed`. */
export function choiceListFlag<T extends string>(
  values: FlagValues,
  name: string,
  allowed: readonly T[],
): T[] | undefined {
  const v = raw(values, name);
  if (v === undefined) return undefined;
  const out = v.split(",").map((s) => s.trim());
  for (const s of out) {
    if (!(allowed as readonly string[]).includes(s)) {
      throw new FlagError(name, `unknown value ${s}; expected some of ${allowed.join(", ")}`);
    }
  }
  return out as T[];
}

export function boolFlag(values: FlagValues, name: string): boolean {
  return values[name] === true;
}
