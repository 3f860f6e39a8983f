import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  AclAdmin,
  AclEnforcer,
  type DefaultPolicy,
  type PolicyRules,
  type SegmentRule,
  TokenNotFoundError,
  TokenResolver,
} from "../../src/acl/index.js";
import {
  DEFAULT_HANDLERS,
  type Event,
  type Subject,
  SubjectKind,
  Topic,
} from "../../src/state/events/index.js";
import { type Op, queries, Store } from "../../src/state/index.js";
import { EventPublisher, type Subscription, SubscriptionForceClosedError } from "../../src/stream/index.js";
import { fcParams, refAllows, toHcl, toJsonRules } from "../helpers/acl-reference.js";
import { drain } from "../helpers/frames.js";

/*
 * Model-based test of ACL enforcement on the change stream. Random interleavings of ACL
 * changes (policy rules, policy deletes, role links, token links, token deletes, a token
 * change inside a catalog/KV transaction) and catalog/KV writes, with subscriptions of
 * several tokens (and of the anonymous caller) and reads. The model holds the ACL tables
 * and evaluates visibility with the reference evaluator; the catalog and KV are the
 * store's own. After every command:
 *
 * - a subscription is closed exactly when its token was touched by an ACL change since it
 *   opened (token upsert/delete; a role it links; a policy it links directly or by role);
 *   its next read throws SubscriptionForceClosedError and yields nothing;
 * - every event a read delivers is one the token may read now (at the index of delivery);
 * - a caught-up subscription opened at index 0 holds exactly the visible part of its
 *   subject's state.
 *
 * Replay a failure with SLUICE_FC_SEED=<seed> (and SLUICE_FC_PATH=<path>); SLUICE_FC_RUNS
 * sets the number of runs.
 */

const KEYS = ["a", "ab", "abc", "b", "ba"] as const;
const KEY_PREFIXES = ["a", "ab", "b"] as const;
const NODES = ["n1", "n2", "m1"] as const;
const SERVICE_NAMES = ["web", "webx", "api"] as const;
const SERVICE_IDS = ["s1", "s2"] as const;
const POLICIES = ["p0", "p1", "p2"] as const;
const ROLES = ["r0", "r1"] as const;
const TOKENS = ["t0", "t1", "t2"] as const;
const SEGMENTS = {
  service: ["", "w", "web", "webx", "a", "api"],
  node: ["", "n", "n1", "n2", "m1"],
  key: ["", "a", "ab", "abc", "b"],
} as const;

const secretOf = (t: string): string => `secret-${t}`;
const accessorOf = (t: string): string => `accessor-${t}`;

// ---- model ----

interface TokenModel {
  readonly policies: readonly string[];
  readonly roles: readonly string[];
}

interface SubModel {
  readonly sub: Subscription;
  /** undefined: the anonymous caller (no token in the store, so the default policy alone). */
  readonly token: string | undefined;
  readonly label: string;
  /** The subscriber's view, kept for subscriptions opened at index 0. */
  readonly view: Map<string, string> | undefined;
  mustClose: boolean;
  gone: boolean;
}

interface Model {
  readonly def: DefaultPolicy;
  readonly policies: Map<string, PolicyRules>;
  readonly roles: Map<string, readonly string[]>;
  readonly tokens: Map<string, TokenModel>;
  readonly subs: SubModel[];
}

interface Real {
  readonly store: Store;
  readonly pub: EventPublisher;
  readonly enforcer: AclEnforcer;
  readonly admin: AclAdmin;
}

function effectiveRules(m: Model, token: string | undefined): PolicyRules[] {
  if (token === undefined) return [];
  const t = m.tokens.get(token);
  if (!t) return [];
  const ids = new Set(t.policies);
  for (const r of t.roles) for (const p of m.roles.get(r) ?? []) ids.add(p);
  return [...ids].flatMap((id) => {
    const rules = m.policies.get(id);
    return rules ? [rules] : [];
  });
}

/** Issue 4's visibility rules, on the reference evaluator. */
function visible(m: Model, rules: readonly PolicyRules[], e: Event): boolean {
  const can = (resource: "service" | "node" | "key", name: string): boolean =>
    refAllows(rules, m.def, resource, name, "read");
  switch (e.topic) {
    case Topic.ServiceHealth:
      return can("service", e.payload.service.Service) && can("node", e.payload.node.Node);
    case Topic.KV:
      return can("key", e.payload.entry.Key);
    case Topic.ServiceList:
      return can("service", e.payload.name);
    default: {
      const never: never = e;
      return never;
    }
  }
}

