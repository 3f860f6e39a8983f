import type * as grpc from "@grpc/grpc-js";
import type { AclAdmin, AclEnforcer, ResolvedToken } from "../acl/index.js";
import type { Store } from "../state/index.js";
import type { EventPublisher } from "../stream/index.js";
import { toGrpcStatus } from "./status.js";

export interface BrokerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug?(obj: object, msg: string): void;
}

/** What the gRPC services work with. */
export interface BrokerDeps {
  readonly store: Store;
  readonly publisher: EventPublisher;
  readonly enforcer: AclEnforcer;
  readonly admin: AclAdmin;
  readonly logger: BrokerLogger;
  /** Most concurrent Subscribe streams per client connection (default 10,000). */
  readonly maxSubscriptionsPerConnection?: number;
  /** Observes each unary call: full method name, status code name, duration in ms (metrics). */
  readonly onRequest?: (method: string, code: string, ms: number) => void;
  /** How long a Subscribe whose index is ahead of the store waits for it (default 3 s). */
  readonly indexAheadWaitMs?: number;
}

/** The token of a call: `x-sluice-token` metadata, or `authorization: Bearer …`. */
export function metadataToken(md: grpc.Metadata): string | undefined {
  const direct = md.get("x-sluice-token")[0];
  if (typeof direct === "string" && direct !== "") return direct;
  const auth = md.get("authorization")[0];
  if (typeof auth === "string" && auth.startsWith("Bearer ")) return auth.slice(7).trim();
  return undefined;
}

export function resolveCall(deps: BrokerDeps, md: grpc.Metadata): Promise<ResolvedToken> {
  return deps.enforcer.resolve(metadataToken(md));
}

/** Adapts an async handler to grpc-js's callback style, mapping errors through {@link toGrpcStatus}. */
export function unary<Req, Res>(
  fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err) => callback(toGrpcStatus(err)),
    );
  };
}
