import { afterEach, describe, expect, it, vi } from "vitest";
import {
  AclAdmin,
  AclDisabledError,
  AclEnforcer,
  ANONYMOUS_ACCESSOR,
  authorizeTxn,
  BootstrapDoneError,
  type DefaultPolicy,
  GLOBAL_MANAGEMENT_ID,
  GLOBAL_MANAGEMENT_RULES,
  PermissionDeniedError,
  PolicyRulesError,
  type ResolvedToken,
  requirePermission,
  TokenNotFoundError,
  TokenResolver,
} from "../../src/acl/index.js";
import { type Event, type Subject, SubjectKind, Topic } from "../../src/state/events/index.js";
import {
  type ACLTokenRow,
  ConflictError,
  MissingReferenceError,
  queries,
  type StateRoot,
  Store,
  type Txn,
  ValidationError,
} from "../../src/state/index.js";
import {
  EventPublisher,
  type Frame,
  type PublisherOptions,
  type Subscription,
  SubscriptionForceClosedError,
} from "../../src/stream/index.js";
import { drain, shape } from "../helpers/frames.js";

const enc = new TextEncoder();
const key = (k: string): Subject => ({ kind: SubjectKind.Key, key: k });
const prefix = (p: string): Subject => ({ kind: SubjectKind.Prefix, prefix: p });
const wildcard: Subject = { kind: SubjectKind.Wildcard };
const set = (k: string, v = "v"): Txn => [{ op: "kv.set", key: k, value: enc.encode(v) }];
const node = (n: string): Txn => [{ op: "node.register", node: { Node: n, Address: "10.0.0.1" } }];
const svc = (n: string, id: string, name: string): Txn => [
  { op: "service.register", service: { Node: n, ID: id, Service: name } },
];

interface Acl {
  readonly store: Store;
  readonly pub: EventPublisher;
  readonly resolver: TokenResolver;
  readonly enforcer: AclEnforcer;
  readonly admin: AclAdmin;
}

const opened: Acl[] = [];

/**
 * A store, a publisher and the ACL layer on top. Built inside each test: the resolver,
 * enforcer and admin read `Date.now` as it is when they are built (fake or real).
 */
async function openAcl(
  opts: { enabled?: boolean; defaultPolicy?: DefaultPolicy; publisher?: PublisherOptions } = {},
  makeResolver: (o: ConstructorParameters<typeof TokenResolver>[0]) => TokenResolver = (o) =>
    new TokenResolver(o),
): Promise<Acl> {
  const enabled = opts.enabled ?? true;
  const store = await Store.open({ inMemory: true });
  const pub = EventPublisher.attach(store, opts.publisher ?? {});
  const resolver = makeResolver({ enabled, defaultPolicy: opts.defaultPolicy ?? "deny" });
  const enforcer = new AclEnforcer(pub, resolver);
  const admin = new AclAdmin(store, enabled);
  const acl = { store, pub, resolver, enforcer, admin };
  opened.push(acl);
  return acl;
}

afterEach(async () => {
  vi.useRealTimers();
  for (const a of opened.splice(0)) {
    a.enforcer.close();
    a.pub.shutdown();
    await a.store.close();
  }
});

async function policy(acl: Acl, name: string, rules: string): Promise<string> {
  return (await acl.admin.upsertPolicy({ Name: name, Rules: rules })).policy.ID;
}

async function token(
  acl: Acl,
  links: { policies?: string[]; roles?: string[]; ttl?: number; expires?: number },
): Promise<ACLTokenRow> {
  return (
    await acl.admin.upsertToken({
      Policies: (links.policies ?? []).map((ID) => ({ ID })),
      Roles: (links.roles ?? []).map((ID) => ({ ID })),
      ...(links.ttl === undefined ? {} : { ExpirationTTLms: links.ttl }),
      ...(links.expires === undefined ? {} : { ExpirationTime: links.expires }),
    })
  ).token;
}

type Outcome = { readonly frame: Frame } | { readonly error: unknown } | { readonly done: true };

