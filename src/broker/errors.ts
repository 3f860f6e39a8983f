/** A request field is missing or malformed. */
export class InvalidArgumentError extends Error {
  override readonly name = "InvalidArgumentError";
  constructor(
    readonly field: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`${field}: ${reason}`, options);
  }
}

/** The thing a request names does not exist. */
export class NotFoundError extends Error {
  override readonly name = "NotFoundError";
  constructor(
    readonly kind: string,
    readonly id: string,
    options?: ErrorOptions,
  ) {
    super(`${kind} "${id}" not found`, options);
  }
}
