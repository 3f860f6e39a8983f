import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type KVEntry,
  type MaterializedView,
  type ServiceInstance,
  SluiceClient,
} from "../../src/client/index.js";
import { assertReplayable, replayConfig } from "../helpers/fc-replay.js";
import { RestartableServer } from "../helpers/sluice-server.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

/*
 * Model-based property over real gRPC: random KV and catalog writes interleaved with random
 * connection cuts, blocked reconnects and graceful server restarts on the same data dir and
 * port. Whenever the system settles, the SDK's views equal the server's state and the
 * model's, and no change was ever applied twice.
 *
 * SLUICE_FC_RUNS / SLUICE_FC_SEED / SLUICE_FC_PATH replay a run (test/helpers/fc-replay.ts).
 */

const PREFIX = "p/";
const KEYS = ["p/a", "p/b", "p/c/1", "p/c/2", "q/x"] as const;
const NODES = ["n1", "n2", "n3"] as const;
const MAX_RESTARTS = 3;

interface Model {
  readonly kv: Map<string, string>;
  /** Node → health of its "web" instance. */
  readonly web: Map<string, string>;
  restarts: number;
  blocked: boolean;
}

interface Real {
  readonly srv: RestartableServer;
  readonly proxy: TcpProxy;
  readonly writer: SluiceClient;
  readonly kvView: MaterializedView<ReadonlyMap<string, KVEntry>>;
  readonly webView: MaterializedView<readonly ServiceInstance[]>;
  sentinel: number;
}

type Cmd = fc.AsyncCommand<Model, Real>;

class Put implements Cmd {
  constructor(
    readonly key: string,
    readonly value: string,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    await r.writer.kvStore.put(this.key, this.value);
    m.kv.set(this.key, this.value);
  }
  toString = () => `put(${this.key}=${this.value})`;
}

class Delete implements Cmd {
  constructor(
    readonly key: string,
    readonly recurse: boolean,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    await r.writer.kvStore.delete(this.key, { recurse: this.recurse });
    for (const k of [...m.kv.keys()])
      if (this.recurse ? k.startsWith(this.key) : k === this.key) m.kv.delete(k);
  }
  toString = () => `delete(${this.key}${this.recurse ? ", recurse" : ""})`;
}

class Register implements Cmd {
  constructor(
    readonly node: string,
    readonly status: string,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    await r.writer.catalog.register({
      node: { node: this.node, address: `10.1.0.${this.node.slice(1)}` },
      service: { service: "web", id: "web", port: 80 },
      checks: [{ check_id: "alive", status: this.status }],
    });
    m.web.set(this.node, this.status);
  }
  toString = () => `register(${this.node}, ${this.status})`;
}

class Deregister implements Cmd {
  constructor(readonly node: string) {}
  check = (m: Readonly<Model>) => m.web.has(this.node);
  async run(m: Model, r: Real): Promise<void> {
    await r.writer.catalog.deregister({ node: this.node });
    m.web.delete(this.node);
  }
  toString = () => `deregister(${this.node})`;
}

/** Several KV writes in a row: enough, while a view is away, to push it off a short history. */
class Burst implements Cmd {
  constructor(readonly ops: readonly (readonly [string, string | null])[]) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    for (const [key, value] of this.ops) {
      if (value === null) {
        await r.writer.kvStore.delete(key);
        m.kv.delete(key);
      } else {
        await r.writer.kvStore.put(key, value);
        m.kv.set(key, value);
      }
    }
  }
  toString = () => `burst(${this.ops.map(([k, v]) => (v === null ? `-${k}` : `${k}=${v}`)).join(" ")})`;
}

/** The views' connections are down (refused) while a burst of writes goes by. */
class Outage implements Cmd {
  constructor(readonly burst: Burst) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    r.proxy.block();
    await this.burst.run(m, r);
    r.proxy.unblock();
    m.blocked = false;
  }
  toString = () => `outage(${this.burst})`;
}

/** Destroys the view client's connections; it reconnects at once. */
class Cut implements Cmd {
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    r.proxy.cut();
  }
  toString = () => "cut";
}

/** Cuts and refuses reconnects until Unblock (or the next settle). */
class Block implements Cmd {
  check = (m: Readonly<Model>) => !m.blocked;
  async run(m: Model, r: Real): Promise<void> {
    r.proxy.block();
    m.blocked = true;
  }
  toString = () => "block";
}

class Unblock implements Cmd {
  check = (m: Readonly<Model>) => m.blocked;
  async run(m: Model, r: Real): Promise<void> {
    r.proxy.unblock();
    m.blocked = false;
  }
  toString = () => "unblock";
}

/** Graceful stop (streams end with UNAVAILABLE) and start on the same data dir and port. */
class Restart implements Cmd {
  check = (m: Readonly<Model>) => m.restarts < MAX_RESTARTS;
  async run(m: Model, r: Real): Promise<void> {
    await r.srv.restart();
    r.proxy.retarget(r.srv.port);
    m.restarts++;
  }
  toString = () => "restart";
}

