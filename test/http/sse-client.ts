import { EventSource } from "eventsource";
import { afterEach } from "vitest";

/*
 * A test wrapper around the real `eventsource` client from npm: it records every event of
 * the types Sluice sends (data parsed as JSON), the errors, and the headers of every request
 * the client made (its own reconnects included), and lets a test await events in order.
 * Every client a test opens is closed after it.
 */

/** The event types Sluice's streams send. */
const TYPES = ["update", "snapshot-end", "reset", "progress", "closed", "channel"] as const;

export interface SseMessage {
  readonly type: string;
  /** The event's own `id:` ("" when it had none, or an empty one). */
  readonly id: string;
  // biome-ignore lint/suspicious/noExplicitAny: event data is JSON, checked by each test
  readonly data: any;
}

export interface SseClientOptions {
  readonly token?: string;
  /** Headers for every request. */
  readonly headers?: Readonly<Record<string, string>>;
  /** `Last-Event-ID` for the first request only (reconnects send the client's own). */
  readonly lastEventId?: string;
  /** POST with this JSON body (a notification channel) instead of GET. */
  readonly post?: unknown;
  /** Keep the client (and its automatic reconnects) going after a `closed` event. */
  readonly keepOpen?: boolean;
}

const clients: SseClient[] = [];

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

export class SseClient {
  readonly messages: SseMessage[] = [];
  readonly errors: { code: number | undefined; message: string | undefined }[] = [];
  /** Headers of each request made, in order. */
  readonly requests: Headers[] = [];
  opens = 0;
  private cursor = 0;
  private readonly wakers = new Set<() => void>();
  readonly es: EventSource;

  constructor(url: string, opts: SseClientOptions = {}) {
    clients.push(this);
    this.es = new EventSource(url, {
      fetch: (input, init) => {
        const headers = new Headers(init.headers as Record<string, string>);
        for (const [k, v] of Object.entries(opts.headers ?? {})) headers.set(k, v);
        if (opts.token) headers.set("X-Consul-Token", opts.token);
        if (opts.lastEventId !== undefined && this.requests.length === 0)
          headers.set("Last-Event-ID", opts.lastEventId);
        if (opts.post !== undefined) headers.set("Content-Type", "application/json");
        this.requests.push(headers);
        return fetch(input, {
          ...init,
          headers,
          ...(opts.post !== undefined ? { method: "POST", body: JSON.stringify(opts.post) } : {}),
        });
      },
    });
    for (const type of TYPES) {
      this.es.addEventListener(type, (ev: MessageEvent) => {
        this.messages.push({ type, id: ev.lastEventId, data: JSON.parse(ev.data as string) });
        if (type === "closed" && !opts.keepOpen) this.es.close();
        this.wake();
      });
    }
    this.es.addEventListener("open", () => {
      this.opens++;
      this.wake();
    });
    this.es.addEventListener("error", (ev) => {
      this.errors.push({ code: ev.code, message: ev.message });
      this.wake();
    });
  }

  private wake(): void {
    for (const w of [...this.wakers]) w();
  }

  /** Resolves when `f` holds (checked on every event, open and error). */
  waitFor<T>(f: () => T | undefined | false, ms = 5_000, what = "condition"): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = (): boolean => {
        const v = f();
        if (v === undefined || v === false) return false;
        clearTimeout(timer);
        this.wakers.delete(waker);
        resolve(v);
        return true;
      };
      const waker = (): void => {
        check();
      };
      const timer = setTimeout(() => {
        this.wakers.delete(waker);
        reject(
          new Error(`${what} not met in ${ms} ms; got ${JSON.stringify(this.messages.slice(this.cursor))}`),
        );
      }, ms);
      this.wakers.add(waker);
      check();
    });
  }

  /** The next event not yet taken. */
  next(ms = 5_000): Promise<SseMessage> {
    return this.waitFor(
      () => {
        const m = this.messages[this.cursor];
        if (m) this.cursor++;
        return m;
      },
      ms,
      "next event",
    );
  }

  /** The next `n` events not yet taken. */
  async take(n: number, ms = 5_000): Promise<SseMessage[]> {
    const out: SseMessage[] = [];
    for (let i = 0; i < n; i++) out.push(await this.next(ms));
    return out;
  }

  /** Events not yet taken, without waiting. */
  get untaken(): readonly SseMessage[] {
    return this.messages.slice(this.cursor);
  }

  /** Resolves with the first error event carrying an HTTP status. */
  failure(ms = 5_000): Promise<{ code: number | undefined; message: string | undefined }> {
    return this.waitFor(() => this.errors.find((e) => e.code !== undefined), ms, "an HTTP failure");
  }

  close(): void {
    this.es.close();
  }
}

/** A KV value as base64 (how event rows carry it). */
export const b64 = (s: string): string => Buffer.from(s).toString("base64");
