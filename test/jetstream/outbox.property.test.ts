import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type FeedMessage, Outbox, type Send } from "../../src/broker/jetstream/outbox.js";

/*
 * Model-based test of the bridge's outbox against a model of a JetStream stream that checks
 * expected-last-sequence conditions. Commands: queue a commit's messages, send the next
 * message, let an in-flight publish succeed, fail before storing, or time out after storing
 * (the ambiguous case), and resync once nothing is in flight, as the bridge does. Whatever
 * the interleaving, the stream must hold every queued message exactly once and in order,
 * and the outbox's acknowledged index must never run ahead of the stream.
 */

interface Stored {
  readonly index: number;
  readonly pos: number;
}

class ModelStream {
  readonly msgs: Stored[] = [];
  /** Applies a publish; true when stored (the expected-last-sequence condition held). */
  publish(send: Send): boolean {
    if (send.expectLastSeq !== this.msgs.length) return false;
    this.msgs.push({ index: send.msg.index, pos: send.msg.pos });
    return true;
  }
  get tail() {
    const last = this.msgs.at(-1);
    return { seq: this.msgs.length, index: last?.index ?? 0, pos: last?.pos ?? 0 };
  }
}

type Cmd =
  | { kind: "commit"; events: number }
  | { kind: "send" }
  | { kind: "ack"; which: number }
  | { kind: "lose"; which: number }
  | { kind: "timeoutStored"; which: number }
  | { kind: "resync" };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ kind: fc.constant("commit" as const), events: fc.nat(3) }),
  fc.constant({ kind: "send" as const }),
  fc.constant({ kind: "send" as const }),
  fc.record({ kind: fc.constant("ack" as const), which: fc.nat(7) }),
  fc.record({ kind: fc.constant("lose" as const), which: fc.nat(7) }),
  fc.record({ kind: fc.constant("timeoutStored" as const), which: fc.nat(7) }),
  fc.constant({ kind: "resync" as const }),
);

function messages(index: number, events: number): FeedMessage[] {
  return Array.from({ length: events + 1 }, (_, pos) => ({
    index,
    pos,
    subject: pos === 0 ? "s.log" : "s.events.kv.k",
    data: new Uint8Array(),
    headers: [],
  }));
}

describe("bridge outbox", () => {
  it("puts every message on the stream exactly once and in order, whatever fails", () => {
    fc.assert(
      fc.property(fc.array(cmdArb, { minLength: 1, maxLength: 120 }), (cmds) => {
        const box = new Outbox();
        const stream = new ModelStream();
        const expected: Stored[] = [];
        // Publishes in flight, in send order: the server sees them in that order too.
        let inflight: { send: Send; stored: boolean | undefined }[] = [];
        let index = 0;
        box.resync(stream.tail);
        const settle = (i: number, outcome: "ack" | "lose" | "timeoutStored"): void => {
          const f = inflight[i];
          if (!f) return;
          // The server handles publishes in order: everything sent before this one reaches
          // it first (their outcomes to the client may still be pending).
          for (let j = 0; j <= i; j++) {
            const g = inflight[j]!;
            if (g.stored === undefined)
              g.stored = outcome === "lose" && j === i ? false : stream.publish(g.send);
          }
          inflight.splice(i, 1);
          if (outcome === "ack" && f.stored) box.acked(f.send.msg);
          else box.failed();
          expect(box.ackedIndex).toBeLessThanOrEqual(stream.tail.index);
        };
        for (const c of cmds) {
          switch (c.kind) {
            case "commit": {
              const msgs = messages(++index, c.events);
              box.push(msgs);
              for (const m of msgs) expected.push({ index: m.index, pos: m.pos });
              break;
            }
            case "send": {
              const s = box.next();
              if (s) inflight.push({ send: s, stored: undefined });
              break;
            }
            case "ack":
              settle(c.which % Math.max(1, inflight.length), "ack");
              break;
            case "lose":
              settle(c.which % Math.max(1, inflight.length), "lose");
              break;
            case "timeoutStored":
              settle(c.which % Math.max(1, inflight.length), "timeoutStored");
              break;
            case "resync":
              if (inflight.length === 0 && !box.ready) box.resync(stream.tail);
              break;
          }
        }
        // Drain: settle what is in flight, then resync and send until the outbox is empty.
        for (let guard = 0; guard < 10_000 && (box.length > 0 || inflight.length > 0); guard++) {
          while (inflight.length > 0) settle(0, "ack");
          if (!box.ready) box.resync(stream.tail);
          const s = box.next();
          if (s) inflight.push({ send: s, stored: undefined });
        }
        inflight = [];
        expect(stream.msgs).toEqual(expected);
        expect(box.ackedIndex).toBe(index);
      }),
      { numRuns: 300 },
    );
  });
});
