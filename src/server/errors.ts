/** The server could not listen on an address (in use, not permitted, not local). */
export class ListenError extends Error {
  override readonly name = "ListenError";
  constructor(
    /** "gRPC" or "HTTP". */
    readonly protocol: string,
    readonly address: string,
    options?: ErrorOptions,
  ) {
    const cause = options?.cause as { code?: string; message?: string } | undefined;
    const why =
      cause?.code === "EADDRINUSE" || /No address added/.test(cause?.message ?? "")
        ? "address in use or not available"
        : (cause?.message ?? "unknown error");
    super(`cannot listen for ${protocol} on ${address}: ${why}`, options);
  }
}
