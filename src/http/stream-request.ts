import type { FastifyRequest } from "fastify";
import { type Authorizer, requirePermission } from "../acl/index.js";
import { DEFAULT_HANDLERS, type Subject, SubjectKind, TOPIC_NAMES, Topic } from "../state/events/index.js";
import { IndexAheadError, InvalidSubjectError, type Subscription } from "../stream/index.js";
import type { RouteContext } from "./context.js";
import { BadRequestError } from "./errors.js";
import { has, param, type QueryParams, uint } from "./query-params.js";

/*
 * What a client asks to stream, over HTTP: a topic and a subject, from the path and query of
 * `GET /v1/stream/:topic` or from a notification channel's JSON; the checks made before
 * anything opens; and opening the ACL-filtered subscription.
 */

/** A topic and a normalized subject. */
export interface StreamSpec {
  readonly topic: Topic;
  readonly subject: Subject;
}

/** `service_health`, `service_list` or `kv`: the name in paths, bodies and event data. */
export function topicName(topic: Topic): string {
  return TOPIC_NAMES[topic];
}

/** Spellings folded to lower case without `topic_`, `_` and `-` (`TOPIC_SERVICE_HEALTH`, `ServiceHealth`). */
const BY_FOLDED: ReadonlyMap<string, Topic> = new Map([
  ["servicehealth", Topic.ServiceHealth],
  ["servicelist", Topic.ServiceList],
  ["kv", Topic.KV],
]);

/**
 * A topic from its HTTP name (`service_health`, `service_list`, `kv`), also taking the
 * gRPC enum names (`TOPIC_KV`) and the internal ones (`ServiceHealth`).
 */
export function parseTopic(name: string, field = "topic"): Topic {
  const folded = name
    .toLowerCase()
    .replace(/^topic_/, "")
    .replace(/[_-]/g, "");
  const topic = BY_FOLDED.get(folded);
  if (!topic)
    throw new BadRequestError(field, `unknown topic "${name}" (want service_health, service_list or kv)`);
  return topic;
}

/** The subject fields as a request gives them; exactly one must be set. */
export interface SubjectFields {
  readonly key?: string | undefined;
  readonly prefix?: string | undefined;
  readonly wildcard?: boolean | undefined;
}

/**
 * The subject of `topic` from its fields, checked against what the topic allows (a prefix of
 * ServiceHealth is refused here, before any subscription or channel exists) and normalized
 * as the publisher will (service names in lower case).
 */
export function subjectOf(topic: Topic, f: SubjectFields, where: "query" | "body"): Subject {
  const given = [
    f.key !== undefined ? "key" : undefined,
    f.prefix !== undefined ? "prefix" : undefined,
    f.wildcard ? "wildcard" : undefined,
  ].filter((k) => k !== undefined);
  const spell = (k: string): string => (where === "query" ? `?${k}` : k);
  if (given.length !== 1) {
    throw new BadRequestError(
      "subject",
      given.length === 0
        ? `one of ${spell("key")}, ${spell("prefix")} or ${spell("wildcard")} is required`
        : `only one of ${given.map(spell).join(", ")} may be given`,
    );
  }
  const handler = DEFAULT_HANDLERS.get(topic)!;
  const kind = given[0] as SubjectKind;
  if (!handler.allows.has(kind)) {
    const allowed = [...handler.allows].join(" or ");
    throw new InvalidSubjectError(topic, kind, `topic ${topicName(topic)} takes only ${allowed} subjects`);
  }
  switch (kind) {
    case SubjectKind.Key:
      if (!f.key) throw new InvalidSubjectError(topic, kind, "key must be a non-empty string");
      return { kind, key: handler.normalizeKey(f.key) };
    case SubjectKind.Prefix:
      if (!f.prefix)
        throw new InvalidSubjectError(
          topic,
          kind,
          "prefix must be a non-empty string (use the wildcard for all)",
        );
      return { kind, prefix: handler.normalizeKey(f.prefix) };
    case SubjectKind.Wildcard:
      return { kind };
    default: {
      const never: never = kind;
      return never;
    }
  }
}

