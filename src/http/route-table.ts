/**
 * The paths the server routes, by method, so that a request for a known path with a method
 * it does not take is told 405 with the methods it does take (as Consul's API answers),
 * while an unknown path stays a 404.
 */
export class RouteTable {
  private readonly routes: { readonly method: string; readonly pattern: RegExp }[] = [];

  /** Records a fastify route (`/v1/kv/*`, `/v1/acl/policy/:id`). */
  add(method: string | readonly string[], url: string): void {
    const source = url
      .split("/")
      .map((seg) =>
        seg === "*" ? ".*" : seg.startsWith(":") ? "[^/]+" : seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"),
      )
      .join("/");
    const pattern = new RegExp(`^${source}$`);
    for (const m of typeof method === "string" ? [method] : method) this.routes.push({ method: m, pattern });
  }

  /** The methods routed for `path` (without its query string), sorted. */
  methodsFor(path: string): string[] {
    const out = new Set<string>();
    for (const r of this.routes) if (r.pattern.test(path)) out.add(r.method);
    return [...out].sort();
  }
}
