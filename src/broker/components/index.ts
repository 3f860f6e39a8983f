/** The component broker. Public face. */
export { type BrokerMetrics, ComponentBroker, type ComponentBrokerOptions } from "./component-broker.js";
export {
  BROKER_ERROR_HEADER,
  BrokerErrorReason,
  type ComponentRef,
  type Envelope,
  Kind,
  normalize,
  Status,
} from "./envelope.js";
export { type HttpCall, STATUS_HEADER } from "./http-egress.js";
