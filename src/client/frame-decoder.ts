import type { Event__Output } from "../generated/sluice/v1/Event.js";
import { ProtocolError } from "./errors.js";
import { asIndex, type Frame, FrameKind, type StreamEvent, Topic } from "./types.js";

/*
 * The wire does not say whether a batch belongs to a snapshot or is live: that follows from
 * the stream's position (a fresh subscription and NewSnapshotToFollow start a snapshot;
 * EndOfSnapshot ends it), so the decoder keeps that one bit of state.
 */

function decodeEvent(m: Event__Output): StreamEvent {
  const index = asIndex(m.index);
  switch (m.payload) {
    case "service_health": {
      const u = m.service_health;
      if (!u?.node || !u.service) throw new ProtocolError("service_health event without node or service");
      return {
        topic: Topic.ServiceHealth,
        index,
        payload: {
          op: u.op === "UPDATE_OP_DEREGISTER" ? "deregister" : "register",
          node: u.node,
          service: u.service,
          checks: u.checks,
        },
      };
    }
    case "service_list": {
      const u = m.service_list;
      if (!u) throw new ProtocolError("empty service_list event");
      return {
        topic: Topic.ServiceList,
        index,
        payload: { op: u.op === "UPDATE_OP_DEREGISTER" ? "deregister" : "register", name: u.name },
      };
    }
    case "kv": {
      const u = m.kv;
      if (!u?.entry) throw new ProtocolError("kv event without entry");
      return {
        topic: Topic.KV,
        index,
        payload: { op: u.op === "KV_OP_DELETE" ? "delete" : "set", entry: u.entry },
      };
    }
    default:
      throw new ProtocolError(`expected a change event, got ${m.payload ?? "an empty message"}`);
  }
}

/** Turns the messages of one Subscribe stream into frames. */
export class FrameDecoder {
  private inSnapshot: boolean;

  /** `resumed`: the subscription asked for an index above 0, so no snapshot comes first. */
  constructor(resumed: boolean) {
    this.inSnapshot = !resumed;
  }

  decode(m: Event__Output): Frame {
    const index = asIndex(m.index);
    switch (m.payload) {
      case "end_of_snapshot":
        if (!this.inSnapshot) throw new ProtocolError("EndOfSnapshot outside a snapshot");
        this.inSnapshot = false;
        return { kind: FrameKind.EndOfSnapshot, index };
      case "new_snapshot_to_follow":
        if (this.inSnapshot) throw new ProtocolError("NewSnapshotToFollow inside a snapshot");
        this.inSnapshot = true;
        return { kind: FrameKind.NewSnapshotToFollow };
      case "progress":
        if (this.inSnapshot) throw new ProtocolError("Progress inside a snapshot");
        return { kind: FrameKind.Progress, index };
      case "batch": {
        const events = (m.batch?.events ?? []).map(decodeEvent);
        return this.inSnapshot
          ? { kind: FrameKind.Snapshot, index, events }
          : { kind: FrameKind.Events, index, events };
      }
      case "service_health":
      case "service_list":
      case "kv": {
        const events = [decodeEvent(m)];
        return this.inSnapshot
          ? { kind: FrameKind.Snapshot, index, events }
          : { kind: FrameKind.Events, index, events };
      }
      default:
        throw new ProtocolError(`message without payload at index ${m.index}`);
    }
  }
}
