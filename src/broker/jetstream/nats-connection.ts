import { connect, type NatsConnection } from "nats";

/*
 * How every part of Sluice connects to NATS (the bridge, edges, the broker's link), and how
 * it recognizes JetStream's "not there" answers.
 */

/**
 * A connection to `servers` (comma-separated URLs) that waits for a first server, reconnects
 * forever, and builds no async stack trace per request (those were a quarter of the
 * bridge's and a fifth of the broker's CPU).
 */
export function connectNats(servers: string, name: string): Promise<NatsConnection> {
  return connect({
    servers: servers.split(",").map((s) => s.trim()),
    name,
    noAsyncTraces: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: true,
  });
}

/** JetStream answered that the stream does not exist. */
export const isStreamNotFound = (err: unknown): boolean => /stream not found/i.test(String(err));

/** JetStream answered that no message matches (a direct get of a subject with none). */
export const isNoMessage = (err: unknown): boolean => /no message found/i.test(String(err));
