import { getNode, getService, instanceChecks, nodeServices, serviceInstances } from "../queries.js";
import { SEP, type StateRoot } from "../schema.js";
import type { Commit, Index, ServiceRow } from "../types.js";
import { type Event, type Subject, SubjectKind, Topic, type TopicHandler } from "./types.js";

function instanceEvent(
  root: StateRoot,
  svc: ServiceRow,
  op: "register" | "deregister",
  index: Index,
): Event | undefined {
  const node = getNode(root, svc.Node);
  if (!node) return undefined;
  return {
    topic: Topic.ServiceHealth,
    index,
    subject: svc.Service.toLowerCase(),
    payload: { op, node, service: svc, checks: instanceChecks(root, svc.Node, svc.ID) },
  };
}

/**
 * ServiceHealth: one event per affected service instance (Consul's CheckServiceNode).
 * A change to a node or a node-level check touches every instance on the node; a change to
 * a service or its check touches that instance; a rename deregisters under the old name
 * first.
 */
export const serviceHealthHandler: TopicHandler = {
  topic: Topic.ServiceHealth,
  allows: new Set([SubjectKind.Key]),
  normalizeKey: (key) => key.toLowerCase(),

  eventsOf(commit: Commit, before: StateRoot, after: StateRoot): Event[] {
    const deregisters = new Map<string, ServiceRow>();
    const touched = new Set<string>(); // node SEP serviceId, to register from `after`
    const touchNode = (node: string): void => {
      for (const s of nodeServices(after, node)) touched.add(s.Node + SEP + s.ID);
    };
    for (const ch of commit.changes) {
      switch (ch.table) {
        case "services": {
          const b = ch.before;
          const a = ch.after;
          if (b && (!a || b.Service !== a.Service)) deregisters.set(b.Node + SEP + b.ID, b);
          if (a) touched.add(a.Node + SEP + a.ID);
          break;
        }
        case "checks": {
          const row = (ch.after ?? ch.before)!;
          if (row.ServiceID === "") touchNode(row.Node);
          else touched.add(row.Node + SEP + row.ServiceID);
          break;
        }
        case "nodes":
          if (ch.after) touchNode(ch.after.Node);
          break;
        default:
          break;
      }
    }
    const out: Event[] = [];
    for (const svc of deregisters.values()) {
      const e = instanceEvent(before, svc, "deregister", commit.index);
      if (e) out.push(e);
    }
    for (const key of touched) {
      const sep = key.indexOf(SEP);
      const svc = getService(after, key.slice(0, sep), key.slice(sep + 1));
      if (!svc) continue;
      const e = instanceEvent(after, svc, "register", commit.index);
      if (e) out.push(e);
    }
    return out;
  },

  snapshot(subject: Subject, root: StateRoot): Event[] {
    if (subject.kind !== SubjectKind.Key) return [];
    const out: Event[] = [];
    for (const svc of serviceInstances(root, subject.key)) {
      const e = instanceEvent(root, svc, "register", root.index);
      if (e) out.push(e);
    }
    return out;
  },
};
