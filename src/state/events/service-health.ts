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
    // Instances (node SEP service ID) the commit may have changed. Their state before and
    // after is read from the roots, not from the change rows, so that several changes to one
    // instance within a transaction (rename then deregister, say) net out correctly.
    const touched = new Set<string>();
    const touchNode = (node: string): void => {
      for (const root of [before, after])
        for (const s of nodeServices(root, node)) touched.add(s.Node + SEP + s.ID);
    };
    for (const ch of commit.changes) {
      switch (ch.table) {
        case "services":
          for (const row of [ch.before, ch.after]) if (row) touched.add(row.Node + SEP + row.ID);
          break;
        case "checks":
          // A check may move between owners: both the old and the new owner change.
          for (const row of [ch.before, ch.after]) {
            if (!row) continue;
            if (row.ServiceID === "") touchNode(row.Node);
            else touched.add(row.Node + SEP + row.ServiceID);
          }
          break;
        case "nodes":
          touchNode((ch.after ?? ch.before)!.Node);
          break;
        default:
          break;
      }
    }
    if (touched.size === 0) return [];
    const deregisters: Event[] = [];
    const registers: Event[] = [];
    for (const key of touched) {
      const sep = key.indexOf(SEP);
      const node = key.slice(0, sep);
      const id = key.slice(sep + 1);
      const was = getService(before, node, id);
      const is = getService(after, node, id);
      if (was && (!is || was.Service !== is.Service)) {
        const e = instanceEvent(before, was, "deregister", commit.index);
        if (e) deregisters.push(e);
      }
      if (is) {
        const e = instanceEvent(after, is, "register", commit.index);
        if (e) registers.push(e);
      }
    }
    return deregisters.concat(registers);
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
