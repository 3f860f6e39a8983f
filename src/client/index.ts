/**
 * The Sluice client SDK (`sluice/client`): the change stream as typed frames, materialized
 * views that stay equal to the server's state across disconnects, and unary calls. Public face.
 */
export type { AclApi, LinkRef, PolicyInput, TokenInput } from "./acl-api.js";
export {
  type BackoffPolicy,
  type BackoffState,
  backoffDelay,
  backoffFailure,
  backoffSuccess,
  DEFAULT_BACKOFF,
  INITIAL_BACKOFF,
} from "./backoff.js";
export type {
  CatalogApi,
  DeregisterInput,
  RegisterInput,
  ServiceHealthQuery,
  UpdateCheckInput,
} from "./catalog-api.js";
export {
  AlreadyExistsError,
  CasFailedError,
  ClosedError,
  Code,
  codeName,
  errorFromStatus,
  FailedPreconditionError,
  ForceClosedError,
  InvalidArgumentError,
  NotFoundError,
  OutOfRangeError,
  PermissionDeniedError,
  ProtocolError,
  ResourceExhaustedError,
  SluiceError,
  UnavailableError,
  WaitTimeoutError,
} from "./errors.js";
export type { KVApi, KVDeleteOptions, KVListOptions, KVPutOptions } from "./kv-api.js";
export type { KVWriter } from "./kv-writer.js";
export {
  type KVSubject,
  SluiceClient,
  type SluiceClientOptions,
  type SubscribeOptions,
} from "./sluice-client.js";
export { Recovery, recoveryFor } from "./stream-view.js";
export {
  type ACLPolicy,
  type ACLToken,
  type AccessorId,
  asAccessorId,
  asIndex,
  asSecretId,
  type Check,
  type Frame,
  FrameKind,
  type Index,
  type KVEntry,
  type KVUpdate,
  type MaterializedView,
  type Node,
  type RetryNotice,
  type SecretId,
  type Service,
  type ServiceHealthUpdate,
  type ServiceHealthViewOptions,
  type ServiceInstance,
  type ServiceListUpdate,
  type StreamEvent,
  type Subject,
  type SubscribeRequest,
  Topic,
  type ViewOptions,
  type ViewStats,
  type ViewUpdate,
  type WaitOptions,
} from "./types.js";
export type { CallOptions } from "./unary-call.js";
export { type FoldFrame, type FoldModel, FoldStep, ViewFold } from "./view-fold.js";
