import {
  type BackoffPolicy,
  type BackoffState,
  backoffFailure,
  backoffSuccess,
  INITIAL_BACKOFF,
} from "./backoff.js";
import {
  ClosedError,
  Code,
  ProtocolError,
  SluiceError,
  UnavailableError,
  WaitTimeoutError,
} from "./errors.js";
import {
  asIndex,
  type Frame,
  type MaterializedView,
  type StreamEvent,
  type SubscribeRequest,
  type ViewOptions,
  type ViewStats,
  type ViewUpdate,
  type WaitOptions,
} from "./types.js";
import { FoldStep, ViewFold } from "./view-fold.js";
import type { ViewModel } from "./view-models.js";

/** Where a view gets its frames (the client's `subscribe`). */
export type FrameSource = (
  request: SubscribeRequest,
  options: { signal: AbortSignal },
) => AsyncIterable<Frame>;

/** The clock, randomness and retry policy of a view; injectable for tests. */
export interface ViewRuntime {
  readonly policy: BackoffPolicy;
  readonly now: () => number;
  readonly random: () => number;
}

/** What a view does after its stream ends in an error. */
export const Recovery = {
  /** Subscribe again with the last index seen. */
  Resume: "resume",
  /** Throw the view away and subscribe from index 0. */
  Reset: "reset",
  /** Stop; the error is the view's. */
  Stop: "stop",
} as const;
export type Recovery = (typeof Recovery)[keyof typeof Recovery];

const STOP_CODES = new Set<number>([
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.InvalidArgument,
  Code.Unimplemented,
  Code.NotFound,
  Code.AlreadyExists,
  Code.FailedPrecondition,
]);

/**
 * How a view recovers from an error (Consul's materializer rules): a force-close (ABORTED)
 * or an index the server does not have (OUT_OF_RANGE) rebuilds from a snapshot; errors that
 * a retry cannot fix (an unknown or deleted token above all) stop the view; anything else
 * (UNAVAILABLE, a dropped connection, an internal error) resumes from the index.
 */
export function recoveryFor(err: Error): Recovery {
  if (err instanceof ProtocolError) return Recovery.Reset;
  if (!(err instanceof SluiceError)) return Recovery.Stop;
  if (err.code === Code.Aborted || err.code === Code.OutOfRange) return Recovery.Reset;
  if (STOP_CODES.has(err.code)) return Recovery.Stop;
  return Recovery.Resume;
}

/**
 * A materialized view over one subscription: applies snapshots and events to a model,
 * resumes after disconnects with the last index it saw (progress included), rebuilds on
 * NewSnapshotToFollow and force-close, and backs off between retries.
 *
 * While a new snapshot is being received the previous state stays visible; it is swapped
 * for the new one at EndOfSnapshot, so readers never see a partial view.
 */
export class StreamView<V> implements MaterializedView<V> {
  /** The frames folded into the model (shared with the server's HTTP views). */
  private readonly fold: ViewFold<StreamEvent, ViewModel<V>>;
  private cached: { version: number; value: V } | undefined;
  private error: Error | undefined;
  private isClosed = false;
  private readonly abort = new AbortController();
  private wake: { promise: Promise<void>; resolve: () => void } | undefined;
  readonly stats: ViewStats = {
    snapshots: 0,
    subscriptions: 0,
    resumes: 0,
    retries: 0,
    eventsApplied: 0,
    duplicatesSkipped: 0,
  };

  constructor(
    private readonly source: FrameSource,
    private readonly request: Omit<SubscribeRequest, "index">,
    makeModel: () => ViewModel<V>,
    private readonly runtime: ViewRuntime,
    private readonly options: ViewOptions = {},
    private readonly onClose?: () => void,
  ) {
    this.fold = new ViewFold<StreamEvent, ViewModel<V>>(makeModel);
    const { signal } = options;
    if (signal?.aborted) {
      this.close();
      return;
    }
    signal?.addEventListener("abort", this.onAbort, { once: true });
    this.run().catch((err: unknown) => this.stop(err instanceof Error ? err : new Error(String(err))));
  }

  get closed(): boolean {
    return this.isClosed || this.error !== undefined;
  }

  get(): ViewUpdate<V> | undefined {
    if (this.error) throw this.error;
    return this.fold.hasState ? this.current() : undefined;
  }

