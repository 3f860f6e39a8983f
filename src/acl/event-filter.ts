import type { Event } from "../state/events/index.js";
import type { EventFilter } from "../stream/index.js";
import type { Authorizer } from "./authorizer.js";

/**
 * Per-event visibility for a token, as Consul has it: ServiceHealth needs service:read on the
 * service and node:read on its node; KV needs key:read on the key; ServiceList needs
 * service:read on the name. Decisions are cached inside the authorizer, so a check is a map
 * lookup on the hot path.
 */
export function eventFilterFor(authz: Authorizer): EventFilter {
  return (e: Event): boolean => {
    switch (e.topic) {
      case "ServiceHealth":
        return (
          authz.allows("service", e.payload.service.Service, "read") &&
          authz.allows("node", e.payload.node.Node, "read")
        );
      case "KV":
        return authz.allows("key", e.payload.entry.Key, "read");
      case "ServiceList":
        return authz.allows("service", e.payload.name, "read");
      default: {
        const never: never = e;
        return never;
      }
    }
  };
}