/** A read blocked in next(), settled into an outcome so that a rejection is never unhandled. */
function blockedRead(sub: Subscription): Promise<Outcome> {
  return sub.next().then(
    (r) => (r.done ? { done: true as const } : { frame: r.value }),
    (error: unknown) => ({ error }),
  );
}

/** Whether a promise has settled, without waiting for it. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => {
    done = true;
  });
  await new Promise((r) => setImmediate(r));
  return done;
}

function eventsOf(frames: readonly Frame[]): Event[] {
  return frames.flatMap((f) => (f.kind === "events" || f.kind === "snapshot" ? f.events : []));
}

const kvKeys = (frames: readonly Frame[]): string[] =>
  eventsOf(frames).map((e) => (e.topic === Topic.KV ? e.payload.entry.Key : `?${e.topic}`));
const instances = (frames: readonly Frame[]): string[] =>
  eventsOf(frames).map((e) =>
    e.topic === Topic.ServiceHealth ? `${e.payload.node.Node}/${e.payload.service.ID}` : `?${e.topic}`,
  );

describe("revocation closes exactly the affected subscriptions", () => {
  /**
   * Token A links `kv` directly, B through the role `readers`, C links `other`. Each has
   * subscriptions blocked in a read when the revoking commit lands.
   */
  async function world() {
    const acl = await openAcl();
    const kv = await policy(acl, "kv", 'key_prefix "" { policy = "read" }');
    const other = await policy(acl, "other", 'key_prefix "" { policy = "read" }');
    const readers = (await acl.admin.upsertRole({ Name: "readers", Policies: [{ ID: kv }] })).role.ID;
    const a = await token(acl, { policies: [kv] });
    const b = await token(acl, { roles: [readers] });
    const c = await token(acl, { policies: [other] });
    const subs = {
      a1: await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, a.SecretID),
      a2: await acl.enforcer.subscribe({ topic: Topic.KV, subject: key("x") }, a.SecretID),
      b1: await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, b.SecretID),
      c1: await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, c.SecretID),
    };
    for (const s of Object.values(subs)) expect(shape(drain(s))).toEqual([`EOS${acl.store.index}`]);
    const reads = Object.fromEntries(Object.entries(subs).map(([k, s]) => [k, blockedRead(s)])) as Record<
      keyof typeof subs,
      Promise<Outcome>
    >;
    return { acl, ids: { kv, other, readers }, tokens: { a, b, c }, subs, reads };
  }

  type World = Awaited<ReturnType<typeof world>>;

  /** The named subscriptions' reads fail with the force-closed error; the others still get events. */
  async function expectClosed(w: World, closed: readonly (keyof World["subs"])[]): Promise<void> {
    for (const name of closed) {
      const o = await w.reads[name];
      expect({ name, error: "error" in o ? o.error : o }).toEqual({
        name,
        error: expect.any(SubscriptionForceClosedError),
      });
      expect(w.subs[name].closed).toBe(true);
      await expect(w.subs[name].next()).rejects.toBeInstanceOf(SubscriptionForceClosedError);
    }
    const open = (Object.keys(w.subs) as (keyof World["subs"])[]).filter((n) => !closed.includes(n));
    for (const name of open) {
      expect({ name, closed: w.subs[name].closed }).toEqual({ name, closed: false });
      expect(await settled(w.reads[name])).toBe(false);
    }
    const { index } = await w.acl.store.commit(set("x", "after"));
    for (const name of open) {
      const o = await w.reads[name];
      expect({ name, o }).toEqual({
        name,
        o: { frame: { kind: "events", index, events: [expect.anything()] } },
      });
    }
    expect(w.acl.pub.subscriptionCount).toBe(open.length);
  }

  it("token delete closes that token's subscriptions only", async () => {
    const w = await world();
    await w.acl.admin.deleteToken(w.tokens.a.AccessorID);
    await expectClosed(w, ["a1", "a2"]);
    await expect(
      w.acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, w.tokens.a.SecretID),
    ).rejects.toBeInstanceOf(TokenNotFoundError);
  });

  it("token update closes that token's subscriptions only", async () => {
    const w = await world();
    await w.acl.admin.upsertToken({ AccessorID: w.tokens.a.AccessorID, Description: "renamed" });
    await expectClosed(w, ["a1", "a2"]);
  });

  it("role change closes the tokens linked to the role only", async () => {
    const w = await world();
    await w.acl.admin.upsertRole({ ID: w.ids.readers, Name: "readers", Policies: [{ ID: w.ids.other }] });
    await expectClosed(w, ["b1"]);
  });

  it("role delete closes the tokens linked to the role only", async () => {
    const w = await world();
    await w.acl.admin.deleteRole(w.ids.readers);
    await expectClosed(w, ["b1"]);
  });

  it("policy change closes the tokens linked directly and through a role", async () => {
    const w = await world();
    await w.acl.admin.upsertPolicy({ ID: w.ids.kv, Name: "kv", Rules: 'key_prefix "" { policy = "deny" }' });
    await expectClosed(w, ["a1", "a2", "b1"]);
  });

  it("policy delete closes the tokens linked directly and through a role", async () => {
    const w = await world();
    await w.acl.admin.deletePolicy(w.ids.kv);
    await expectClosed(w, ["a1", "a2", "b1"]);
  });

  it("ACL changes that touch no subscribed token close nothing", async () => {
    const w = await world();
    const fresh = await policy(w.acl, "fresh", 'key "x" { policy = "read" }');
    await w.acl.admin.upsertRole({ Name: "unused", Policies: [{ ID: fresh }] });
    const t = await token(w.acl, { policies: [fresh] });
    await w.acl.admin.deleteToken(t.AccessorID);
    await expectClosed(w, []);
  });

  it("the close lands ahead of the revoking commit's other events", async () => {
    const w = await world();
    const { index } = await w.acl.store.commit([
      ...set("x", "same-commit"),
      { op: "acl.token.delete", accessorId: w.tokens.a.AccessorID },
    ]);
    for (const name of ["a1", "a2"] as const) {
      const o = await w.reads[name];
      expect("error" in o && o.error).toBeInstanceOf(SubscriptionForceClosedError);
    }
    // The others get the commit's KV event as usual.
    for (const name of ["b1", "c1"] as const) {
      expect(await w.reads[name]).toEqual({ frame: { kind: "events", index, events: [expect.anything()] } });
    }
  });

  it("expiry closes the token's subscriptions when it expires (fake timers)", async () => {
    // The store's group commit runs on setImmediate, which stays real.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const acl = await openAcl();
    const kv = await policy(acl, "kv", 'key_prefix "" { policy = "read" }');
    const short = await token(acl, { policies: [kv], ttl: 1000 });
    const long = await token(acl, { policies: [kv], ttl: 60_000 });
    const forever = await token(acl, { policies: [kv] });
    const subs = [short, long, forever].map((t) =>
      acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, t.SecretID),
    );
    const [s, l, f] = await Promise.all(subs);
    for (const sub of [s!, l!, f!]) drain(sub);
    const reads = [s!, l!, f!].map(blockedRead);

    await vi.advanceTimersByTimeAsync(999);
    expect([s!.closed, l!.closed, f!.closed]).toEqual([false, false, false]);
    await vi.advanceTimersByTimeAsync(1);
    expect([s!.closed, l!.closed, f!.closed]).toEqual([true, false, false]);
    const first = await reads[0]!;
    expect("error" in first && first.error).toBeInstanceOf(SubscriptionForceClosedError);

    // The expired token is not found any more, cached or not.
    await expect(
      acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, short.SecretID),
    ).rejects.toBeInstanceOf(TokenNotFoundError);

    const { index } = await acl.store.commit(set("later"));
    for (const r of reads.slice(1)) {
      expect(await r).toEqual({ frame: { kind: "events", index, events: [expect.anything()] } });
    }

    await vi.advanceTimersByTimeAsync(59_000);
    expect([l!.closed, f!.closed]).toEqual([true, false]);
  });

  it("a token updated before it expires is closed by the update, and its new expiry still applies", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const acl = await openAcl();
    const kv = await policy(acl, "kv", 'key_prefix "" { policy = "read" }');
    const t = await token(acl, { policies: [kv], ttl: 1000 });
    const s1 = await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, t.SecretID);
    await acl.admin.upsertToken({ AccessorID: t.AccessorID, Policies: [{ ID: kv }], ExpirationTTLms: 5000 });
    expect(s1.closed).toBe(true);
    const s2 = await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, t.SecretID);
    await vi.advanceTimersByTimeAsync(1000);
    expect(s2.closed).toBe(false);
    await vi.advanceTimersByTimeAsync(4000);
    expect(s2.closed).toBe(true);
  });
});

