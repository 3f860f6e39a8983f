import { createServer, type IncomingMessage, type Server } from "node:http";
import { status as Status } from "@grpc/grpc-js";
import { describe, expect, it, onTestFinished } from "vitest";
import { ComponentClient } from "../helpers/component-client.js";
import { Harness } from "../helpers/grpc-harness.js";

/*
 * The broker's HTTP faces: the ingress (`ANY /v1/invoke/:component/*` becomes a request to a
 * component, its response the HTTP response) and the built-in `http` component (egress to
 * hosts on the allowlist), against loopback HTTP servers the tests start.
 */

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage["headers"];
  readonly body: string;
}

/** A loopback HTTP server that records requests and answers with `respond`. */
async function loopback(
  respond: (seen: Seen, res: import("node:http").ServerResponse) => void = (_s, res) => {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok");
  },
): Promise<{ port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const s = {
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      };
      seen.push(s);
      respond(s, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  onTestFinished(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as { port: number }).port, seen };
}

const invokeUrl = (h: Harness, path: string): string =>
  `http://127.0.0.1:${h.server.httpPort}/v1/invoke/${path}`;

describe("HTTP ingress", () => {
  it("maps method, path, query, headers and body into the request, and the response back", async () => {
    const h = await Harness.start();
    const orders = await ComponentClient.connect(h.address, {
      name: "orders",
      id: "o1",
      handler: (req) => ({
        headers: { ":status": "201", "x-reply": "yes", "x-saw-path": req.headers[":path"] ?? "" },
        content_type: "application/json",
        payload: Buffer.from(JSON.stringify({ ok: true })),
      }),
    });
    const res = await fetch(invokeUrl(h, "orders/items/7?x=1&y=two"), {
      method: "POST",
      headers: {
        "content-type": "text/plain",
        "x-custom": "abc",
        "x-sluice-timeout": "5s",
        "x-consul-token": "not-passed-on",
      },
      body: "hello",
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("x-reply")).toBe("yes");
    expect(res.headers.get("x-saw-path")).toBe("/items/7?x=1&y=two");
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(await res.json()).toEqual({ ok: true });

    const [req] = orders.received;
    expect(req!.kind).toBe("ENVELOPE_KIND_REQUEST");
    expect(req!.type).toBe("POST /items/7");
    expect(req!.source?.name).toBe("http-ingress");
    expect(req!.headers[":method"]).toBe("POST");
    expect(req!.headers[":path"]).toBe("/items/7?x=1&y=two");
    expect(req!.headers["x-custom"]).toBe("abc");
    expect(req!.content_type).toBe("text/plain");
    expect(req!.payload.toString()).toBe("hello");
    // Connection and credential headers are not the component's business.
    for (const hop of ["x-consul-token", "x-sluice-timeout", "host", "content-length", "connection"]) {
      expect(req!.headers[hop]).toBeUndefined();
    }
    // The timeout header sets the request's deadline.
    expect(req!.deadline_ms).toBeGreaterThan(Date.now() + 3000);
    expect(req!.deadline_ms).toBeLessThanOrEqual(Date.now() + 5000);
  });

  it("binary bodies pass unchanged both ways; the default status is 200; a bare component path is /", async () => {
    const h = await Harness.start();
    const bytes = Buffer.from([0, 1, 2, 254, 255, 10, 13]);
    const blob = await ComponentClient.connect(h.address, {
      name: "blob",
      id: "b1",
      handler: (req) => ({ content_type: "application/octet-stream", payload: req.payload }),
    });
    const res = await fetch(invokeUrl(h, "blob"), {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: bytes,
    });
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(bytes);
    expect(blob.received[0]!.type).toBe("PUT /");
    expect(blob.received[0]!.headers[":path"]).toBe("/");

    const get = await fetch(invokeUrl(h, "blob/x"));
    expect(get.status).toBe(200);
    expect(blob.received[1]!.type).toBe("GET /x");
    expect(blob.received[1]!.payload.length).toBe(0);
  });

  it("the deadline passing is 504", async () => {
    const h = await Harness.start();
    await ComponentClient.connect(h.address, { name: "slow", id: "s1", handler: () => undefined });
    const t0 = Date.now();
    const res = await fetch(invokeUrl(h, "slow/x"), { headers: { "x-sluice-timeout": "150ms" } });
    expect(res.status).toBe(504);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(((await res.json()) as { code: string }).code).toBe("DEADLINE_EXCEEDED");
  });

  it("no replica anywhere is 404, whatever the component is called", async () => {
    const h = await Harness.start();
    for (const name of ["nobody", "left-pad", "disconnected"]) {
      const res = await fetch(invokeUrl(h, `${name}/x`));
      expect(res.status, name).toBe(404);
      expect(((await res.json()) as { code: string }).code).toBe("UNAVAILABLE");
    }
  });

  it("the replica going away mid-request is 503", async () => {
    const h = await Harness.start();
    const w = await ComponentClient.connect(h.address, { name: "flaky", id: "f1", handler: () => undefined });
    const pending = fetch(invokeUrl(h, "flaky/x"));
    await w.until(() => w.received.length === 1, "the request");
    w.close();
    expect((await pending).status).toBe(503);
  });

  it("an invalid timeout header is 400", async () => {
    const h = await Harness.start();
    await ComponentClient.connect(h.address, { name: "orders", id: "o1" });
    for (const bad of ["soon", "0s", "-1s", "10"]) {
      const res = await fetch(invokeUrl(h, "orders/x"), { headers: { "x-sluice-timeout": bad } });
      expect(res.status, bad).toBe(400);
    }
  });

  it("a component's error status maps to the matching HTTP status with a JSON body", async () => {
    const h = await Harness.start();
    const codes: Record<string, number> = {
      "/missing": Status.NOT_FOUND,
      "/forbidden": Status.PERMISSION_DENIED,
    };
    await ComponentClient.connect(h.address, {
      name: "orders",
      id: "o1",
      handler: (req) => ({
        status_code: codes[req.headers[":path"] ?? ""] ?? Status.INTERNAL,
        status_message: "nope",
      }),
    });
    const expected: [string, number, string][] = [
      ["missing", 404, "NOT_FOUND"],
      ["forbidden", 403, "PERMISSION_DENIED"],
      ["other", 500, "INTERNAL"],
    ];
    for (const [path, http, code] of expected) {
      const res = await fetch(invokeUrl(h, `orders/${path}`));
      expect(res.status, path).toBe(http);
      expect(await res.json()).toEqual({ error: "nope", code });
    }
  });

  it("with ACLs, invoking needs component read", async () => {
    const h = await Harness.start({ aclEnabled: true, aclDefaultPolicy: "deny" });
    await h.bootstrapAcl();
    await ComponentClient.connect(h.address, { name: "orders", id: "o1", token: h.management! });
    const reader = await h.tokenWithRules('component "orders" { policy = "read" }');
    const other = await h.tokenWithRules('component "billing" { policy = "write" }');
    expect((await fetch(invokeUrl(h, "orders/x"))).status).toBe(403);
    const denied = await fetch(invokeUrl(h, "orders/x"), { headers: { "x-consul-token": other.secret } });
    expect(denied.status).toBe(403);
    const ok = await fetch(invokeUrl(h, "orders/x"), { headers: { "x-consul-token": reader.secret } });
    expect(ok.status).toBe(200);
  });
});

describe("HTTP egress (the built-in http component)", () => {
  const call = (c: ComponentClient, spec: object, deadlineMs = 5000) =>
    c.request(
      { name: "http", id: "" },
      { payload: Buffer.from(JSON.stringify(spec)), deadline_ms: Date.now() + deadlineMs },
    );

  it("performs the request an event describes and answers with status, headers and body", async () => {
    const target = await loopback((s, res) => {
      res.writeHead(202, { "content-type": "application/json", "x-b": "2" });
      res.end(JSON.stringify({ got: s.body }));
    });
    const h = await Harness.start({ brokerHttpAllow: `127.0.0.1:${target.port}` });
    const c = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const r = await call(c, {
      method: "POST",
      url: `http://127.0.0.1:${target.port}/hook?q=1`,
      headers: { "x-a": "1", "content-type": "text/plain" },
      body: "ping",
    });
    expect(r.status_code).toBe(Status.OK);
    expect(r.headers[":status"]).toBe("202");
    expect(r.headers["x-b"]).toBe("2");
    expect(r.content_type).toBe("application/json");
    expect(JSON.parse(r.payload.toString())).toEqual({ got: "ping" });
    expect(r.source?.name).toBe("http");
    expect(target.seen).toHaveLength(1);
    expect(target.seen[0]).toMatchObject({ method: "POST", url: "/hook?q=1", body: "ping" });
    expect(target.seen[0]!.headers["x-a"]).toBe("1");
  });

  it("takes a base64 body, defaults to GET, and passes non-2xx statuses through", async () => {
    const target = await loopback((s, res) => res.writeHead(418).end(`${s.method}:${s.body}`));
    const h = await Harness.start({ brokerHttpAllow: `127.0.0.1:${target.port}` });
    const c = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const get = await call(c, { url: `http://127.0.0.1:${target.port}/` });
    expect(get.status_code).toBe(Status.OK);
    expect(get.headers[":status"]).toBe("418");
    expect(get.payload.toString()).toBe("GET:");
    const put = await call(c, {
      method: "PUT",
      url: `http://127.0.0.1:${target.port}/`,
      bodyBase64: Buffer.from("bin").toString("base64"),
    });
    expect(put.payload.toString()).toBe("PUT:bin");
  });

  it("refuses a host that is not on the allowlist with PERMISSION_DENIED naming it, without calling it", async () => {
    const allowed = await loopback();
    const other = await loopback();
    const h = await Harness.start({ brokerHttpAllow: `127.0.0.1:${allowed.port}` });
    const c = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const r = await call(c, { url: `http://127.0.0.1:${other.port}/` });
    expect(r.status_code).toBe(Status.PERMISSION_DENIED);
    expect(r.status_message).toContain(`127.0.0.1:${other.port}`);
    const byName = await call(c, { url: `http://localhost:${allowed.port}/` });
    expect(byName.status_code).toBe(Status.PERMISSION_DENIED);
    expect(byName.status_message).toContain(`localhost:${allowed.port}`);
    expect(other.seen).toEqual([]);
    expect(allowed.seen).toEqual([]);
  });

  it("refuses everything when no allowlist is configured", async () => {
    const target = await loopback();
    const h = await Harness.start();
    const c = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const r = await call(c, { url: `http://127.0.0.1:${target.port}/` });
    expect(r.status_code).toBe(Status.PERMISSION_DENIED);
    expect(target.seen).toEqual([]);
  });

  it("a malformed call is INVALID_ARGUMENT; a target slower than the deadline is DEADLINE_EXCEEDED", async () => {
    const target = await loopback((_s, res) => {
      setTimeout(() => res.writeHead(200).end("late"), 1000).unref();
    });
    const h = await Harness.start({ brokerHttpAllow: `127.0.0.1:${target.port}` });
    const c = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const notJson = await c.request({ name: "http", id: "" }, { payload: Buffer.from("GET /") });
    expect(notJson.status_code).toBe(Status.INVALID_ARGUMENT);
    const ftp = await call(c, { url: `ftp://127.0.0.1:${target.port}/` });
    expect(ftp.status_code).toBe(Status.INVALID_ARGUMENT);
    const slow = await call(c, { url: `http://127.0.0.1:${target.port}/` }, 200);
    expect(slow.status_code).toBe(Status.DEADLINE_EXCEEDED);
  });

  it("an unreachable allowed host is UNAVAILABLE", async () => {
    const h = await Harness.start({ brokerHttpAllow: "127.0.0.1:1" });
    const c = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const r = await call(c, { url: "http://127.0.0.1:1/" });
    expect(r.status_code).toBe(Status.UNAVAILABLE);
  });

  it("ingress to egress: an HTTP call through the http component comes back as HTTP", async () => {
    const target = await loopback((s, res) =>
      res.writeHead(200, { "content-type": "text/plain" }).end(s.url),
    );
    const h = await Harness.start({ brokerHttpAllow: `127.0.0.1:${target.port}` });
    const res = await fetch(invokeUrl(h, "http"), {
      method: "POST",
      body: JSON.stringify({ url: `http://127.0.0.1:${target.port}/via-broker` }),
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("/via-broker");
  });
});

describe("shutdown", () => {
  it("answers an invoke in flight with 503 at once instead of holding the server's shutdown", async () => {
    const h = await Harness.start({ shutdownGraceMs: 10_000 });
    await ComponentClient.connect(h.address, { name: "sleeper", id: "s1", handler: () => undefined });
    const answer = fetch(invokeUrl(h, "sleeper/nap"), { headers: { "x-sluice-timeout": "20s" } });
    await new Promise((r) => setTimeout(r, 200)); // the request is with the component now
    const t0 = Date.now();
    await h.server.stop();
    const res = await answer;
    expect(res.status).toBe(503);
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});

describe("egress headers", () => {
  it("does not pass on the upstream's content-encoding of a body fetch has decoded", async () => {
    const { gzipSync } = await import("node:zlib");
    const up = await loopback((_s, res) => {
      res
        .writeHead(200, { "content-type": "text/plain", "content-encoding": "gzip" })
        .end(gzipSync("plain text"));
    });
    const h = await Harness.start({ brokerHttpAllow: `127.0.0.1:${up.port}` });
    const c = await ComponentClient.connect(h.address, { name: "caller", id: "c1" });
    const r = await c.request(
      { name: "http", id: "" },
      { payload: Buffer.from(JSON.stringify({ url: `http://127.0.0.1:${up.port}/x` })) },
    );
    expect(r.status_code).toBe(Status.OK);
    expect(Buffer.from(r.payload).toString("utf8")).toBe("plain text");
    expect(r.headers["content-encoding"]).toBeUndefined();
  });
});
