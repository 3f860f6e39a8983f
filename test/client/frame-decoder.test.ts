import { describe, expect, it } from "vitest";
import { FrameDecoder } from "../../src/client/frame-decoder.js";
import {
  CasFailedError,
  Code,
  errorFromStatus,
  ForceClosedError,
  OutOfRangeError,
  PermissionDeniedError,
  ProtocolError,
  Recovery,
  recoveryFor,
  SluiceError,
  UnavailableError,
} from "../../src/client/index.js";
import type { Event__Output } from "../../src/generated/sluice/v1/Event.js";
import { EventType } from "../../src/proto/index.js";

/*
 * Wire → frames and status → error class, on bytes encoded with the same .proto files the
 * server uses (proto-loader's decoder, as the grpc-js client applies it).
 */

const decodeWire = (msg: Record<string, unknown>): Event__Output =>
  EventType.toObject(EventType.decode(EventType.encode(msg).finish()), {
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  }) as Event__Output;

const kv = (index: number, key: string, op = 1) => ({
  index,
  kv: { op, entry: { key, value: Buffer.from("v"), modify_index: index } },
});

describe("FrameDecoder", () => {
  it("reads batches as snapshot until EndOfSnapshot, then as events", () => {
    const d = new FrameDecoder(false);
    const snap = d.decode(decodeWire({ index: 5, batch: { events: [kv(5, "a"), kv(5, "b")] } }));
    expect(snap).toMatchObject({
      kind: "snapshot",
      index: 5,
      events: [{ topic: "KV", index: 5 }, { index: 5 }],
    });
    expect(d.decode(decodeWire({ index: 5, end_of_snapshot: true }))).toEqual({
      kind: "endOfSnapshot",
      index: 5,
    });
    const ev = d.decode(decodeWire(kv(6, "a", 2)));
    expect(ev).toMatchObject({
      kind: "events",
      index: 6,
      events: [{ payload: { op: "delete", entry: { key: "a" } } }],
    });
    expect(d.decode(decodeWire({ index: 9, progress: true }))).toEqual({ kind: "progress", index: 9 });
  });

  it("a resumed stream starts live; NewSnapshotToFollow switches to snapshot", () => {
    const d = new FrameDecoder(true);
    expect(d.decode(decodeWire(kv(7, "x"))).kind).toBe("events");
    expect(d.decode(decodeWire({ new_snapshot_to_follow: true }))).toEqual({ kind: "newSnapshotToFollow" });
    expect(d.decode(decodeWire({ index: 9, batch: { events: [kv(9, "x")] } })).kind).toBe("snapshot");
  });

  it("decodes service health and service list updates", () => {
    const d = new FrameDecoder(true);
    const f = d.decode(
      decodeWire({
        index: 3,
        batch: {
          events: [
            {
              index: 2,
              service_health: {
                op: 2,
                node: { node: "n1" },
                service: { id: "web", service: "web", node: "n1" },
                checks: [],
              },
            },
            { index: 3, service_list: { op: 1, name: "db" } },
          ],
        },
      }),
    );
    expect(f).toMatchObject({
      kind: "events",
      index: 3,
      events: [
        {
          topic: "ServiceHealth",
          index: 2,
          payload: { op: "deregister", node: { node: "n1" }, service: { id: "web" } },
        },
        { topic: "ServiceList", index: 3, payload: { op: "register", name: "db" } },
      ],
    });
  });

  it("rejects frames out of place", () => {
    expect(() => new FrameDecoder(true).decode(decodeWire({ index: 1, end_of_snapshot: true }))).toThrow(
      ProtocolError,
    );
    expect(() => new FrameDecoder(false).decode(decodeWire({ index: 1, progress: true }))).toThrow(
      ProtocolError,
    );
    expect(() => new FrameDecoder(false).decode(decodeWire({ new_snapshot_to_follow: true }))).toThrow(
      ProtocolError,
    );
    expect(() => new FrameDecoder(true).decode(decodeWire({ index: 4 }))).toThrow(ProtocolError);
  });
});

describe("status → error class → recovery", () => {
  const status = (code: number, kind?: string) => ({
    code,
    details: "msg",
    metadata: { get: (k: string) => (k === "x-sluice-error" && kind ? [kind] : []) },
  });

  it("maps codes to classes and keeps the server's error kind and message", () => {
    const e = errorFromStatus(status(Code.Aborted, "SubscriptionForceClosedError"));
    expect(e).toBeInstanceOf(ForceClosedError);
    expect(e).toMatchObject({ code: Code.Aborted, kind: "SubscriptionForceClosedError", details: "msg" });
    expect(errorFromStatus(status(Code.FailedPrecondition, "CasFailedError"))).toBeInstanceOf(CasFailedError);
    expect(errorFromStatus(status(Code.FailedPrecondition, "BootstrapDoneError"))).not.toBeInstanceOf(
      CasFailedError,
    );
    expect(errorFromStatus(status(Code.Unavailable))).toBeInstanceOf(UnavailableError);
    expect(errorFromStatus(status(Code.Unavailable)).kind).toBe("");
    expect(errorFromStatus(status(Code.OutOfRange))).toBeInstanceOf(OutOfRangeError);
    expect(errorFromStatus(status(Code.Internal)).constructor).toBe(SluiceError);
    expect(errorFromStatus(new Error("weird")).code).toBe(Code.Unknown);
  });

  it("resets on force-close and unknown indexes, stops on permission errors, resumes otherwise", () => {
    const r = (code: number) => recoveryFor(errorFromStatus(status(code)));
    expect(r(Code.Aborted)).toBe(Recovery.Reset);
    expect(r(Code.OutOfRange)).toBe(Recovery.Reset);
    expect(recoveryFor(new ProtocolError("x"))).toBe(Recovery.Reset);
    for (const c of [Code.PermissionDenied, Code.InvalidArgument, Code.Unauthenticated, Code.Unimplemented]) {
      expect(r(c)).toBe(Recovery.Stop);
    }
    for (const c of [
      Code.Unavailable,
      Code.Internal,
      Code.Unknown,
      Code.Cancelled,
      Code.DeadlineExceeded,
      Code.ResourceExhausted,
    ]) {
      expect(r(c)).toBe(Recovery.Resume);
    }
    expect(recoveryFor(new TypeError("bug"))).toBe(Recovery.Stop);
    expect(errorFromStatus(status(Code.PermissionDenied))).toBeInstanceOf(PermissionDeniedError);
  });
});
