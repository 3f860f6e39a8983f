import type { Frame, Subscription } from "../../src/stream/index.js";

/** Reads frames that are ready now (no waiting), up to `max`. */
export function drain(sub: Subscription, now = 0, max = 1_000_000): Frame[] {
  const out: Frame[] = [];
  for (let i = 0; i < max; i++) {
    const f = sub.poll(now);
    if (!f) break;
    out.push(f);
  }
  return out;
}

/** Frame kinds with their indexes, for compact assertions. */
export function shape(frames: readonly Frame[]): string[] {
  return frames.map((f) => {
    switch (f.kind) {
      case "newSnapshotToFollow":
        return "NST";
      case "snapshot":
        return `S${f.index}:${f.events.length}`;
      case "endOfSnapshot":
        return `EOS${f.index}`;
      case "events":
        return `E${f.index}:${f.events.length}`;
      case "progress":
        return `P${f.index}`;
      default:
        return "?";
    }
  });
}

/** Reads `n` frames through the async iterator, failing after `ms`. */
export async function take(sub: Subscription, n: number, ms = 2000): Promise<Frame[]> {
  const out: Frame[] = [];
  const timer = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`timed out after ${out.length} frames`)), ms).unref(),
  );
  while (out.length < n) {
    const r = await Promise.race([sub.next(), timer]);
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}