/** The spec of `GET /v1/stream/:topic?key=|prefix=|wildcard`. */
export function specFromQuery(topicParam: string, q: QueryParams): StreamSpec {
  const topic = parseTopic(topicParam);
  return {
    topic,
    subject: subjectOf(
      topic,
      { key: param(q, "key"), prefix: param(q, "prefix"), wildcard: has(q, "wildcard") },
      "query",
    ),
  };
}

/**
 * A subscription's id within a notification channel: `kv:key:app/a`, `kv:prefix:app/`,
 * `service_health:key:web`, `service_list:wildcard`. Equal specs have equal ids.
 */
export function specId(spec: StreamSpec): string {
  const s = spec.subject;
  const t = topicName(spec.topic);
  switch (s.kind) {
    case SubjectKind.Key:
      return `${t}:key:${s.key}`;
    case SubjectKind.Prefix:
      return `${t}:prefix:${s.prefix}`;
    case SubjectKind.Wildcard:
      return `${t}:wildcard`;
    default: {
      const never: never = s;
      return never;
    }
  }
}

/** A spec as JSON: `{ id, topic, key | prefix | wildcard }`. */
export function specJson(spec: StreamSpec): Record<string, unknown> {
  const s = spec.subject;
  return {
    id: specId(spec),
    topic: topicName(spec.topic),
    ...(s.kind === SubjectKind.Key
      ? { key: s.key }
      : s.kind === SubjectKind.Prefix
        ? { prefix: s.prefix }
        : { wildcard: true }),
  };
}

/**
 * The index a stream resumes after: `Last-Event-ID` (what an EventSource sends on its own
 * reconnects), else `?index=`; 0 (a fresh snapshot) when neither is given.
 */
export function resumeIndex(req: FastifyRequest): number {
  const h = req.headers["last-event-id"];
  const header = Array.isArray(h) ? h[0] : h;
  if (header !== undefined && header.trim() !== "") {
    const v = header.trim();
    const n = /^\d+$/.test(v) ? Number(v) : Number.NaN;
    if (!Number.isSafeInteger(n))
      throw new BadRequestError("Last-Event-ID", `invalid event id "${v}" (want a non-negative integer)`);
    return n;
  }
  return uint(req.query as QueryParams, "index") ?? 0;
}

/**
 * The checks a stream's subject needs before it opens. A single key or service must be
 * readable by the token (subscribing to something it may never see is refused, as Consul's
 * single-key read is); prefix and wildcard subjects are filtered per event instead, as
 * Consul filters its listings.
 */
export function authorizeSpec(authz: Authorizer, spec: StreamSpec): void {
  const s = spec.subject;
  if (s.kind !== SubjectKind.Key) return;
  if (spec.topic === Topic.KV) requirePermission(authz, "key", s.key, "read");
  else if (spec.topic === Topic.ServiceHealth) requirePermission(authz, "service", s.key, "read");
}

/**
 * Opens the ACL-filtered subscription of a stream request, as gRPC Subscribe does: the
 * token is resolved first (an unknown one is refused before anything else is revealed), the
 * subject authorized, a resume index ahead of this server waited for up to `aheadWaitMs`
 * (then refused with IndexAheadError), and the subscription opened through the ACL enforcer.
 */
export async function openSubscription(
  ctx: RouteContext,
  req: FastifyRequest,
  spec: StreamSpec,
  index: number,
  aheadWaitMs: number,
  signal: AbortSignal,
): Promise<Subscription> {
  const { publisher, enforcer } = ctx.deps;
  const resolved = await ctx.resolve(req);
  authorizeSpec(resolved.authorizer, spec);
  if (index > publisher.index) {
    const reached = await publisher.whenIndex(index, aheadWaitMs, signal);
    if (!reached) throw new IndexAheadError(index, publisher.index);
  }
  return enforcer.subscribe({ topic: spec.topic, subject: spec.subject, index }, ctx.token(req));
}
