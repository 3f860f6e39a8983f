import { randomUUID } from "node:crypto";
import { status as Status } from "@grpc/grpc-js";
import type { ComponentRef__Output } from "../../generated/sluice/v1/ComponentRef.js";
import type { Envelope__Output } from "../../generated/sluice/v1/Envelope.js";
import { EnvelopeType } from "../../proto/index.js";

/** A broker event as the broker handles it (the decoded `sluice.v1.Envelope`). */
export type Envelope = Envelope__Output;
export type ComponentRef = ComponentRef__Output;

export const Kind = {
  Event: "ENVELOPE_KIND_EVENT",
  Request: "ENVELOPE_KIND_REQUEST",
  Response: "ENVELOPE_KIND_RESPONSE",
} as const;

/** Deadline given to an event that comes without one. */
export const DEFAULT_DEADLINE_MS = 30_000;

/** `name/id` of a replica (for messages and map keys). */
export const refKey = (r: ComponentRef): string => `${r.name}\u0000${r.id}`;
export const refText = (r: ComponentRef | null | undefined): string =>
  r ? (r.id ? `${r.name}/${r.id}` : r.name) : "(none)";

/** An envelope with every field present (defaults filled in, an id assigned when empty). */
export function normalize(e: Partial<Envelope>, nowMs: number): Envelope {
  return {
    id: e.id || randomUUID(),
    source: { name: e.source?.name ?? "", id: e.source?.id ?? "" },
    target: { name: e.target?.name ?? "", id: e.target?.id ?? "" },
    type: e.type ?? "",
    deadline_ms: Number(e.deadline_ms) > 0 ? Number(e.deadline_ms) : nowMs + DEFAULT_DEADLINE_MS,
    parent_id: e.parent_id ?? "",
    headers: { ...(e.headers ?? {}) },
    content_type: e.content_type ?? "",
    payload: e.payload ? Buffer.from(e.payload) : Buffer.alloc(0),
    kind: e.kind && e.kind !== "ENVELOPE_KIND_UNSPECIFIED" ? e.kind : Kind.Event,
    status_code: e.status_code ?? 0,
    status_message: e.status_message ?? "",
  };
}

/** Header naming why the broker itself answered a request (HTTP ingress maps it to a status). */
export const BROKER_ERROR_HEADER = "sluice-broker-error";
export const BrokerErrorReason = {
  NoRoute: "no-route",
  Deadline: "deadline",
  Disconnected: "disconnected",
  Invalid: "invalid",
  /** Any other error the broker (or a built-in component) answers with. */
  Error: "error",
} as const;

export type BrokerErrorReason = (typeof BrokerErrorReason)[keyof typeof BrokerErrorReason];

/** The reason a status implies when the caller names none (never read from the message). */
function reasonOf(code: Status): BrokerErrorReason {
  if (code === Status.DEADLINE_EXCEEDED) return BrokerErrorReason.Deadline;
  if (code === Status.INVALID_ARGUMENT) return BrokerErrorReason.Invalid;
  return BrokerErrorReason.Error;
}

/**
 * The broker's own response to a request: an error status, from `source` (the broker), with
 * `reason` in {@link BROKER_ERROR_HEADER} (by default the one `code` implies).
 */
export function errorResponse(
  req: Envelope,
  code: Status,
  message: string,
  nowMs: number,
  reason: BrokerErrorReason = reasonOf(code),
): Envelope {
  return normalize(
    {
      kind: Kind.Response,
      headers: { [BROKER_ERROR_HEADER]: reason },
      parent_id: req.id,
      source: { name: "sluice-broker", id: "" },
      target: req.source,
      type: req.type,
      status_code: code,
      status_message: message,
      deadline_ms: Math.max(req.deadline_ms, nowMs + 1000),
    },
    nowMs,
  );
}

export const expired = (e: Envelope, nowMs: number): boolean => e.deadline_ms > 0 && nowMs >= e.deadline_ms;

/** Protobuf bytes of an envelope (between brokers, and in the archive). */
export function encodeEnvelope(e: Envelope): Uint8Array {
  return EnvelopeType.encode(EnvelopeType.fromObject(e)).finish();
}

export function decodeEnvelope(bytes: Uint8Array): Envelope {
  const obj = EnvelopeType.toObject(EnvelopeType.decode(bytes), {
    longs: Number,
    enums: String,
    defaults: true,
  }) as Envelope;
  return normalize(obj, Date.now());
}

export { Status };
