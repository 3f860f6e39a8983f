/**
 * Suite `acl`: what ACL enforcement costs the change stream, in one process, on in-memory
 * Stores.
 *
 *   npm run bench -- acl [--only filter,revoke] [--bursts 10,100] [--repeat 3] [--revoke-subs 10000]
 *
 * - filter: events delivered/s to 1,000 subscribers of one KV key, each on its own token whose
 *   own policy allows the key (ACLs enabled, default deny: the filter runs on every event for
 *   every subscriber), against the same load with ACLs disabled (no filter). The two set-ups
 *   live side by side and are measured alternately.
 * - revoke: 10,000 subscriptions of one token, on distinct keys, each blocked in `next()`;
 *   then a commit deletes the token. Times from the commit being issued, and from it being
 *   published, to the last read rejecting with SubscriptionForceClosedError.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { AclAdmin, AclEnforcer, TokenResolver } from "../src/acl/index.js";
import { type Subject, SubjectKind, Topic } from "../src/state/events/index.js";
import { Store } from "../src/state/index.js";
import {
  EventPublisher,
  FrameKind,
  type Subscription,
  SubscriptionForceClosedError,
} from "../src/stream/index.js";
import { choiceListFlag, type FlagValues, intListFlag, numberFlag } from "./lib/flags.js";
import { describeSource, sourceState } from "./lib/source.js";
import { fmtFixed, fmtInt, fmtMs, fmtRatio, median, table } from "./lib/stats.js";
import { type DeliveryResult, runDelivery, settle, waitUntil } from "./lib/stream.js";
import type { Suite, SuiteContext } from "./lib/suite.js";

const PARTS = ["filter", "revoke"] as const;
type Part = (typeof PARTS)[number];

/** Targets (issue 4). */
const FILTER_MAX_COST = 0.2;
const REVOKE_MAX_MS = 100;

const HOT_KEY = "bench/hot";

interface Config {
  readonly parts: readonly Part[];
  readonly subscribers: number;
  readonly bursts: readonly number[];
  readonly durationMs: number;
  /** Keys the writer cycles through (1: one hot key; more: frames mix keys). */
  readonly keys: number;
  readonly repeat: number;
  readonly revokeSubs: number;
  readonly revokeRepeat: number;
  readonly valueBytes: number;
}

function config(flags: FlagValues): Config {
  return {
    parts: choiceListFlag(flags, "only", PARTS)!,
    subscribers: numberFlag(flags, "subscribers", { min: 1, integer: true })!,
    bursts: intListFlag(flags, "bursts")!,
    durationMs: numberFlag(flags, "duration", { min: 0.1 })! * 1000,
    keys: numberFlag(flags, "keys", { min: 1, integer: true })!,
    repeat: numberFlag(flags, "repeat", { min: 1, integer: true })!,
    revokeSubs: numberFlag(flags, "revoke-subs", { min: 1, integer: true })!,
    revokeRepeat: numberFlag(flags, "revoke-repeat", { min: 1, integer: true })!,
    valueBytes: numberFlag(flags, "value-bytes", { min: 0, integer: true })!,
  };
}

const key = (k: string): Subject => ({ kind: SubjectKind.Key, key: k });
// The filtered-delivery subscribers watch a prefix: a single-key subscription is decided
// once at subscribe time and would not exercise the per-event filter at all.
const prefix = (p: string): Subject => ({ kind: SubjectKind.Prefix, prefix: p });

/** Timestamps of the next commit's publication, taken by publisher hooks around the enforcer's. */
interface Marks {
  armed: boolean;
  /** Publication of the commit began (before the enforcer's hook). */
  publishAt: number;
  /** The enforcer's hook has closed the affected streams (synchronously). */
  closedAt: number;
}

/** A store, a publisher and the ACL layer on it, as the server wires them. */
interface AclEnv {
  readonly enabled: boolean;
  readonly store: Store;
  readonly pub: EventPublisher;
  readonly enforcer: AclEnforcer;
  readonly admin: AclAdmin;
  readonly marks: Marks;
  close(): Promise<void>;
}

