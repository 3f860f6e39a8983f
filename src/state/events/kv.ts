import { kvGet, kvList } from "../queries.js";
import type { StateRoot } from "../schema.js";
import type { Commit, KVRow } from "../types.js";
import { type Event, type Subject, SubjectKind, Topic, type TopicHandler } from "./types.js";

/** KV: one event per key set or deleted; subscriptions by key, key prefix, or wildcard. */
export const kvHandler: TopicHandler = {
  topic: Topic.KV,
  allows: new Set([SubjectKind.Key, SubjectKind.Prefix, SubjectKind.Wildcard]),
  normalizeKey: (key) => key,

  eventsOf(commit: Commit): Event[] {
    const out: Event[] = [];
    for (const ch of commit.changes) {
      if (ch.table !== "kv") continue;
      const entry = (ch.after ?? ch.before) as KVRow;
      out.push({
        topic: Topic.KV,
        index: commit.index,
        subject: ch.key,
        payload: { op: ch.after ? "set" : "delete", entry },
      });
    }
    return out;
  },

  snapshot(subject: Subject, root: StateRoot): Event[] {
    const rows: Iterable<KVRow> =
      subject.kind === SubjectKind.Key
        ? [kvGet(root, subject.key)].filter((r): r is KVRow => r !== undefined)
        : kvList(root, subject.kind === SubjectKind.Prefix ? subject.prefix : "");
    const out: Event[] = [];
    for (const entry of rows) {
      out.push({ topic: Topic.KV, index: root.index, subject: entry.Key, payload: { op: "set", entry } });
    }
    return out;
  },
};
