/*
 * The writer of the `http` suite's blocking part: changes one instance's check of a service
 * (its output; the status stays passing) `rate` times a second, open loop, through the SDK's
 * gRPC `UpdateCheck`, which answers the commit index, and keeps every change's index with the
 * times it was issued and acknowledged (process.hrtime: CLOCK_MONOTONIC ns, comparable with the
 * client processes' and the server's clocks).
 */
import { SluiceClient } from "../../src/client/index.js";
import type { ChangeTable } from "./http-blocking-client.js";
import type { CommitTimes } from "./sluice-server-child.js";

const hrNs = () => Number(process.hrtime.bigint());

/** See the file comment. At most 1,000 changes in flight. */
export class CheckWriter {
  private readonly client: SluiceClient;
  private readonly indexes: number[] = [];
  private readonly issueNs: number[] = [];
  private readonly ackNs: number[] = [];
  private seq = 0;
  private inFlight = 0;
  private failure: unknown;
  private readonly pending = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;

  /**
   * `address`: the server's gRPC host:port; the check of instance i is `service:<service>-<i>`
   * on node `node-<i>`, for i in [0, instances).
   */
  constructor(
    address: string,
    private readonly service: string,
    private readonly instances: number,
  ) {
    this.client = new SluiceClient({ address });
  }

  get acknowledged(): number {
    return this.indexes.length;
  }

  start(rate: number): void {
    const t0 = performance.now();
    let issued = 0;
    this.timer = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) / 1000) * rate);
      while (issued < due && this.inFlight < 1000 && this.failure === undefined) {
        issued++;
        this.issue();
      }
    }, 2);
  }

  private issue(): void {
    const n = this.seq++;
    const i = n % this.instances;
    this.inFlight++;
    const issued = hrNs();
    const p = this.client.catalog
      .updateCheck({
        node: `node-${i}`,
        check_id: `service:${this.service}-${i}`,
        status: "passing",
        output: `HTTP GET http://10.0.0.1:8080/health: 200 OK (change ${n})`,
      })
      .then(
        (index) => {
          this.ackNs.push(hrNs());
          this.issueNs.push(issued);
          this.indexes.push(Number(index));
        },
        (err: unknown) => {
          this.failure ??= err;
        },
      )
      .finally(() => {
        this.inFlight--;
        this.pending.delete(p);
      });
    this.pending.add(p);
  }

  /** Stops issuing and waits for the changes in flight. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all([...this.pending]);
    if (this.failure !== undefined) throw this.failure;
  }

  /** Lowest index acknowledged so far. */
  get firstIndex(): number {
    return Math.min(...this.indexes);
  }

  /**
   * Every acknowledged change, by index, with its commit time in the server (from the server
   * process's record of its commits).
   */
  table(commits: CommitTimes): ChangeTable {
    const committedAt = new Map<number, number>();
    for (const [i, ix] of commits.indexes.entries()) committedAt.set(ix, commits.ns[i]!);
    const order = this.indexes.map((_, i) => i).sort((a, b) => this.indexes[a]! - this.indexes[b]!);
    return {
      indexes: order.map((i) => this.indexes[i]!),
      issueNs: order.map((i) => this.issueNs[i]!),
      commitNs: order.map((i) => committedAt.get(this.indexes[i]!) ?? Number.NaN),
      ackNs: order.map((i) => this.ackNs[i]!),
    };
  }

  close(): void {
    clearInterval(this.timer);
    this.client.close();
  }
}
