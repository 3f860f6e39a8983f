import { type ConsumerMessages, connect, type JsMsg, type NatsConnection } from "nats";
import { afterAll, beforeAll, onTestFinished } from "vitest";
import { Header } from "../../src/broker/jetstream/index.js";
import type { ServerConfig } from "../../src/server/index.js";
import { Harness } from "../helpers/grpc-harness.js";
import { NatsServer } from "../helpers/nats-server.js";

/*
 * Fixtures for the JetStream bridge and edge tests: one real nats-server with JetStream per
 * test file (free loopback port, temp store dir), a fresh stream name per test, writers and
 * edges as real Sluice servers (Harness) wired to it, and a reader of the stream.
 */

let nats: NatsServer | undefined;

/** Starts the file's nats-server before its tests and removes it after. */
export function useNats(): () => NatsServer {
  beforeAll(async () => {
    nats = await NatsServer.start();
  });
  afterAll(async () => {
    await nats?.destroy();
  });
  return () => nats!;
}

let streamSeq = 0;

/** A stream name and subject prefix no other test uses. */
export function freshFeed(): { natsStream: string; natsPrefix: string } {
  const n = `${process.pid}_${++streamSeq}`;
  return { natsStream: `T${n}`, natsPrefix: `t${n}` };
}

/** A writer (persistent data dir unless told otherwise) publishing to `url`. */
export function startWriter(
  url: string,
  feed: { natsStream: string; natsPrefix: string },
  overrides: Partial<ServerConfig> = {},
  persistent = true,
): Promise<Harness> {
  return Harness.start({ nats: url, ...feed, ...overrides }, { persistent });
}

/** An edge replicating the writer's feed. */
export function startEdge(
  url: string,
  feed: { natsStream: string; natsPrefix: string },
  overrides: Partial<ServerConfig> = {},
): Promise<Harness> {
  return Harness.start({ nats: url, ...feed, edge: true, ...overrides });
}

/** A plain NATS client, closed after the test. */
export async function natsClient(url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url });
  onTestFinished(() => nc.close());
  return nc;
}

/** Reads every message of `subject` in the stream (from the start) until `done` says stop. */
export async function readSubject(
  nc: NatsConnection,
  stream: string,
  subject: string,
  done: (msgs: JsMsg[]) => boolean,
  ms = 10_000,
): Promise<JsMsg[]> {
  const consumer = await nc.jetstream().consumers.get(stream, { filterSubjects: subject });
  const msgs: JsMsg[] = [];
  const iter: ConsumerMessages = await consumer.consume();
  const timer = setTimeout(() => iter.stop(), ms);
  try {
    if (done(msgs)) return msgs;
    for await (const m of iter) {
      msgs.push(m);
      if (done(msgs)) break;
    }
  } finally {
    clearTimeout(timer);
    iter.stop();
  }
  return msgs;
}

/** The commit index a feed message carries. */
export const indexOf = (m: JsMsg): number => Number(m.headers?.get(Header.Index));