describe("subscribe", () => {
  it("with an unknown token fails with TokenNotFoundError and opens nothing", async () => {
    const acl = await openAcl();
    await expect(
      acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, "no-such-secret"),
    ).rejects.toBeInstanceOf(TokenNotFoundError);
    expect(acl.pub.subscriptionCount).toBe(0);
  });

  it("with an expired token fails with TokenNotFoundError", async () => {
    const acl = await openAcl();
    const t = await token(acl, { expires: Date.now() - 1 });
    await expect(
      acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, t.SecretID),
    ).rejects.toBeInstanceOf(TokenNotFoundError);
    expect(acl.pub.subscriptionCount).toBe(0);
  });

  it("bootstrap gives a management token that sees everything; a second bootstrap is refused", async () => {
    const acl = await openAcl();
    await acl.store.commit([...set("secret/a"), ...node("n1"), ...svc("n1", "web-1", "web")]);
    const { token: mgmt } = await acl.admin.bootstrap();
    expect(mgmt.Policies).toEqual([GLOBAL_MANAGEMENT_ID]);
    const kv = await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, mgmt.SecretID);
    expect(kvKeys(drain(kv))).toEqual(["secret/a"]);
    const web = await acl.enforcer.subscribe(
      { topic: Topic.ServiceHealth, subject: key("web") },
      mgmt.SecretID,
    );
    expect(instances(drain(web))).toEqual(["n1/web-1"]);
    await expect(acl.admin.bootstrap()).rejects.toBeInstanceOf(BootstrapDoneError);
  });

  it("deleting the global-management policy is allowed, logged, and closes the bootstrap token's streams", async () => {
    const acl = await openAcl();
    const warn = vi.fn();
    const admin = new AclAdmin(acl.store, true, { info: () => {}, warn });
    const { token: mgmt } = await admin.bootstrap();
    const sub = await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, mgmt.SecretID);
    drain(sub);
    await admin.deletePolicy(GLOBAL_MANAGEMENT_ID);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]![0]).toEqual({ policy: GLOBAL_MANAGEMENT_ID });
    expect(() => sub.poll(0)).toThrow(SubscriptionForceClosedError);
    // The token remains, with no rights left.
    await acl.store.commit(set("k"));
    const again = await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, mgmt.SecretID);
    expect(kvKeys(drain(again))).toEqual([]);
  });

  it("of two concurrent bootstraps exactly one wins", async () => {
    const acl = await openAcl();
    const results = await Promise.allSettled([acl.admin.bootstrap(), acl.admin.bootstrap()]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const failed = results.find((r) => r.status === "rejected");
    expect(failed?.status === "rejected" && failed.reason).toBeInstanceOf(BootstrapDoneError);
  });
});

