/** The writer's log skipped commits this edge needs: it stops replicating rather than serve a state with holes. */
export class ReplicationStoppedError extends Error {
  override readonly name = "ReplicationStoppedError";
  constructor(
    readonly applied: number,
    readonly received: number,
  ) {
    super(`replication stopped: applied up to ${applied}, the log goes on at ${received}`);
  }
}
