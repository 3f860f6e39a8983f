import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { asSecretId, CasFailedError, SluiceClient, type SluiceError } from "../../src/client/index.js";
import type { SluiceServer } from "../../src/server/index.js";
import { startDevServer } from "../helpers/sluice-server.js";

/*
 * The built `sluice` binary (dist/cli/main.js) against real servers: client commands,
 * their output and exit codes (0 ok, 1 failed request with the server's message, 2 usage),
 * and `watch` printing lines as changes happen.
 */

const ROOT = resolve(import.meta.dirname, "../..");
const CLI = join(ROOT, "dist/cli/main.js");
const run = promisify(execFile);

interface Result {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Environment without the developer's SLUICE_* settings. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("SLUICE_")) env[k] = v;
  return { ...env, ...extra };
}

/** Runs the binary to completion (asynchronously: the server may live in this process). */
async function sluice(args: string[], env: Record<string, string> = {}): Promise<Result> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], {
      env: cleanEnv(env),
      timeout: 20_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof e.code !== "number") throw err;
    return { code: e.code, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

/** A long-running binary whose output is read line by line. */
class Running {
  private buffered = "";
  private readonly lines: string[] = [];
  private waiter: (() => void) | undefined;
  stderr = "";
  readonly exited: Promise<number>;

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      this.buffered += chunk;
      let nl = this.buffered.indexOf("\n");
      while (nl >= 0) {
        this.lines.push(this.buffered.slice(0, nl));
        this.buffered = this.buffered.slice(nl + 1);
        nl = this.buffered.indexOf("\n");
      }
      this.waiter?.();
    });
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      this.stderr += chunk;
      this.waiter?.();
    });
    this.exited = new Promise((res) => child.on("exit", (code, signal) => res(code ?? (signal ? 128 : -1))));
  }

  static start(args: string[], env: Record<string, string>): Running {
    const r = new Running(spawn(process.execPath, [CLI, ...args], { env: cleanEnv(env) }));
    running.push(r);
    return r;
  }

  /** The next stdout line, waiting up to `ms`. */
  async line(ms = 10_000): Promise<string> {
    const deadline = Date.now() + ms;
    while (this.lines.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no output line within ${ms} ms; stderr: ${this.stderr}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiter = () => {
          clearTimeout(t);
          res();
        };
      });
    }
    return this.lines.shift()!;
  }

  async json<T = Record<string, unknown>>(ms?: number): Promise<T> {
    return JSON.parse(await this.line(ms)) as T;
  }
}

const running: Running[] = [];
const servers: SluiceServer[] = [];
const clients: SluiceClient[] = [];
const tmp = mkdtempSync(join(tmpdir(), "sluice-cli-test-"));

async function server(
  overrides: Parameters<typeof startDevServer>[0] = {},
): Promise<{ addr: string; s: SluiceServer }> {
  const s = await startDevServer(overrides);
  servers.push(s);
  return { s, addr: `127.0.0.1:${s.grpcPort}` };
}

function sdk(address: string, token?: string): SluiceClient {
  const c = new SluiceClient({ address, ...(token ? { token } : {}) });
  clients.push(c);
  return c;
}

// The binary under test is the build output (codegen + tsc into dist/), made once by the
// test setup (test/global-setup.ts) before any file runs.