describe("bad ACL input is refused with typed errors and changes nothing", () => {
  async function expectRefused<E extends Error>(
    acl: Acl,
    p: Promise<unknown>,
    cls: new (...args: never[]) => E,
    fields: Partial<Record<keyof E, unknown>>,
  ): Promise<void> {
    const before = acl.store.index;
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(cls);
    expect(err).toMatchObject(fields);
    expect(acl.store.index).toBe(before);
  }

  it("a role or token linking an unknown policy or role", async () => {
    const acl = await openAcl();
    await expectRefused(
      acl,
      acl.admin.upsertRole({ Name: "r", Policies: [{ ID: "nope" }] }),
      MissingReferenceError,
      {
        table: "aclPolicies",
        key: "nope",
        field: "ops[0].role.Policies[0]",
      },
    );
    await expectRefused(
      acl,
      acl.admin.upsertRole({ Name: "r", Policies: [{ Name: "nope" }] }),
      MissingReferenceError,
      {
        table: "aclPolicies",
        key: "nope",
        field: "Policies[0].Name",
      },
    );
    await expectRefused(acl, acl.admin.upsertToken({ Roles: [{ ID: "nope" }] }), MissingReferenceError, {
      table: "aclRoles",
      key: "nope",
      field: "ops[0].token.Roles[0]",
    });
    await expectRefused(acl, acl.admin.upsertToken({ Policies: [{}] }), ValidationError, {
      field: "Policies[0]",
    });
  });

  it("duplicate policy and role names, and duplicate secrets", async () => {
    const acl = await openAcl();
    await policy(acl, "dup", "");
    await expectRefused(acl, acl.admin.upsertPolicy({ Name: "dup", Rules: "" }), ConflictError, {
      table: "aclPolicies",
      field: "Name",
      value: "dup",
    });
    await acl.admin.upsertRole({ Name: "dup-role" });
    await expectRefused(acl, acl.admin.upsertRole({ Name: "dup-role" }), ConflictError, {
      table: "aclRoles",
      field: "Name",
    });
    const t = await token(acl, {});
    await expectRefused(acl, acl.admin.upsertToken({ SecretID: t.SecretID }), ConflictError, {
      table: "aclTokens",
      field: "SecretID",
    });
    await expectRefused(
      acl,
      acl.admin.upsertToken({ AccessorID: t.AccessorID, SecretID: "other" }),
      ValidationError,
      {
        field: "ops[0].token.SecretID",
      },
    );
  });

  it("names that break the naming rules", async () => {
    const acl = await openAcl();
    await expectRefused(acl, acl.admin.upsertPolicy({ Name: "has space", Rules: "" }), ValidationError, {
      field: "ops[0].policy.Name",
    });
    await expectRefused(acl, acl.admin.upsertRole({ Name: "x".repeat(129) }), ValidationError, {
      field: "ops[0].role.Name",
    });
  });

  it("malformed rules never reach the store", async () => {
    const acl = await openAcl();
    await expectRefused(
      acl,
      acl.admin.upsertPolicy({
        Name: "bad",
        Rules: 'key "a" { policy = "read" }\nkey "b" { policy = "nope" }',
      }),
      PolicyRulesError,
      { line: 2 },
    );
    await expectRefused(acl, acl.admin.upsertPolicy({ Name: "bad", Rules: 'key "a" {' }), PolicyRulesError, {
      line: 1,
    });
    expect(queries.policyByName(acl.store.root, "bad")).toBeUndefined();
  });

  it("rule documents over the size bound", async () => {
    const acl = await openAcl();
    const big = Array.from({ length: 2600 }, (_, i) => `key "k${i}" { policy = "read" }`).join("\n");
    expect(big.length).toBeGreaterThan(64 * 1024);
    await expectRefused(acl, acl.admin.upsertPolicy({ Name: "big", Rules: big }), ValidationError, {
      field: "ops[0].policy.Rules",
    });
  });

  it("the global-management policy's rules cannot change; a bad TTL is refused", async () => {
    const acl = await openAcl();
    await acl.admin.bootstrap();
    await expectRefused(
      acl,
      acl.admin.upsertPolicy({ ID: GLOBAL_MANAGEMENT_ID, Name: "global-management", Rules: "" }),
      ValidationError,
      { field: "Rules" },
    );
    await acl.admin.upsertPolicy({
      ID: GLOBAL_MANAGEMENT_ID,
      Name: "global-management",
      Rules: GLOBAL_MANAGEMENT_RULES,
    });
    await expectRefused(acl, acl.admin.upsertToken({ ExpirationTTLms: 0 }), ValidationError, {
      field: "ExpirationTTL",
    });
  });

  it("deleting an unknown token; ACL management with ACLs off", async () => {
    const acl = await openAcl();
    await expectRefused(acl, acl.admin.deleteToken("nope"), MissingReferenceError, { table: "aclTokens" });
    const off = await openAcl({ enabled: false });
    await expectRefused(off, off.admin.bootstrap(), AclDisabledError, {});
    await expectRefused(off, off.admin.upsertPolicy({ Name: "p", Rules: "" }), AclDisabledError, {});
  });
});

