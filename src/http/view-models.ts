import type { Event, ServiceHealthPayload } from "../state/events/index.js";
import { type KVRow, SortedMap } from "../state/index.js";

/*
 * What the HTTP views fold change events into. They mirror the SDK's view models
 * (src/client/view-models.ts: KVModel, ServiceHealthModel) over the server's own rows, so
 * that responses are built from Consul-shaped rows without a round trip through the wire
 * types. Both keep a SortedMap, so rendering walks entries in order without sorting.
 */

/** Folds the events of one topic; a stream of another topic's events is a bug. */
export interface ViewModel {
  apply(event: Event): void;
}

/** KV entries by key. */
export class KvViewModel implements ViewModel {
  entries: SortedMap<KVRow> = SortedMap.empty();

  apply(e: Event): void {
    if (e.topic !== "KV") throw new TypeError(`a ${e.topic} event on a KV view`);
    const { op, entry } = e.payload;
    this.entries = op === "set" ? this.entries.set(entry.Key, entry) : this.entries.delete(entry.Key);
  }
}

/** Instances of one service (Consul's CheckServiceNode), by node then service ID. */
export class ServiceHealthViewModel implements ViewModel {
  instances: SortedMap<ServiceHealthPayload> = SortedMap.empty();

  apply(e: Event): void {
    if (e.topic !== "ServiceHealth") throw new TypeError(`a ${e.topic} event on a ServiceHealth view`);
    const p = e.payload;
    const key = `${p.service.Node}\u0000${p.service.ID}`;
    this.instances = p.op === "register" ? this.instances.set(key, p) : this.instances.delete(key);
  }
}
