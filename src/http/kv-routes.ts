import type { FastifyInstance, FastifyRequest } from "fastify";
import { requirePermission } from "../acl/index.js";
import { SubjectKind, Topic } from "../state/events/index.js";
import { CasFailedError, LIMITS, type Op } from "../state/index.js";
import { kvJson } from "./consul-json.js";
import { json, type Rendered, type RouteContext } from "./context.js";
import { BadRequestError, PayloadTooLargeError } from "./errors.js";
import { has, param, type QueryParams, uint } from "./query-params.js";
import { KvViewModel } from "./view-models.js";

const keyOf = (req: FastifyRequest): string => (req.params as { "*"?: string })["*"] ?? "";

const notFound = (): Rendered => ({ status: 404, body: "", contentType: "text/plain" });

/** Consul's key listing: keys under `prefix`, folded at the first `sep` after it. */
function listKeys(model: KvViewModel, prefix: string, sep: string): string[] {
  const keys: string[] = [];
  let last: string | undefined;
  for (const [key] of model.entries.prefix(prefix)) {
    if (sep === "") {
      keys.push(key);
      continue;
    }
    const at = key.indexOf(sep, prefix.length);
    const folded = at < 0 ? key : key.slice(0, at + sep.length);
    if (folded !== last) keys.push(folded);
    last = folded;
  }
  return keys;
}

/**
 * `GET|PUT|DELETE /v1/kv/:key`, as Consul's KV endpoint: reads (`recurse`, `keys`,
 * `separator`, `raw`) are served from shared views of the KV topic (a key, or a prefix);
 * writes answer `true`, or `false` when a `cas` condition fails.
 */
export function kvRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.get("/v1/kv/*", async (req, reply) => {
    const key = keyOf(req);
    const q = req.query as QueryParams;
    if (has(q, "keys") || has(q, "recurse")) {
      // A prefix read; the empty prefix is the whole store. Entries the token may not read
      // never reach the view (per-event filtering), as Consul filters its listings.
      const subject = key === "" ? { kind: SubjectKind.Wildcard } : { kind: SubjectKind.Prefix, prefix: key };
      const common = {
        key: key === "" ? "KV\u0000*" : `KV\u0000p\u0000${key}`,
        subscribe: { topic: Topic.KV, subject } as const,
        model: () => new KvViewModel(),
      };
      if (has(q, "keys")) {
        const sep = param(q, "separator") ?? param(q, "seperator") ?? "";
        return ctx.serveView(req, reply, {
          ...common,
          variant: `keys\u0000${sep}`,
          render: (m, pretty) => {
            const keys = listKeys(m, key, sep);
            // As Consul: no 404 for the root, an empty list instead.
            return keys.length === 0 && key !== "" ? notFound() : json(keys, pretty);
          },
        });
      }
      return ctx.serveView(req, reply, {
        ...common,
        variant: "list",
        render: (m, pretty) => {
          const rows = [...m.entries.prefix(key)].map(([, row]) => kvJson(row));
          return rows.length === 0 ? notFound() : json(rows, pretty);
        },
      });
    }
    if (key === "") throw new BadRequestError("key", "Missing key name");
    const raw = has(q, "raw");
    return ctx.serveView(req, reply, {
      key: `KV\u0000k\u0000${key}`,
      subscribe: { topic: Topic.KV, subject: { kind: SubjectKind.Key, key } },
      model: () => new KvViewModel(),
      authorize: (authz) => requirePermission(authz, "key", key, "read"),
      variant: raw ? "raw" : "get",
      render: (m, pretty) => {
        const row = m.entries.get(key);
        if (!row) return notFound();
        if (!raw) return json([kvJson(row)], pretty);
        // Consul's guard against a stored value being rendered as a page by a browser.
        return {
          status: 200,
          body: Buffer.from(row.Value.buffer, row.Value.byteOffset, row.Value.byteLength),
          contentType: "text/plain",
          headers: { "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox" },
        };
      },
    });
  });

  app.put("/v1/kv/*", async (req, reply) => {
    const key = keyOf(req);
    const q = req.query as QueryParams;
    if (key === "") throw new BadRequestError("key", "Missing key name");
    for (const p of ["acquire", "release"])
      if (has(q, p)) throw new BadRequestError(p, "sessions and locks are not supported");
    const flags = uint(q, "flags");
    const cas = uint(q, "cas");
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (body.byteLength > LIMITS.maxValueBytes)
      throw new PayloadTooLargeError(body.byteLength, LIMITS.maxValueBytes);
    const op: Op = {
      op: "kv.set",
      key,
      value: new Uint8Array(body),
      ...(flags !== undefined ? { flags } : {}),
      ...(cas !== undefined ? { cas } : {}),
    };
    return reply.type("application/json").send(JSON.stringify(await casOutcome(ctx.commit(req, [op]))));
  });

  app.delete("/v1/kv/*", async (req, reply) => {
    const key = keyOf(req);
    const q = req.query as QueryParams;
    const recurse = has(q, "recurse");
    const cas = uint(q, "cas");
    if (recurse && cas !== undefined)
      throw new BadRequestError("cas", "conflicting flags: ?cas cannot be used with ?recurse");
    if (!recurse && key === "") throw new BadRequestError("key", "Missing key name");
    const op: Op = recurse
      ? { op: "kv.deleteTree", prefix: key }
      : { op: "kv.delete", key, ...(cas !== undefined ? { cas } : {}) };
    return reply.type("application/json").send(JSON.stringify(await casOutcome(ctx.commit(req, [op]))));
  });
}

/** `true` once committed; `false` when a check-and-set condition failed, as Consul answers. */
async function casOutcome(commit: Promise<unknown>): Promise<boolean> {
  try {
    await commit;
    return true;
  } catch (err) {
    if (err instanceof CasFailedError) return false;
    throw err;
  }
}
