import { TOPIC_NAMES, type Topic } from "../../state/events/index.js";

/*
 * The NATS subject scheme of the change feed (documented in docs/ARCHITECTURE.md):
 *
 *   <prefix>.log                          one message per commit, in index order
 *   <prefix>.events.<topic>.<subject>     one message per topic event
 *   <prefix>.write                        write forwarding (request/reply, edges → writer)
 *   <prefix>.writer                       who the writer is (request/reply: its gRPC and HTTP addresses)
 *
 * <topic> is the topic in lower snake case. <subject> is the event's subject key (the
 * lower-case service name, or the KV key) as ONE subject token: bytes outside
 * [A-Za-z0-9_-] are written as %XX (upper-case hex of each UTF-8 byte), so dots, slashes,
 * spaces, `*` and `>` never split or widen a subject, and the mapping can be undone.
 */

/** Topic → its subject token (the topic's lower snake-case name). */
export const TOPIC_TOKENS: Readonly<Record<Topic, string>> = TOPIC_NAMES;

const SAFE = /^[A-Za-z0-9_-]$/;

/** One subject token for any string (see the scheme above). The empty string becomes `%`. */
export function escapeToken(s: string): string {
  if (s === "") return "%";
  let out = "";
  for (const ch of s) {
    if (SAFE.test(ch)) {
      out += ch;
      continue;
    }
    for (const b of Buffer.from(ch, "utf8")) out += `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** Undoes {@link escapeToken}. */
export function unescapeToken(token: string): string {
  if (token === "%") return "";
  const bytes: number[] = [];
  for (let i = 0; i < token.length; i++) {
    const c = token[i]!;
    if (c === "%") {
      bytes.push(Number.parseInt(token.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(c.charCodeAt(0));
  }
  return Buffer.from(bytes).toString("utf8");
}

/** The subjects of one Sluice feed, under a prefix (default `sluice`). */
export class FeedSubjects {
  readonly log: string;
  readonly events: string;
  readonly write: string;
  readonly writer: string;

  constructor(readonly prefix = "sluice") {
    if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(prefix)) {
      throw new TypeError(`invalid NATS subject prefix "${prefix}"`);
    }
    this.log = `${prefix}.log`;
    this.events = `${prefix}.events`;
    this.write = `${prefix}.write`;
    this.writer = `${prefix}.writer`;
  }

  /** The subject of one topic event. */
  event(topic: Topic, subject: string): string {
    return `${this.events}.${TOPIC_TOKENS[topic]}.${escapeToken(subject)}`;
  }

  /** Every subject the feed's stream captures. */
  get streamSubjects(): string[] {
    return [this.log, `${this.events}.>`];
  }
}

/** Message headers of the feed. */
export const Header = {
  /** The commit index (decimal). */
  Index: "Sluice-Index",
  /** `log` or `event`. */
  Kind: "Sluice-Kind",
  /** Position of an event message within its commit's events (1-based); 0 for the log message. */
  Position: "Sluice-Pos",
  /** Commit time on the writer, ms since the epoch (log messages). */
  Time: "Sluice-Time",
  /** An event's topic. */
  Topic: "Sluice-Topic",
} as const;
