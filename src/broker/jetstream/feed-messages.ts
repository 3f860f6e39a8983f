import { eventBytes } from "../../proto/index.js";
import { DEFAULT_HANDLERS, type Topic, type TopicHandler } from "../../state/events/index.js";
import { type Commit, encodeCommit, type StateRoot } from "../../state/index.js";
import type { FeedMessage } from "./outbox.js";
import { type FeedSubjects, Header, TOPIC_TOKENS } from "./subjects.js";

/*
 * What one commit becomes on the feed. The log message's payload is the commit exactly as
 * the write-ahead log stores it (JSON: index and changes with before- and after-images, KV
 * bytes as {"$b": base64}); each event message's payload is the sluice.v1.Event protobuf a
 * Subscribe stream carries for that event, the same bytes (encoded once).
 */

/** The feed messages of one commit: its log message, then one message per topic event. */
export function commitMessages(
  subjects: FeedSubjects,
  commit: Commit,
  before: StateRoot,
  after: StateRoot,
  nowMs: number,
  snapshotPoint: boolean,
  handlers: ReadonlyMap<Topic, TopicHandler> = DEFAULT_HANDLERS,
): FeedMessage[] {
  const index = String(commit.index);
  const out: FeedMessage[] = [
    {
      index: commit.index,
      pos: 0,
      subject: subjects.log,
      data: Buffer.from(encodeCommit(commit), "utf8"),
      headers: [
        [Header.Index, index],
        [Header.Kind, "log"],
        [Header.Position, "0"],
        [Header.Time, String(nowMs)],
      ],
      ...(snapshotPoint ? { root: after } : {}),
    },
  ];
  for (const [topic, handler] of handlers) {
    for (const e of handler.eventsOf(commit, before, after)) {
      const pos = out.length;
      out.push({
        index: commit.index,
        pos,
        subject: subjects.event(topic, e.subject),
        data: eventBytes(e),
        headers: [
          [Header.Index, index],
          [Header.Kind, "event"],
          [Header.Position, String(pos)],
          [Header.Topic, TOPIC_TOKENS[topic]],
        ],
      });
    }
  }
  return out;
}
