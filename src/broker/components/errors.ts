/** A component's first message on a broker connection was not `register { name, id }` (UNAUTHENTICATED). */
export class NotRegisteredError extends Error {
  override readonly name = "NotRegisteredError";
  constructor(
    /** The kind of message that came instead. */
    readonly received: string,
  ) {
    super(`the first message must be register { name, id }, got ${received}`);
  }
}

/** ACLs are on and the component came without a token (UNAUTHENTICATED). */
export class TokenRequiredError extends Error {
  override readonly name = "TokenRequiredError";
  constructor(readonly component: string) {
    super(`a token is needed to register component "${component}" (x-sluice-token metadata)`);
  }
}

/** A replica with this identity is connected already (ALREADY_EXISTS). */
export class ReplicaConflictError extends Error {
  override readonly name = "ReplicaConflictError";
  constructor(
    readonly component: string,
    readonly id: string,
  ) {
    super(`replica ${component}/${id} is connected already`);
  }
}

/** An event's source is not the connection's registered identity (PERMISSION_DENIED). */
export class SourceMismatchError extends Error {
  override readonly name = "SourceMismatchError";
  constructor(
    readonly source: string,
    readonly registered: string,
  ) {
    super(`event source ${source} is not the registered identity ${registered}`);
  }
}

/** A component stopped reading and its undelivered messages reached the limit (RESOURCE_EXHAUSTED). */
export class ComponentBacklogError extends Error {
  override readonly name = "ComponentBacklogError";
  constructor(readonly limit: number) {
    super(`the component is not reading: ${limit} messages are waiting for it; reconnect`);
  }
}
