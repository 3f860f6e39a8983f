import type fc from "fast-check";
import type { DefaultPolicy, PolicyRules, Resource } from "../../src/acl/index.js";

/*
 * A reference evaluator written straight from the precedence rules of issue 4, with no
 * shared code with the CASL compiler, plus renderers that write rules back out as the two
 * document forms (HCL and JSON).
 */

export type Level = "deny" | "read" | "list" | "write";
export type Action = "read" | "list" | "write";

const RANK: Readonly<Record<Level, number>> = { deny: 0, read: 1, list: 2, write: 3 };

/** The level the most specific matching rules give, or "default" when none matches. */
export function refLevel(
  policies: readonly PolicyRules[],
  resource: Resource,
  name: string,
): Level | "default" {
  // Specificity: -1 no match; a prefix rule its length; an exact rule beats every prefix.
  let best = -1;
  let levels: Level[] = [];
  const consider = (specificity: number, level: Level): void => {
    if (specificity > best) {
      best = specificity;
      levels = [level];
    } else if (specificity === best) levels.push(level);
  };
  for (const p of policies) {
    for (const r of p.segments) {
      if (r.resource !== resource) continue;
      if (r.match === "exact" && r.segment === name) consider(Number.POSITIVE_INFINITY, r.access);
      if (r.match === "prefix" && name.startsWith(r.segment)) consider(r.segment.length, r.access);
    }
    for (const g of p.globals) if (g.resource === resource) consider(0, g.access);
  }
  if (best < 0) return "default";
  if (levels.includes("deny")) return "deny";
  return levels.reduce((a, b) => (RANK[b] > RANK[a] ? b : a));
}

export function refAllows(
  policies: readonly PolicyRules[],
  defaultPolicy: DefaultPolicy,
  resource: Resource,
  name: string,
  action: Action,
): boolean {
  const level = refLevel(policies, resource, name);
  if (level === "default") return defaultPolicy === "allow";
  return level !== "deny" && RANK[level] >= RANK[action];
}

const keyOf = (r: PolicyRules["segments"][number]): string =>
  r.match === "prefix" ? `${r.resource}_prefix` : r.resource;

/** The rules as an HCL document, one block per rule (several may share a label). */
export function toHcl(rules: PolicyRules): string {
  const lines: string[] = [];
  for (const g of rules.globals) lines.push(`${g.resource} = ${JSON.stringify(g.access)}`);
  for (const r of rules.segments) {
    lines.push(`${keyOf(r)} ${JSON.stringify(r.segment)} {`, `  policy = ${JSON.stringify(r.access)}`, "}");
  }
  return `${lines.join("\n")}\n`;
}

/** The rules as the JSON form; a label used twice becomes a list of bodies. */
export function toJsonRules(rules: PolicyRules): string {
  const doc: Record<string, unknown> = {};
  for (const g of rules.globals) doc[g.resource] = g.access;
  for (const r of rules.segments) {
    type Bodies = Record<string, { policy: string } | { policy: string }[]>;
    const byName = (doc[keyOf(r)] ?? {}) as Bodies;
    doc[keyOf(r)] = byName;
    const body = { policy: r.access };
    const had = byName[r.segment];
    if (had === undefined) byName[r.segment] = body;
    else if (Array.isArray(had)) had.push(body);
    else byName[r.segment] = [had, body];
  }
  return JSON.stringify(doc, null, 2);
}

const SEED = process.env.SLUICE_FC_SEED === undefined ? undefined : Number(process.env.SLUICE_FC_SEED);
const RUNS = process.env.SLUICE_FC_RUNS === undefined ? undefined : Number(process.env.SLUICE_FC_RUNS);
const PATH = process.env.SLUICE_FC_PATH;

/** Run count and seed from SLUICE_FC_RUNS / SLUICE_FC_SEED (and SLUICE_FC_PATH) so a failure replays. */
export const fcParams = <T>(defaultRuns: number): fc.Parameters<T> => ({
  numRuns: RUNS ?? defaultRuns,
  ...(SEED === undefined ? {} : { seed: SEED }),
  ...(PATH === undefined ? {} : { path: PATH }),
});
