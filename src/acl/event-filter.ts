import { type Event, type Subject, SubjectKind, Topic } from "../state/events/index.js";
import type { EventFilter } from "../stream/index.js";
import type { Authorizer } from "./authorizer.js";

/**
 * Per-event visibility for a token, as Consul has it: ServiceHealth needs service:read on the
 * service and node:read on its node; KV needs key:read on the key; ServiceList needs
 * service:read on the name. Decisions are memoized inside the authorizer, so a check is a
 * map lookup on the hot path.
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

const NOTHING: EventFilter = () => false;

/**
 * The filter for one subscription. Where the subject fixes the decision (a single KV key),
 * it is made once here: `undefined` (no per-event work) when readable, a reject-all filter
 * when not. Any ACL change closes the stream, so the decision cannot go stale.
 */
export function subscriptionFilter(
  authz: Authorizer,
  topic: Topic,
  subject: Subject,
): EventFilter | undefined {
  if (topic === Topic.KV && subject.kind === SubjectKind.Key) {
    return authz.allows("key", subject.key, "read") ? undefined : NOTHING;
  }
  return eventFilterFor(authz);
}
