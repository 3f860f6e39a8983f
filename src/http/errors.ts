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

/** The client does not take what the endpoint sends (an event stream to `Accept: application/json`). */
export class NotAcceptableError extends Error {
  override readonly name = "NotAcceptableError";
  constructor(
    /** The request's Accept header. */
    readonly accept: string,
    /** The media type the endpoint produces. */
    readonly produces: string,
    options?: ErrorOptions,
  ) {
    super(`this endpoint sends ${produces}, which "Accept: ${accept}" does not take`, options);
  }
}

/** A per-token quota of the notification API is used up (429). */
export class QuotaExceededError extends Error {
  override readonly name = "QuotaExceededError";
  constructor(
    /** Which quota: open channels, or subscriptions across a token's channels. */
    readonly quota: "channels" | "subscriptions",
    readonly limit: number,
    /** How many the token holds now. */
    readonly used: number,
    options?: ErrorOptions,
  ) {
    super(`quota of ${limit} ${quota} per token reached (${used} in use)`, options);
  }
}

/** Only the token that opened a notification channel may change it (403). */
export class ChannelOwnerError extends Error {
  override readonly name = "ChannelOwnerError";
  constructor(
    readonly channel: string,
    options?: ErrorOptions,
  ) {
    super(`notification channel "${channel}" belongs to another token`, options);
  }
}