/** Lets the views catch up (sentinel writes) and compares them with the server and the model. */
class Settle implements Cmd {
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    r.proxy.unblock();
    m.blocked = false;
    const key = `${PREFIX}zz-sentinel`;
    const value = String(++r.sentinel);
    const kvAt = await r.writer.kvStore.put(key, value);
    m.kv.set(key, value);
    const kvState = await r.kvView.waitForIndexAbove(kvAt - 1, { timeout: 15_000 });
    expect(kvState.index).toBeGreaterThanOrEqual(kvAt);
    const server = await r.writer.kvStore.list(PREFIX);
    expect(server.index).toBe(kvState.index);
    const rows = (es: Iterable<KVEntry>) =>
      [...es].map((e) => [e.key, Buffer.from(e.value).toString(), e.modify_index]);
    expect(rows(kvState.value.values())).toEqual(rows(server.entries));
    expect(new Map([...kvState.value].map(([k, e]) => [k, Buffer.from(e.value).toString()]))).toEqual(
      new Map([...m.kv].filter(([k]) => k.startsWith(PREFIX)).sort(([a], [b]) => (a < b ? -1 : 1))),
    );

    // The web view settles on a catalog write: a node without the service would not reach it.
    const webAt = await r.writer.catalog.register({
      node: { node: "sentinel", address: "10.9.9.9" },
      service: { service: "web", id: "web", port: 80, tags: [value] },
    });
    const webState = await r.webView.waitForIndexAbove(webAt - 1, { timeout: 15_000 });
    expect(webState.index).toBeGreaterThanOrEqual(webAt);
    const health = await r.writer.catalog.serviceHealth("web");
    const inst = (is: readonly ServiceInstance[]) =>
      is.map((i) => [i.node.node, i.service.tags, i.checks.map((c) => c.status), i.service.modify_index]);
    expect(inst(webState.value)).toEqual(inst(health.instances));
    expect(
      webState.value.filter((i) => i.node.node !== "sentinel").map((i) => [i.node.node, i.checks[0]?.status]),
    ).toEqual([...m.web].sort(([a], [b]) => (a < b ? -1 : 1)));

    for (const v of [r.kvView, r.webView]) expect(v.stats.duplicatesSkipped).toBe(0);
  }
  toString = () => "settle";
}

const burst = fc
  .array(fc.tuple(fc.constantFrom(...KEYS), fc.option(fc.string({ maxLength: 3 }), { nil: null })), {
    minLength: 5,
    maxLength: 12,
  })
  .map((ops) => new Burst(ops));

const commands = [
  fc
    .tuple(fc.constantFrom(...KEYS), fc.string({ minLength: 0, maxLength: 4 }))
    .map(([k, v]) => new Put(k, v)),
  fc.constantFrom(...KEYS).map((k) => new Delete(k, false)),
  fc.constant(new Delete("p/c/", true)),
  fc
    .tuple(fc.constantFrom(...NODES), fc.constantFrom("passing", "critical", "warning"))
    .map(([n, s]) => new Register(n, s)),
  fc.constantFrom(...NODES).map((n) => new Deregister(n)),
  burst.map((b) => b),
  burst.map((b) => new Outage(b)),
  fc.constant(new Cut()),
  fc.constant(new Block()),
  fc.constant(new Unblock()),
  fc.constant(new Restart()),
  fc.constant(new Settle()),
];

async function runScenario(history: number, cmds: Iterable<Cmd>): Promise<void> {
  const srv = await RestartableServer.start({ historyMaxEvents: history });
  const proxy = await TcpProxy.start(srv.port);
  const writer = new SluiceClient({ address: srv.address, waitForReady: true });
  const viewer = new SluiceClient({
    address: proxy.address,
    backoff: { initialMs: 20, maxMs: 200 },
    channelOptions: { "grpc.max_reconnect_backoff_ms": 200 },
  });
  try {
    const real: Real = {
      srv,
      proxy,
      writer,
      kvView: viewer.kv(PREFIX),
      webView: viewer.serviceHealth("web"),
      sentinel: 0,
    };
    // Start from views that hold a state, so that every cut interrupts a live stream.
    await real.kvView.waitForIndexAbove(0, { timeout: 10_000 });
    await real.webView.waitForIndexAbove(0, { timeout: 10_000 });
    const model: Model = { kv: new Map(), web: new Map(), restarts: 0, blocked: false };
    await fc.asyncModelRun(() => ({ model, real }), [...cmds, new Settle()]);
  } finally {
    viewer.close();
    writer.close();
    await proxy.close();
    await srv.destroy();
  }
}

describe("views under random writes, cuts and restarts (model-based, real gRPC)", () => {
  it("equal the server's state whenever the system settles", { timeout: 60_000 }, async () => {
    const cfg = replayConfig(25);
    await assertReplayable(
      "client views",
      fc.asyncProperty(
        // A short history makes some resumes fall off it and rebuild from a snapshot.
        fc.constantFrom(4, 100_000),
        fc.commands(commands, { maxCommands: 30 }),
        (history, cmds) => runScenario(history, cmds),
      ),
      cfg,
    );
  });
});
