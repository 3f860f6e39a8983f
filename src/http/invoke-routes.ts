import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { PermissionDeniedError } from "../acl/index.js";
import {
  BROKER_ERROR_HEADER,
  BrokerErrorReason,
  type ComponentBroker,
  STATUS_HEADER,
  Status,
} from "../broker/components/index.js";
import type { RouteContext } from "./context.js";
import { BadRequestError } from "./errors.js";
import type { RouteModule } from "./http-server.js";
import { parseGoDuration } from "./query-params.js";

/** Request headers that describe the connection, not the call: not passed on. */
const HOP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
  "x-consul-token",
  "authorization",
  "x-sluice-timeout",
]);

/** gRPC status of a component's error response → HTTP status. */
const HTTP_OF: Partial<Record<number, number>> = {
  [Status.INVALID_ARGUMENT]: 400,
  [Status.UNAUTHENTICATED]: 401,
  [Status.PERMISSION_DENIED]: 403,
  [Status.NOT_FOUND]: 404,
  [Status.ALREADY_EXISTS]: 409,
  [Status.FAILED_PRECONDITION]: 412,
  [Status.RESOURCE_EXHAUSTED]: 429,
  [Status.UNIMPLEMENTED]: 501,
  [Status.UNAVAILABLE]: 503,
  [Status.DEADLINE_EXCEEDED]: 504,
};

/**
 * HTTP ingress of the component broker: `ANY /v1/invoke/:component/*` becomes a request
 * event to a replica of that component and waits for its response. The event carries the
 * method and path in `type` ("GET /orders/7"), the request headers (plus `:method`, `:path`
 * with the query string), the body as payload; its deadline is `X-Sluice-Timeout` (a Go
 * duration like `2s`, default 30 s). The response's `:status` header (default 200), headers
 * and payload come back as the HTTP response. The broker's own answers: deadline passed →
 * 504, no replica anywhere → 404, invalid → 400; a component's error status maps to the
 * matching HTTP status with a JSON body. Calling a component needs
 * `component "<name>" { policy = "read" }` (write implies it).
 */
export function invokeRoutes(broker: ComponentBroker): RouteModule {
  return (app: FastifyInstance, ctx: RouteContext): void => {
    const handler = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
      const { component, "*": rest } = req.params as { component: string; "*"?: string };
      const { authorizer } = await ctx.resolve(req);
      if (!authorizer.allows("component", component, "read")) {
        throw new PermissionDeniedError("component", component, "read");
      }
      const timeoutHeader = req.headers["x-sluice-timeout"];
      let timeoutMs = 30_000;
      if (typeof timeoutHeader === "string") {
        const d = parseGoDuration(timeoutHeader);
        if (d === undefined || d <= 0) {
          throw new BadRequestError(
            "X-Sluice-Timeout",
            `"${timeoutHeader}" is not a positive duration like 2s`,
          );
        }
        timeoutMs = d;
      }
      const q = req.url.indexOf("?");
      const path = `/${rest ?? ""}${q >= 0 ? req.url.slice(q) : ""}`;
      const headers: Record<string, string> = { ":method": req.method, ":path": path };
      for (const [k, v] of Object.entries(req.headers)) {
        if (!HOP.has(k) && v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
      }
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const resp = await broker.request({
        source: { name: "http-ingress", id: "" },
        target: { name: component, id: "" },
        type: `${req.method} ${path.split("?")[0]}`,
        deadline_ms: broker.now() + timeoutMs,
        headers,
        content_type: req.headers["content-type"] ?? "",
        payload: body,
      });
      if (resp.status_code !== Status.OK) {
        const reason = resp.headers[BROKER_ERROR_HEADER];
        const status =
          reason === BrokerErrorReason.NoRoute
            ? 404
            : reason === BrokerErrorReason.Deadline
              ? 504
              : reason === BrokerErrorReason.Invalid
                ? 400
                : (HTTP_OF[resp.status_code] ?? 500);
        return reply
          .code(status)
          .type("application/json")
          .send(
            JSON.stringify({
              error: resp.status_message,
              code: Status[resp.status_code] ?? resp.status_code,
            }),
          );
      }
      const status = Number(resp.headers[STATUS_HEADER] ?? 200);
      for (const [k, v] of Object.entries(resp.headers)) {
        if (!k.startsWith(":") && !HOP.has(k) && k !== "content-type") reply.header(k, v);
      }
      if (resp.content_type) reply.type(resp.content_type);
      return reply
        .code(Number.isInteger(status) && status >= 100 && status < 600 ? status : 200)
        .send(resp.payload);
    };
    app.all("/v1/invoke/:component", handler);
    app.all("/v1/invoke/:component/*", handler);
  };
}
