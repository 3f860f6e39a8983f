import { eventBytes } from "../../proto/index.js";
import { DEFAULT_HANDLERS, type Topic, type TopicHandler } from "../../state/events/index.js";
import { type Commit, encodeWalCommit, type StateRoot } from "../../state/index.js";
import type { FeedMessage } from "./outbox.js";
import { type FeedSubjects, Header, TOPIC_TOKENS } from "./subjects.js";

/*
 * What one commit becomes on the feed. The log message's payload is the commit exactly as a
 * write-ahead-log record holds it (binary format 1, see src/state/wal-codec.ts: index and
 * changes with before- and after-images, KV values as raw bytes); each event message's
 * payload is the sluice.v1.Event protobuf a Subscribe stream carries for that event.
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
      data: encodeWalCommit(commit),
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
