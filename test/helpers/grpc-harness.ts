import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import pino from "pino";
import { onTestFinished } from "vitest";
import type { ACLClient } from "../../src/generated/sluice/v1/ACL.js";
import type { CatalogClient } from "../../src/generated/sluice/v1/Catalog.js";
import type { Event__Output } from "../../src/generated/sluice/v1/Event.js";
import type { KVClient } from "../../src/generated/sluice/v1/KV.js";
import type { PolicyResponse__Output } from "../../src/generated/sluice/v1/PolicyResponse.js";
import type { RegisterRequest } from "../../src/generated/sluice/v1/RegisterRequest.js";
import type { StateChangeSubscriptionClient } from "../../src/generated/sluice/v1/StateChangeSubscription.js";
import type { SubscribeRequest } from "../../src/generated/sluice/v1/SubscribeRequest.js";
import type { TokenResponse__Output } from "../../src/generated/sluice/v1/TokenResponse.js";
import { sluiceV1 } from "../../src/proto/index.js";
import { DEFAULTS, type ServerConfig, SluiceServer } from "../../src/server/index.js";

/*
 * End-to-end fixtures for the gRPC server: real servers on loopback ephemeral ports, raw
 * grpc-js clients built from the .proto definitions (one TCP connection per `Conn`), a
 * recorder for Subscribe streams, and teardown through vitest's onTestFinished.
 */

const silent = pino({ level: process.env.SLUICE_TEST_LOG ?? "silent" });

/** Test defaults: in memory, ephemeral port, fast progress, short grace. */
export const TEST_CONFIG: ServerConfig = {
  ...DEFAULTS,
  dev: true,
  grpcAddr: "127.0.0.1:0",
  httpAddr: "127.0.0.1:0",
  progressIntervalMs: 100,
  shutdownGraceMs: 2000,
  logLevel: "error",
};

/** Every client gets its own connection: subchannels are not shared between test clients. */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.use_local_subchannel_pool": 1,
  "grpc.initial_reconnect_backoff_ms": 50,
  "grpc.max_reconnect_backoff_ms": 200,
};

export const metadataFor = (token?: string): grpc.Metadata => {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set("x-sluice-token", token);
  return md;
};

/** The `x-sluice-error` trailer (the server-side error's class name) of a status or error. */
export function errorClass(s: { metadata?: grpc.Metadata | null } | undefined): string | undefined {
  const v = s?.metadata?.get("x-sluice-error")[0];
  return typeof v === "string" ? v : undefined;
}

