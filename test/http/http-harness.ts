import Consul from "consul";
import pino from "pino";
import { afterEach } from "vitest";
import { DEFAULTS, type ServerConfig, SluiceServer } from "../../src/server/index.js";

/*
 * Real Sluice servers for the HTTP API tests (in memory, gRPC and HTTP on ephemeral loopback
 * ports), plain-fetch helpers, and the real Consul client from npm pointed at them. Every
 * server and client a test starts is stopped after it.
 */

const silent = pino({ level: "silent" });
const servers: SluiceServer[] = [];
const clients: Consul[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

export async function startServer(overrides: Partial<ServerConfig> = {}): Promise<HttpApi> {
  const server = await SluiceServer.start(
    { ...DEFAULTS, dev: true, grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", ...overrides },
    silent,
  );
  servers.push(server);
  return new HttpApi(server);
}

/** An ACL-enforcing server (default deny) with its bootstrap management token. */
export async function startAclServer(): Promise<{ api: HttpApi; root: string }> {
  const api = await startServer({ aclEnabled: true, aclDefaultPolicy: "deny" });
  const r = await api.fetch("PUT", "/v1/acl/bootstrap");
  if (r.status !== 200) throw new Error(`bootstrap failed: ${r.status} ${await r.text()}`);
  const { SecretID } = (await r.json()) as { SecretID: string };
  return { api, root: SecretID };
}

export interface Answer<T = unknown> {
  readonly status: number;
  readonly index: number;
  readonly headers: Headers;
  readonly body: T;
  readonly ms: number;
}

export class HttpApi {
  readonly base: string;

  constructor(readonly server: SluiceServer) {
    this.base = `http://127.0.0.1:${server.httpPort}`;
  }

  /** A Consul client from npm on this server (destroyed after the test). */
  consul(token?: string): Consul {
    const c = new Consul({
      host: "127.0.0.1",
      port: this.server.httpPort,
      ...(token ? { defaults: { token } } : {}),
    });
    clients.push(c);
    return c;
  }

  fetch(
    method: string,
    path: string,
    opts: {
      body?: string | Buffer;
      token?: string;
      headers?: Record<string, string>;
      signal?: AbortSignal;
    } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.token) headers["X-Consul-Token"] = opts.token;
    return fetch(this.base + path, {
      method,
      headers,
      ...(opts.body !== undefined
        ? { body: typeof opts.body === "string" ? opts.body : new Uint8Array(opts.body) }
        : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  }

  /** A request whose answer is read as JSON (or text when it is not JSON), timed. */
  async call<T = unknown>(
    method: string,
    path: string,
    opts: { body?: string | Buffer | object; token?: string; headers?: Record<string, string> } = {},
  ): Promise<Answer<T>> {
    const started = performance.now();
    const body =
      opts.body === undefined || typeof opts.body === "string" || Buffer.isBuffer(opts.body)
        ? opts.body
        : JSON.stringify(opts.body);
    const r = await this.fetch(method, path, { ...opts, body });
    const text = await r.text();
    let parsed: unknown = text;
    if ((r.headers.get("content-type") ?? "").startsWith("application/json")) parsed = JSON.parse(text);
    return {
      status: r.status,
      index: Number(r.headers.get("x-consul-index") ?? 0),
      headers: r.headers,
      body: parsed as T,
      ms: performance.now() - started,
    };
  }

  get<T = unknown>(path: string, token?: string): Promise<Answer<T>> {
    return this.call<T>("GET", path, token ? { token } : {});
  }

  put<T = unknown>(path: string, body?: string | object, token?: string): Promise<Answer<T>> {
    return this.call<T>("PUT", path, {
      ...(body !== undefined ? { body } : {}),
      ...(token ? { token } : {}),
    });
  }

  /** Registers one instance of `service` on `node` with one service check. */
  register(
    node: string,
    service: string,
    opts: { id?: string; status?: string; tags?: string[]; port?: number; token?: string } = {},
  ): Promise<Answer<boolean>> {
    const id = opts.id ?? service;
    return this.put<boolean>(
      "/v1/catalog/register",
      {
        Node: node,
        Address: "10.0.0.1",
        Service: { ID: id, Service: service, Tags: opts.tags ?? [], Port: opts.port ?? 80 },
        Check: {
          CheckID: `${id}-check`,
          Name: `${id} check`,
          Status: opts.status ?? "passing",
          ServiceID: id,
        },
      },
      opts.token,
    );
  }
}

/** Waits (polling) for a condition that a background activity makes true. */
export async function eventually<T>(f: () => T | undefined | false, ms = 5_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}
