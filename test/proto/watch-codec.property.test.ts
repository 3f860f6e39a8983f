import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { WatchResponse__Output } from "../../src/generated/sluice/v1/WatchResponse.js";
import { encodeFrame, sluiceV1 } from "../../src/proto/index.js";
import { WatchResponseBuilder } from "../../src/proto/watch-codec.js";
import type { Event } from "../../src/state/events/index.js";
import type { Index } from "../../src/state/index.js";
import { type Frame, FrameKind } from "../../src/stream/index.js";

/*
 * The WatchResponse builder against a model: whatever frames several subscriptions add in one
 * flush (alike frames among them shared), decoding the messages and handing each frame to its
 * ids gives every subscription exactly its own frames, in its own order, and each alike frame
 * is on the wire no more often than the subscriptions' order forces.
 */

const decode = (buf: Buffer): WatchResponse__Output =>
  sluiceV1.StateChangeSubscription.service.Watch.responseDeserialize(buf) as WatchResponse__Output;

const kvEvent = (key: string, index: number): Event =>
  ({
    topic: "KV",
    index: index as Index,
    subject: key,
    payload: {
      op: "set",
      entry: {
        Key: key,
        Value: Buffer.from(`v${index}`),
        Flags: 0,
        LockIndex: 0,
        CreateIndex: 1 as Index,
        ModifyIndex: index as Index,
      },
    },
  }) as Event;

/** A pool of frames: some share event arrays (as subscribers of one subject do), some markers. */
function pool(): Frame[] {
  const a = [kvEvent("a", 5)];
  const b = [kvEvent("b", 6), kvEvent("b", 7)];
  const snap = [kvEvent("a", 3), kvEvent("b", 3)];
  return [
    { kind: FrameKind.Events, index: 5 as Index, events: a },
    { kind: FrameKind.Events, index: 7 as Index, events: b },
    { kind: FrameKind.Snapshot, index: 3 as Index, events: snap },
    { kind: FrameKind.EndOfSnapshot, index: 3 as Index },
    { kind: FrameKind.NewSnapshotToFollow },
    { kind: FrameKind.Progress, index: 9 as Index },
    { kind: FrameKind.Progress, index: 10 as Index },
  ];
}

const subscribeMessage = (bytes: Uint8Array): unknown =>
  sluiceV1.StateChangeSubscription.service.Subscribe.responseDeserialize(Buffer.from(bytes));

/** A frame as a comparable string: the message Subscribe would send for it, decoded. */
const wire = (f: Frame): string => JSON.stringify(subscribeMessage(encodeFrame(f)));

describe("WatchResponseBuilder", () => {
  it("gives each subscription its own frames in order, however alike frames are shared", () => {
    fc.assert(
      fc.property(
        // Per subscription (ids 1..n): a list of frame choices from the pool; optionally closed.
        fc.array(fc.record({ frames: fc.array(fc.nat(6), { maxLength: 8 }), closed: fc.boolean() }), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.integer({ min: 64, max: 4096 }),
        (subs, maxBytes) => {
          const frames = pool();
          const b = new WatchResponseBuilder(maxBytes);
          const expected = new Map<number, string[]>();
          subs.forEach((s, i) => {
            const id = i + 1;
            let pos = -1;
            const mine: string[] = [];
            for (const c of s.frames) {
              pos = b.add(id, frames[c]!, pos);
              mine.push(wire(frames[c]!));
            }
            if (s.closed) {
              b.addClosed(id, { code: 10, message: "token deleted", error: "SubscriptionForceClosedError" });
              mine.push("closed:10");
            }
            expected.set(id, mine);
          });
          const got = new Map<number, string[]>();
          for (const msg of b.take()) {
            const m = decode(msg);
            for (const f of m.frames) {
              for (const raw of f.ids) {
                const id = Number(raw);
                const list = got.get(id) ?? [];
                if (f.body === "closed") {
                  expect(f.ids).toHaveLength(1);
                  expect(f.closed?.error).toBe("SubscriptionForceClosedError");
                  list.push(`closed:${f.closed?.code}`);
                } else {
                  list.push(JSON.stringify(f.event));
                }
                got.set(id, list);
              }
            }
          }
          for (const [id, mine] of expected) expect(got.get(id) ?? []).toEqual(mine);
          expect(b.empty).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("sends a frame that every subscription gets alike once, with all the ids", () => {
    const [live] = pool();
    const b = new WatchResponseBuilder();
    for (let id = 1; id <= 100; id++) b.add(id, { ...live! }, -1);
    const [msg, ...rest] = b.take();
    expect(rest).toEqual([]);
    const m = decode(msg!);
    expect(m.frames).toHaveLength(1);
    expect(m.frames[0]!.ids.map(Number)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(m.frames[0]!.event?.kv?.entry?.key).toBe("a");
  });

  it("keeps each message under the size limit unless one frame alone is larger", () => {
    const b = new WatchResponseBuilder(100);
    for (let id = 1; id <= 50; id++) b.add(id, { kind: FrameKind.Progress, index: (1000 + id) as Index }, -1);
    const msgs = b.take();
    expect(msgs.length).toBeGreaterThan(1);
    for (const m of msgs) expect(m.length).toBeLessThanOrEqual(100);
  });
});
