/** Edge replicas: the writer's state replayed from JetStream. Public face. */
export { type EdgeOptions, EdgeReplica, type ReplicationLag } from "./edge-replica.js";
export { ReplicationStoppedError } from "./errors.js";
