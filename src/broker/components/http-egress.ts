import type { ComponentBroker } from "./component-broker.js";
import { type ComponentRef, type Envelope, errorResponse, Kind, normalize, Status } from "./envelope.js";
import type { Replica } from "./router.js";

/** What a request to the built-in `http` component asks for (its JSON payload). */
export interface HttpCall {
  readonly method?: string;
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Text body, or base64 in `bodyBase64`. */
  readonly body?: string;
  readonly bodyBase64?: string;
}

/** Upstream response headers not passed on: the body is decoded, and the rest are per connection. */
const DROPPED = new Set([
  "content-encoding",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
]);

/** Response header that carries the HTTP status (the payload is the body). */
export const STATUS_HEADER = ":status";

/**
 * The built-in `http` component: a replica on every broker that performs the outbound HTTP
 * request a request event describes (JSON payload {@link HttpCall}) and answers with the
 * response: body as payload, headers as headers, the status in `:status`. Only hosts on the
 * allowlist (`--broker-http-allow host[:port],…`; default none) are reachable; anything else
 * is refused with PERMISSION_DENIED naming the host. The request's deadline bounds the call.
 */
export class HttpEgress implements Replica {
  readonly ref: ComponentRef;
  readonly concurrency = 64;
  private readonly allow: Set<string>;

  constructor(
    private readonly broker: ComponentBroker,
    allow: readonly string[],
  ) {
    this.ref = { name: "http", id: `http@${broker.id}` };
    this.allow = new Set(allow.map((h) => h.trim().toLowerCase()).filter((h) => h !== ""));
  }

  deliver(req: Envelope): void {
    if (req.kind !== Kind.Request) return;
    void this.call(req).then((resp) => this.broker.answer(resp, this));
  }

  private allowed(url: URL): boolean {
    return this.allow.has(url.host.toLowerCase()) || this.allow.has(url.hostname.toLowerCase());
  }

  private async call(req: Envelope): Promise<Envelope> {
    const now = this.broker.now();
    let spec: HttpCall;
    let url: URL;
    try {
      spec = JSON.parse(req.payload.toString("utf8")) as HttpCall;
      url = new URL(spec.url);
      if (url.protocol !== "http:" && url.protocol !== "https:")
        throw new Error(`unsupported scheme ${url.protocol}`);
    } catch (err) {
      return errorResponse(
        req,
        Status.INVALID_ARGUMENT,
        `the http component takes {"method","url","headers","body"}: ${(err as Error).message}`,
        now,
      );
    }
    if (!this.allowed(url)) {
      return errorResponse(
        req,
        Status.PERMISSION_DENIED,
        `host ${url.host} is not on the egress allowlist (--broker-http-allow)`,
        now,
      );
    }
    try {
      const res = await fetch(url, {
        method: spec.method ?? "GET",
        headers: spec.headers ?? {},
        body: spec.bodyBase64 !== undefined ? Buffer.from(spec.bodyBase64, "base64") : spec.body,
        signal: AbortSignal.timeout(Math.max(1, req.deadline_ms - now)),
        redirect: "manual",
      });
      const body = Buffer.from(await res.arrayBuffer());
      const headers: Record<string, string> = { [STATUS_HEADER]: String(res.status) };
      res.headers.forEach((v, k) => {
        // fetch has decoded the body already: its encoding and length headers no longer hold.
        if (!DROPPED.has(k)) headers[k] = v;
      });
      return normalize(
        {
          kind: Kind.Response,
          parent_id: req.id,
          source: this.ref,
          target: req.source,
          type: req.type,
          headers,
          content_type: res.headers.get("content-type") ?? "",
          payload: body,
          deadline_ms: req.deadline_ms,
        },
        this.broker.now(),
      );
    } catch (err) {
      const timedOut = (err as Error).name === "TimeoutError";
      return errorResponse(
        req,
        timedOut ? Status.DEADLINE_EXCEEDED : Status.UNAVAILABLE,
        `${spec.method ?? "GET"} ${url.href}: ${(err as Error).message}`,
        this.broker.now(),
      );
    }
  }
}
