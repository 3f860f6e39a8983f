/**
 * A persistent (immutable) sorted map from string keys to values: a sorted list of small
 * sorted chunks. `set`/`delete` copy one chunk and the chunk list and share the rest, so a
 * write costs O(n / CHUNK + CHUNK) pointer copies and a lookup O(log n), and every older
 * version stays valid for the readers that hold it.
 *
 * It is a class on purpose: immer treats class instances as opaque values, so a draft of
 * the state root holds these maps by reference instead of proxying thousands of chunks.
 */

const CHUNK_MAX = 128;
const CHUNK_MIN = 32;

interface Chunk<V> {
  readonly keys: readonly string[];
  readonly vals: readonly V[];
}

function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((keys[mid] as string) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Chunks and the chunk list are private and never handed out, so they are not frozen:
// freezing them cost more than the rest of a write together.
function chunk<V>(keys: string[], vals: V[]): Chunk<V> {
  return { keys, vals };
}

/** Replaces `count` chunks at `at` with one chunk of these entries, split in two if too big. */
function replaceChunks<V>(chunks: Chunk<V>[], at: number, count: number, keys: string[], vals: V[]): void {
  if (keys.length > CHUNK_MAX) {
    const half = keys.length >> 1;
    chunks.splice(
      at,
      count,
      chunk(keys.slice(0, half), vals.slice(0, half)),
      chunk(keys.slice(half), vals.slice(half)),
    );
  } else {
    chunks.splice(at, count, chunk(keys, vals));
  }
}

export class SortedMap<V> {
  /** Most entries in one chunk; a larger chunk splits. */
  static readonly CHUNK_MAX = CHUNK_MAX;
  /** Fewest entries in a chunk before it merges with a neighbour. */
  static readonly CHUNK_MIN = CHUNK_MIN;
  static readonly EMPTY: SortedMap<never> = new SortedMap<never>([], 0);

  static empty<V>(): SortedMap<V> {
    return SortedMap.EMPTY as SortedMap<V>;
  }

  /** Builds a map from entries in any order (later duplicates win). */
  static from<V>(entries: Iterable<readonly [string, V]>): SortedMap<V> {
    const all = [...entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const keys: string[] = [];
    const vals: V[] = [];
    for (const [k, v] of all) {
      if (keys.length > 0 && keys[keys.length - 1] === k) vals[vals.length - 1] = v;
      else {
        keys.push(k);
        vals.push(v);
      }
    }
    const chunks: Chunk<V>[] = [];
    const per = (CHUNK_MAX + CHUNK_MIN) >> 1;
    for (let i = 0; i < keys.length; i += per)
      chunks.push(chunk(keys.slice(i, i + per), vals.slice(i, i + per)));
    return new SortedMap(chunks, keys.length);
  }

  private constructor(
    private readonly chunks: readonly Chunk<V>[],
    /** Number of entries. */
    readonly size: number,
  ) {}

  /** Index of the chunk that holds, or would hold, `key`. */
  private chunkFor(key: string): number {
    const cs = this.chunks;
    let lo = 0;
    let hi = cs.length - 1;
    // Last chunk whose first key <= key; chunk 0 when key is below every first key.
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if ((cs[mid] as Chunk<V>).keys[0]! <= key) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  get(key: string): V | undefined {
    if (this.size === 0) return undefined;
    const c = this.chunks[this.chunkFor(key)] as Chunk<V>;
    const i = lowerBound(c.keys, key);
    return c.keys[i] === key ? c.vals[i] : undefined;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  set(key: string, val: V): SortedMap<V> {
    if (this.size === 0) return new SortedMap([chunk([key], [val])], 1);
    const ci = this.chunkFor(key);
    const c = this.chunks[ci] as Chunk<V>;
    const i = lowerBound(c.keys, key);
    if (c.keys[i] === key) {
      // An update: the chunk's keys stay as they are and are shared; only its values copy.
      if (c.vals[i] === val) return this;
      const vals = c.vals.slice();
      vals[i] = val;
      const chunks = this.chunks.slice();
      chunks[ci] = { keys: c.keys, vals };
      return new SortedMap(chunks, this.size);
    }
    const keys = c.keys.slice();
    const vals = c.vals.slice();
    keys.splice(i, 0, key);
    vals.splice(i, 0, val);
    const chunks = this.chunks.slice();
    replaceChunks(chunks, ci, 1, keys, vals);
    return new SortedMap(chunks, this.size + 1);
  }

  delete(key: string): SortedMap<V> {
    if (this.size === 0) return this;
    const ci = this.chunkFor(key);
    const c = this.chunks[ci] as Chunk<V>;
    const i = lowerBound(c.keys, key);
    if (c.keys[i] !== key) return this;
    const keys = c.keys.slice();
    const vals = c.vals.slice();
    keys.splice(i, 1);
    vals.splice(i, 1);
    const chunks = this.chunks.slice();
    if (keys.length === 0) {
      chunks.splice(ci, 1);
    } else if (keys.length < CHUNK_MIN && chunks.length > 1) {
      // Merge with a neighbour so that chunks stay dense and the chunk list short.
      const ni = ci > 0 ? ci - 1 : ci + 1;
      const n = chunks[ni] as Chunk<V>;
      const [first, second] = ni < ci ? [n, { keys, vals }] : [{ keys, vals }, n];
      const mk = [...first.keys, ...second.keys];
      const mv = [...first.vals, ...second.vals];
      replaceChunks(chunks, Math.min(ci, ni), 2, mk, mv);
    } else {
      chunks[ci] = chunk(keys, vals);
    }
    return new SortedMap(chunks, this.size - 1);
  }

  /** Entries whose key starts with `prefix`, in key order. Cost: O(log n + matches). */
  *prefix(prefix: string): IterableIterator<[string, V]> {
    if (this.size === 0) return;
    let ci = this.chunkFor(prefix);
    let i = lowerBound((this.chunks[ci] as Chunk<V>).keys, prefix);
    for (; ci < this.chunks.length; ci++, i = 0) {
      const c = this.chunks[ci] as Chunk<V>;
      for (; i < c.keys.length; i++) {
        const k = c.keys[i] as string;
        if (!k.startsWith(prefix)) return;
        yield [k, c.vals[i] as V];
      }
    }
  }

  /** Entries with from <= key, in key order. */
  *from(from: string): IterableIterator<[string, V]> {
    if (this.size === 0) return;
    let ci = this.chunkFor(from);
    let i = lowerBound((this.chunks[ci] as Chunk<V>).keys, from);
    for (; ci < this.chunks.length; ci++, i = 0) {
      const c = this.chunks[ci] as Chunk<V>;
      for (; i < c.keys.length; i++) yield [c.keys[i] as string, c.vals[i] as V];
    }
  }

  *entries(): IterableIterator<[string, V]> {
    for (const c of this.chunks)
      for (let i = 0; i < c.keys.length; i++) yield [c.keys[i] as string, c.vals[i] as V];
  }

  *values(): IterableIterator<V> {
    for (const c of this.chunks) yield* c.vals;
  }

  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.entries();
  }
}