async function openEnv(ctx: SuiteContext, enabled: boolean): Promise<AclEnv> {
  const store = await Store.open({ inMemory: true });
  const pub = EventPublisher.attach(store);
  const marks: Marks = { armed: false, publishAt: Number.NaN, closedAt: Number.NaN };
  // Hooks run in the order they were added: this one before the enforcer's, the next after it.
  pub.beforePublish(() => {
    if (marks.armed) marks.publishAt = performance.now();
  });
  const resolver = new TokenResolver({ enabled, defaultPolicy: "deny" });
  const enforcer = new AclEnforcer(pub, resolver);
  pub.beforePublish(() => {
    if (!marks.armed) return;
    marks.closedAt = performance.now();
    marks.armed = false;
  });
  const admin = new AclAdmin(store, enabled);
  // The cleanup holds the parts only until they are closed, so that a closed set-up's memory
  // (history rings, subscriptions) is not kept alive into later measurements.
  let open: { enforcer: AclEnforcer; pub: EventPublisher; store: Store } | undefined = {
    enforcer,
    pub,
    store,
  };
  const close = async () => {
    const parts = open;
    if (!parts) return;
    open = undefined;
    parts.enforcer.close();
    parts.pub.shutdown();
    await parts.store.close();
  };
  ctx.defer(close);
  return { enabled, store, pub, enforcer, admin, marks, close };
}

/**
 * `n` tokens, each with its own policy allowing reads of `bench/` keys (plus a rule of its
 * own, so no two policies are alike). Secrets in order.
 */
async function makeTokens(env: AclEnv, n: number): Promise<string[]> {
  const policies = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      env.admin.upsertPolicy({
        Name: `reader-${i}`,
        Rules: `key_prefix "bench/" {\n  policy = "read"\n}\nkey "own/${i}" {\n  policy = "write"\n}\n`,
      }),
    ),
  );
  const tokens = await Promise.all(
    policies.map((p, i) =>
      env.admin.upsertToken({ Description: `reader ${i}`, Policies: [{ ID: p.policy.ID }] }),
    ),
  );
  return tokens.map((t) => t.token.SecretID);
}

// ---------------------------------------------------------------------------------------------
// filter

interface FilterPair {
  readonly rep: number;
  readonly off: DeliveryResult;
  readonly on: DeliveryResult;
  /** Deliveries/s with ACLs over deliveries/s without. */
  readonly ratio: number;
  readonly ratioExWriter: number;
  /** What filtering adds per delivered event, in ns of wall time: 1/on − 1/off. */
  readonly filterNsPerDelivery: number;
}

interface FilterRow {
  readonly burst: number;
  readonly runs: readonly FilterPair[];
  readonly offPerSec: number;
  readonly onPerSec: number;
  readonly ratio: number;
  readonly ratioMin: number;
  readonly ratioMax: number;
  readonly offPerSecExWriter: number;
  readonly onPerSecExWriter: number;
  readonly ratioExWriter: number;
  readonly eventsPerFrame: number;
  readonly filterNsPerDelivery: number;
}

