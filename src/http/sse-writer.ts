import type { FastifyReply } from "fastify";

/** One Server-Sent Event. */
export interface SseEvent {
  /** The event type (`event:`): `update`, `snapshot-end`, `reset`, `progress`, `closed`, `channel`. */
  readonly event: string;
  /** One line of data (JSON: it never holds a raw newline). */
  readonly data: string;
  /**
   * The `id:` field. Absent: the client's last event ID stays as it was. `""`: the client
   * forgets its last event ID, so that its reconnect starts afresh instead of resuming.
   */
  readonly id?: string;
}

/** The wire form of an event. */
export function formatSse(e: SseEvent): string {
  const id = e.id === undefined ? "" : `id: ${e.id}\n`;
  return `event: ${e.event}\n${id}data: ${e.data}\n\n`;
}

/** The keep-alive: a comment line, which clients ignore but proxies see as traffic. */
export const KEEPALIVE = ": keepalive\n\n";

/** Response headers of an event stream. */
export const SSE_HEADERS: Readonly<Record<string, string>> = {
  "Content-Type": "text/event-stream; charset=utf-8",
  "Cache-Control": "no-cache, no-transform",
  Connection: "keep-alive",
  // nginx and similar proxies would otherwise buffer the stream.
  "X-Accel-Buffering": "no",
};

/** What the writer writes to: an `http.ServerResponse`, or any Node writable stream. */
export interface SseSink {
  write(chunk: string): boolean;
  end(): void;
  destroy(): void;
  readonly destroyed: boolean;
  readonly writableEnded: boolean;
  once(event: "drain" | "close" | "error", listener: () => void): unknown;
  off(event: "drain" | "close" | "error", listener: () => void): unknown;
}

/**
 * Writes events to one response, honouring the socket's back-pressure: when a write does not
 * fit the socket's buffer, `send` resolves only on 'drain', so that the caller takes its next
 * frame from the subscription no sooner. A reader that does not read thus makes its
 * subscription lag (and be reset by the publisher), never grows a buffer here. Several
 * senders may share one writer (a notification channel's subscriptions): each waits for the
 * drain before it writes, so at most one event per sender is beyond the buffer's mark.
 *
 * Sends a keep-alive comment every `keepAliveMs` during which nothing else was written.
 */
export class SseWriter {
  private draining: Promise<void> | undefined;
  private closedFlag = false;
  private wroteSinceTick = false;
  private readonly timer: NodeJS.Timeout;
  /** Events written (for tests). */
  written = 0;

  constructor(
    private readonly sink: SseSink,
    keepAliveMs: number,
  ) {
    const onGone = (): void => this.markClosed();
    sink.once("close", onGone);
    sink.once("error", onGone);
    this.timer = setInterval(() => this.keepAlive(), Math.max(1, keepAliveMs));
    this.timer.unref();
  }

  /** Whether the stream ended (the client went away, or `end` was called). */
  get closed(): boolean {
    return this.closedFlag || this.sink.destroyed || this.sink.writableEnded;
  }

  /** Whether a write is waiting for the socket to drain. */
  get blocked(): boolean {
    return this.draining !== undefined;
  }

  /**
   * Writes one event; resolves once the socket took it into a buffer that is below its mark.
   * Resolves false when the stream has ended (the event was not written).
   */
  async send(e: SseEvent): Promise<boolean> {
    while (this.draining) await this.draining;
    if (this.closed) return false;
    this.written++;
    this.wroteSinceTick = true;
    if (!this.sink.write(formatSse(e))) await this.waitDrain();
    return !this.closed;
  }

  private waitDrain(): Promise<void> {
    this.draining ??= new Promise<void>((resolve) => {
      const done = (): void => {
        this.sink.off("drain", done);
        this.sink.off("close", done);
        this.sink.off("error", done);
        this.draining = undefined;
        resolve();
      };
      this.sink.once("drain", done);
      this.sink.once("close", done);
      this.sink.once("error", done);
    });
    return this.draining;
  }

  private keepAlive(): void {
    if (this.closed) return;
    if (this.wroteSinceTick || this.draining) {
      // Traffic went out, or the socket is full (a keep-alive would only add to the buffer).
      this.wroteSinceTick = false;
      return;
    }
    if (!this.sink.write(KEEPALIVE)) void this.waitDrain();
  }

  /**
   * Ends the stream, after `last` if given. A socket that is not draining (the reader stopped
   * reading) is cut rather than left holding the response open.
   */
  end(last?: SseEvent): void {
    if (this.closed) {
      this.markClosed();
      return;
    }
    this.markClosed();
    if (this.draining) {
      this.sink.destroy();
      return;
    }
    if (last) this.sink.write(formatSse(last));
    this.sink.end();
  }

  private markClosed(): void {
    this.closedFlag = true;
    clearInterval(this.timer);
  }
}

/**
 * Takes over a fastify reply and sends the event stream's headers at once (so the client
 * sees the stream open before the first event). Called only after the request was validated
 * and its subscriptions opened: every refusal before this point is an ordinary JSON error.
 */
export function startEventStream(reply: FastifyReply, keepAliveMs: number): SseWriter {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, SSE_HEADERS);
  res.flushHeaders();
  return new SseWriter(res, keepAliveMs);
}
