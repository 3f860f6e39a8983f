import type { FastifyInstance, FastifyRequest } from "fastify";
import { type Frame, ShuttingDownError, type Subscription } from "../stream/index.js";
import type { RouteContext } from "./context.js";
import { NotAcceptableError } from "./errors.js";
import type { RouteModule } from "./http-server.js";
import type { QueryParams } from "./query-params.js";
import { closedEvent, closeReason, type FrameLabels, frameEvent, pumpFrames } from "./sse-events.js";
import { startEventStream } from "./sse-writer.js";
import { openSubscription, resumeIndex, specFromQuery } from "./stream-request.js";

/** Settings of the event-stream endpoints. */
export interface EventStreamOptions {
  /** Idle time after which a keep-alive comment is sent (default 15 s). */
  readonly keepAliveMs: number;
  /** How long a resume index ahead of this server is waited for (default 3 s, as gRPC Subscribe). */
  readonly aheadWaitMs: number;
}

export const DEFAULT_KEEPALIVE_MS = 15_000;
export const DEFAULT_AHEAD_WAIT_MS = 3_000;

/**
 * Refuses a request whose Accept header names types but not an event stream. No header,
 * `*` wildcards and `text/event-stream` are taken.
 */
export function requireEventStream(req: FastifyRequest): void {
  const accept = req.headers.accept;
  if (accept === undefined || accept.trim() === "") return;
  const ok = accept
    .split(",")
    .map((p) => p.split(";")[0]!.trim().toLowerCase())
    .some((t) => t === "text/event-stream" || t === "*/*" || t === "text/*");
  if (!ok) throw new NotAcceptableError(accept, "text/event-stream");
}

const LABELS: FrameLabels = { resumable: true };

/**
 * `GET /v1/stream/:topic?key=|prefix=|wildcard` as Server-Sent Events: a snapshot, then
 * live changes, resumable with `Last-Event-ID` (or `?index=`) exactly as a gRPC index. Every
 * refusal (bad topic or subject, bad index, unknown token, missing permission) is a JSON
 * error before the stream's headers go out. The stream ends with a `closed` event when the
 * server ends it: force close (resume: false) or shutdown (resume: true).
 */
export function sseRoutes(opts: EventStreamOptions): RouteModule {
  return (app: FastifyInstance, ctx: RouteContext): void => {
    app.get("/v1/stream/:topic", { exposeHeadRoute: false }, async (req, reply) => {
      requireEventStream(req);
      const { topic } = req.params as { topic: string };
      const spec = specFromQuery(topic, req.query as QueryParams);
      const index = resumeIndex(req);
      const { signal, finish } = ctx.track(reply);
      let sub: Subscription | undefined;
      let first: Frame | undefined;
      try {
        sub = await openSubscription(ctx, req, spec, index, opts.aheadWaitMs, signal);
        // The first frame is taken before the headers: a snapshot that cannot be built is
        // still an error response, not a stream that dies at once.
        first = sub.poll(ctx.deps.publisher.now());
        if (signal.aborted) throw new ShuttingDownError();
      } catch (err) {
        sub?.unsubscribe();
        finish();
        throw err;
      }
      const s = sub;
      const writer = startEventStream(reply, opts.keepAliveMs);
      ctx.eventStreams++;
      const onAbort = (): void => {
        // The client went away (nothing to tell it), or the server is closing (tell it).
        if (ctx.shuttingDown) {
          s.closeWithError(new ShuttingDownError());
          // A reader that stopped reading holds the pump in a drain wait: cut it now.
          if (writer.blocked) writer.end();
        } else s.unsubscribe();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        let closing: unknown;
        try {
          if (first === undefined || (await writer.send(frameEvent(first, LABELS))))
            closing = await pumpFrames(s, writer, LABELS);
        } catch (err) {
          closing = err;
        }
        if (closing !== undefined && !ctx.shuttingDown && !(closing instanceof ShuttingDownError))
          ctx.deps.logger.debug?.({ err: closing }, "event stream closed by the server");
        writer.end(
          closing === undefined
            ? undefined
            : closedEvent({ reason: closeReason(closing), error: closing }, LABELS),
        );
      } finally {
        s.unsubscribe();
        signal.removeEventListener("abort", onAbort);
        ctx.eventStreams--;
        finish();
      }
    });
  };
}
