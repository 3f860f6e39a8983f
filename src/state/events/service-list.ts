import { serviceExists, serviceInstances, serviceNames } from "../queries.js";
import type { StateRoot } from "../schema.js";
import type { Commit, Index } from "../types.js";
import { type Event, SubjectKind, Topic, type TopicHandler } from "./types.js";

const listEvent = (name: string, op: "register" | "deregister", index: Index): Event => ({
  topic: Topic.ServiceList,
  index,
  subject: name.toLowerCase(),
  payload: { op, name },
});

/**
 * ServiceList: a service name appears with its first instance and goes with its last. Names
 * match case-insensitively (the subject is lower-cased); the payload keeps the name as
 * registered, which is also what ACL rules are matched against.
 */
export const serviceListHandler: TopicHandler = {
  topic: Topic.ServiceList,
  allows: new Set([SubjectKind.Wildcard]),
  normalizeKey: (key) => key.toLowerCase(),

  eventsOf(commit: Commit, before: StateRoot, after: StateRoot): Event[] {
    // lower-cased name → the name as registered (the row's own spelling)
    const names = new Map<string, string>();
    for (const ch of commit.changes) {
      if (ch.table !== "services") continue;
      if (ch.before) names.set(ch.before.Service.toLowerCase(), ch.before.Service);
      if (ch.after) names.set(ch.after.Service.toLowerCase(), ch.after.Service);
    }
    if (names.size === 0) return [];
    const out: Event[] = [];
    for (const [lower, spelled] of names) {
      const was = serviceExists(before, lower);
      const is = serviceExists(after, lower);
      if (!was && is) out.push(listEvent(firstSpelling(after, lower) ?? spelled, "register", commit.index));
      else if (was && !is)
        out.push(listEvent(firstSpelling(before, lower) ?? spelled, "deregister", commit.index));
    }
    return out;
  },

  snapshot(_subject, root: StateRoot): Event[] {
    return [...serviceNames(root)].map((lower) =>
      listEvent(firstSpelling(root, lower) ?? lower, "register", root.index),
    );
  },
};

/** The registered spelling of a service name: its first instance's. */
function firstSpelling(root: StateRoot, lower: string): string | undefined {
  const first = serviceInstances(root, lower).next();
  return first.done ? undefined : first.value.Service;
}