afterEach(async () => {
  for (const r of running.splice(0)) {
    if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill("SIGKILL");
  }
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.stop();
});

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("sluice kv", () => {
  it("put, get, list and delete, in text and JSON", async () => {
    const { addr } = await server();
    const env = { SLUICE_ADDR: addr };
    const put = await sluice(["kv", "put", "app/a", "hello world"], env);
    expect(put).toMatchObject({ code: 0, stderr: "" });
    expect(put.stdout).toMatch(/^Success! Data written to: app\/a \(index \d+\)\n$/);
    const putJson = await sluice(["kv", "put", "app/b", "two", "--flags", "7", "--json"], env);
    const { index } = JSON.parse(putJson.stdout) as { index: number };

    expect(await sluice(["kv", "get", "app/a"], env)).toMatchObject({ code: 0, stdout: "hello world\n" });
    const got = JSON.parse((await sluice(["kv", "get", "app/b", "--json"], env)).stdout);
    expect(got).toMatchObject({
      index,
      entry: { key: "app/b", value: "two", flags: 7, modify_index: index },
    });

    await sluice(["kv", "put", "other", "x"], env);
    expect((await sluice(["kv", "list", "app/"], env)).stdout).toBe("app/a:hello world\napp/b:two\n");
    expect((await sluice(["kv", "list", "app/", "--keys"], env)).stdout).toBe("app/a\napp/b\n");

    const del = await sluice(["kv", "delete", "app/a"], env);
    expect(del.code).toBe(0);
    const missing = await sluice(["kv", "get", "app/a"], env);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toBe("");
    expect(missing.stderr).toContain("app/a");

    await sluice(["kv", "put", "app/c/1", "x"], env);
    expect((await sluice(["kv", "delete", "app/", "--recurse"], env)).code).toBe(0);
    expect((await sluice(["kv", "list"], env)).stdout).toBe("other:x\n");
  });

  it("check-and-set: a lost CAS exits 1 with the server's message; a won one writes", async () => {
    const { addr } = await server();
    const env = { SLUICE_ADDR: addr };
    const { index } = JSON.parse((await sluice(["kv", "put", "k", "v1", "--json"], env)).stdout) as {
      index: number;
    };

    const lost = await sluice(["kv", "put", "k", "v2", "--cas", String(index + 5)], env);
    expect(lost.code).toBe(1);
    expect(lost.stdout).toBe("");
    // The same request through the SDK: the CLI prints the server's message and status.
    const err = (await sdk(addr)
      .kvStore.put("k", "v2", { cas: index + 5 })
      .catch((e: unknown) => e)) as SluiceError;
    expect(err).toBeInstanceOf(CasFailedError);
    expect(lost.stderr).toBe(`sluice: ${err.details} (FAILED_PRECONDITION)\n`);

    expect((await sluice(["kv", "put", "k", "v2", "--cas", "0"], env)).code).toBe(1);
    expect((await sluice(["kv", "put", "k", "v2", "--cas", String(index)], env)).code).toBe(0);
    expect((await sluice(["kv", "delete", "k", "--cas", String(index)], env)).code).toBe(1);
    expect((await sluice(["kv", "get", "k"], env)).stdout).toBe("v2\n");
  });

  it("exits 2 with the usage for a wrong command line, before contacting any server", async () => {
    // Nothing listens on port 1: a usage error must not get as far as a connection.
    const env = { SLUICE_ADDR: "127.0.0.1:1" };
    const cases = [
      ["kv", "put", "only-key"],
      ["kv", "frob"],
      ["kv"],
      ["kv", "put", "k", "v", "--cas", "abc"],
      ["kv", "get", "k", "--bogus"],
      ["kv", "delete", "k", "--recurse", "--cas", "3"],
      ["watch", "nodes"],
      ["catalog", "register", "--address", "1.2.3.4"],
      ["acl", "token", "create", "--ttl", "soon"],
    ];
    const results = await Promise.all(cases.map((args) => sluice(args, env)));
    results.forEach((r, i) => {
      expect({ args: cases[i], code: r.code }).toEqual({ args: cases[i], code: 2 });
      expect(r.stderr).toContain("sluice ");
    });
    const help = await sluice(["kv", "--help"], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("sluice kv");
  });

  it("exits 1 with an UNAVAILABLE message when no server answers", async () => {
    const r = await sluice(["kv", "get", "k", "--addr", "127.0.0.1:1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("(UNAVAILABLE)");
  });
});

describe("sluice catalog", () => {
  it("register, services, service (with --passing and --tag) and deregister", async () => {
    const { addr } = await server();
    const env = { SLUICE_ADDR: addr };
    const reg1 = await sluice(
      [
        "catalog",
        "register",
        "--node",
        "n1",
        "--address",
        "10.0.0.1",
        "--service",
        "web",
        "--port",
        "80",
      ].concat(["--tag", "v1", "--tag", "canary", "--check-status", "passing"]),
      env,
    );
    expect(reg1.code).toBe(0);
    expect(reg1.stdout).toMatch(/^Registered node n1, service web \(index \d+\)\n$/);
    await sluice(
      [
        "catalog",
        "register",
        "--node",
        "n2",
        "--address",
        "10.0.0.2",
        "--service",
        "web",
        "--port",
        "81",
      ].concat(["--id", "web-2", "--check-status", "critical"]),
      env,
    );
    await sluice(["catalog", "register", "--node", "n3", "--address", "10.0.0.3", "--service", "db"], env);

    expect((await sluice(["catalog", "services"], env)).stdout).toBe("db\nweb\tv1,canary\n");
    expect((await sluice(["catalog", "service", "web"], env)).stdout).toBe(
      "n1\t10.0.0.1:80\tweb\tpassing\tv1,canary\nn2\t10.0.0.2:81\tweb-2\tcritical\n",
    );
    expect((await sluice(["catalog", "service", "web", "--passing"], env)).stdout).toBe(
      "n1\t10.0.0.1:80\tweb\tpassing\tv1,canary\n",
    );
    const tagged = JSON.parse(
      (await sluice(["catalog", "service", "web", "--tag", "canary", "--json"], env)).stdout,
    );
    expect(tagged.instances.map((i: { node: { node: string } }) => i.node.node)).toEqual(["n1"]);

    const dereg = await sluice(
      ["catalog", "deregister", "--node", "n1", "--service-id", "web", "--json"],
      env,
    );
    expect(JSON.parse(dereg.stdout).index).toBeGreaterThan(0);
    expect((await sluice(["catalog", "service", "web"], env)).stdout).toBe(
      "n2\t10.0.0.2:81\tweb-2\tcritical\n",
    );
    expect((await sluice(["catalog", "deregister", "--node", "n2"], env)).code).toBe(0);
    expect((await sluice(["catalog", "services"], env)).stdout).toBe("db\n");
  });
});

describe("sluice acl (against a server with ACLs enabled)", () => {
  it("bootstrap, policy create, token create/list/delete; tokens from --token and SLUICE_TOKEN", async () => {
    const { addr } = await server({ aclEnabled: true });
    const boot = await sluice(["acl", "bootstrap", "--json", "--addr", addr]);
    expect(boot.code).toBe(0);
    const management = JSON.parse(boot.stdout).token as { secret_id: string; accessor_id: string };
    expect(management.secret_id).toMatch(/^[0-9a-f-]{36}$/);

    const again = await sluice(["acl", "bootstrap", "--addr", addr]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("(FAILED_PRECONDITION)");

    const env = { SLUICE_ADDR: addr, SLUICE_TOKEN: management.secret_id };
    const rulesFile = join(tmp, "kv-read.hcl");
    writeFileSync(rulesFile, 'key_prefix "app/" {\n  policy = "read"\n}\n');
    const pol = await sluice(
      ["acl", "policy", "create", "--name", "app-read", "--rules", `@${rulesFile}`],
      env,
    );
    expect(pol.code).toBe(0);
    expect(pol.stdout).toContain("Name:         app-read");
    expect(pol.stdout).toContain('key_prefix "app/"');
    const inline = await sluice(
      ["acl", "policy", "create", "--name", "svc", "--rules", 'service_prefix "" { policy = "read" }'],
      env,
    );
    expect(inline.code).toBe(0);
    const badRules = await sluice(
      ["acl", "policy", "create", "--name", "bad", "--rules", "key_prefix {"],
      env,
    );
    expect(badRules.code).toBe(1);
    expect(badRules.stderr).toContain("(INVALID_ARGUMENT)");

    const created = await sluice(
      [
        "acl",
        "token",
        "create",
        "--policy",
        "app-read",
        "--policy",
        "svc",
        "--ttl",
        "1h",
        "--description",
        "ci",
      ].concat(["--json"]),
      env,
    );
    expect(created.code).toBe(0);
    const token = JSON.parse(created.stdout).token as {
      accessor_id: string;
      secret_id: string;
      expiration_time: number;
    };
    expect(token.expiration_time).toBeGreaterThan(Date.now() + 59 * 60_000);
    expect(token.expiration_time).toBeLessThanOrEqual(Date.now() + 60 * 60_000);

    const listed = await sluice(["acl", "token", "list"], env);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(`AccessorID:   ${token.accessor_id}`);
    expect(listed.stdout).not.toContain(token.secret_id);
    expect(listed.stdout).toContain("Description:  ci");

    // The new token reads under app/ but may not write; --token beats SLUICE_TOKEN.
    await sluice(["kv", "put", "app/x", "1"], env);
    expect((await sluice(["kv", "get", "app/x", "--token", token.secret_id], env)).stdout).toBe("1\n");
    const denied = await sluice(["kv", "put", "app/x", "2"], {
      SLUICE_ADDR: addr,
      SLUICE_TOKEN: token.secret_id,
    });
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain("(PERMISSION_DENIED)");

    const del = await sluice(["acl", "token", "delete", token.accessor_id], env);
    expect(del.code).toBe(0);
    expect(del.stdout).toMatch(new RegExp(`^Token ${token.accessor_id} deleted \\(index \\d+\\)\\n$`));
    const gone = await sluice(["kv", "get", "app/x", "--token", token.secret_id], env);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("(PERMISSION_DENIED)");
    const missing = await sluice(["acl", "token", "delete", token.accessor_id], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("(NOT_FOUND)");
    expect((await sluice(["acl", "token", "list"], env)).stdout).not.toContain(token.accessor_id);
  });

  it("an unknown token exits 1 with the server's message", async () => {
    const { addr } = await server({ aclEnabled: true });
    const r = await sluice(["kv", "get", "k"], { SLUICE_ADDR: addr, SLUICE_TOKEN: "not-a-token" });
    expect(r.code).toBe(1);
    const err = (await sdk(addr, "not-a-token")
      .kvStore.get("k")
      .catch((e: unknown) => e)) as SluiceError;
    expect(r.stderr).toBe(`sluice: ${err.details} (PERMISSION_DENIED)\n`);
  });
});

describe("sluice watch", () => {
  it("watch kv --json prints one object per change, with its index, and stops on SIGINT", async () => {
    const { addr } = await server();
    const c = sdk(addr);
    const first = await c.kvStore.put("w/a", "1");
    const w = Running.start(["watch", "kv", "w/", "--json"], { SLUICE_ADDR: addr });
    expect(await w.json()).toEqual({
      index: first,
      prefix: "w/",
      entries: [{ key: "w/a", value: "1", flags: 0, modify_index: first }],
    });
    const i2 = await c.kvStore.put("w/b", "2");
    expect(await w.json()).toMatchObject({
      index: i2,
      entries: [{ key: "w/a" }, { key: "w/b", value: "2" }],
    });
    await c.kvStore.put("elsewhere", "x");
    const i3 = await c.kvStore.delete("w/a");
    expect(await w.json()).toEqual({
      index: i3,
      prefix: "w/",
      entries: [{ key: "w/b", value: "2", flags: 0, modify_index: i2 }],
    });
    w.child.kill("SIGINT");
    expect(await w.exited).toBe(0);
  });

  it("watch service --passing prints a line per change of the filtered view", async () => {
    const { addr } = await server();
    const c = sdk(addr);
    const w = Running.start(["watch", "service", "web", "--passing"], { SLUICE_ADDR: addr });
    expect(await w.line()).toMatch(/^\[\d+\] web: 0 instances \(0 passing\)$/);
    const i1 = await c.catalog.register({
      node: { node: "n1", address: "10.0.0.1" },
      service: { service: "web", port: 80 },
      checks: [{ check_id: "up", status: "passing" }],
    });
    expect(await w.line()).toBe(`[${i1}] web: 1 instances (1 passing): n1 10.0.0.1:80 web passing`);
    const i2 = await c.catalog.updateCheck({ node: "n1", check_id: "up", status: "critical" });
    expect(await w.line()).toBe(`[${i2}] web: 0 instances (0 passing)`);
    w.child.kill("SIGTERM");
    expect(await w.exited).toBe(0);
  });

  it("a watch whose token is deleted stops with exit 1 and PERMISSION_DENIED", async () => {
    const { addr } = await server({ aclEnabled: true });
    const boot = await sdk(addr).acl.bootstrap();
    const admin = sdk(addr, boot.token.secret_id);
    await admin.acl.createPolicy({ name: "r", rules: 'key_prefix "" { policy = "read" }' });
    const { token } = await admin.acl.createToken({ policies: ["r"] });
    const w = Running.start(["watch", "kv", "t/", "--token", asSecretId(token.secret_id)], {
      SLUICE_ADDR: addr,
    });
    expect(await w.line()).toMatch(/^\[\d+\] t\/: 0 keys$/);
    await admin.acl.deleteToken(token.accessor_id);
    expect(await w.exited).toBe(1);
    expect(w.stderr).toContain("(ABORTED:");
    expect(w.stderr).toMatch(/\(PERMISSION_DENIED\)\n$/);
  });

  it("runs against a `sluice server` child process and follows it across a restart", async () => {
    const dataDir = join(tmp, "server-data");
    const startServer = async (grpcAddr: string): Promise<{ proc: Running; port: number }> => {
      const proc = Running.start(
        [
          "server",
          "--data-dir",
          dataDir,
          "--grpc-addr",
          grpcAddr,
          "--http-addr",
          "127.0.0.1:0",
          "--fsync",
          "never",
        ],
        {},
      );
      const deadline = Date.now() + 15_000;
      for (;;) {
        const m = /"grpc":"127\.0\.0\.1:(\d+)"/.exec(await proc.line(Math.max(1, deadline - Date.now())));
        if (m) return { proc, port: Number(m[1]) };
      }
    };
    const first = await startServer("127.0.0.1:0");
    const addr = `127.0.0.1:${first.port}`;
    expect((await sluice(["kv", "put", "r/a", "1"], { SLUICE_ADDR: addr })).code).toBe(0);
    const w = Running.start(["watch", "kv", "r/"], { SLUICE_ADDR: addr });
    expect(await w.line()).toMatch(/^\[(\d+)\] r\/: 1 keys: r\/a=1$/);

    first.proc.child.kill("SIGTERM");
    expect(await first.proc.exited).toBe(0);
    const second = await startServer(addr);
    const put = await sluice(["kv", "put", "r/b", "2", "--json"], { SLUICE_ADDR: addr });
    const { index } = JSON.parse(put.stdout) as { index: number };
    expect(await w.line(15_000)).toBe(`[${index}] r/: 2 keys: r/a=1, r/b=2`);
    expect(w.stderr).toContain("(UNAVAILABLE:");
    expect(w.stderr).toMatch(/resuming from index \d+/);
    w.child.kill("SIGINT");
    expect(await w.exited).toBe(0);
    second.proc.child.kill("SIGTERM");
    expect(await second.proc.exited).toBe(0);
  });
});
