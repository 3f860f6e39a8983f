/** The gRPC server and its services. Public face. */
export type { BrokerDeps, BrokerLogger } from "./context.js";
export { metadataToken } from "./context.js";
export * from "./errors.js";
export { GrpcServer, SERVER_OPTIONS } from "./grpc-server.js";
export { toGrpcStatus } from "./status.js";
