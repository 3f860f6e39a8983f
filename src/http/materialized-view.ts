import { FoldStep, ViewFold } from "../client/index.js";
import type { Event } from "../state/events/index.js";
import type { Frame, Subscription } from "../stream/index.js";
import type { ViewModel } from "./view-models.js";

/** Opens the subscription that feeds a view (the ACL enforcer's `subscribe`, with the token). */
export type SubscriptionSource = () => Promise<Subscription>;

/** How a wait ended. */
export type WaitOutcome = "changed" | "timeout" | "aborted";

/** What the view registry needs of a view, whatever its model. */
export interface PooledView {
  readonly closed: boolean;
  /** Requests currently using the view (the registry evicts only idle views). */
  refs: number;
  /** When the last request let go of the view (the registry's clock). */
  idleSince: number;
  close(): void;
}

/** Most rendered variants kept per version; many distinct `?tag=` values must not pile up. */
const MAX_RENDERS = 64;

/**
 * One subscription folded into a model, shared by every request that asks the same query
 * with the same token: the in-process counterpart of the SDK's StreamView, for blocking
 * queries.
 *
 * Its `index` is the index of the last change it applied (the snapshot's index at first):
 * Progress frames do not move it, so a blocked request wakes only when its result may have
 * changed, not every time the store moves on elsewhere. A new snapshot (after a reset)
 * replaces the model whole at EndOfSnapshot, so readers never see a half-built state.
 *
 * A view whose subscription fails (token revoked, server shutting down) keeps the error;
 * its registry drops it, and requests waiting on it see the error and may open a new one.
 */
export class MaterializedView<M extends ViewModel> implements PooledView {
  /** The SDK's fold (src/client/view-fold.ts), over the publisher's frames. */
  private readonly fold: ViewFold<Event, M>;
  private ended = false;
  private failure: Error | undefined;
  private sub: Subscription | undefined;
  private readonly waiters = new Set<() => void>();
  private readonly renders = new Map<string, unknown>();
  /** The index of the last change applied (0 until the first snapshot is complete). */
  index = 0;
  /** Requests currently using the view (the registry evicts only idle views). */
  refs = 0;
  /** When the last request let go of the view (the registry's clock). */
  idleSince = 0;

  constructor(
    open: SubscriptionSource,
    makeModel: () => M,
    private readonly onEnd: (view: PooledView) => void,
  ) {
    this.fold = new ViewFold<Event, M>(makeModel);
    void this.run(open);
  }

  /** The error that ended the view, if one did. */
  get error(): Error | undefined {
    return this.failure;
  }

  /** Whether the view ended (closed or failed): it takes no more requests. */
  get closed(): boolean {
    return this.ended;
  }

  private async run(open: SubscriptionSource): Promise<void> {
    try {
      const sub = await open();
      if (this.ended) {
        sub.unsubscribe();
        return;
      }
      this.sub = sub;
      for await (const frame of sub) this.apply(frame);
      if (!this.ended) this.fail(new Error("the view's subscription ended"));
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private apply(frame: Frame): void {
    const step = this.fold.apply(frame);
    // Progress moves the fold's resume index, not the view's: a blocked request wakes only
    // when its result may have changed.
    if (step === FoldStep.Snapshot || step === FoldStep.Changed) this.changed(this.fold.index);
  }

  private changed(index: number): void {
    this.index = index;
    this.renders.clear();
    this.notify();
  }

  private notify(): void {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  private fail(err: Error): void {
    if (this.ended) return;
    this.failure = err;
    this.end();
  }

  /** Ends the view and its subscription; waiting requests wake. Idempotent. */
  close(): void {
    if (this.ended) return;
    this.end();
  }

  private end(): void {
    this.ended = true;
    this.sub?.unsubscribe();
    this.notify();
    this.onEnd(this);
  }

  /**
   * Waits for a notification (a change or the end of the view), `deadline` (ms on
   * `now`'s clock; undefined: none) or `signal`.
   */
  private wait(deadline: number | undefined, now: number, signal: AbortSignal): Promise<WaitOutcome> {
    if (signal.aborted) return Promise.resolve("aborted");
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (outcome: WaitOutcome): void => {
        this.waiters.delete(onChange);
        signal.removeEventListener("abort", onAbort);
        if (timer) clearTimeout(timer);
        resolve(outcome);
      };
      const onChange = (): void => done("changed");
      const onAbort = (): void => done("aborted");
      this.waiters.add(onChange);
      signal.addEventListener("abort", onAbort, { once: true });
      if (deadline !== undefined) timer = setTimeout(() => done("timeout"), Math.max(0, deadline - now));
    });
  }

  /** Resolves once the first snapshot is in; throws the view's error if it failed first. */
  async ready(now: () => number, signal: AbortSignal): Promise<void> {
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.fold.hasState) return;
      if (this.ended || (await this.wait(undefined, now(), signal)) === "aborted") {
        throw signal.reason ?? new Error("the view closed");
      }
    }
  }

  /**
   * Waits until the view's index is no longer `since`, until `deadline`, or until `signal`
   * aborts; throws the view's error if it fails meanwhile.
   */
  async waitForChange(
    since: number,
    deadline: number,
    now: () => number,
    signal: AbortSignal,
  ): Promise<void> {
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.index !== since || this.ended) return;
      const t = now();
      if (t >= deadline) return;
      const outcome = await this.wait(deadline, t, signal);
      if (outcome !== "changed") {
        if (this.failure) throw this.failure;
        return;
      }
    }
  }

  /**
   * A rendering of the current model, computed once per model version and variant (the
   * same answer goes to every request blocked on the view).
   */
  render<T>(variant: string, f: (model: M) => T): T {
    if (this.renders.has(variant)) return this.renders.get(variant) as T;
    const value = f(this.fold.model);
    if (this.renders.size >= MAX_RENDERS) this.renders.clear();
    this.renders.set(variant, value);
    return value;
  }
}
