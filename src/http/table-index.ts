import type { Commit, TableName } from "../state/index.js";
import { TABLE_NAMES } from "../state/index.js";
import type { EventPublisher } from "../stream/index.js";

/**
 * The index of the last commit that changed each table, as Consul's state store keeps it,
 * for the reads that no topic of the change stream covers (nodes, a node's services, checks
 * by node or state, ACL objects). A blocking query on those waits for the next commit that
 * changes one of its tables — not for every commit of the store — and answers with the
 * largest of its tables' indexes.
 *
 * Tables start at the publisher's index when the server starts (their true last-change index
 * is not kept across restarts), so the first blocking query after a restart may wake once
 * without a change: allowed by Consul's contract, and never the other way round.
 */
export class TableIndex {
  private readonly last = new Map<TableName, number>();
  private readonly waiters = new Map<TableName, Set<() => void>>();
  private readonly unhook: () => void;

  constructor(publisher: EventPublisher) {
    const start = Math.max(1, publisher.index);
    for (const t of TABLE_NAMES) {
      this.last.set(t, start);
      this.waiters.set(t, new Set());
    }
    // Runs before the commit is dispatched; woken requests resume after publish() returns,
    // so they read the new root.
    this.unhook = publisher.beforePublish((commit) => this.onCommit(commit));
  }

  private onCommit(commit: Commit): void {
    const touched = new Set<TableName>();
    for (const c of commit.changes) touched.add(c.table);
    for (const t of touched) {
      this.last.set(t, commit.index);
      const ws = this.waiters.get(t)!;
      if (ws.size === 0) continue;
      const wake = [...ws];
      ws.clear();
      for (const w of wake) w();
    }
  }

  /** The index of the last change to any of `tables` (at least 1). */
  indexOf(tables: readonly TableName[]): number {
    let max = 1;
    for (const t of tables) max = Math.max(max, this.last.get(t) ?? 1);
    return max;
  }

  /**
   * Waits for the next commit that changes one of `tables`, until `deadline` (ms on `now`'s
   * clock) or until `signal` aborts. Resolves true for a change, false otherwise.
   */
  waitOnce(
    tables: readonly TableName[],
    deadline: number,
    now: () => number,
    signal: AbortSignal,
  ): Promise<boolean> {
    const t = now();
    if (signal.aborted || t >= deadline) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      const done = (changed: boolean): void => {
        for (const table of tables) this.waiters.get(table)!.delete(onChange);
        signal.removeEventListener("abort", onAbort);
        clearTimeout(timer);
        resolve(changed);
      };
      const onChange = (): void => done(true);
      const onAbort = (): void => done(false);
      for (const table of tables) this.waiters.get(table)!.add(onChange);
      signal.addEventListener("abort", onAbort, { once: true });
      const timer = setTimeout(() => done(false), deadline - t);
    });
  }

  close(): void {
    this.unhook();
  }
}
