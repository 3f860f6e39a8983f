import { MaterializedView, type PooledView, type SubscriptionSource } from "./materialized-view.js";
import type { ViewModel } from "./view-models.js";

export interface ViewRegistryOptions {
  /** How long a view nobody uses is kept (default 60 s; Consul keeps its streaming views 20 min). */
  readonly idleMs?: number;
  /** Clock in ms (monotonic). */
  readonly now?: () => number;
}

/**
 * The shared views of blocking queries: one per (query, token), however many requests ask
 * it, as Consul's streaming backend shares its materialized views. A view lives while
 * requests use it and `idleMs` after the last one let go; a view whose subscription fails
 * (revoked token, shutdown) leaves at once, so the next request opens a fresh one.
 */
export class ViewRegistry {
  private readonly views = new Map<string, PooledView>();
  private readonly keys = new Map<PooledView, string>();
  private readonly timer: NodeJS.Timeout;
  readonly idleMs: number;
  readonly now: () => number;
  private closed = false;

  constructor(opts: ViewRegistryOptions = {}) {
    this.idleMs = Math.max(1, opts.idleMs ?? 60_000);
    this.now = opts.now ?? performance.now.bind(performance);
    this.timer = setInterval(() => this.sweep(this.now()), Math.max(1000, Math.floor(this.idleMs / 2)));
    this.timer.unref();
  }

  /**
   * The view for `key`, opened with `open` if there is none; the caller holds it until
   * {@link release}. `key` must determine the model type (it names the query).
   */
  acquire<M extends ViewModel>(
    key: string,
    open: SubscriptionSource,
    makeModel: () => M,
  ): MaterializedView<M> {
    if (this.closed) throw new Error("the view registry is closed");
    // The key names the query, and so the model type of the view filed under it.
    let view = this.views.get(key) as MaterializedView<M> | undefined;
    if (!view || view.closed) {
      view = new MaterializedView(open, makeModel, (v) => this.forget(v));
      // A source that fails synchronously ends the view inside the constructor: keep it out.
      if (!view.closed) {
        this.views.set(key, view);
        this.keys.set(view, key);
      }
    }
    view.refs++;
    return view;
  }

  /** Lets go of a view taken with {@link acquire}. */
  release(view: PooledView): void {
    view.refs--;
    if (view.refs === 0) view.idleSince = this.now();
  }

  private forget(view: PooledView): void {
    const key = this.keys.get(view);
    if (key === undefined) return;
    this.keys.delete(view);
    if (this.views.get(key) === view) this.views.delete(key);
  }

  /** Closes the views nobody has used for `idleMs` as of `now`; returns how many. */
  sweep(now: number): number {
    let n = 0;
    for (const view of [...this.views.values()]) {
      if (view.refs === 0 && now - view.idleSince >= this.idleMs) {
        view.close();
        n++;
      }
    }
    return n;
  }

  /** Number of open views. */
  get size(): number {
    return this.views.size;
  }

  /** Closes every view (server shutdown). */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    for (const view of [...this.views.values()]) view.close();
  }
}