async function runFilter(ctx: SuiteContext, c: Config, value: Uint8Array): Promise<FilterRow[]> {
  ctx.log(
    `[filter] ${fmtInt(c.subscribers)} subscribers of KV "${HOT_KEY}" on ${fmtInt(c.subscribers)} distinct tokens, ` +
      `each token with its own policy (key_prefix "bench/" read); ACLs enabled (default deny) vs disabled; ` +
      `writer bursts of ${c.bursts.join(", ")} commits for ${c.durationMs / 1000} s; ${c.repeat} repeats, order alternating`,
  );
  const off = await openEnv(ctx, false);
  const on = await openEnv(ctx, true);
  const t0 = performance.now();
  const secrets = await makeTokens(on, c.subscribers);
  ctx.progress(
    `filter: ${fmtInt(secrets.length)} policies and tokens made in ${fmtMs(performance.now() - t0)}`,
  );
  const offSecrets = Array.from({ length: c.subscribers }, () => randomUUID());
  for (const env of [off, on]) await env.store.commit([{ op: "kv.set", key: HOT_KEY, value }]);

  const measure = async (env: AclEnv, burst: number, rep: number): Promise<DeliveryResult> => {
    const mode = env.enabled ? "ACLs on " : "ACLs off";
    const ids = env.enabled ? secrets : offSecrets;
    const r = await runDelivery({
      store: env.store,
      key: HOT_KEY,
      keys: c.keys,
      value,
      subscribers: c.subscribers,
      open: (i) => env.enforcer.subscribe({ topic: Topic.KV, subject: prefix("bench/"), index: 0 }, ids[i]!),
      burst,
      durationMs: c.durationMs,
      signal: ctx.signal,
      onProgress: (ms, commits) =>
        ctx.progress(
          `filter r${rep} burst=${burst} ${mode.trim()}: ${(ms / 1000).toFixed(1)} s, ${fmtInt(commits)} commits`,
        ),
    });
    if (r.missing !== 0 || r.disorder !== 0) {
      throw new Error(`${mode}: ${r.missing} deliveries missing, ${r.disorder} out of order (expected 0)`);
    }
    ctx.log(
      `[filter r${rep} burst=${burst} ${mode}] ${fmtInt(r.deliveriesPerSec)} deliveries/s ` +
        `(${fmtInt(r.deliveries)} in ${fmtMs(r.elapsedMs)}, ${fmtFixed(r.eventsPerFrame)} events/frame), ` +
        `writer alone ${fmtMs(r.writerMs)} -> ${fmtInt(r.deliveriesPerSecExWriter)}/s without it, CPU ${fmtFixed(r.cpuCores, 2)}`,
    );
    return r;
  };

  const pairs = new Map<number, FilterPair[]>(c.bursts.map((b) => [b, []]));
  try {
    for (let rep = 1; rep <= c.repeat; rep++) {
      for (const burst of c.bursts) {
        ctx.signal.throwIfAborted();
        let offRun: DeliveryResult;
        let onRun: DeliveryResult;
        if (rep % 2 === 1) {
          offRun = await measure(off, burst, rep);
          onRun = await measure(on, burst, rep);
        } else {
          onRun = await measure(on, burst, rep);
          offRun = await measure(off, burst, rep);
        }
        const pair: FilterPair = {
          rep,
          off: offRun,
          on: onRun,
          ratio: onRun.deliveriesPerSec / offRun.deliveriesPerSec,
          ratioExWriter: onRun.deliveriesPerSecExWriter / offRun.deliveriesPerSecExWriter,
          filterNsPerDelivery: 1e9 / onRun.deliveriesPerSec - 1e9 / offRun.deliveriesPerSec,
        };
        pairs.get(burst)!.push(pair);
        ctx.log(
          `[filter r${rep} burst=${burst}] on/off ${fmtRatio(pair.ratio)} (without the writer ${fmtRatio(pair.ratioExWriter)}); ` +
            `filtering adds ${fmtInt(pair.filterNsPerDelivery)} ns per delivery`,
        );
      }
    }
  } finally {
    await on.close();
    await off.close();
  }
  return c.bursts.map((burst) => {
    const runs = pairs.get(burst)!;
    const med = (f: (p: FilterPair) => number) => median(runs.map(f));
    return {
      burst,
      runs,
      offPerSec: med((p) => p.off.deliveriesPerSec),
      onPerSec: med((p) => p.on.deliveriesPerSec),
      ratio: med((p) => p.ratio),
      ratioMin: Math.min(...runs.map((p) => p.ratio)),
      ratioMax: Math.max(...runs.map((p) => p.ratio)),
      offPerSecExWriter: med((p) => p.off.deliveriesPerSecExWriter),
      onPerSecExWriter: med((p) => p.on.deliveriesPerSecExWriter),
      ratioExWriter: med((p) => p.ratioExWriter),
      eventsPerFrame: med((p) => p.on.eventsPerFrame),
      filterNsPerDelivery: med((p) => p.filterNsPerDelivery),
    };
  });
}

function filterTable(rows: readonly FilterRow[]): string {
  return table(
    [
      "commits per burst",
      "events/frame",
      "ACLs off deliveries/s",
      "ACLs on deliveries/s",
      "on/off",
      "range",
      "filter cost",
      "filter ns/delivery",
      "off / on without writer",
      "on/off without writer",
    ],
    rows.map((r) => [
      String(r.burst),
      fmtFixed(r.eventsPerFrame),
      fmtInt(r.offPerSec),
      fmtInt(r.onPerSec),
      fmtRatio(r.ratio),
      `${fmtRatio(r.ratioMin)}–${fmtRatio(r.ratioMax)}`,
      `${fmtFixed((1 - r.ratio) * 100)} %`,
      fmtInt(r.filterNsPerDelivery),
      `${fmtInt(r.offPerSecExWriter)} / ${fmtInt(r.onPerSecExWriter)}`,
      fmtRatio(r.ratioExWriter),
    ]),
  );
}

// ---------------------------------------------------------------------------------------------
// revoke

interface RevokeRun {
  readonly rep: number;
  readonly subscriptions: number;
  /** Milliseconds after the revoking commit was issued. */
  readonly publishMs: number;
  readonly closedMs: number;
  readonly firstRejectMs: number;
  readonly lastRejectMs: number;
  /** When the commit's own promise resolved. */
  readonly commitResolvedMs: number;
  /** Last rejection measured from the start of the commit's publication. */
  readonly lastFromPublishMs: number;
  readonly forceClosed: number;
  readonly otherErrors: number;
  readonly openAfter: number;
}

