import { BadRequestError } from "./errors.js";

/** A parsed query string, as fastify hands it over (repeated names become arrays). */
export type QueryParams = Readonly<Record<string, string | readonly string[] | undefined>>;

/** The first value of a parameter, or undefined when it is absent. */
export function param(query: QueryParams, name: string): string | undefined {
  const v = query[name];
  return typeof v === "string" ? v : v?.[0];
}

/** Every value of a repeatable parameter (`?tag=a&tag=b`). */
export function params(query: QueryParams, name: string): readonly string[] {
  const v = query[name];
  return v === undefined ? [] : typeof v === "string" ? [v] : v;
}

export function has(query: QueryParams, name: string): boolean {
  return query[name] !== undefined;
}

const TRUE = new Set(["1", "t", "T", "true", "TRUE", "True"]);
const FALSE = new Set(["0", "f", "F", "false", "FALSE", "False"]);

/**
 * A boolean flag as Consul reads one: absent is false, present without a value (`?passing`)
 * is true, otherwise Go's strconv.ParseBool spellings; anything else is a bad request.
 */
export function flag(query: QueryParams, name: string): boolean {
  const v = param(query, name);
  if (v === undefined) return false;
  if (v === "" || TRUE.has(v)) return true;
  if (FALSE.has(v)) return false;
  throw new BadRequestError(name, `invalid value for ?${name}: "${v}" (want true or false)`);
}

/** An unsigned integer parameter (`?cas=`, `?flags=`, `?index=`); undefined when absent. */
export function uint(query: QueryParams, name: string, what = `?${name}`): number | undefined {
  const v = param(query, name);
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n))
    throw new BadRequestError(name, `invalid ${what}: "${v}" (want a non-negative integer)`);
  return n;
}

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  "\u00b5s": 1e-3,
  "\u03bcs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const COMPONENT = /(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/y;

/**
 * Parses a Go duration (`10s`, `1m30s`, `250ms`, `0`) into milliseconds, as Consul's
 * `?wait=` takes it. Returns undefined for anything Go's time.ParseDuration refuses.
 */
export function parseGoDuration(text: string): number | undefined {
  let s = text;
  let sign = 1;
  if (s.startsWith("-") || s.startsWith("+")) {
    if (s[0] === "-") sign = -1;
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (s === "") return undefined;
  let total = 0;
  COMPONENT.lastIndex = 0;
  while (COMPONENT.lastIndex < s.length) {
    const at = COMPONENT.lastIndex;
    const m = COMPONENT.exec(s);
    if (!m || m.index !== at) return undefined;
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
  }
  return sign * total;
}
