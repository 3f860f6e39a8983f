/** The JetStream bridge (writer side) and what edges share with it. Public face. */
export { type BridgeOptions, JetStreamBridge } from "./bridge.js";
export { BridgeDivergedError, NotWriterError, RemoteWriteError, WriterUnavailableError } from "./errors.js";
export { connectNats, isNoMessage, isStreamNotFound } from "./nats-connection.js";
export { errorFromWire } from "./remote-errors.js";
export { readSnapshotObject, type SnapshotInfo, snapshotBucket } from "./snapshot-object.js";
export { escapeToken, FeedSubjects, Header, TOPIC_TOKENS, unescapeToken } from "./subjects.js";
export type { WriteReply, WriteRequest } from "./write-service.js";
