import { Metadata, status as Status, type StatusObject } from "@grpc/grpc-js";
import {
  AclDisabledError,
  BootstrapDoneError,
  PermissionDeniedError,
  PolicyRulesError,
  TokenNotFoundError,
} from "../acl/index.js";
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
  ComponentBacklogError,
  NotRegisteredError,
  ReplicaConflictError,
  SourceMismatchError,
  TokenRequiredError,
} from "./components/errors.js";
import { InvalidArgumentError, NotFoundError } from "./errors.js";
import { NotWriterError, WriterUnavailableError } from "./jetstream/index.js";

/**
 * The one mapping from internal errors to gRPC status codes. The error's class name travels
 * in the `x-sluice-error` trailer so that clients can tell kinds apart without parsing text.
 */
export function toGrpcStatus(err: unknown): Partial<StatusObject> & { code: Status; details: string } {
  const code = codeOf(err);
  const metadata = new Metadata();
  metadata.set("x-sluice-error", err instanceof Error ? err.name : "Error");
  const details = err instanceof Error ? err.message : String(err);
  return { code, details, metadata };
}

/**
 * The same mapping as plain fields, for a status carried inside a message (a Watch
 * subscription's `closed` frame, a KV.Write result): code, message and the error's class.
 */
export function statusFields(err: unknown): { code: Status; message: string; error: string } {
  return {
    code: codeOf(err),
    message: err instanceof Error ? err.message : String(err),
    error: err instanceof Error ? err.name : "Error",
  };
}

function codeOf(err: unknown): Status {
  if (err instanceof SubscriptionForceClosedError) return Status.ABORTED;
  if (err instanceof ShuttingDownError || err instanceof StoreClosedError) return Status.UNAVAILABLE;
  if (err instanceof StoreFailedError || err instanceof WriterUnavailableError) return Status.UNAVAILABLE;
  // An edge with write forwarding off: the message names the writer to go to.
  if (err instanceof NotWriterError) return Status.FAILED_PRECONDITION;
  if (err instanceof TokenNotFoundError || err instanceof PermissionDeniedError)
    return Status.PERMISSION_DENIED;
  if (err instanceof SourceMismatchError) return Status.PERMISSION_DENIED;
  if (err instanceof NotRegisteredError || err instanceof TokenRequiredError) return Status.UNAUTHENTICATED;
  if (err instanceof ReplicaConflictError) return Status.ALREADY_EXISTS;
  if (
    err instanceof InvalidSubjectError ||
    err instanceof ValidationError ||
    err instanceof PolicyRulesError ||
    err instanceof InvalidArgumentError
  ) {
    return Status.INVALID_ARGUMENT;
  }
  if (err instanceof CasFailedError || err instanceof MissingReferenceError)
    return Status.FAILED_PRECONDITION;
  if (err instanceof BootstrapDoneError || err instanceof AclDisabledError) return Status.FAILED_PRECONDITION;
  if (err instanceof ConflictError) return Status.ALREADY_EXISTS;
  if (err instanceof NotFoundError) return Status.NOT_FOUND;
  if (err instanceof TooManySubscriptionsError || err instanceof ComponentBacklogError)
    return Status.RESOURCE_EXHAUSTED;
  if (err instanceof IndexAheadError) return Status.OUT_OF_RANGE;
  if (err instanceof SnapshotFailedError) return Status.INTERNAL;
  return Status.INTERNAL;
}
