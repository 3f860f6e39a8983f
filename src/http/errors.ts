/** A query parameter, path segment or body field is missing or malformed. */
export class BadRequestError extends Error {
  override readonly name = "BadRequestError";
  constructor(
    /** The offending parameter or body field, e.g. `wait` or `Service.Port`. */
    readonly field: string,
    /** What is wrong with it. */
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`${field}: ${reason}`, options);
  }
}

/** The thing a request names does not exist (a policy, a token, a route). */
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

/** A request body is larger than the endpoint takes (a KV value above the store's limit). */
export class PayloadTooLargeError extends Error {
  override readonly name = "PayloadTooLargeError";
  constructor(
    readonly size: number,
    readonly limit: number,
    options?: ErrorOptions,
  ) {
    super(`request body of ${size} bytes is larger than the limit of ${limit} bytes`, options);
  }
}

/** The path exists but does not take the request's method. */
export class MethodNotAllowedError extends Error {
  override readonly name = "MethodNotAllowedError";
  constructor(
    readonly method: string,
    /** The methods the path takes (sent as `Allow`). */
    readonly allowed: readonly string[],
    options?: ErrorOptions,
  ) {
    super(`method ${method} not allowed (allowed: ${allowed.join(", ")})`, options);
  }
}
