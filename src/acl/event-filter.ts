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
  // One-entry memos: a stream often carries runs of events on the same key, service or
  // node, and a string comparison is cheaper than even a map lookup.
  let lastKey: string | undefined;
  let lastKeyOk = false;
  let lastService: string | undefined;
  let lastServiceOk = false;
  let lastNode: string | undefined;
  let lastNodeOk = false;
  const service = (name: string): boolean => {
    if (name !== lastService) {
      lastService = name;
      lastServiceOk = authz.allows("service", name, "read");
    }
    return lastServiceOk;
  };
  // Frames of KV events are decided by key set: one memo entry per interned set id.
  const sets = new Map<number, boolean>();
  const allowsKeys = (setId: number, keys: readonly string[]): boolean => {
    let ok = sets.get(setId);
    if (ok === undefined) {
      ok = keys.every((k) => authz.allows("key", k, "read"));
      if (sets.size >= 4096) sets.clear();
      sets.set(setId, ok);
    }
    return ok;
  };
  const filter = (e: Event): boolean => {
    switch (e.topic) {
      case "ServiceHealth": {
        if (!service(e.payload.service.Service)) return false;
        const node = e.payload.node.Node;
        if (node !== lastNode) {
          lastNode = node;
          lastNodeOk = authz.allows("node", node, "read");
        }
        return lastNodeOk;
      }
      case "KV": {
        const key = e.payload.entry.Key;
        if (key !== lastKey) {
          lastKey = key;
          lastKeyOk = authz.allows("key", key, "read");
        }
        return lastKeyOk;
      }
      case "ServiceList":
        return service(e.payload.name);
      default: {
        const never: never = e;
        return never;
      }
    }
  };
  return Object.assign(filter, { allowsKeys });
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