/** Tokens a policy reaches, directly or through a role. */
function tokensOfPolicy(m: Model, policy: string): Set<string> {
  const out = new Set<string>();
  for (const [t, row] of m.tokens) {
    if (row.policies.includes(policy)) out.add(t);
    if (row.roles.some((r) => m.roles.get(r)?.includes(policy))) out.add(t);
  }
  return out;
}

function tokensOfRole(m: Model, role: string): Set<string> {
  const out = new Set<string>();
  for (const [t, row] of m.tokens) if (row.roles.includes(role)) out.add(t);
  return out;
}

/** Marks the subscriptions of touched tokens as due to close. */
function touch(m: Model, tokens: Iterable<string>): void {
  const set = new Set(tokens);
  for (const s of m.subs) if (s.token !== undefined && set.has(s.token)) s.mustClose = true;
}

// ---- views ----

function entryOf(e: Event): [string, string] {
  switch (e.topic) {
    case Topic.KV:
      return [e.payload.entry.Key, String(e.payload.entry.ModifyIndex)];
    case Topic.ServiceHealth: {
      const p = e.payload;
      const checks = p.checks.map((c) => `${c.CheckID}:${c.Status}`).join(",");
      return [
        `${p.node.Node}/${p.service.ID}`,
        `${p.service.Service}|${p.service.ModifyIndex}|${p.node.ModifyIndex}|${checks}`,
      ];
    }
    case Topic.ServiceList:
      return [e.payload.name, "listed"];
    default: {
      const never: never = e;
      return never;
    }
  }
}

const removes = (e: Event): boolean => e.payload.op === "deregister" || e.payload.op === "delete";

function expectedView(m: Model, r: Real, s: SubModel): Map<string, string> {
  const rules = effectiveRules(m, s.token);
  const events = DEFAULT_HANDLERS.get(s.sub.topic)!.snapshot(s.sub.subject, r.pub.state);
  return new Map(events.filter((e) => visible(m, rules, e)).map(entryOf));
}

// ---- checks ----

/** Every subscription is closed exactly when the model says its token was touched. */
function checkClosed(m: Model): void {
  for (const s of m.subs) {
    if (s.gone) continue;
    expect({ sub: s.label, closed: s.sub.closed }).toEqual({ sub: s.label, closed: s.mustClose });
  }
}

function read(m: Model, r: Real): void {
  for (const s of m.subs) {
    if (s.gone) continue;
    if (s.mustClose) {
      let err: unknown;
      try {
        s.sub.poll(0);
      } catch (e) {
        err = e;
      }
      expect(err, s.label).toBeInstanceOf(SubscriptionForceClosedError);
      s.gone = true;
      continue;
    }
    const rules = effectiveRules(m, s.token);
    for (const f of drain(s.sub)) {
      switch (f.kind) {
        case "newSnapshotToFollow":
          s.view?.clear();
          break;
        case "snapshot":
        case "events":
          for (const e of f.events) {
            if (!visible(m, rules, e)) {
              expect.fail(
                `${s.label} got ${e.topic} ${JSON.stringify(entryOf(e))} at index ${e.index}, which its token may not read`,
              );
            }
            if (!s.view) continue;
            const [k, v] = entryOf(e);
            if (removes(e)) s.view.delete(k);
            else s.view.set(k, v);
          }
          break;
        default:
          break;
      }
    }
    if (s.view) {
      const want = expectedView(m, r, s);
      expect({ sub: s.label, view: Object.fromEntries([...s.view].sort()) }).toEqual({
        sub: s.label,
        view: Object.fromEntries([...want].sort()),
      });
    }
  }
}

// ---- commands ----

type Cmd = fc.AsyncCommand<Model, Real, false>;

abstract class Base implements Cmd {
  check(_m: Readonly<Model>): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    await this.apply(m, r);
    checkClosed(m);
  }
  abstract apply(m: Model, r: Real): Promise<void>;
  abstract toString(): string;
}

