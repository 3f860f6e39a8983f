import {
  AclDisabledError,
  BootstrapDoneError,
  PermissionDeniedError,
  PolicyRulesError,
  TokenNotFoundError,
} from "../acl/index.js";
import { NotWriterError, WriterUnavailableError } from "../broker/jetstream/index.js";
import {
  CasFailedError,
  ConflictError,
  MissingReferenceError,
  StoreClosedError,
  StoreFailedError,
  ValidationError,
} from "../state/index.js";
import {
  IndexAheadError,
  InvalidSubjectError,
  ShuttingDownError,
  SnapshotFailedError,
  SubscriptionForceClosedError,
  TooManySubscriptionsError,
} from "../stream/index.js";
import {
  BadRequestError,
  ChannelOwnerError,
  MethodNotAllowedError,
  NotAcceptableError,
  NotFoundError,
  PayloadTooLargeError,
  QuotaExceededError,
} from "./errors.js";

/** What an error becomes on the wire: a status, a JSON body, and the error's class. */
export interface HttpErrorReply {
  readonly status: number;
  /** `error` is the message; the error's own fields (`field`, `resource`, …) follow it. */
  readonly body: { readonly error: string } & Readonly<Record<string, unknown>>;
  /** The error's class name, sent as `X-Sluice-Error` so clients need not parse text. */
  readonly kind: string;
}

/**
 * The one mapping from internal errors to HTTP statuses (the HTTP twin of the gRPC mapping
 * in src/broker/status.ts). Statuses follow Consul's HTTP API where it has one: an unknown
 * token or a missing permission is 403 (the unknown token's message is "ACL not found"),
 * ACL endpoints on a server without ACLs are 401. A failed check-and-set is 409 here; the
 * KV endpoints answer `false` instead, as Consul does, before an error is ever raised.
 */
export function toHttpStatus(err: unknown): HttpErrorReply {
  const status = statusOf(err);
  if (!(err instanceof Error)) return { status, body: { error: String(err) }, kind: "Error" };
  if (status >= 500) {
    // Internal details stay in the log; unavailability is worth saying as it is.
    const error = status === 503 ? err.message : "internal server error";
    return { status, body: { error }, kind: err.name };
  }
  return { status, body: { error: err.message, ...fieldsOf(err) }, kind: err.name };
}

function statusOf(err: unknown): number {
  if (err instanceof TokenNotFoundError || err instanceof PermissionDeniedError) return 403;
  if (err instanceof BootstrapDoneError || err instanceof ChannelOwnerError) return 403;
  if (err instanceof AclDisabledError) return 401;
  if (
    err instanceof BadRequestError ||
    err instanceof ValidationError ||
    err instanceof PolicyRulesError ||
    err instanceof InvalidSubjectError ||
    err instanceof MissingReferenceError ||
    err instanceof IndexAheadError
  ) {
    return 400;
  }
  if (err instanceof NotFoundError) return 404;
  if (err instanceof MethodNotAllowedError) return 405;
  if (err instanceof NotAcceptableError) return 406;
  if (err instanceof CasFailedError || err instanceof ConflictError) return 409;
  if (err instanceof PayloadTooLargeError) return 413;
  if (err instanceof TooManySubscriptionsError || err instanceof QuotaExceededError) return 429;
  if (
    err instanceof ShuttingDownError ||
    err instanceof StoreClosedError ||
    err instanceof StoreFailedError ||
    err instanceof SubscriptionForceClosedError ||
    // An edge: the writer is unreachable, or forwarding is off (the message names the writer).
    err instanceof WriterUnavailableError ||
    err instanceof NotWriterError
  ) {
    return 503;
  }
  if (err instanceof SnapshotFailedError) return 500;
  // fastify's own client errors (body too large, bad content type, malformed URL) carry one.
  const code = (err as { statusCode?: unknown } | null)?.statusCode;
  if (typeof code === "number" && code >= 400 && code < 500) return code;
  return 500;
}

/** An error's own data fields (constructor parameters such as `field`, `reason`, `resource`). */
function fieldsOf(err: Error): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(err)) {
    if (k === "name" || k === "message" || k === "stack" || k === "cause") continue;
    if (v === undefined || typeof v === "function" || (typeof v === "object" && v !== null)) continue;
    out[k] = v;
  }
  return out;
}
