import type { Event } from "../state/events/index.js";
import { encodedOnce } from "../state/events/index.js";
import type { CheckRow, KVRow, NodeRow, ServiceRow } from "../state/index.js";
import type { Frame } from "../stream/index.js";
import { EventType } from "./definitions.js";

/*
 * Stream frames on the wire. Each change event is encoded once (cached on the event) and
 * every frame is assembled from those bytes: a one-event frame is the event's own bytes; a
 * batch wraps them in EventBatch with a few header bytes. Nothing is encoded per subscriber.
 */

export const nodeToWire = (n: NodeRow) => ({
  id: n.ID,
  node: n.Node,
  address: n.Address,
  datacenter: n.Datacenter,
  tagged_addresses: { ...n.TaggedAddresses },
  meta: { ...n.Meta },
  create_index: n.CreateIndex,
  modify_index: n.ModifyIndex,
});

export const serviceToWire = (s: ServiceRow) => ({
  node: s.Node,
  id: s.ID,
  service: s.Service,
  tags: [...s.Tags],
  address: s.Address,
  port: s.Port,
  meta: { ...s.Meta },
  kind: s.Kind,
  create_index: s.CreateIndex,
  modify_index: s.ModifyIndex,
});

export const checkToWire = (c: CheckRow) => ({
  node: c.Node,
  check_id: c.CheckID,
  name: c.Name,
  status: c.Status,
  notes: c.Notes,
  output: c.Output,
  service_id: c.ServiceID,
  service_name: c.ServiceName,
  create_index: c.CreateIndex,
  modify_index: c.ModifyIndex,
});

export const kvToWire = (e: KVRow) => ({
  key: e.Key,
  value: e.Value,
  flags: e.Flags,
  lock_index: e.LockIndex,
  create_index: e.CreateIndex,
  modify_index: e.ModifyIndex,
});

/** The wire message (sluice.v1.Event) of one change event. */
export function eventMessage(e: Event): Record<string, unknown> {
  switch (e.topic) {
    case "ServiceHealth":
      return {
        index: e.index,
        service_health: {
          op: e.payload.op === "register" ? 1 : 2,
          node: nodeToWire(e.payload.node),
          service: serviceToWire(e.payload.service),
          checks: e.payload.checks.map(checkToWire),
        },
      };
    case "ServiceList":
      return {
        index: e.index,
        service_list: { op: e.payload.op === "register" ? 1 : 2, name: e.payload.name },
      };
    case "KV":
      return { index: e.index, kv: { op: e.payload.op === "set" ? 1 : 2, entry: kvToWire(e.payload.entry) } };
    default: {
      const never: never = e;
      return never;
    }
  }
}

function encodeEvent(e: Event): Uint8Array {
  return EventType.encode(eventMessage(e)).finish();
}

/** The event's wire bytes, encoded on first use and shared afterwards. */
export function eventBytes(e: Event): Uint8Array {
  return encodedOnce(e, encodeEvent);
}

/** Bytes of `n` as a protobuf varint. */
export function varintLength(n: number): number {
  let len = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

/** Writes `n` as a protobuf varint at `off`; returns the offset after it. */
export function writeVarint(buf: Buffer, off: number, n: number): number {
  while (n >= 128) {
    buf[off++] = (n % 128) | 128;
    n = Math.floor(n / 128);
  }
  buf[off++] = n;
  return off;
}

const TAG_INDEX = 0x08; // field 1, varint
const TAG_EOS = 0x10; // field 2, varint
const TAG_NST = 0x18; // field 3, varint
const TAG_PROGRESS = 0x20; // field 4, varint
const TAG_BATCH = 0x2a; // field 5, length-delimited
const TAG_BATCH_EVENTS = 0x0a; // EventBatch field 1, length-delimited

function marker(index: number, tag: number): Buffer {
  const buf = Buffer.allocUnsafe(1 + varintLength(index) + 2);
  let off = 0;
  buf[off++] = TAG_INDEX;
  off = writeVarint(buf, off, index);
  buf[off++] = tag;
  buf[off++] = 1;
  return buf.subarray(0, off);
}

function batch(index: number, events: readonly Event[]): Buffer {
  const parts = events.map(eventBytes);
  let inner = 0;
  for (const p of parts) inner += 1 + varintLength(p.length) + p.length;
  const buf = Buffer.allocUnsafe(1 + varintLength(index) + 1 + varintLength(inner) + inner);
  let off = 0;
  buf[off++] = TAG_INDEX;
  off = writeVarint(buf, off, index);
  buf[off++] = TAG_BATCH;
  off = writeVarint(buf, off, inner);
  for (const p of parts) {
    buf[off++] = TAG_BATCH_EVENTS;
    off = writeVarint(buf, off, p.length);
    buf.set(p, off);
    off += p.length;
  }
  return buf;
}

/** A frame's wire bytes (one sluice.v1.Event message). */
export function encodeFrame(f: Frame): Uint8Array {
  switch (f.kind) {
    case "events":
      // A single event of the frame's own index is the whole frame: share its bytes.
      if (f.events.length === 1 && f.events[0]!.index === f.index) return eventBytes(f.events[0]!);
      return batch(f.index, f.events);
    case "snapshot":
      return batch(f.index, f.events);
    case "endOfSnapshot":
      return marker(f.index, TAG_EOS);
    case "newSnapshotToFollow": {
      const buf = Buffer.allocUnsafe(2);
      buf[0] = TAG_NST;
      buf[1] = 1;
      return buf;
    }
    case "progress":
      return marker(f.index, TAG_PROGRESS);
    default: {
      const never: never = f;
      return never;
    }
  }
}
