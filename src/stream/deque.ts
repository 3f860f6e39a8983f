/**
 * An array-backed queue addressed by absolute sequence numbers: `at(seq)` stays valid for a
 * position however many items were shifted off the front or put back before it.
 */
export class Deque<T> {
  private items: T[] = [];
  private head = 0;
  /** Sequence number of the first item. */
  base = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  /** Sequence number one past the last item. */
  get end(): number {
    return this.base + this.length;
  }

  at(seq: number): T | undefined {
    const i = seq - this.base;
    return i < 0 || i >= this.length ? undefined : this.items[this.head + i];
  }

  first(): T | undefined {
    return this.items[this.head];
  }

  last(): T | undefined {
    return this.length === 0 ? undefined : this.items[this.items.length - 1];
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const item = this.items[this.head] as T;
    (this.items as (T | undefined)[])[this.head] = undefined;
    this.head++;
    this.base++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Puts items back in front, oldest first; existing sequence numbers keep their items. */
  prepend(items: readonly T[]): void {
    if (items.length === 0) return;
    this.items = [...items, ...this.items.slice(this.head)];
    this.head = 0;
    this.base -= items.length;
  }

  /** Sequence number of the first item for which `pred` holds, given items sorted so that it flips once. */
  search(pred: (item: T) => boolean): number {
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (pred(this.items[this.head + mid] as T)) hi = mid;
      else lo = mid + 1;
    }
    return this.base + lo;
  }
}
