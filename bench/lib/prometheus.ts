/*
 * Reading a Prometheus text exposition (`GET /v1/agent/metrics?format=prometheus`): samples by
 * name and labels, enough to check counters and gauges from outside the server.
 */

export interface PromSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parses the text format; comments and malformed lines are skipped. */
export function parsePrometheus(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(LABEL)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, "$1");
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** One scrape: the sum of the samples of `name` whose labels include `match`. */
export class PromScrape {
  constructor(readonly samples: readonly PromSample[]) {}

  get(name: string, match: Readonly<Record<string, string>> = {}): number {
    let sum = 0;
    let found = false;
    for (const s of this.samples) {
      if (s.name !== name) continue;
      if (Object.entries(match).some(([k, v]) => s.labels[k] !== v)) continue;
      sum += s.value;
      found = true;
    }
    return found ? sum : Number.NaN;
  }
}

/** Fetches and parses `url` (a Prometheus text endpoint). */
export async function scrape(url: string): Promise<PromScrape> {
  const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return new PromScrape(parsePrometheus(await res.text()));
}
