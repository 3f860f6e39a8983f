import { ProtocolError } from "./errors.js";

/*
 * The one fold of a change stream into a materialized view, shared by the SDK's StreamView
 * (over decoded wire frames) and the server's HTTP views (over the publisher's frames, in
 * process): the same snapshot / reset / resume / duplicate rules on both sides.
 */

/** The frames a fold takes: the SDK's and the publisher's frames both have this shape. */
export type FoldFrame<E> =
  | { readonly kind: "snapshot"; readonly events: readonly E[] }
  | { readonly kind: "endOfSnapshot"; readonly index: number }
  | { readonly kind: "newSnapshotToFollow" }
  | { readonly kind: "events"; readonly index: number; readonly events: readonly E[] }
  | { readonly kind: "progress"; readonly index: number };

/** What a model folds events into. */
export interface FoldModel<E> {
  apply(event: E): void;
}

/** What one frame did to the view. */
export const FoldStep = {
  /** Nothing visible (a snapshot part, a reset announced, progress without a new index). */
  None: "none",
  /** A complete snapshot replaced the state. */
  Snapshot: "snapshot",
  /** Events changed the state. */
  Changed: "changed",
  /** The index moved on without a change (Progress, or events all seen before). */
  Advanced: "advanced",
} as const;
export type FoldStep = (typeof FoldStep)[keyof typeof FoldStep];

/**
 * A pure state machine: the model the view shows, the snapshot being received (swapped in
 * whole at EndOfSnapshot, so a reader never sees half a snapshot), and the resume index.
 * Events at or below the index are duplicates (a resume overlapping what was applied) and
 * are skipped; events or progress before the first snapshot ended are protocol errors.
 */
export class ViewFold<E extends { readonly index: number }, M extends FoldModel<E>> {
  model: M;
  /** The snapshot being received, if any. */
  private pending: M | undefined;
  /** The index the model reflects: the resume point. */
  index = 0;
  /** True until a snapshot has completed (and again after `expectSnapshot`). */
  needsSnapshot = true;
  /** Whether any snapshot has completed. */
  hasState = false;
  /** Bumped whenever the model's content changes. */
  version = 0;
  eventsApplied = 0;
  duplicatesSkipped = 0;

  constructor(private readonly makeModel: () => M) {
    this.model = makeModel();
  }

  /** The next stream starts from scratch (index 0): a snapshot must come first. */
  expectSnapshot(): void {
    this.needsSnapshot = true;
  }

  /** A stream ended: a snapshot cut short is of no use, the next one starts over. */
  interrupted(): void {
    this.pending = undefined;
  }

  apply(frame: FoldFrame<E>): FoldStep {
    switch (frame.kind) {
      case "snapshot": {
        this.pending ??= this.makeModel();
        for (const e of frame.events) this.pending.apply(e);
        return FoldStep.None;
      }
      case "endOfSnapshot":
        this.model = this.pending ?? this.makeModel();
        this.pending = undefined;
        this.index = frame.index;
        this.needsSnapshot = false;
        this.hasState = true;
        this.version++;
        return FoldStep.Snapshot;
      case "newSnapshotToFollow":
        this.pending = this.makeModel();
        return FoldStep.None;
      case "events": {
        if (this.needsSnapshot) throw new ProtocolError("events before the snapshot ended");
        let applied = false;
        for (const e of frame.events) {
          if (e.index <= this.index) {
            this.duplicatesSkipped++;
            continue;
          }
          this.model.apply(e);
          this.eventsApplied++;
          applied = true;
        }
        const moved = frame.index > this.index;
        if (moved) this.index = frame.index;
        if (applied) {
          this.version++;
          return FoldStep.Changed;
        }
        return moved ? FoldStep.Advanced : FoldStep.None;
      }
      case "progress":
        if (this.needsSnapshot) throw new ProtocolError("progress before the snapshot ended");
        if (frame.index > this.index) {
          this.index = frame.index;
          return FoldStep.Advanced;
        }
        return FoldStep.None;
      default: {
        const never: never = frame;
        throw new ProtocolError(`unknown frame ${JSON.stringify(never)}`);
      }
    }
  }
}
