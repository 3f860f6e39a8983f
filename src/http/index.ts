/** The Consul-compatible HTTP API: routes, blocking queries from the change stream. Public face. */
export { DEFAULT_WAIT_MS, JITTER_FRACTION, MAX_WAIT_MS } from "./blocking.js";
export type { HttpDeps, HttpLogger, Rendered, RouteContext } from "./context.js";
export { QueryBackend } from "./context.js";
export * from "./errors.js";
export { HttpServer, type HttpServerOptions, type RouteModule } from "./http-server.js";
export { invokeRoutes } from "./invoke-routes.js";
export { Metrics, PROMETHEUS_CONTENT_TYPE } from "./metrics.js";
export { parseGoDuration } from "./query-params.js";
export { type HttpErrorReply, toHttpStatus } from "./status.js";
export { CONSUL_API_VERSION } from "./status-routes.js";
