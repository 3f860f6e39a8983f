import type { Event } from "../state/events/index.js";

/**
 * The distinct KV keys of a frame, computed once per frame (the array is shared by every
 * subscriber at that position) and interned: frames with the same set of keys get the same
 * `id`, so a subscriber's filter can decide a whole frame with one memo lookup instead of
 * one check per event.
 */
export interface FrameSubjects {
  readonly id: number;
  readonly subjects: readonly string[];
}

const cache = new WeakMap<readonly Event[], FrameSubjects | null>();
const interned = new Map<string, number>();
const MAX_INTERNED = 50_000;
let nextId = 1;

/** The frame's key set, or null when it is not all KV events. */
export function kvFrameSubjects(events: readonly Event[]): FrameSubjects | null {
  let v = cache.get(events);
  if (v !== undefined) return v;
  v = compute(events);
  cache.set(events, v);
  return v;
}

function compute(events: readonly Event[]): FrameSubjects | null {
  const seen = new Set<string>();
  for (const e of events) {
    if (e.topic !== "KV") return null;
    seen.add(e.subject);
  }
  const subjects = [...seen].sort();
  const key = subjects.join("\u0000");
  let id = interned.get(key);
  if (id === undefined) {
    // Ids are never reused, so a filter's memo can never confuse two sets.
    if (interned.size >= MAX_INTERNED) interned.clear();
    id = nextId++;
    interned.set(key, id);
  }
  return { id, subjects };
}
