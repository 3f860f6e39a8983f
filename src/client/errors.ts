/** gRPC status codes, numbered as on the wire. */
export const Code = {
  Ok: 0,
  Cancelled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
} as const;
export type Code = (typeof Code)[keyof typeof Code];

const CODE_NAMES = new Map<number, string>(Object.entries(Code).map(([name, n]) => [n, name]));

/** The name of a status code (`"Unavailable"`), for messages. */
export function codeName(code: number): string {
  return CODE_NAMES.get(code) ?? `Code${code}`;
}

/**
 * A call ended with a non-OK status. `kind` is the server's error class (trailer
 * `x-sluice-error`, e.g. `"CasFailedError"`), or `""` when the status did not come from
 * Sluice (a dropped connection, say). `details` is the server's message as sent.
 */
export class SluiceError extends Error {
  override name = "SluiceError";
  constructor(
    readonly code: Code,
    readonly kind: string,
    readonly details: string,
    options?: ErrorOptions,
  ) {
    super(details || codeName(code), options);
  }
}

/** ABORTED: the server closed the stream because its token changed; rebuild the view from a snapshot. */
export class ForceClosedError extends SluiceError {
  override name = "ForceClosedError";
}

/** UNAVAILABLE: the server is shutting down or cannot be reached; resume with the last index. */
export class UnavailableError extends SluiceError {
  override name = "UnavailableError";
}

/** PERMISSION_DENIED: the token is unknown or expired, or may not do this. Retrying will not help. */
export class PermissionDeniedError extends SluiceError {
  override name = "PermissionDeniedError";
}

/** INVALID_ARGUMENT: the request is malformed. */
export class InvalidArgumentError extends SluiceError {
  override name = "InvalidArgumentError";
}

/** FAILED_PRECONDITION: the state does not allow the write. */
export class FailedPreconditionError extends SluiceError {
  override name = "FailedPreconditionError";
}

/** A check-and-set lost: the key's modify index was not the one given. */
export class CasFailedError extends FailedPreconditionError {
  override name = "CasFailedError";
}

/** NOT_FOUND: the named thing does not exist. */
export class NotFoundError extends SluiceError {
  override name = "NotFoundError";
}

/** ALREADY_EXISTS: a conflicting entity exists. */
export class AlreadyExistsError extends SluiceError {
  override name = "AlreadyExistsError";
}

/** RESOURCE_EXHAUSTED: too many subscriptions for the connection or token. */
export class ResourceExhaustedError extends SluiceError {
  override name = "ResourceExhaustedError";
}

/** OUT_OF_RANGE: the resume index is ahead of the server's store. */
export class OutOfRangeError extends SluiceError {
  override name = "OutOfRangeError";
}

/** The server sent a stream the client cannot make sense of (a client or server bug). */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  constructor(
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`unexpected stream from the server: ${reason}`, options);
  }
}

/** `waitForIndexAbove` ran out of time before the view had any state. */
export class WaitTimeoutError extends Error {
  override readonly name = "WaitTimeoutError";
  constructor(
    readonly index: number,
    readonly timeoutMs: number,
    options?: ErrorOptions,
  ) {
    super(`no view state above index ${index} within ${timeoutMs} ms`, options);
  }
}

/** The view or client was closed. */
export class ClosedError extends Error {
  override readonly name = "ClosedError";
  constructor(options?: ErrorOptions) {
    super("closed", options);
  }
}

/** The shape of a grpc-js status error (ServiceError / StatusObject). */
interface StatusLike {
  readonly code?: unknown;
  readonly details?: unknown;
  readonly message?: unknown;
  readonly metadata?: { get(key: string): unknown[] } | undefined;
}

const BY_CODE: Partial<Record<number, typeof SluiceError>> = {
  [Code.Aborted]: ForceClosedError,
  [Code.Unavailable]: UnavailableError,
  [Code.PermissionDenied]: PermissionDeniedError,
  [Code.InvalidArgument]: InvalidArgumentError,
  [Code.FailedPrecondition]: FailedPreconditionError,
  [Code.NotFound]: NotFoundError,
  [Code.AlreadyExists]: AlreadyExistsError,
  [Code.ResourceExhausted]: ResourceExhaustedError,
  [Code.OutOfRange]: OutOfRangeError,
};

/** The one mapping from a gRPC status to the SDK's error classes. */
export function errorFromStatus(err: unknown): SluiceError {
  if (err instanceof SluiceError) return err;
  const s = (err ?? {}) as StatusLike;
  const code = (typeof s.code === "number" && CODE_NAMES.has(s.code) ? s.code : Code.Unknown) as Code;
  const kindValue = s.metadata?.get("x-sluice-error")[0];
  const kind = typeof kindValue === "string" ? kindValue : "";
  const details = typeof s.details === "string" ? s.details : typeof s.message === "string" ? s.message : "";
  const cls =
    code === Code.FailedPrecondition && kind === "CasFailedError"
      ? CasFailedError
      : (BY_CODE[code] ?? SluiceError);
  return new cls(code, kind, details, { cause: err });
}

/**
 * The error of a status carried inside a message rather than as the call's own status: a
 * Watch subscription's `closed` frame, a KV.Write result's `error`.
 */
export function errorFromWire(s: {
  readonly code: number;
  readonly message: string;
  readonly error: string;
}): SluiceError {
  return errorFromStatus({
    // 0 (OK) is no failure: a message that says so is malformed.
    code: s.code === Code.Ok ? Code.Unknown : s.code,
    details: s.message,
    metadata: { get: (key: string) => (key === "x-sluice-error" && s.error ? [s.error] : []) },
  });
}
