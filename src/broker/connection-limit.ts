import { TooManySubscriptionsError } from "../stream/index.js";

/**
 * Open subscriptions per client connection (grpc-js peer address), shared by Subscribe
 * streams and the subscriptions of Watch streams: one limit whichever way they came.
 */
export class ConnectionLimit {
  private readonly counts = new Map<string, number>();

  constructor(readonly max: number) {}

  /** Counts one more subscription for `peer`; throws TooManySubscriptionsError at the limit. */
  acquire(peer: string): void {
    const n = this.counts.get(peer) ?? 0;
    if (n >= this.max) throw new TooManySubscriptionsError(this.max, "connection");
    this.counts.set(peer, n + 1);
  }

  release(peer: string): void {
    const left = (this.counts.get(peer) ?? 1) - 1;
    if (left <= 0) this.counts.delete(peer);
    else this.counts.set(peer, left);
  }
}
