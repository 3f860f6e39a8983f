import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Authorizer } from "../acl/index.js";
import { ShuttingDownError, type Subscription } from "../stream/index.js";
import type { RouteContext } from "./context.js";
import { BadRequestError, NotFoundError } from "./errors.js";
import type { RouteModule } from "./http-server.js";
import { type ChannelLimits, ChannelRegistry } from "./notification-channels.js";
import { LiveChannel } from "./notification-stream.js";
import { has, param, parseGoDuration, type QueryParams } from "./query-params.js";
import { jsonBody } from "./request-body.js";
import { requireEventStream } from "./sse-routes.js";
import { startEventStream } from "./sse-writer.js";
import { authorizeSpec, parseTopic, type StreamSpec, specId, specJson, subjectOf } from "./stream-request.js";

/*
 * Request bodies of the notification API, read strictly: exact (camelCase) field names,
 * unknown fields refused, so that a typo is a 400 rather than a silently different channel.
 */

const SUBSCRIPTION_FIELDS = new Set(["topic", "key", "prefix", "wildcard"]);
const OPEN_FIELDS = new Set(["subscriptions", "expiresIn"]);

function isObject(v: unknown): v is Readonly<Record<string, unknown>> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function onlyFields(
  obj: Readonly<Record<string, unknown>>,
  allowed: ReadonlySet<string>,
  path: string,
): void {
  for (const k of Object.keys(obj))
    if (!allowed.has(k)) throw new BadRequestError(path ? `${path}.${k}` : k, "unknown field");
}