async function runRevoke(ctx: SuiteContext, c: Config): Promise<RevokeRun[]> {
  ctx.log(
    `[revoke] ${fmtInt(c.revokeSubs)} subscriptions of one token (KV, distinct keys, each blocked in next(); ` +
      `half for await, half next()), then admin.deleteToken; ${c.revokeRepeat} rounds, a fresh token each`,
  );
  const env = await openEnv(ctx, true);
  const runs: RevokeRun[] = [];
  try {
    const policy = (
      await env.admin.upsertPolicy({ Name: "revoke-bench", Rules: 'key_prefix "rev/" { policy = "read" }' })
    ).policy;
    for (let rep = 1; rep <= c.revokeRepeat; rep++) {
      ctx.signal.throwIfAborted();
      const { token } = await env.admin.upsertToken({
        Description: `revoke round ${rep}`,
        Policies: [{ ID: policy.ID }],
      });
      const st = { ready: 0, ended: 0, forceClosed: 0, other: 0, first: Number.POSITIVE_INFINITY, last: 0 };
      const onEnd = (err: unknown) => {
        const t = performance.now();
        if (err instanceof SubscriptionForceClosedError) st.forceClosed++;
        else st.other++;
        if (t < st.first) st.first = t;
        if (t > st.last) st.last = t;
        st.ended++;
      };
      const reader = async (sub: Subscription, forAwait: boolean): Promise<void> => {
        try {
          if (forAwait) {
            for await (const f of sub) if (f.kind === FrameKind.EndOfSnapshot) st.ready++;
          } else {
            for (;;) {
              const r = await sub.next();
              if (r.done) break;
              if (r.value.kind === FrameKind.EndOfSnapshot) st.ready++;
            }
          }
          onEnd(undefined);
        } catch (err) {
          onEnd(err);
        }
      };
      const loops: Promise<void>[] = [];
      const s0 = performance.now();
      for (let i = 0; i < c.revokeSubs; i++) {
        const sub = await env.enforcer.subscribe(
          { topic: Topic.KV, subject: key(`rev/${rep}/${i}`), index: 0 },
          token.SecretID,
        );
        loops.push(reader(sub, i % 2 === 0));
      }
      await waitUntil(() => st.ready >= c.revokeSubs, "subscribers to block in next()", ctx.signal);
      ctx.progress(
        `revoke ${rep}: ${fmtInt(c.revokeSubs)} subscriptions blocked in next() (opened in ${fmtMs(performance.now() - s0)})`,
      );
      await settle();
      const open0 = env.pub.subscriptionCount;

      env.marks.armed = true;
      env.marks.publishAt = Number.NaN;
      env.marks.closedAt = Number.NaN;
      const t0 = performance.now();
      const committed = env.admin.deleteToken(token.AccessorID).then(() => performance.now());
      await waitUntil(() => st.ended >= c.revokeSubs, "every subscription to end", ctx.signal, 30_000);
      const commitResolvedAt = await committed;
      await Promise.all(loops);
      const run: RevokeRun = {
        rep,
        subscriptions: c.revokeSubs,
        publishMs: env.marks.publishAt - t0,
        closedMs: env.marks.closedAt - t0,
        firstRejectMs: st.first - t0,
        lastRejectMs: st.last - t0,
        commitResolvedMs: commitResolvedAt - t0,
        lastFromPublishMs: st.last - env.marks.publishAt,
        forceClosed: st.forceClosed,
        otherErrors: st.other,
        openAfter: env.pub.subscriptionCount - (open0 - c.revokeSubs),
      };
      runs.push(run);
      ctx.log(
        `[revoke ${rep}] issued -> published ${fmtMs(run.publishMs)} -> closed (sync) ${fmtMs(run.closedMs)} -> ` +
          `first reject ${fmtMs(run.firstRejectMs)} -> last reject ${fmtMs(run.lastRejectMs)} ` +
          `(${fmtMs(run.lastFromPublishMs)} after publication; commit resolved at ${fmtMs(run.commitResolvedMs)}); ` +
          `${fmtInt(run.forceClosed)} SubscriptionForceClosedError, ${run.otherErrors} other endings`,
      );
      if (run.forceClosed !== c.revokeSubs) {
        throw new Error(
          `revoke ${rep}: ${run.forceClosed} of ${c.revokeSubs} reads rejected with SubscriptionForceClosedError`,
        );
      }
    }
  } finally {
    await env.close();
  }
  return runs;
}

