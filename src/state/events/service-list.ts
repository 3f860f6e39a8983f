import { serviceExists, serviceNames } from "../queries.js";
import type { StateRoot } from "../schema.js";
import type { Commit, Index } from "../types.js";
import { type Event, SubjectKind, Topic, type TopicHandler } from "./types.js";

const listEvent = (name: string, op: "register" | "deregister", index: Index): Event => ({
  topic: Topic.ServiceList,
  index,
  subject: name,
  payload: { op, name },
});

/** ServiceList: a service name appears with its first instance and goes with its last. */
export const serviceListHandler: TopicHandler = {
  topic: Topic.ServiceList,
  allows: new Set([SubjectKind.Wildcard]),
  normalizeKey: (key) => key.toLowerCase(),

  eventsOf(commit: Commit, before: StateRoot, after: StateRoot): Event[] {
    const names = new Set<string>();
    for (const ch of commit.changes) {
      if (ch.table !== "services") continue;
      if (ch.before) names.add(ch.before.Service.toLowerCase());
      if (ch.after) names.add(ch.after.Service.toLowerCase());
    }
    const out: Event[] = [];
    for (const name of names) {
      const was = serviceExists(before, name);
      const is = serviceExists(after, name);
      if (!was && is) out.push(listEvent(name, "register", commit.index));
      else if (was && !is) out.push(listEvent(name, "deregister", commit.index));
    }
    return out;
  },

  snapshot(_subject, root: StateRoot): Event[] {
    return [...serviceNames(root)].map((name) => listEvent(name, "register", root.index));
  },
};
