/** The JetStream stream already holds commits this store does not have: the bridge will not write to it. */
export class BridgeDivergedError extends Error {
  override readonly name = "BridgeDivergedError";
  constructor(
    readonly stream: string,
    /** The last commit index in the stream. */
    readonly streamIndex: number,
    /** The store's index. */
    readonly storeIndex: number,
    reason: string,
  ) {
    super(
      `JetStream stream ${stream} is at index ${streamIndex} but this store is at ${storeIndex}: ${reason}; ` +
        "use another --nats-stream, or delete the stream if its history is no longer wanted",
    );
  }
}

/** A write reached an edge whose write forwarding is off. */
export class NotWriterError extends Error {
  override readonly name = "NotWriterError";
  constructor(
    /** How the writer is reached, when the edge knows. */
    readonly writer: { readonly grpc: string; readonly http: string } | undefined,
  ) {
    super(
      writer
        ? `this is a read-only edge: send writes to the writer (gRPC ${writer.grpc}, HTTP ${writer.http})`
        : "this is a read-only edge: send writes to the writer",
    );
  }
}

/** An edge could not forward a write: no writer answers (nothing written), or it timed out (outcome unknown). */
export class WriterUnavailableError extends Error {
  override readonly name = "WriterUnavailableError";
  constructor(
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`the writer could not be reached to forward this write: ${reason}`, options);
  }
}

/** The writer answered a forwarded write with an error this edge does not know by name. */
export class RemoteWriteError extends Error {
  constructor(
    /** The error's class name on the writer. */
    readonly remoteName: string,
    message: string,
  ) {
    super(message);
    this.name = "RemoteWriteError";
  }
}
