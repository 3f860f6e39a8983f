/*
 * Helper processes for suites that need more than one: a TypeScript module forked with
 * tsx, driven by request/reply messages over the IPC channel.
 */
import { type ChildProcess, fork } from "node:child_process";

interface Request {
  readonly id: number;
  readonly method: string;
  readonly arg: unknown;
}

interface Reply {
  readonly id: number;
  readonly result?: unknown;
  readonly error?: string;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Last resort: no helper outlives the harness, whatever way it exits. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const c of live) c.kill("SIGKILL");
  });
}

/** A forked helper process and the requests in flight to it. */
export class Helper {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private exitStatus: string | undefined;
  private readonly exited: Promise<void>;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
  ) {
    live.add(child);
    installExitHook();
    child.on("message", (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error !== undefined) p.reject(new Error(`${name}: ${m.error}`));
      else p.resolve(m.result);
    });
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, sig) => {
        live.delete(child);
        this.exitStatus = String(code ?? sig);
        for (const p of this.pending.values()) p.reject(new Error(`${name} exited (${this.exitStatus})`));
        this.pending.clear();
        resolve();
      });
    });
  }

  /**
   * Forks `module` (a .ts file) under tsx with extra node flags. Its stdout and stderr go to
   * ours; it must call {@link serve}.
   */
  static fork(name: string, module: string, nodeFlags: readonly string[] = [], args: string[] = []): Helper {
    const child = fork(module, args, {
      execArgv: ["--import", "tsx", ...nodeFlags],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      serialization: "advanced",
    });
    return new Helper(name, child);
  }

  get pid(): number {
    return this.child.pid!;
  }

  call<T>(method: string, arg?: unknown): Promise<T> {
    if (this.exitStatus !== undefined) {
      return Promise.reject(new Error(`${this.name} has exited (${this.exitStatus})`));
    }
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, method, arg } satisfies Request);
    });
  }

  /** Asks it to exit (method `exit`), then SIGTERM after `graceMs`, SIGKILL 5 s later. */
  async stop(graceMs = 15_000): Promise<void> {
    if (this.exitStatus !== undefined) return;
    this.call("exit").catch(() => {});
    const term = setTimeout(() => this.child.kill("SIGTERM"), graceMs);
    const kill = setTimeout(() => this.child.kill("SIGKILL"), graceMs + 5000);
    await this.exited;
    clearTimeout(term);
    clearTimeout(kill);
  }
}

export type Handlers = Readonly<Record<string, (arg: never) => unknown>>;

/**
 * The helper's side: answers requests with `handlers[method](arg)`. `exit` runs
 * `handlers.exit` if there is one, then ends the process.
 */
export function serve(handlers: Handlers): void {
  if (!process.send) throw new Error("not started as a helper (no IPC channel)");
  process.on("message", async (m: Request) => {
    const reply = (r: Omit<Reply, "id">) => process.send!({ id: m.id, ...r });
    try {
      const h = handlers[m.method];
      if (!h && m.method !== "exit") throw new Error(`unknown method ${m.method}`);
      const result = h ? await h(m.arg as never) : undefined;
      if (m.method === "exit") process.send!({ id: m.id, result: null }, () => process.exit(0));
      else reply({ result: result ?? null });
    } catch (err) {
      reply({ error: (err as Error).stack ?? String(err) });
    }
  });
  // The parent died: no reason to stay.
  process.on("disconnect", () => process.exit(0));
}
