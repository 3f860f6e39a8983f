/** Topic handlers: how commits and roots become change events. Public face. */
import { kvHandler } from "./kv.js";
import { serviceHealthHandler } from "./service-health.js";
import { serviceListHandler } from "./service-list.js";
import type { Topic, TopicHandler } from "./types.js";

export * from "./types.js";
export { kvHandler, serviceHealthHandler, serviceListHandler };

/** Every built-in topic's handler, by topic. */
export const DEFAULT_HANDLERS: ReadonlyMap<Topic, TopicHandler> = new Map<Topic, TopicHandler>([
  [serviceHealthHandler.topic, serviceHealthHandler],
  [serviceListHandler.topic, serviceListHandler],
  [kvHandler.topic, kvHandler],
]);
