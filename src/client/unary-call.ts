import type * as grpc from "@grpc/grpc-js";
import { errorFromStatus } from "./errors.js";

/** What every unary call needs from its client. */
export interface CallContext {
  /** Call metadata: the token, and grpc-js's wait-for-ready flag (which travels in it). */
  metadata(waitForReady?: boolean): grpc.Metadata;
  /** Per-call deadline, in ms. */
  readonly callTimeoutMs: number;
  /** Wait for a connection (up to the deadline) instead of failing at once while there is none. */
  readonly waitForReady: boolean;
}

/** Per-call options of the unary wrappers. */
export interface CallOptions {
  readonly signal?: AbortSignal;
  /** Overrides the client's call timeout, in ms. */
  readonly timeoutMs?: number;
}

type Start<Res> = (
  md: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, res?: Res) => void,
) => grpc.ClientUnaryCall;

/** Runs one unary call: token metadata, deadline, cancellation, and errors mapped to SDK classes. */
export function unaryCall<Res>(ctx: CallContext, start: Start<Res>, options: CallOptions = {}): Promise<Res> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<Res>((resolve, reject) => {
    const deadline = Date.now() + (options.timeoutMs ?? ctx.callTimeoutMs);
    const onAbort = (): void => call.cancel();
    const call = start(ctx.metadata(ctx.waitForReady), { deadline }, (err, res) => {
      signal?.removeEventListener("abort", onAbort);
      if (signal?.aborted) reject(signal.reason);
      else if (err) reject(errorFromStatus(err));
      else if (res === undefined) reject(new Error("empty response"));
      else resolve(res);
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