describe("filtering", () => {
  it('service "web" read with node "n2" deny sees web on n1 only, in the snapshot and live', async () => {
    let now = 0;
    const acl = await openAcl({ publisher: { progressIntervalMs: 100, now: () => now } });
    await acl.store.commit([
      ...node("n1"),
      ...node("n2"),
      ...svc("n1", "web-1", "web"),
      ...svc("n2", "web-2", "web"),
      ...svc("n1", "api-1", "api"),
    ]);
    const p = await policy(
      acl,
      "web",
      'service "web" { policy = "read" }\nnode "n1" { policy = "read" }\nnode "n2" { policy = "deny" }',
    );
    const t = await token(acl, { policies: [p] });
    const web = await acl.enforcer.subscribe({ topic: Topic.ServiceHealth, subject: key("web") }, t.SecretID);
    const api = await acl.enforcer.subscribe({ topic: Topic.ServiceHealth, subject: key("api") }, t.SecretID);
    const snap = drain(web, now);
    expect(instances(snap)).toEqual(["n1/web-1"]);
    expect(shape(drain(api, now))).toEqual([`EOS${acl.store.index}`]);

    // Live: the n2 instance's commit sends nothing; the n1 one arrives alone.
    const hidden = await acl.store.commit(svc("n2", "web-3", "web"));
    expect(drain(web, now)).toEqual([]);
    const both = await acl.store.commit([...svc("n2", "web-4", "web"), ...svc("n1", "web-5", "web")]);
    const live = drain(web, now);
    expect(shape(live)).toEqual([`E${both.index}:1`]);
    expect(instances(live)).toEqual(["n1/web-5"]);

    // A node-level change re-registers every instance on the node: n2's stay hidden.
    await acl.store.commit([
      { op: "check.register", check: { Node: "n2", CheckID: "serf", Status: "critical" } },
    ]);
    expect(drain(web, now)).toEqual([]);
    // The index still advances, through Progress.
    now = 200;
    expect(shape(drain(web, now))).toEqual([`P${acl.store.index}`]);
    expect(hidden.index).toBeLessThan(acl.store.index);
  });

  it("ServiceList needs service:read on the name", async () => {
    const acl = await openAcl();
    await acl.store.commit([...node("n1"), ...svc("n1", "web-1", "web"), ...svc("n1", "api-1", "api")]);
    const t = await token(acl, {
      policies: [await policy(acl, "p", 'service_prefix "w" { policy = "read" }')],
    });
    const list = await acl.enforcer.subscribe({ topic: Topic.ServiceList, subject: wildcard }, t.SecretID);
    const names = (fs: Frame[]) =>
      eventsOf(fs).map((e) => (e.topic === Topic.ServiceList ? e.payload.name : "?"));
    expect(names(drain(list))).toEqual(["web"]);
    await acl.store.commit([...svc("n1", "db-1", "db"), ...svc("n1", "www-1", "www")]);
    expect(names(drain(list))).toEqual(["www"]);
  });

  it("KV needs key:read on the key; a batch is filtered item by item", async () => {
    const acl = await openAcl();
    await acl.store.commit([...set("app/a"), ...set("app/secret"), ...set("other")]);
    const p = await policy(
      acl,
      "app",
      'key_prefix "app/" { policy = "read" }\nkey "app/secret" { policy = "deny" }',
    );
    const t = await token(acl, { policies: [p] });
    const sub = await acl.enforcer.subscribe({ topic: Topic.KV, subject: prefix("app/") }, t.SecretID);
    expect(kvKeys(drain(sub))).toEqual(["app/a"]);
    const { index } = await acl.store.commit([...set("app/b"), ...set("app/secret", "2"), ...set("app/c")]);
    const frames = drain(sub);
    expect(shape(frames)).toEqual([`E${index}:2`]);
    expect(kvKeys(frames)).toEqual(["app/b", "app/c"]);
  });

  it("resuming from an index filters the missed events too", async () => {
    const acl = await openAcl();
    const t = await token(acl, {
      policies: [await policy(acl, "p", 'key_prefix "pub/" { policy = "read" }')],
    });
    const from = acl.store.index;
    await acl.store.commit(set("pub/1"));
    await acl.store.commit(set("priv/1"));
    await acl.store.commit(set("pub/2"));
    const sub = await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard, index: from }, t.SecretID);
    expect(kvKeys(drain(sub))).toEqual(["pub/1", "pub/2"]);
  });

  it("default allow lets through what no rule denies", async () => {
    const acl = await openAcl({ defaultPolicy: "allow" });
    await acl.store.commit([...set("a"), ...set("secret/x"), ...set("b")]);
    const t = await token(acl, {
      policies: [await policy(acl, "p", 'key_prefix "secret/" { policy = "deny" }')],
    });
    const sub = await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, t.SecretID);
    expect(kvKeys(drain(sub))).toEqual(["a", "b"]);
  });

  it("with ACLs disabled everything goes through, whatever the secret", async () => {
    const acl = await openAcl({ enabled: false });
    await acl.store.commit([...set("a"), ...set("secret/x")]);
    for (const secret of [undefined, "", "no-such-secret"]) {
      const sub = await acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, secret);
      expect(kvKeys(drain(sub))).toEqual(["a", "secret/x"]);
    }
    expect((await acl.enforcer.resolve("no-such-secret")).authorizer.allows("acl", "", "write")).toBe(true);
  });

  it("without a secret the anonymous token, or else the default policy alone, decides", async () => {
    const deny = await openAcl({ defaultPolicy: "deny" });
    await deny.store.commit([...set("a"), ...set("public/x")]);
    for (const secret of [undefined, ""]) {
      const sub = await deny.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, secret);
      expect(kvKeys(drain(sub))).toEqual([]);
    }

    const allow = await openAcl({ defaultPolicy: "allow" });
    await allow.store.commit([...set("a"), ...set("public/x")]);
    const all = await allow.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, undefined);
    expect(kvKeys(drain(all))).toEqual(["a", "public/x"]);

    // An anonymous token with a policy: its rules decide, and changing it closes its streams.
    await deny.admin.ensureAnonymous();
    const before = await deny.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, undefined);
    drain(before);
    const pub = await policy(deny, "public", 'key_prefix "public/" { policy = "read" }');
    await deny.admin.upsertToken({ AccessorID: ANONYMOUS_ACCESSOR, Policies: [{ ID: pub }] });
    expect(() => before.poll(0)).toThrow(SubscriptionForceClosedError);
    const after = await deny.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, undefined);
    expect(kvKeys(drain(after))).toEqual(["public/x"]);
  });
});

