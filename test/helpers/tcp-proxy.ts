import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

/**
 * A TCP relay between a client and a server on loopback, to cut real connections: `cut()`
 * destroys every open connection (the client sees its streams fail as on a network
 * failure), and `block()` keeps refusing new ones until `unblock()`.
 */
export class TcpProxy {
  private readonly pairs = new Set<[Socket, Socket]>();
  private blocked = false;
  /** Connections accepted so far. */
  connections = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private targetPort: number,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = createServer((inbound) => proxy?.accept(inbound));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("proxy has no port");
    proxy = new TcpProxy(server, address.port, targetPort);
    return proxy;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Relays new connections to another port (a server restarted elsewhere). */
  retarget(port: number): void {
    this.targetPort = port;
  }

  private accept(inbound: Socket): void {
    if (this.blocked) {
      inbound.destroy();
      return;
    }
    this.connections++;
    const outbound = tcpConnect(this.targetPort, "127.0.0.1");
    const pair: [Socket, Socket] = [inbound, outbound];
    this.pairs.add(pair);
    const close = (): void => {
      this.pairs.delete(pair);
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on("error", close).on("close", close);
    outbound.on("error", close).on("close", close);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  }

  /** Destroys every open connection; returns how many there were. */
  cut(): number {
    const n = this.pairs.size;
    for (const [a, b] of [...this.pairs]) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
    return n;
  }

  /** Cuts every connection and refuses new ones until `unblock()`. */
  block(): number {
    this.blocked = true;
    return this.cut();
  }

  unblock(): void {
    this.blocked = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
