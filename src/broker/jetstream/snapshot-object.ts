import { type JetStreamClient, type ObjectStore, StorageType } from "nats";

/** What the description of a stored snapshot says (JSON). */
export interface SnapshotInfo {
  /** The state's index. */
  readonly index: number;
  /** Stream sequence of that commit's log message (0: the log starts after it, from the beginning). */
  readonly logSeq: number;
  /** How the writer that stored it is reached. */
  readonly writer: { readonly grpc: string; readonly http: string };
  /** When it was stored (ms since the epoch). */
  readonly time: number;
}

/** The object name of the newest snapshot. */
export const LATEST = "latest";

/** The object store bucket of a stream's snapshots: `<stream>_snapshots`. */
export function snapshotBucket(js: JetStreamClient, stream: string): Promise<ObjectStore> {
  return js.views.os(`${stream}_snapshots`, { storage: StorageType.File });
}

/** Stores snapshot bytes as the bucket's newest snapshot (replacing the previous one). */
export async function writeSnapshotObject(
  os: ObjectStore,
  bytes: Uint8Array,
  info: SnapshotInfo,
): Promise<void> {
  await os.putBlob({ name: LATEST, description: JSON.stringify(info) }, bytes);
}

/** The newest snapshot and what it says about itself, or undefined when none was stored. */
export async function readSnapshotObject(
  os: ObjectStore,
): Promise<{ info: SnapshotInfo; bytes: Uint8Array } | undefined> {
  const meta = await os.info(LATEST);
  if (!meta?.description) return undefined;
  const bytes = await os.getBlob(LATEST);
  if (!bytes) return undefined;
  return { info: JSON.parse(meta.description) as SnapshotInfo, bytes };
}