class Write extends Base {
  constructor(
    readonly label: string,
    readonly ops: (r: Real) => Op[],
  ) {
    super();
  }
  async apply(_m: Model, r: Real): Promise<void> {
    const ops = this.ops(r);
    if (ops.length > 0) await r.store.commit(ops);
  }
  toString(): string {
    return this.label;
  }
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

const kvSet = (key: string, v: string) =>
  new Write(`kvSet(${key})`, () => [{ op: "kv.set", key, value: bytes(v) }]);
const kvDelete = (key: string) =>
  new Write(`kvDelete(${key})`, (r) => (queries.kvGet(r.pub.state, key) ? [{ op: "kv.delete", key }] : []));
const kvDeleteTree = (prefix: string) =>
  new Write(`kvDeleteTree(${prefix})`, () => [{ op: "kv.deleteTree", prefix }]);
const registerService = (node: string, id: string, name: string, touchNode: boolean) =>
  new Write(`register(${node}/${id}=${name}${touchNode ? ", node" : ""})`, (r) => [
    ...(touchNode || !queries.getNode(r.pub.state, node)
      ? [{ op: "node.register", node: { Node: node, Address: "10.0.0.1" } } as const]
      : []),
    { op: "service.register", service: { Node: node, ID: id, Service: name } },
  ]);
const deregisterService = (node: string, id: string) =>
  new Write(`deregister(${node}/${id})`, (r) =>
    queries.getService(r.pub.state, node, id) ? [{ op: "service.deregister", node, serviceId: id }] : [],
  );
const deregisterNode = (node: string) =>
  new Write(`deregisterNode(${node})`, (r) =>
    queries.getNode(r.pub.state, node) ? [{ op: "node.deregister", node }] : [],
  );
const nodeCheck = (node: string, status: "passing" | "critical") =>
  new Write(`nodeCheck(${node}=${status})`, (r) =>
    queries.getNode(r.pub.state, node)
      ? [{ op: "check.register", check: { Node: node, CheckID: "serfHealth", Status: status } }]
      : [],
  );

class EditPolicy extends Base {
  constructor(
    readonly id: string,
    readonly rules: PolicyRules,
    readonly json: boolean,
  ) {
    super();
  }
  async apply(m: Model, r: Real): Promise<void> {
    const text = this.json ? toJsonRules(this.rules) : toHcl(this.rules);
    await r.admin.upsertPolicy({ ID: this.id, Name: this.id, Rules: text });
    touch(m, tokensOfPolicy(m, this.id));
    m.policies.set(this.id, this.rules);
  }
  toString(): string {
    return `editPolicy(${this.id}, ${JSON.stringify(this.json ? toJsonRules(this.rules) : toHcl(this.rules))})`;
  }
}

class DeletePolicy extends Base {
  constructor(readonly id: string) {
    super();
  }
  override check(m: Readonly<Model>): boolean {
    return m.policies.has(this.id);
  }
  async apply(m: Model, r: Real): Promise<void> {
    await r.admin.deletePolicy(this.id);
    touch(m, tokensOfPolicy(m, this.id));
    m.policies.delete(this.id);
    for (const [t, row] of m.tokens)
      m.tokens.set(t, { ...row, policies: row.policies.filter((p) => p !== this.id) });
    for (const [role, ps] of m.roles)
      m.roles.set(
        role,
        ps.filter((p) => p !== this.id),
      );
  }
  toString(): string {
    return `deletePolicy(${this.id})`;
  }
}

class EditRole extends Base {
  constructor(
    readonly id: string,
    readonly policies: readonly string[],
  ) {
    super();
  }
  async apply(m: Model, r: Real): Promise<void> {
    const policies = this.policies.filter((p) => m.policies.has(p));
    await r.admin.upsertRole({ ID: this.id, Name: this.id, Policies: policies.map((ID) => ({ ID })) });
    touch(m, tokensOfRole(m, this.id));
    m.roles.set(this.id, policies);
  }
  toString(): string {
    return `editRole(${this.id}, [${this.policies.join(",")}])`;
  }
}

class DeleteRole extends Base {
  constructor(readonly id: string) {
    super();
  }
  override check(m: Readonly<Model>): boolean {
    return m.roles.has(this.id);
  }
  async apply(m: Model, r: Real): Promise<void> {
    await r.admin.deleteRole(this.id);
    touch(m, tokensOfRole(m, this.id));
    m.roles.delete(this.id);
    for (const [t, row] of m.tokens)
      m.tokens.set(t, { ...row, roles: row.roles.filter((x) => x !== this.id) });
  }
  toString(): string {
    return `deleteRole(${this.id})`;
  }
}

class LinkToken extends Base {
  constructor(
    readonly token: string,
    readonly policies: readonly string[],
    readonly roles: readonly string[],
  ) {
    super();
  }
  async apply(m: Model, r: Real): Promise<void> {
    const policies = this.policies.filter((p) => m.policies.has(p));
    const roles = this.roles.filter((x) => m.roles.has(x));
    await r.admin.upsertToken({
      AccessorID: accessorOf(this.token),
      SecretID: secretOf(this.token),
      Policies: policies.map((ID) => ({ ID })),
      Roles: roles.map((ID) => ({ ID })),
    });
    touch(m, [this.token]);
    m.tokens.set(this.token, { policies, roles });
  }
  toString(): string {
    return `linkToken(${this.token}, [${this.policies.join(",")}], [${this.roles.join(",")}])`;
  }
}

class DeleteToken extends Base {
  constructor(readonly token: string) {
    super();
  }
  override check(m: Readonly<Model>): boolean {
    return m.tokens.has(this.token);
  }
  async apply(m: Model, r: Real): Promise<void> {
    await r.admin.deleteToken(accessorOf(this.token));
    touch(m, [this.token]);
    m.tokens.delete(this.token);
  }
  toString(): string {
    return `deleteToken(${this.token})`;
  }
}

/** A token rewritten (links unchanged) in the same transaction as a KV write. */
class TokenAndKv extends Base {
  constructor(
    readonly token: string,
    readonly key: string,
  ) {
    super();
  }
  override check(m: Readonly<Model>): boolean {
    return m.tokens.has(this.token);
  }
  async apply(m: Model, r: Real): Promise<void> {
    const row = m.tokens.get(this.token)!;
    await r.store.commit([
      { op: "kv.set", key: this.key, value: bytes("with-acl") },
      {
        op: "acl.token.upsert",
        token: {
          AccessorID: accessorOf(this.token),
          SecretID: secretOf(this.token),
          Policies: [...row.policies],
          Roles: [...row.roles],
        },
      },
    ]);
    touch(m, [this.token]);
  }
  toString(): string {
    return `tokenAndKv(${this.token}, ${this.key})`;
  }
}

type Target =
  | { readonly topic: typeof Topic.KV; readonly subject: Subject }
  | { readonly topic: typeof Topic.ServiceHealth; readonly subject: Subject }
  | { readonly topic: typeof Topic.ServiceList; readonly subject: Subject };

const describeSubject = (s: Subject): string =>
  s.kind === SubjectKind.Key ? `key:${s.key}` : s.kind === SubjectKind.Prefix ? `prefix:${s.prefix}` : "*";

let subCounter = 0;

class Subscribe extends Base {
  constructor(
    readonly token: string | undefined,
    readonly target: Target,
    /** 0: snapshot; otherwise resume at this fraction of the current index (rounded up). */
    readonly resume: number,
  ) {
    super();
  }
  async apply(m: Model, r: Real): Promise<void> {
    const index = this.resume === 0 ? 0 : Math.max(1, Math.ceil(r.pub.index * this.resume));
    const secret = this.token === undefined ? undefined : secretOf(this.token);
    const req = { topic: this.target.topic, subject: this.target.subject, index };
    if (this.token !== undefined && !m.tokens.has(this.token)) {
      await expect(r.enforcer.subscribe(req, secret)).rejects.toBeInstanceOf(TokenNotFoundError);
      return;
    }
    const sub = await r.enforcer.subscribe(req, secret);
    m.subs.push({
      sub,
      token: this.token,
      label: `#${++subCounter} ${this.token ?? "anonymous"} ${this.target.topic} ${describeSubject(this.target.subject)} @${index}`,
      view: index === 0 ? new Map() : undefined,
      mustClose: false,
      gone: false,
    });
  }
  toString(): string {
    return `subscribe(${this.token ?? "anonymous"}, ${this.target.topic} ${describeSubject(this.target.subject)}, resume=${this.resume})`;
  }
}

class Read extends Base {
  async apply(m: Model, r: Real): Promise<void> {
    read(m, r);
  }
  toString(): string {
    return "read";
  }
}

// ---- arbitraries ----

const segmentRule: fc.Arbitrary<SegmentRule> = fc
  .constantFrom("service" as const, "node" as const, "key" as const)
  .chain((resource) =>
    fc.record({
      resource: fc.constant(resource),
      match: fc.constantFrom("exact" as const, "prefix" as const),
      segment: fc.constantFrom(...SEGMENTS[resource]),
      // Mostly grants, so that plenty of events get through and the denies stand out.
      access:
        resource === "key"
          ? fc.constantFrom(
              "deny" as const,
              "read" as const,
              "read" as const,
              "list" as const,
              "write" as const,
            )
          : fc.constantFrom("deny" as const, "read" as const, "read" as const, "write" as const),
    }),
  );
/** Broad grants that the random rules then carve up. */
const BASE: readonly SegmentRule[] = (["service", "node", "key"] as const).map((resource) => ({
  resource,
  match: "prefix",
  segment: "",
  access: "read",
}));
const rulesArb: fc.Arbitrary<PolicyRules> = fc
  .tuple(fc.subarray([...BASE]), fc.array(segmentRule, { maxLength: 5 }))
  .map(([base, segments]) => ({ segments: [...base, ...segments], globals: [] }));
const subset = <T>(xs: readonly T[]) => fc.subarray([...xs]);

const targetArb: fc.Arbitrary<Target> = fc.oneof(
  fc.constant<Target>({ topic: Topic.KV, subject: { kind: SubjectKind.Wildcard } }),
  fc
    .constantFrom(...KEY_PREFIXES)
    .map((prefix): Target => ({ topic: Topic.KV, subject: { kind: SubjectKind.Prefix, prefix } })),
  fc
    .constantFrom(...KEYS)
    .map((key): Target => ({ topic: Topic.KV, subject: { kind: SubjectKind.Key, key } })),
  fc
    .constantFrom(...SERVICE_NAMES)
    .map((key): Target => ({ topic: Topic.ServiceHealth, subject: { kind: SubjectKind.Key, key } })),
  fc.constant<Target>({ topic: Topic.ServiceList, subject: { kind: SubjectKind.Wildcard } }),
);

const writeArbs: fc.Arbitrary<Cmd>[] = [
  fc.tuple(fc.constantFrom(...KEYS), fc.string({ maxLength: 3 })).map(([k, v]) => kvSet(k, v)),
  fc.constantFrom(...KEYS).map(kvDelete),
  fc.constantFrom(...KEY_PREFIXES).map(kvDeleteTree),
  fc
    .tuple(
      fc.constantFrom(...NODES),
      fc.constantFrom(...SERVICE_IDS),
      fc.constantFrom(...SERVICE_NAMES),
      fc.boolean(),
    )
    .map(([n, id, name, touchNode]) => registerService(n, id, name, touchNode)),
  fc
    .tuple(fc.constantFrom(...NODES), fc.constantFrom(...SERVICE_IDS))
    .map(([n, id]) => deregisterService(n, id)),
  fc.constantFrom(...NODES).map(deregisterNode),
  fc
    .tuple(fc.constantFrom(...NODES), fc.constantFrom("passing" as const, "critical" as const))
    .map(([n, s]) => nodeCheck(n, s)),
];
const aclArbs: fc.Arbitrary<Cmd>[] = [
  fc
    .tuple(fc.constantFrom(...POLICIES), rulesArb, fc.boolean())
    .map(([id, rules, json]) => new EditPolicy(id, rules, json)),
  fc.constantFrom(...POLICIES).map((id) => new DeletePolicy(id)),
  fc.tuple(fc.constantFrom(...ROLES), subset(POLICIES)).map(([id, ps]) => new EditRole(id, ps)),
  fc.constantFrom(...ROLES).map((id) => new DeleteRole(id)),
  fc
    .tuple(fc.constantFrom(...TOKENS), subset(POLICIES), subset(ROLES))
    .map(([t, ps, rs]) => new LinkToken(t, ps, rs)),
  fc.constantFrom(...TOKENS).map((t) => new DeleteToken(t)),
  fc.tuple(fc.constantFrom(...TOKENS), fc.constantFrom(...KEYS)).map(([t, k]) => new TokenAndKv(t, k)),
];
const subscribeArb: fc.Arbitrary<Cmd> = fc
  .tuple(
    fc.option(fc.constantFrom(...TOKENS), { nil: undefined, freq: 5 }),
    targetArb,
    fc.oneof(
      { weight: 3, arbitrary: fc.constant(0) },
      { weight: 1, arbitrary: fc.double({ min: 0.01, max: 1, noNaN: true }) },
    ),
  )
  .map(([t, target, resume]) => new Subscribe(t, target, resume));
const readArb: fc.Arbitrary<Cmd> = fc.constant(new Read());

/** fc.commands picks uniformly among its arbitraries; repeats weight them. */
const weighted = <T>(n: number, xs: readonly T[]): T[] => Array.from({ length: n }, () => xs).flat();
const commandArbs: fc.Arbitrary<Cmd>[] = [
  ...weighted(3, writeArbs),
  ...aclArbs,
  ...weighted(5, [subscribeArb]),
  ...weighted(5, [readArb]),
];

interface Initial {
  readonly def: DefaultPolicy;
  readonly policies: readonly PolicyRules[];
  readonly roles: readonly (readonly string[])[];
  readonly tokens: readonly { policies: readonly string[]; roles: readonly string[] }[];
}

const initialArb: fc.Arbitrary<Initial> = fc.record({
  def: fc.constantFrom<DefaultPolicy>("allow", "deny"),
  policies: fc.tuple(rulesArb, rulesArb, rulesArb),
  roles: fc.tuple(subset(POLICIES), subset(POLICIES)),
  tokens: fc.tuple(...TOKENS.map(() => fc.record({ policies: subset(POLICIES), roles: subset(ROLES) }))),
});

async function setup(init: Initial): Promise<{ model: Model; real: Real }> {
  const store = await Store.open({ inMemory: true });
  const pub = EventPublisher.attach(store, {});
  const resolver = new TokenResolver({ enabled: true, defaultPolicy: init.def });
  const enforcer = new AclEnforcer(pub, resolver);
  const admin = new AclAdmin(store, true);
  const model: Model = {
    def: init.def,
    policies: new Map(),
    roles: new Map(),
    tokens: new Map(),
    subs: [],
  };
  // A populated catalog and KV to start from, so that snapshots have something to filter.
  await store.commit([
    ...KEYS.map((key): Op => ({ op: "kv.set", key, value: bytes(key) })),
    ...NODES.map((Node): Op => ({ op: "node.register", node: { Node, Address: "10.0.0.1" } })),
    ...NODES.flatMap((Node, i) =>
      SERVICE_IDS.map(
        (ID, j): Op => ({
          op: "service.register",
          service: { Node, ID, Service: SERVICE_NAMES[(i + j) % SERVICE_NAMES.length]! },
        }),
      ),
    ),
  ]);
  for (const [i, id] of POLICIES.entries()) {
    const rules = init.policies[i]!;
    await admin.upsertPolicy({ ID: id, Name: id, Rules: toHcl(rules) });
    model.policies.set(id, rules);
  }
  for (const [i, id] of ROLES.entries()) {
    const policies = init.roles[i]!;
    await admin.upsertRole({ ID: id, Name: id, Policies: policies.map((ID) => ({ ID })) });
    model.roles.set(id, policies);
  }
  for (const [i, t] of TOKENS.entries()) {
    const row = init.tokens[i]!;
    await admin.upsertToken({
      AccessorID: accessorOf(t),
      SecretID: secretOf(t),
      Policies: row.policies.map((ID) => ({ ID })),
      Roles: row.roles.map((ID) => ({ ID })),
    });
    model.tokens.set(t, { policies: row.policies, roles: row.roles });
  }
  return { model, real: { store, pub, enforcer, admin } };
}

describe("ACL enforcement on the stream (model-based)", () => {
  it("never delivers what the token may not read, and closes exactly the touched tokens' subscriptions", async () => {
    await fc.assert(
      fc.asyncProperty(
        initialArb,
        fc.commands(commandArbs, { maxCommands: 60, size: "max" }),
        async (init, cmds) => {
          const { model, real } = await setup(init);
          try {
            await fc.asyncModelRun(() => ({ model, real }), [...cmds, new Read()]);
          } finally {
            real.enforcer.close();
            real.pub.shutdown();
            await real.store.close();
          }
        },
      ),
      fcParams(250),
    );
  });
});
