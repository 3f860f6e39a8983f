/** The wire contract: loaded .proto definitions and the stream frame codec. Public face. */
export {
  EnvelopeType,
  EventType,
  LOADER_OPTIONS,
  PROTO_DIR,
  PROTO_FILES,
  packageDefinition,
  type SluiceProto,
  sluiceV1,
} from "./definitions.js";
export {
  checkToWire,
  encodeFrame,
  eventBytes,
  eventMessage,
  kvToWire,
  nodeToWire,
  serviceToWire,
} from "./event-codec.js";
export { type WatchClosedStatus, WatchResponseBuilder } from "./watch-codec.js";
