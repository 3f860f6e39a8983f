/** A policy's rule document is malformed. `line`/`column` point into it (1-based) when known. */
export class PolicyRulesError extends Error {
  override readonly name = "PolicyRulesError";
  constructor(
    readonly reason: string,
    readonly line: number | undefined,
    readonly column: number | undefined,
    options?: ErrorOptions,
  ) {
    super(
      `invalid policy rules${line !== undefined ? ` at line ${line}${column !== undefined ? `, column ${column}` : ""}` : ""}: ${reason}`,
      options,
    );
  }
}

/** The token is unknown or expired (Consul's "ACL not found"). */
export class TokenNotFoundError extends Error {
  override readonly name = "TokenNotFoundError";
  constructor(options?: ErrorOptions) {
    super("ACL not found", options);
  }
}

/** The token may not perform the operation. */
export class PermissionDeniedError extends Error {
  override readonly name = "PermissionDeniedError";
  constructor(
    readonly resource: string,
    readonly segment: string,
    readonly access: string,
    options?: ErrorOptions,
  ) {
    super(
      `Permission denied: token lacks ${resource}:${access}${segment ? ` on "${segment}"` : ""}`,
      options,
    );
  }
}

/** ACL bootstrap was already done. */
export class BootstrapDoneError extends Error {
  override readonly name = "BootstrapDoneError";
  constructor(options?: ErrorOptions) {
    super("ACL bootstrap already done", options);
  }
}

/** ACLs are disabled on this server, so ACL management is unavailable. */
export class AclDisabledError extends Error {
  override readonly name = "AclDisabledError";
  constructor(options?: ErrorOptions) {
    super("ACL support disabled", options);
  }
}