describe("authorizeTxn", () => {
  async function authorizer(
    rules: string,
  ): Promise<{ acl: Acl; resolved: ResolvedToken; root: () => StateRoot }> {
    const acl = await openAcl();
    const t = await token(acl, { policies: [await policy(acl, "p", rules)] });
    return { acl, resolved: await acl.enforcer.resolve(t.SecretID), root: () => acl.store.root };
  }

  it("denies a kv.set without key:write and allows it with", async () => {
    const { resolved, root } = await authorizer(
      'key_prefix "app/" { policy = "write" }\nkey "ro" { policy = "read" }',
    );
    expect(() => authorizeTxn(resolved.authorizer, root(), set("app/x"))).not.toThrow();
    let err: unknown;
    try {
      authorizeTxn(resolved.authorizer, root(), [...set("app/y"), ...set("ro")]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PermissionDeniedError);
    expect(err).toMatchObject({ resource: "key", segment: "ro", access: "write" });
  });

  it("kv.deleteTree needs key:write on the prefix and every key under it", async () => {
    const { acl, resolved, root } = await authorizer(
      'key_prefix "app/" { policy = "write" }\nkey "app/locked" { policy = "read" }',
    );
    const tree: Txn = [{ op: "kv.deleteTree", prefix: "app/" }];
    expect(() => authorizeTxn(resolved.authorizer, root(), tree)).not.toThrow();
    await acl.store.commit(set("app/locked"));
    expect(() => authorizeTxn(resolved.authorizer, root(), tree)).toThrow(PermissionDeniedError);
  });

  it("catalog writes need service or node write; ACL writes need acl:write", async () => {
    const { acl, resolved, root } = await authorizer(
      'service "web" { policy = "write" }\nnode "n1" { policy = "write" }',
    );
    await acl.store.commit(node("n1"));
    expect(() => authorizeTxn(resolved.authorizer, root(), svc("n1", "w", "web"))).not.toThrow();
    expect(() => authorizeTxn(resolved.authorizer, root(), svc("n1", "a", "api"))).toThrow(
      PermissionDeniedError,
    );
    expect(() => authorizeTxn(resolved.authorizer, root(), node("n2"))).toThrow(PermissionDeniedError);
    expect(() => authorizeTxn(resolved.authorizer, root(), [{ op: "acl.policy.delete", id: "x" }])).toThrow(
      PermissionDeniedError,
    );
    expect(() => requirePermission(resolved.authorizer, "node", "n1", "read")).not.toThrow();
    expect(() => requirePermission(resolved.authorizer, "key", "k", "read")).toThrow(PermissionDeniedError);
  });
});

/**
 * A resolver whose resolution takes a turn of the event loop, as a cold policy parse does
 * (the HCL parser's WebAssembly module loads asynchronously; until it is ready every parse
 * waits on timers). It resolves against the root it was handed, like the real one.
 */
class SlowResolver extends TokenResolver {
  override async resolve(root: StateRoot, secret: string | undefined): Promise<ResolvedToken> {
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    return super.resolve(root, secret);
  }
}

describe("a subscribe racing an ACL change", () => {
  async function race() {
    const acl = await openAcl({}, (o) => new SlowResolver(o));
    const t = await token(acl, { policies: [await policy(acl, "p", 'key_prefix "" { policy = "read" }')] });
    const subscribing = acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, t.SecretID).then(
      (sub) => ({ sub }),
      (error: unknown) => ({ error }),
    );
    await acl.admin.deleteToken(t.AccessorID);
    return { acl, t, result: await subscribing };
  }

  // BUG (src/acl/acl-enforcer.ts subscribe / src/acl/resolver.ts resolve): resolution is
  // async and the ACL change commits meanwhile; its close finds no subscription yet, and the
  // subscription then opens with the deleted token's rules and is never closed.
  it("does not leave a subscription open for a token deleted meanwhile", async () => {
    const { acl, result } = await race();
    if ("error" in result) {
      expect(result.error).toBeInstanceOf(TokenNotFoundError);
      return;
    }
    expect(result.sub.closed).toBe(true);
    await acl.store.commit(set("after-delete"));
    expect(() => drain(result.sub)).toThrow(SubscriptionForceClosedError);
  });

  // BUG (src/acl/resolver.ts resolve): the stale resolution is cached after the commit's
  // invalidation ran, so the deleted token keeps resolving until the next ACL change.
  it("does not cache the deleted token's resolution", async () => {
    const { acl, t } = await race();
    await expect(
      acl.enforcer.subscribe({ topic: Topic.KV, subject: wildcard }, t.SecretID),
    ).rejects.toBeInstanceOf(TokenNotFoundError);
  });
});
