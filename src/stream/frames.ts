import type { Event } from "../state/events/index.js";
import type { Index } from "../state/index.js";

/** Kinds of frames a subscriber reads. */
export const FrameKind = {
  Snapshot: "snapshot",
  EndOfSnapshot: "endOfSnapshot",
  NewSnapshotToFollow: "newSnapshotToFollow",
  Events: "events",
  Progress: "progress",
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/**
 * What a subscription yields.
 *
 * - `snapshot`: part of the subject's state at `index` (a large snapshot spans several).
 * - `endOfSnapshot`: the snapshot is complete; the view is now the state at `index`.
 * - `newSnapshotToFollow`: the exact continuation cannot be served; throw the view away, a
 *   fresh snapshot follows.
 * - `events`: one or more whole commits, in index order; each event carries its commit's
 *   index and `index` is the last one. Indexes of these frames strictly increase.
 * - `progress`: nothing for this subject up to `index`; the resume index may move there.
 */
export type Frame =
  | { readonly kind: typeof FrameKind.Snapshot; readonly index: Index; readonly events: readonly Event[] }
  | { readonly kind: typeof FrameKind.EndOfSnapshot; readonly index: Index }
  | { readonly kind: typeof FrameKind.NewSnapshotToFollow }
  | { readonly kind: typeof FrameKind.Events; readonly index: Index; readonly events: readonly Event[] }
  | { readonly kind: typeof FrameKind.Progress; readonly index: Index };
