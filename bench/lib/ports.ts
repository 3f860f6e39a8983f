import { createServer, type Server } from "node:net";

/** The only host the harness ever binds to or dials. */
export const LOOPBACK = "127.0.0.1";

function listenEphemeral(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen({ host: LOOPBACK, port: 0, exclusive: true }, () => resolve(srv));
  });
}

/**
 * `n` distinct TCP ports on 127.0.0.1 that were free a moment ago: the kernel picks them for
 * throwaway listeners, held open together (so they differ) and closed before returning.
 * Another process may take one in between, so whoever starts a server on them retries on
 * "address in use".
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, listenEphemeral));
  const ports = servers.map((s) => {
    const addr = s.address();
    if (addr === null || typeof addr === "string") throw new Error("freePorts: listener has no TCP address");
    return addr.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** One free TCP port on 127.0.0.1 (see {@link freePorts}). */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}
