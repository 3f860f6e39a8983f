import type { Frame } from "../stream/index.js";
import { encodeFrame, varintLength, writeVarint } from "./event-codec.js";

/*
 * sluice.v1.WatchResponse messages assembled from frames that are already encoded. The
 * frames a Watch stream has ready at one moment go into one message; a frame that several
 * of its subscriptions receive alike (the same shared events array, the same marker) goes
 * in once with all their ids. Nothing is encoded per subscription but its id.
 */

const TAG_FRAMES = 0x0a; // WatchResponse.frames, field 1, length-delimited
const TAG_IDS = 0x0a; // WatchFrame.ids, field 1, packed
const TAG_EVENT = 0x12; // WatchFrame.event, field 2, length-delimited
const TAG_CLOSED = 0x1a; // WatchFrame.closed, field 3, length-delimited
const TAG_CODE = 0x08; // WatchClosed.code, field 1, varint
const TAG_MESSAGE = 0x12; // WatchClosed.message, field 2
const TAG_ERROR = 0x1a; // WatchClosed.error, field 3

/** A subscription's end, as it travels in WatchFrame.closed. */
export interface WatchClosedStatus {
  readonly code: number;
  readonly message: string;
  readonly error: string;
}

interface Group {
  /** Place in the message: a subscription joins a group only after its own previous frame. */
  readonly pos: number;
  /** The frame, to match alike ones; undefined for a closed frame. */
  readonly frame: Frame | undefined;
  /** The encoded body: a sluice.v1.Event, or a WatchClosed. */
  readonly body: Uint8Array;
  readonly closed: boolean;
  readonly ids: number[];
}

/** What groups alike frames: the shared events array, or the marker's kind and index. */
function groupKey(f: Frame): unknown {
  switch (f.kind) {
    case "events":
    case "snapshot":
      return f.events;
    case "progress":
      return f.index;
    case "endOfSnapshot":
      return -f.index;
    case "newSnapshotToFollow":
      return "nst";
  }
}

function sameFrame(a: Frame, b: Frame): boolean {
  return a.kind === b.kind && ("index" in a ? a.index : 0) === ("index" in b ? b.index : 0);
}

/**
 * Collects the frames of one flush of a Watch stream and encodes them as WatchResponse
 * messages of at most `maxBytes` each (a single frame larger than that goes alone). One
 * builder per stream, reused from flush to flush.
 */
export class WatchResponseBuilder {
  private groups: Group[] = [];
  private readonly byKey = new Map<unknown, Group>();
  private bodyBytes = 0;

  constructor(private readonly maxBytes = 1024 * 1024) {}

  get empty(): boolean {
    return this.groups.length === 0;
  }

  /** Bytes of the frame bodies collected so far (what a flush may want to cap). */
  get bytes(): number {
    return this.bodyBytes;
  }

  /**
   * Adds a frame for subscription `id`, whose previous frame in this flush went in at
   * position `after` (-1 for none); returns this frame's position. A subscription's frames
   * keep their order: it shares an alike frame only when that one comes after its previous.
   */
  add(id: number, frame: Frame, after: number): number {
    const key = groupKey(frame);
    const g = this.byKey.get(key);
    if (g?.frame !== undefined && g.pos > after && sameFrame(g.frame, frame)) {
      g.ids.push(id);
      return g.pos;
    }
    const body = encodeFrame(frame);
    this.bodyBytes += body.length;
    const group: Group = { pos: this.groups.length, frame, body, closed: false, ids: [id] };
    this.groups.push(group);
    // The latest alike frame is the one more subscriptions can still join.
    this.byKey.set(key, group);
    return group.pos;
  }

  /** Adds the end of subscription `id` (after its frames). */
  addClosed(id: number, closed: WatchClosedStatus): void {
    const body = encodeClosed(closed);
    this.bodyBytes += body.length;
    this.groups.push({ pos: this.groups.length, frame: undefined, body, closed: true, ids: [id] });
  }

  /** The collected frames as encoded WatchResponse messages; the builder is empty after. */
  take(): Buffer[] {
    const groups = this.groups;
    this.groups = [];
    this.byKey.clear();
    this.bodyBytes = 0;
    const out: Buffer[] = [];
    const sizes: number[] = new Array(groups.length);
    let start = 0;
    let total = 0;
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i]!;
      const body = g.body;
      let idsLen = 0;
      for (const id of g.ids) idsLen += varintLength(id);
      const frameLen = 1 + varintLength(idsLen) + idsLen + 1 + varintLength(body.length) + body.length;
      const size = 1 + varintLength(frameLen) + frameLen;
      sizes[i] = frameLen;
      if (total > 0 && total + size > this.maxBytes) {
        out.push(encodeMessage(groups, sizes, start, i, total));
        start = i;
        total = 0;
      }
      total += size;
    }
    if (total > 0) out.push(encodeMessage(groups, sizes, start, groups.length, total));
    return out;
  }
}

function encodeMessage(
  groups: readonly Group[],
  frameLens: readonly number[],
  from: number,
  to: number,
  total: number,
): Buffer {
  const buf = Buffer.allocUnsafe(total);
  let off = 0;
  for (let i = from; i < to; i++) {
    const g = groups[i]!;
    const body = g.body;
    buf[off++] = TAG_FRAMES;
    off = writeVarint(buf, off, frameLens[i]!);
    let idsLen = 0;
    for (const id of g.ids) idsLen += varintLength(id);
    buf[off++] = TAG_IDS;
    off = writeVarint(buf, off, idsLen);
    for (const id of g.ids) off = writeVarint(buf, off, id);
    buf[off++] = g.closed ? TAG_CLOSED : TAG_EVENT;
    off = writeVarint(buf, off, body.length);
    buf.set(body, off);
    off += body.length;
  }
  return buf;
}

function encodeClosed(c: WatchClosedStatus): Buffer {
  const message = Buffer.from(c.message, "utf8");
  const error = Buffer.from(c.error, "utf8");
  const buf = Buffer.allocUnsafe(
    1 +
      10 +
      1 +
      varintLength(message.length) +
      message.length +
      1 +
      varintLength(error.length) +
      error.length,
  );
  let off = 0;
  if (c.code !== 0) {
    buf[off++] = TAG_CODE;
    off = writeVarint(buf, off, c.code);
  }
  buf[off++] = TAG_MESSAGE;
  off = writeVarint(buf, off, message.length);
  off += message.copy(buf, off);
  buf[off++] = TAG_ERROR;
  off = writeVarint(buf, off, error.length);
  off += error.copy(buf, off);
  return buf.subarray(0, off);
}
