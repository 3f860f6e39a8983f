import { Ability, type RawRuleFrom } from "@casl/ability";
import { ACCESS_RANK, Access, type PolicyRules, type Resource } from "./rules.js";

/** The actions a rule grants or denies; an access level maps onto them. */
type Action = "read" | "list" | "write";
const ACTIONS: readonly Action[] = ["read", "list", "write"];

type Conditions = { readonly exact: string } | { readonly prefix: string };
interface Target {
  readonly __type: Resource;
  readonly name: string;
}
type Rule = RawRuleFrom<[Action, Resource], Conditions>;

/** Answers "may this token do X to resource R named N?". */
export interface Authorizer {
  allows(resource: Resource, name: string, action: Action): boolean;
}

/** The authorizer of a server without ACLs, and of management tokens' callers in tests. */
export const ALLOW_ALL: Authorizer = { allows: () => true };

export type DefaultPolicy = "allow" | "deny";

const MAX_DECISIONS = 10_000;
const EXACT = Number.MAX_SAFE_INTEGER;

function conditionsMatcher(c: Conditions): (t: Target) => boolean {
  if ("exact" in c) {
    const want = c.exact;
    return (t) => t.name === want;
  }
  const p = c.prefix;
  return (t) => t.name.startsWith(p);
}

/**
 * Compiles rules into a CASL ability with Consul's precedence. CASL lets the last matching
 * rule win, so rules go in ascending precedence: the default policy, then prefixes from
 * shortest to longest, then exact names; at equal specificity read < list < write < deny,
 * so deny wins and otherwise the most permissive. Each rule states every action (granted
 * up to its level, denied above), so a more specific weaker rule also takes away what a
 * less specific stronger one granted.
 */
export function compileAuthorizer(
  policies: readonly PolicyRules[],
  defaultPolicy: DefaultPolicy,
): Authorizer {
  interface Ordered {
    readonly resource: Resource;
    readonly access: Access;
    readonly conditions: Conditions | undefined;
    readonly specificity: number;
  }
  const ordered: Ordered[] = [];
  for (const p of policies) {
    for (const r of p.segments) {
      ordered.push({
        resource: r.resource,
        access: r.access,
        conditions: r.match === "exact" ? { exact: r.segment } : { prefix: r.segment },
        specificity: r.match === "exact" ? EXACT : 1 + r.segment.length,
      });
    }
    for (const g of p.globals)
      ordered.push({ resource: g.resource, access: g.access, conditions: undefined, specificity: 1 });
  }
  const tie = (a: Access): number => (a === Access.Deny ? 4 : ACCESS_RANK[a]);
  ordered.sort((a, b) => a.specificity - b.specificity || tie(a.access) - tie(b.access));

  const rules: Rule[] = [];
  if (defaultPolicy === "allow") {
    rules.push({ action: [...ACTIONS], subject: ["service", "node", "key", "component", "acl", "operator"] });
  }
  for (const r of ordered) {
    const rank = ACCESS_RANK[r.access];
    const granted = ACTIONS.filter((a) => r.access !== Access.Deny && ACCESS_RANK[a] <= rank);
    const denied = ACTIONS.filter((a) => !granted.includes(a));
    const base = r.conditions ? { subject: r.resource, conditions: r.conditions } : { subject: r.resource };
    if (granted.length > 0) rules.push({ ...base, action: granted });
    if (denied.length > 0) rules.push({ ...base, action: denied, inverted: true });
  }
  const ability = new Ability<[Action, Resource | Target], Conditions>(rules as never, {
    conditionsMatcher: conditionsMatcher as never,
    detectSubjectType: (t) => (t as Target).__type,
  });
  return new CaslAuthorizer(ability);
}

class CaslAuthorizer implements Authorizer {
  /**
   * Decisions already made, by resource, action and name: the hot path is two property
   * reads and one map lookup by the event's own string, with nothing built per call.
   */
  private readonly decisions: Partial<Record<Resource, Record<Action, Map<string, boolean>>>> = {};
  private size = 0;

  constructor(private readonly ability: Ability<[Action, Resource | Target], Conditions>) {}

  allows(resource: Resource, name: string, action: Action): boolean {
    let byAction = this.decisions[resource];
    if (byAction === undefined) {
      byAction = { read: new Map(), list: new Map(), write: new Map() };
      this.decisions[resource] = byAction;
    }
    const bucket = byAction[action];
    const hit = bucket.get(name);
    if (hit !== undefined) return hit;
    const ok = this.ability.can(action, { __type: resource, name });
    if (++this.size > MAX_DECISIONS) {
      for (const b of Object.values(this.decisions)) for (const m of Object.values(b)) m.clear();
      this.size = 1;
    }
    bucket.set(name, ok);
    return ok;
  }
}
