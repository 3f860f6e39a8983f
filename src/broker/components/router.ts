import { type ComponentRef, type Envelope, expired, Kind, refKey } from "./envelope.js";

/** A connected replica as the router sees it. */
export interface Replica {
  readonly ref: ComponentRef;
  /** Requests it takes at once. */
  readonly concurrency: number;
  /** Hands an envelope to the replica's connection. */
  deliver(e: Envelope): void;
}

/** Where a request came from, so its response (or the broker's error) finds the way back. */
export interface Origin {
  /** The broker that holds the sender: this one (undefined) or another one's id. */
  readonly broker: string | undefined;
  readonly source: ComponentRef;
}

interface InFlight {
  readonly replica: Replica;
  readonly request: Envelope;
  readonly origin: Origin;
  /** Frees the replica's slot at the request's deadline. */
  readonly timer: NodeJS.Timeout;
}

interface Queued {
  readonly env: Envelope;
  readonly origin: Origin;
}

interface Group {
  readonly replicas: Replica[];
  readonly queue: Queued[];
}

/** What became of an envelope handed to {@link ComponentRouter.route}. */
export type Routed =
  | { readonly to: "replica"; readonly replica: Replica }
  | { readonly to: "queued" }
  | { readonly to: "nowhere" };

/**
 * The broker's local routing state: replicas by identity and by group, requests in flight
 * per replica, and a queue per group for work no replica is free to take.
 *
 * Work stealing: a request for a group goes to the first replica with a free slot (fewest
 * requests in flight, below its concurrency); when all are busy it waits in the group's
 * queue and the first replica to finish one takes it. A slow replica therefore never holds
 * more than its concurrency, and an idle one never waits while work is queued. A request
 * stops holding its slot at its deadline (its sender has had DEADLINE_EXCEEDED by then), so
 * a replica that drops requests does not stop taking work.
 */
export class ComponentRouter {
  private readonly byId = new Map<string, Replica>();
  private readonly groups = new Map<string, Group>();
  private readonly inflight = new Map<string, InFlight>();
  private readonly load = new Map<Replica, number>();
  /** Expired envelopes dropped from queues (counted by the broker). */
  droppedExpired = 0;

  /** `now`: wall clock in ms since the epoch (deadlines are absolute). */
  constructor(private readonly now: () => number = Date.now) {}

  /** Adds a replica; false when its identity is already connected. */
  add(r: Replica): boolean {
    const key = refKey(r.ref);
    if (this.byId.has(key)) return false;
    this.byId.set(key, r);
    this.load.set(r, 0);
    let g = this.groups.get(r.ref.name);
    if (!g) {
      g = { replicas: [], queue: [] };
      this.groups.set(r.ref.name, g);
    }
    g.replicas.push(r);
    return true;
  }

  /**
   * Removes a replica. Returns the requests it had in flight (their senders get errors) and,
   * when it was its group's last replica, the group's queued work (likewise).
   */
  remove(r: Replica): { inflight: InFlight[]; orphaned: Queued[] } {
    const key = refKey(r.ref);
    if (this.byId.get(key) !== r) return { inflight: [], orphaned: [] };
    this.byId.delete(key);
    this.load.delete(r);
    const inflight: InFlight[] = [];
    for (const [id, f] of this.inflight) {
      if (f.replica === r) {
        clearTimeout(f.timer);
        inflight.push(f);
        this.inflight.delete(id);
      }
    }
    const g = this.groups.get(r.ref.name);
    let orphaned: Queued[] = [];
    if (g) {
      g.replicas.splice(g.replicas.indexOf(r), 1);
      if (g.replicas.length === 0) {
        orphaned = g.queue.splice(0);
        this.groups.delete(r.ref.name);
      }
    }
    return { inflight, orphaned };
  }

  /** Whether a replica of `name` (with `id`, when given) is connected here. */
  has(target: ComponentRef): boolean {
    return target.id
      ? this.byId.has(refKey(target))
      : (this.groups.get(target.name)?.replicas.length ?? 0) > 0;
  }

  /** Every replica connected here. */
  replicas(): Replica[] {
    return [...this.byId.values()];
  }

  /** Routes an event or request to a local replica (or the group's queue); `nowhere` if none is here. */
  route(env: Envelope, origin: Origin, nowMs: number): Routed {
    if (env.target?.id) {
      const r = this.byId.get(refKey(env.target));
      if (!r) return { to: "nowhere" };
      this.hand(r, env, origin);
      return { to: "replica", replica: r };
    }
    const g = this.groups.get(env.target?.name ?? "");
    if (!g || g.replicas.length === 0) return { to: "nowhere" };
    const r = this.free(g);
    if (!r) {
      g.queue.push({ env, origin });
      return { to: "queued" };
    }
    this.dispatchQueued(g, nowMs);
    const again = this.free(g);
    if (!again) {
      g.queue.push({ env, origin });
      return { to: "queued" };
    }
    this.hand(again, env, origin);
    return { to: "replica", replica: again };
  }

  /**
   * A replica answered `parentId`: the request leaves its slot, queued work moves up, and the
   * request's origin is returned (undefined if nothing here was waiting for that answer).
   */
  answered(parentId: string, from: Replica, nowMs: number): Origin | undefined {
    const f = this.inflight.get(parentId);
    if (!f || f.replica !== from) return undefined;
    this.release(parentId, f, nowMs);
    return f.origin;
  }

  /** A request leaves its replica's slot (answered, or past its deadline); queued work moves up. */
  private release(id: string, f: InFlight, nowMs: number): void {
    clearTimeout(f.timer);
    this.inflight.delete(id);
    this.load.set(f.replica, Math.max(0, (this.load.get(f.replica) ?? 1) - 1));
    const g = this.groups.get(f.replica.ref.name);
    if (g) this.dispatchQueued(g, nowMs);
  }

  private free(g: Group): Replica | undefined {
    let best: Replica | undefined;
    let bestLoad = Number.POSITIVE_INFINITY;
    for (const r of g.replicas) {
      const l = this.load.get(r) ?? 0;
      if (l < r.concurrency && l < bestLoad) {
        best = r;
        bestLoad = l;
      }
    }
    return best;
  }

  private dispatchQueued(g: Group, nowMs: number): void {
    while (g.queue.length > 0) {
      const head = g.queue[0]!;
      if (expired(head.env, nowMs)) {
        g.queue.shift();
        this.droppedExpired++;
        continue;
      }
      const r = this.free(g);
      if (!r) return;
      g.queue.shift();
      this.hand(r, head.env, head.origin);
    }
  }

  private hand(r: Replica, env: Envelope, origin: Origin): void {
    if (env.kind === Kind.Request) {
      const timer = setTimeout(
        () => {
          const f = this.inflight.get(env.id);
          if (f?.timer === timer) this.release(env.id, f, this.now());
        },
        Math.max(0, env.deadline_ms - this.now()),
      );
      timer.unref();
      this.inflight.set(env.id, { replica: r, request: env, origin, timer });
      this.load.set(r, (this.load.get(r) ?? 0) + 1);
    }
    r.deliver(env);
  }
}
