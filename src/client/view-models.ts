import { ProtocolError } from "./errors.js";
import { type KVEntry, type ServiceInstance, type StreamEvent, Topic } from "./types.js";

/** The state a materialized view folds events into, and the value it shows. */
export interface ViewModel<V> {
  apply(event: StreamEvent): void;
  /** A fresh value, not shared with the model (the model goes on changing). */
  result(): V;
}

const byKey = <T>(a: [string, T], b: [string, T]): number => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/** KV entries by key. */
export class KVModel implements ViewModel<ReadonlyMap<string, KVEntry>> {
  private readonly entries = new Map<string, KVEntry>();

  apply(e: StreamEvent): void {
    if (e.topic !== Topic.KV) throw new ProtocolError(`a ${e.topic} event on a KV stream`);
    const { op, entry } = e.payload;
    if (op === "set") this.entries.set(entry.key, entry);
    else this.entries.delete(entry.key);
  }

  /** Entries in key order. */
  result(): ReadonlyMap<string, KVEntry> {
    return new Map([...this.entries].sort(byKey));
  }
}

export interface ServiceFilter {
  readonly passingOnly?: boolean;
  readonly tag?: string;
}

/** Instances of one service by node and service id, filtered when shown (Consul's health view). */
export class ServiceHealthModel implements ViewModel<readonly ServiceInstance[]> {
  private readonly instances = new Map<string, ServiceInstance>();

  constructor(private readonly filter: ServiceFilter = {}) {}

  apply(e: StreamEvent): void {
    if (e.topic !== Topic.ServiceHealth)
      throw new ProtocolError(`a ${e.topic} event on a ServiceHealth stream`);
    const { op, node, service, checks } = e.payload;
    const key = `${service.node}\u0000${service.id}`;
    if (op === "register") this.instances.set(key, { node, service, checks });
    else this.instances.delete(key);
  }

  /** Matching instances, by node name then service id. */
  result(): readonly ServiceInstance[] {
    const { passingOnly, tag } = this.filter;
    const out: [string, ServiceInstance][] = [];
    for (const entry of this.instances) {
      const inst = entry[1];
      if (tag && !inst.service.tags.includes(tag)) continue;
      if (passingOnly && inst.checks.some((c) => c.status !== "passing")) continue;
      out.push(entry);
    }
    return out.sort(byKey).map(([, inst]) => inst);
  }
}