function revokeTable(runs: readonly RevokeRun[]): string {
  return table(
    [
      "round",
      "subscriptions",
      "issued → published",
      "→ streams closed",
      "→ first reject",
      "→ last reject",
      "published → last reject",
      "force-closed",
    ],
    runs.map((r) => [
      String(r.rep),
      fmtInt(r.subscriptions),
      fmtMs(r.publishMs),
      fmtMs(r.closedMs),
      fmtMs(r.firstRejectMs),
      fmtMs(r.lastRejectMs),
      fmtMs(r.lastFromPublishMs),
      fmtInt(r.forceClosed),
    ]),
  );
}

// ---------------------------------------------------------------------------------------------

async function run(ctx: SuiteContext, flags: FlagValues): Promise<unknown> {
  const c = config(flags);
  const has = (p: Part) => c.parts.includes(p);
  const value = new Uint8Array(randomBytes(c.valueBytes));
  const source = sourceState();
  ctx.log(describeSource(source));
  ctx.log(`acl suite: ${c.parts.join(", ")}`);

  const filter = has("filter") ? await runFilter(ctx, c, value) : undefined;
  if (filter) {
    ctx.log(
      `\nFiltered delivery: ${fmtInt(c.subscribers)} subscribers of one key on ${fmtInt(c.subscribers)} tokens, ` +
        `ACLs on vs off; medians of ${c.repeat}\n`,
    );
    ctx.log(filterTable(filter));
  }
  const revoke = has("revoke") ? await runRevoke(ctx, c) : undefined;
  if (revoke) {
    ctx.log(`\nRevocation: ${fmtInt(c.revokeSubs)} subscriptions of one token, token deleted\n`);
    ctx.log(revokeTable(revoke));
  }

  const targets: Record<string, unknown> = {};
  ctx.log("");
  if (filter) {
    const worst = filter.reduce((a, b) => (b.ratio < a.ratio ? b : a));
    const worstEx = filter.reduce((a, b) => (b.ratioExWriter < a.ratioExWriter ? b : a));
    const met = 1 - worst.ratio < FILTER_MAX_COST;
    const metEx = 1 - worstEx.ratioExWriter < FILTER_MAX_COST;
    targets.filter = {
      maxCost: FILTER_MAX_COST,
      worstBurst: worst.burst,
      worstCost: 1 - worst.ratio,
      met,
      worstBurstExWriter: worstEx.burst,
      worstCostExWriter: 1 - worstEx.ratioExWriter,
      metExWriter: metEx,
    };
    ctx.log(
      `target: ACL filtering costs < ${FILTER_MAX_COST * 100} % of delivery throughput: worst ` +
        `${fmtFixed((1 - worst.ratio) * 100)} % (bursts of ${worst.burst}) -> ${met ? "MET" : "MISSED"}; ` +
        `without the writer's time: worst ${fmtFixed((1 - worstEx.ratioExWriter) * 100)} % (bursts of ${worstEx.burst}) -> ` +
        `${metEx ? "met" : "missed"}`,
    );
  }
  if (revoke) {
    const last = revoke.map((r) => r.lastRejectMs);
    const worst = Math.max(...last);
    const over = last.filter((ms) => ms >= REVOKE_MAX_MS).length;
    const met = over === 0;
    targets.revoke = { maxMs: REVOKE_MAX_MS, medianMs: median(last), worstMs: worst, roundsOver: over, met };
    ctx.log(
      `target: ${fmtInt(c.revokeSubs)} subscriptions closed < ${REVOKE_MAX_MS} ms after the revoking commit: ` +
        `median ${fmtMs(median(last))}, worst ${fmtMs(worst)} -> ${met ? "MET" : `MISSED in ${over} of ${last.length} rounds`}`,
    );
  }
  return { source, config: c, filter, revoke, targets };
}

export const suite: Suite = {
  flags: {
    only: {
      type: "string",
      description: `parts to run, some of ${PARTS.join(",")}`,
      default: PARTS.join(","),
    },
    subscribers: { type: "string", description: "filter: subscribers (one token each)", default: "1000" },
    bursts: {
      type: "string",
      description: "filter: commits per writer burst, comma-separated",
      default: "1,10,100",
    },
    duration: {
      type: "string",
      description: "filter: seconds the writer runs per measurement",
      default: "2",
    },
    repeat: {
      type: "string",
      description: "filter: on/off pairs per burst size (median reported)",
      default: "3",
    },
    "revoke-subs": {
      type: "string",
      description: "revoke: subscriptions of the revoked token",
      default: "10000",
    },
    "revoke-repeat": { type: "string", description: "revoke: rounds, a fresh token each", default: "5" },
    "value-bytes": { type: "string", description: "size of each written value", default: "64" },
    keys: {
      type: "string",
      description:
        "filter: keys the writer cycles through under bench/ (1: one hot key; >1: frames mix keys)",
      default: "1",
    },
  },
  run,
};