function optString(obj: Readonly<Record<string, unknown>>, name: string, path: string): string | undefined {
  const v = obj[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new BadRequestError(`${path}${name}`, "must be a string");
  return v;
}

/** `{ topic, key | prefix | wildcard: true }`. */
export function parseSubscription(v: unknown, path = ""): StreamSpec {
  const at = path ? `${path}.` : "";
  if (!isObject(v)) throw new BadRequestError(path || "body", "must be a JSON object");
  onlyFields(v, SUBSCRIPTION_FIELDS, path);
  const topicName = optString(v, "topic", at);
  if (topicName === undefined || topicName === "") throw new BadRequestError(`${at}topic`, "is required");
  const wildcard = v.wildcard;
  if (wildcard !== undefined && typeof wildcard !== "boolean")
    throw new BadRequestError(`${at}wildcard`, "must be true or false");
  const topic = parseTopic(topicName, `${at}topic`);
  return {
    topic,
    subject: subjectOf(
      topic,
      { key: optString(v, "key", at), prefix: optString(v, "prefix", at), wildcard: wildcard === true },
      "body",
    ),
  };
}

/**
 * `{ subscriptions: [...], expiresIn?: "30s" }`: the subscriptions deduplicated (same topic
 * and subject once), and the lifetime in ms (a Go duration string; default and maximum from
 * the registry's limits).
 */
export function parseOpenRequest(
  body: unknown,
  registry: ChannelRegistry,
): { specs: StreamSpec[]; expiresMs: number } {
  const obj = jsonBody(body);
  onlyFields(obj, OPEN_FIELDS, "");
  const list = obj.subscriptions;
  if (list === undefined) throw new BadRequestError("subscriptions", "is required");
  if (!Array.isArray(list)) throw new BadRequestError("subscriptions", "must be a list");
  if (list.length === 0) throw new BadRequestError("subscriptions", "must name at least one subscription");
  const byId = new Map<string, StreamSpec>();
  list.forEach((s, i) => {
    const spec = parseSubscription(s, `subscriptions[${i}]`);
    byId.set(specId(spec), spec);
  });
  let requested: number | undefined;
  const e = obj.expiresIn;
  if (e !== undefined) {
    if (typeof e !== "string")
      throw new BadRequestError("expiresIn", 'must be a duration string such as "30s", "15m" or "24h"');
    requested = parseGoDuration(e);
    if (requested === undefined)
      throw new BadRequestError("expiresIn", `invalid duration "${e}" (want e.g. "30s", "15m" or "24h")`);
  }
  return { specs: [...byId.values()], expiresMs: registry.lifetime(requested) };
}

/** The subscription a DELETE names: its JSON body, else `?topic=&key=|prefix=|wildcard`. */
function subscriptionOfDelete(req: FastifyRequest): StreamSpec {
  const body = Buffer.isBuffer(req.body) ? req.body : undefined;
  if (body && body.toString("utf8").trim() !== "") return parseSubscription(jsonBody(body));
  const q = req.query as QueryParams;
  const topic = param(q, "topic");
  if (!topic) throw new BadRequestError("topic", "name the subscription in the body or with ?topic=");
  const t = parseTopic(topic);
  return {
    topic: t,
    subject: subjectOf(
      t,
      { key: param(q, "key"), prefix: param(q, "prefix"), wildcard: has(q, "wildcard") },
      "query",
    ),
  };
}

/** Settings of the notification API. */
export interface NotificationOptions {
  readonly limits?: Partial<ChannelLimits>;
  /** Idle time after which a keep-alive comment is sent. */
  readonly keepAliveMs: number;
  /** The registry's clock (ms, monotonic). */
  readonly now: () => number;
}

/**
 * Notification channels for web apps: `POST /v1/notifications` opens one event stream for
 * several subscriptions (its first event, `channel`, gives the id), `PUT` and `DELETE
 * /v1/notifications/:channel/subscriptions` change what it carries. Quotas, ownership and
 * expiry are the registry's (notification-channels.ts); the stream is a LiveChannel.
 */
export class NotificationChannels {
  readonly registry: ChannelRegistry;
  private readonly live = new Map<string, LiveChannel>();

  constructor(private readonly opts: NotificationOptions) {
    this.registry = new ChannelRegistry(opts.limits);
  }

  /** Closes the channels expired by now; re-arms `ch` if its timer fired early. */
  private expire(ch: LiveChannel): void {
    const now = this.opts.now();
    for (const id of this.registry.expired(now)) this.live.get(id)?.close({ reason: "expired" });
    if (!ch.closed) ch.armExpiry(ch.expiresAt - now, () => this.expire(ch));
  }

  private forget(ch: LiveChannel): void {
    this.live.delete(ch.id);
    this.registry.close(ch.id);
  }

  /** Closes every channel (server shutdown; the routes do this through their abort signals first). */
  close(): void {
    for (const ch of [...this.live.values()])
      ch.close({ reason: "server shutting down", error: new ShuttingDownError() });
  }

  readonly routes: RouteModule = (app: FastifyInstance, ctx: RouteContext): void => {
    const { registry, opts } = this;

    app.post("/v1/notifications", async (req, reply) => {
      requireEventStream(req);
      const { specs, expiresMs } = parseOpenRequest(req.body, registry);
      const resolved = await ctx.resolve(req);
      // Every check passes before anything exists: one subject the token may not read and
      // the request is refused whole.
      for (const spec of specs) authorizeSpec(resolved.authorizer, spec);
      const token = ctx.token(req);
      const { signal, finish } = ctx.track(reply);
      const id = randomUUID();
      const opened: [string, Subscription][] = [];
      let expiresAt: number | undefined;
      try {
        expiresAt = registry.open(id, resolved.secret, specs.map(specId), expiresMs, opts.now()).expiresAt;
        for (const spec of specs) {
          const sub = await ctx.deps.enforcer.subscribe({ topic: spec.topic, subject: spec.subject }, token);
          opened.push([specId(spec), sub]);
        }
        if (signal.aborted) throw new ShuttingDownError();
      } catch (err) {
        for (const [, sub] of opened) sub.unsubscribe();
        if (expiresAt !== undefined) registry.close(id);
        finish();
        throw err;
      }
      const writer = startEventStream(reply, opts.keepAliveMs);
      ctx.eventStreams++;
      const ch = new LiveChannel(id, expiresAt, writer, (c) => this.forget(c));
      this.live.set(id, ch);
      const onAbort = (): void => {
        if (ctx.shuttingDown) ch.close({ reason: "server shutting down", error: new ShuttingDownError() });
        else ch.close();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        const hello = {
          id,
          expiresAt: new Date(Date.now() + expiresMs).toISOString(),
          subscriptions: specs.map(specJson),
        };
        if (await writer.send({ event: "channel", data: JSON.stringify(hello) })) {
          for (const [sid, sub] of opened) ch.start(sid, sub);
          ch.armExpiry(expiresAt - opts.now(), () => this.expire(ch));
        } else {
          for (const [, sub] of opened) sub.unsubscribe();
          ch.close();
        }
        await ch.done;
      } finally {
        signal.removeEventListener("abort", onAbort);
        ctx.eventStreams--;
        finish();
      }
    });

    /** The channel a change names, for its owner; throws 404 / 403 otherwise. */
    const ownedChannel = async (req: FastifyRequest): Promise<{ ch: LiveChannel; authz: Authorizer }> => {
      const { channel } = req.params as { channel: string };
      const resolved = await ctx.resolve(req);
      registry.lookup(channel, resolved.secret, opts.now());
      const ch = this.live.get(channel);
      if (!ch || ch.closed) throw new NotFoundError("notification channel", channel);
      return { ch, authz: resolved.authorizer };
    };

    app.put("/v1/notifications/:channel/subscriptions", async (req, reply) => {
      const spec = parseSubscription(jsonBody(req.body));
      const { ch, authz } = await ownedChannel(req);
      authorizeSpec(authz, spec);
      const sid = specId(spec);
      if (registry.add(ch.id, sid)) {
        await ch.add(
          sid,
          () => ctx.deps.enforcer.subscribe({ topic: spec.topic, subject: spec.subject }, ctx.token(req)),
          () => registry.remove(ch.id, sid),
        );
      } else await ch.pending(sid);
      if (ch.closed) throw new NotFoundError("notification channel", ch.id);
      return reply
        .code(200)
        .type("application/json")
        .send(JSON.stringify(specJson(spec)));
    });

    app.delete("/v1/notifications/:channel/subscriptions", async (req, reply) => {
      const spec = subscriptionOfDelete(req);
      const { ch } = await ownedChannel(req);
      const sid = specId(spec);
      if (!registry.remove(ch.id, sid)) throw new NotFoundError("subscription", sid);
      ch.remove(sid);
      return reply.code(204).send();
    });
  };
}