  private readonly onAbort = (): void => this.close();

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.options.signal?.removeEventListener("abort", this.onAbort);
    this.abort.abort(new ClosedError());
    this.notify();
    this.onClose?.();
  }

  async waitForIndexAbove(index: number, options: WaitOptions = {}): Promise<ViewUpdate<V>> {
    const { timeout, signal } = options;
    signal?.throwIfAborted();
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const stop = new Promise<"timeout" | "abort">((resolve) => {
      if (timeout !== undefined) timer = setTimeout(() => resolve("timeout"), Math.max(0, timeout));
      onAbort = () => resolve("abort");
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    try {
      for (;;) {
        if (this.error) throw this.error;
        if (this.fold.hasState && this.fold.index > index) return this.current();
        if (this.isClosed) throw new ClosedError();
        const r = await Promise.race([this.changed(), stop]);
        if (r === "abort") throw signal?.reason;
        if (r === "timeout") {
          if (this.error) throw this.error;
          if (this.fold.hasState) return this.current();
          throw new WaitTimeoutError(index, timeout ?? 0);
        }
      }
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * The current state first (once there is one), then the state after each change. A
   * consumer slower than the changes skips to the latest state rather than queueing every
   * one. Leaving the loop (`break`) closes the view.
   */
  [Symbol.asyncIterator](): AsyncIterator<ViewUpdate<V>> {
    let seen = -1;
    return {
      next: async (): Promise<IteratorResult<ViewUpdate<V>>> => {
        for (;;) {
          if (this.error) throw this.error;
          if (this.isClosed) return { done: true, value: undefined };
          if (this.fold.hasState && this.fold.version !== seen) {
            seen = this.fold.version;
            return { done: false, value: this.current() };
          }
          await this.changed();
        }
      },
      return: async (): Promise<IteratorResult<ViewUpdate<V>>> => {
        this.close();
        return { done: true, value: undefined };
      },
    };
  }

  private current(): ViewUpdate<V> {
    if (this.cached?.version !== this.fold.version)
      this.cached = { version: this.fold.version, value: this.fold.model.result() };
    return { index: asIndex(this.fold.index), value: this.cached.value };
  }

  private changed(): Promise<void> {
    if (!this.wake) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      this.wake = { promise, resolve };
    }
    return this.wake.promise;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.resolve();
  }

  private async run(): Promise<void> {
    let backoff: BackoffState = INITIAL_BACKOFF;
    const { now, random, policy } = this.runtime;
    while (!this.isClosed) {
      const from = this.fold.needsSnapshot ? 0 : this.fold.index;
      this.stats.subscriptions++;
      if (from > 0) this.stats.resumes++;
      let failure: Error;
      try {
        const frames = this.source({ ...this.request, index: from }, { signal: this.abort.signal });
        for await (const frame of frames) {
          backoff = backoffSuccess();
          this.apply(frame);
        }
        if (this.isClosed) return;
        failure = new UnavailableError(Code.Unavailable, "", "the server ended the stream");
      } catch (err) {
        if (this.isClosed) return;
        failure = err instanceof Error ? err : new Error(String(err));
      }
      this.fold.interrupted();
      const recovery = recoveryFor(failure);
      if (recovery === Recovery.Stop) {
        this.stop(failure);
        return;
      }
      if (recovery === Recovery.Reset) this.fold.expectSnapshot();
      backoff = backoffFailure(backoff, now(), random(), policy);
      this.stats.retries++;
      const delayMs = Math.max(0, backoff.retryAt - now());
      this.options.onRetry?.({
        error: failure,
        attempt: backoff.failures,
        delayMs,
        reset: recovery === Recovery.Reset,
        resumeIndex: this.fold.needsSnapshot ? 0 : this.fold.index,
      });
      await this.sleep(delayMs);
    }
  }

  /** Ends the view with an error that readers will see. */
  private stop(err: Error): void {
    if (this.closed) return;
    this.error = err;
    this.abort.abort(err);
    this.notify();
    this.onClose?.();
  }

  /** Waits `ms`, or less if the view is closed meanwhile. */
  private sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.isClosed) return Promise.resolve();
    return new Promise((resolve) => {
      // Not unref()'d: a view waiting to reconnect keeps the process alive, as its open
      // stream would; close() ends the wait.
      const timer = setTimeout(done, ms);
      const signal = this.abort.signal;
      function done(): void {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      }
      signal.addEventListener("abort", done, { once: true });
    });
  }

  private apply(frame: Frame): void {
    const step = this.fold.apply(frame);
    this.stats.eventsApplied = this.fold.eventsApplied;
    this.stats.duplicatesSkipped = this.fold.duplicatesSkipped;
    if (step === FoldStep.Snapshot) this.stats.snapshots++;
    if (step !== FoldStep.None) this.notify();
  }
}