/** Resolves with the gRPC error a call fails with; throws if it succeeds. */
export async function grpcError(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error("expected the call to fail, but it succeeded");
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

const opName = (op: string, prefix: string): string => op.replace(prefix, "").toLowerCase();

/**
 * One decoded wire message as compact text:
 * `EOS@5`, `NST`, `P@7`, `kv set a=1@3`, `kv delete a@4`, `sh register n1/web c1=passing@6`,
 * `sl register web@6`, and a batch as `B@9[...]`.
 */
export function render(e: Event__Output): string {
  switch (e.payload) {
    case "end_of_snapshot":
      return `EOS@${e.index}`;
    case "new_snapshot_to_follow":
      return "NST";
    case "progress":
      return `P@${e.index}`;
    case "batch":
      return `B@${e.index}[${(e.batch?.events ?? []).map(render).join(" | ")}]`;
    case "kv": {
      const op = opName(String(e.kv?.op), "KV_OP_");
      const entry = e.kv?.entry;
      const value = op === "set" ? `=${Buffer.from(entry?.value ?? []).toString("utf8")}` : "";
      return `kv ${op} ${entry?.key}${value}@${e.index}`;
    }
    case "service_health": {
      const u = e.service_health;
      const checks = (u?.checks ?? []).map((c) => `${c.check_id}=${c.status}`).join(",");
      return `sh ${opName(String(u?.op), "UPDATE_OP_")} ${u?.node?.node}/${u?.service?.id} ${checks}@${e.index}`;
    }
    case "service_list":
      return `sl ${opName(String(e.service_list?.op), "UPDATE_OP_")} ${e.service_list?.name}@${e.index}`;
    default:
      return `?${String(e.payload)}`;
  }
}

/** Markers and leaf events, with batches expanded into their events. */
export function flatten(messages: readonly Event__Output[]): string[] {
  return messages.flatMap((m) => (m.payload === "batch" ? (m.batch?.events ?? []).map(render) : [render(m)]));
}

/** Records one Subscribe call: every decoded message, and the final status with its trailers. */
export class Watch {
  readonly messages: Event__Output[] = [];
  status: grpc.StatusObject | undefined;
  readonly ended: Promise<grpc.StatusObject>;
  private readonly waiters = new Set<() => void>();

  constructor(readonly call: grpc.ClientReadableStream<Event__Output>) {
    call.on("data", (m: Event__Output) => {
      this.messages.push(m);
      this.notify();
    });
    // The status event carries the same information; without a listener 'error' would throw.
    call.on("error", () => {});
    this.ended = new Promise((resolve) => {
      call.on("status", (s: grpc.StatusObject) => {
        this.status = s;
        resolve(s);
        this.notify();
      });
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Messages as text, one per wire message (batches kept whole). */
  get frames(): string[] {
    return this.messages.map(render);
  }

  /** Markers and events with batches expanded. */
  get lines(): string[] {
    return flatten(this.messages);
  }

  /** Lines without progress markers (whose timing is not deterministic). */
  get changes(): string[] {
    return this.lines.filter((l) => !l.startsWith("P@"));
  }

  /** The resume index: the index of the last message that carries one (not NewSnapshotToFollow). */
  get lastIndex(): number {
    for (let i = this.messages.length - 1; i >= 0; i--) {
      const m = this.messages[i]!;
      if (m.payload !== "new_snapshot_to_follow") return m.index;
    }
    return 0;
  }

  /** Waits until `pred` holds; fails after `ms` or when the stream ends first. */
  until(pred: (w: Watch) => boolean, what: string, ms = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (pred(this)) finish();
        else if (this.status)
          finish(
            new Error(
              `stream ended (${grpc.status[this.status.code]}: ${this.status.details}) before ${what}; got ${JSON.stringify(this.frames)}`,
            ),
          );
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.frames)}`)),
        ms,
      );
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Waits for the end-of-snapshot marker. */
  snapshotDone(ms = 5000): Promise<void> {
    return this.until((w) => w.messages.some((m) => m.payload === "end_of_snapshot"), "end of snapshot", ms);
  }

  /** Waits until at least `n` change lines (non-progress) arrived. */
  changeCount(n: number, ms = 5000): Promise<void> {
    return this.until((w) => w.changes.length >= n, `${n} change lines`, ms);
  }

  /** Waits for the stream to end and returns its status. */
  end(ms = 5000): Promise<grpc.StatusObject> {
    return withTimeout(this.ended, ms, "the stream to end");
  }

  cancel(): void {
    this.call.cancel();
  }
}

/** Resolves a unary callback into a promise. */
function done<T>(resolve: (v: T) => void, reject: (e: unknown) => void): grpc.requestCallback<T> {
  return (err, res) => (err ? reject(err) : resolve(res as T));
}

export interface PutOptions {
  readonly flags?: number;
  readonly cas?: number;
  readonly token?: string;
}

/** One client connection with the four sluice.v1 services on it. */
export class Conn {
  readonly channel: grpc.Channel;
  readonly stream: StateChangeSubscriptionClient;
  readonly kv: KVClient;
  readonly catalog: CatalogClient;
  readonly acl: ACLClient;
  private closed = false;

  constructor(
    readonly address: string,
    /** Default token for every call of this connection. */
    readonly token?: string,
  ) {
    const creds = grpc.credentials.createInsecure();
    this.stream = new sluiceV1.StateChangeSubscription(address, creds, CHANNEL_OPTIONS);
    this.channel = this.stream.getChannel() as grpc.Channel;
    const shared = { ...CHANNEL_OPTIONS, channelOverride: this.channel };
    this.kv = new sluiceV1.KV(address, creds, shared);
    this.catalog = new sluiceV1.Catalog(address, creds, shared);
    this.acl = new sluiceV1.ACL(address, creds, shared);
  }

  private md(token?: string): grpc.Metadata {
    return metadataFor(token ?? this.token);
  }

  subscribe(req: SubscribeRequest, token?: string): Watch {
    return new Watch(this.stream.Subscribe(req, this.md(token)));
  }

  put(key: string, value: string, o: PutOptions = {}): Promise<number> {
    return new Promise<{ index: number }>((resolve, reject) =>
      this.kv.Put(
        {
          key,
          value: Buffer.from(value),
          flags: o.flags ?? 0,
          ...(o.cas !== undefined ? { cas: o.cas } : {}),
        },
        this.md(o.token),
        done(resolve, reject),
      ),
    ).then((r) => r.index);
  }

  delete(key: string, o: { recurse?: boolean; cas?: number; token?: string } = {}): Promise<number> {
    return new Promise<{ index: number }>((resolve, reject) =>
      this.kv.Delete(
        { key, recurse: o.recurse ?? false, ...(o.cas !== undefined ? { cas: o.cas } : {}) },
        this.md(o.token),
        done(resolve, reject),
      ),
    ).then((r) => r.index);
  }

  register(req: RegisterRequest, token?: string): Promise<number> {
    return new Promise<{ index: number }>((resolve, reject) =>
      this.catalog.Register(req, this.md(token), done(resolve, reject)),
    ).then((r) => r.index);
  }

  updateCheck(node: string, checkId: string, status: string, token?: string): Promise<number> {
    return new Promise<{ index: number }>((resolve, reject) =>
      this.catalog.UpdateCheck(
        { node, check_id: checkId, status, output: "" },
        this.md(token),
        done(resolve, reject),
      ),
    ).then((r) => r.index);
  }

  bootstrap(): Promise<TokenResponse__Output> {
    return new Promise((resolve, reject) =>
      this.acl.Bootstrap({}, new grpc.Metadata(), done(resolve, reject)),
    );
  }

  /** Creates a policy, or replaces the one with `id`; resolves with the policy's id. */
  upsertPolicy(name: string, rules: string, o: { id?: string; token?: string } = {}): Promise<string> {
    return new Promise<PolicyResponse__Output>((resolve, reject) =>
      this.acl.UpsertPolicy({ id: o.id ?? "", name, rules }, this.md(o.token), done(resolve, reject)),
    ).then((r) => r.policy!.id);
  }

  upsertToken(
    policyNames: readonly string[],
    o: { token?: string; expirationTtlMs?: number } = {},
  ): Promise<TokenResponse__Output> {
    return new Promise((resolve, reject) =>
      this.acl.UpsertToken(
        {
          description: "test token",
          policies: policyNames.map((name) => ({ name })),
          expiration_ttl_ms: o.expirationTtlMs ?? 0,
        },
        this.md(o.token),
        done(resolve, reject),
      ),
    );
  }

  deleteToken(accessorId: string, token?: string): Promise<number> {
    return new Promise<{ index: number }>((resolve, reject) =>
      this.acl.DeleteToken({ id: accessorId }, this.md(token), done(resolve, reject)),
    ).then((r) => r.index);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream.close();
  }
}

/** A token made for a test: its secret (for calls) and accessor (for deletion). */
export interface TestToken {
  readonly secret: string;
  readonly accessor: string;
  /** The token's one policy, made for it. */
  readonly policyId: string;
  readonly policyName: string;
}

/**
 * A running server with the connections a test opened to it; everything is torn down when
 * the test finishes. `restart()` stops the server and starts it again on the same port and
 * data dir.
 */
export class Harness {
  private readonly conns = new Set<Conn>();
  private tempDir: string | undefined;
  /** The management token, once {@link bootstrapAcl} ran. */
  management: string | undefined;
  private policySeq = 0;

  private constructor(
    public server: SluiceServer,
    public config: ServerConfig,
  ) {}

  static async start(
    overrides: Partial<ServerConfig> = {},
    opts: { persistent?: boolean } = {},
  ): Promise<Harness> {
    let config: ServerConfig = { ...TEST_CONFIG, ...overrides };
    let tempDir: string | undefined;
    if (opts.persistent) {
      tempDir = mkdtempSync(join(tmpdir(), "sluice-grpc-test-"));
      config = { ...config, dev: false, dataDir: tempDir, fsync: "never" };
    }
    const server = await SluiceServer.start(config, silent);
    const h = new Harness(server, config);
    h.tempDir = tempDir;
    onTestFinished(() => h.close());
    return h;
  }

  get port(): number {
    return this.server.grpcPort;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** A new connection (its own TCP connection) to the server, or to `address`. */
  connect(token?: string, address = this.address): Conn {
    const c = new Conn(address, token);
    this.conns.add(c);
    return c;
  }

  /** Stops the server gracefully and starts a new one on the same port and data dir. */
  async restart(): Promise<void> {
    const port = this.port;
    await this.server.stop();
    this.config = { ...this.config, grpcAddr: `127.0.0.1:${port}` };
    this.server = await SluiceServer.start(this.config, silent);
  }

  /** Bootstraps ACLs over gRPC; the management token is then the default for {@link tokenWithRules}. */
  async bootstrapAcl(): Promise<string> {
    const c = this.connect();
    const r = await c.bootstrap();
    this.management = r.token!.secret_id;
    return this.management;
  }

  /** Creates a policy with `rules` and a token holding it, over gRPC with the management token. */
  async tokenWithRules(rules: string, o: { expirationTtlMs?: number } = {}): Promise<TestToken> {
    const c = this.connect(this.management);
    const policyName = `policy-${++this.policySeq}`;
    const policyId = await c.upsertPolicy(policyName, rules);
    const t = await c.upsertToken([policyName], o);
    return { secret: t.token!.secret_id, accessor: t.token!.accessor_id, policyId, policyName };
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.close();
    this.conns.clear();
    await this.server.stop();
    if (this.tempDir) rmSync(this.tempDir, { recursive: true, force: true });
  }
}
