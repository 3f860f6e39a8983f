import * as grpc from "@grpc/grpc-js";
import { describe, expect, it, vi } from "vitest";
import type { SubscribeRequest } from "../../src/generated/sluice/v1/SubscribeRequest.js";
import { errorClass, grpcError, Harness } from "../helpers/grpc-harness.js";

/*
 * Every status code of the Subscribe and write APIs, provoked by a real request over
 * loopback, with the server-side error class in the `x-sluice-error` trailer.
 * (OUT_OF_RANGE, which takes the 3 s index wait, is in index-ahead.test.ts.)
 */

const code = (c: number): string => grpc.status[c] ?? String(c);
const ACL = { aclEnabled: true, aclDefaultPolicy: "deny" } as const;
const READ_ALL = 'key_prefix "" { policy = "read" }';

describe("ABORTED", () => {
  it("deleting the token of an open Subscribe ends the stream with ABORTED; the token is then refused", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const t = await h.tokenWithRules(READ_ALL);
    const admin = h.connect(h.management);
    await admin.put("k", "v");
    const c = h.connect(t.secret);
    const w = c.subscribe({ topic: "TOPIC_KV", wildcard: true });
    await w.snapshotDone();

    await admin.deleteToken(t.accessor);
    const st = await w.end();
    expect(code(st.code)).toBe("ABORTED");
    expect(errorClass(st)).toBe("SubscriptionForceClosedError");
    await vi.waitFor(() => expect(h.server.publisher.subscriptionCount).toBe(0), {
      timeout: 2000,
      interval: 10,
    });

    const again = c.subscribe({ topic: "TOPIC_KV", wildcard: true });
    const st2 = await again.end();
    expect(code(st2.code)).toBe("PERMISSION_DENIED");
    expect(errorClass(st2)).toBe("TokenNotFoundError");
    expect(again.messages).toEqual([]);
  });
});

describe("UNAVAILABLE", () => {
  it("a graceful stop ends open subscriptions with UNAVAILABLE at once, not after the grace period", async () => {
    const h = await Harness.start({ shutdownGraceMs: 5000 });
    const c = h.connect();
    const i = await c.put("k", "v");
    const ws = [
      c.subscribe({ topic: "TOPIC_KV", key: "k" }),
      c.subscribe({ topic: "TOPIC_SERVICE_LIST", wildcard: true }),
    ];
    await Promise.all(ws.map((w) => w.snapshotDone()));
    const started = performance.now();
    await h.server.stop();
    expect(performance.now() - started).toBeLessThan(2000);
    for (const w of ws) {
      const st = await w.end();
      expect(code(st.code)).toBe("UNAVAILABLE");
      expect(errorClass(st)).toBe("ShuttingDownError");
      // The client keeps the index to resume with.
      expect(w.lastIndex).toBe(i);
    }
  });
});

describe("PERMISSION_DENIED", () => {
  it("an unknown token on Subscribe, in metadata or in the request", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const c = h.connect();
    const bogus = "00000000-0000-4000-8000-000000000000";
    for (const w of [
      c.subscribe({ topic: "TOPIC_KV", wildcard: true }, bogus),
      c.subscribe({ topic: "TOPIC_KV", wildcard: true, token: bogus }),
    ]) {
      const st = await w.end();
      expect(code(st.code)).toBe("PERMISSION_DENIED");
      expect(errorClass(st)).toBe("TokenNotFoundError");
      expect(w.messages).toEqual([]);
    }
  });

  it("a KV Put or Catalog Register without write permission commits nothing", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const reader = await h.tokenWithRules(`${READ_ALL}\nnode_prefix "" { policy = "read" }`);
    const before = h.server.publisher.index;
    const c = h.connect(reader.secret);

    const put = await grpcError(c.put("k", "v"));
    expect(code(put.code)).toBe("PERMISSION_DENIED");
    expect(errorClass(put)).toBe("PermissionDeniedError");
    const anon = await grpcError(h.connect().put("k", "v"));
    expect(code(anon.code)).toBe("PERMISSION_DENIED");
    const reg = await grpcError(c.register({ node: { node: "n1", address: "10.0.0.1" } }));
    expect(code(reg.code)).toBe("PERMISSION_DENIED");
    expect(errorClass(reg)).toBe("PermissionDeniedError");
    expect(h.server.publisher.index).toBe(before);
  });

  it("reading without permission is not an error on Subscribe: the events are filtered", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const none = await h.tokenWithRules('key_prefix "pub/" { policy = "read" }');
    await h.connect(h.management).put("secret/x", "1");
    const w = h.connect(none.secret).subscribe({ topic: "TOPIC_KV", prefix: "secret/" });
    await w.snapshotDone();
    expect(w.frames).toEqual([`EOS@${h.server.publisher.index}`]);
    expect(w.status).toBeUndefined();
  });
});

describe("INVALID_ARGUMENT", () => {
  it("malformed Subscribe requests are refused before any frame", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const cases: [string, SubscribeRequest][] = [
      ["no subject", { topic: "TOPIC_KV" }],
      ["unspecified topic", { topic: "TOPIC_UNSPECIFIED", key: "k" }],
      ["prefix on ServiceHealth", { topic: "TOPIC_SERVICE_HEALTH", prefix: "we" }],
      ["wildcard on ServiceHealth", { topic: "TOPIC_SERVICE_HEALTH", wildcard: true }],
      ["key on ServiceList", { topic: "TOPIC_SERVICE_LIST", key: "web" }],
      ["empty KV prefix", { topic: "TOPIC_KV", prefix: "" }],
      ["empty KV key", { topic: "TOPIC_KV", key: "" }],
      ["wildcard = false", { topic: "TOPIC_KV", wildcard: false }],
    ];
    const results = await Promise.all(
      cases.map(async ([name, req]) => {
        const w = c.subscribe(req);
        const st = await w.end();
        return [name, code(st.code), errorClass(st), w.messages.length] as const;
      }),
    );
    expect(results).toEqual([
      ["no subject", "INVALID_ARGUMENT", "InvalidArgumentError", 0],
      ["unspecified topic", "INVALID_ARGUMENT", "InvalidArgumentError", 0],
      ["prefix on ServiceHealth", "INVALID_ARGUMENT", "InvalidSubjectError", 0],
      ["wildcard on ServiceHealth", "INVALID_ARGUMENT", "InvalidSubjectError", 0],
      ["key on ServiceList", "INVALID_ARGUMENT", "InvalidSubjectError", 0],
      ["empty KV prefix", "INVALID_ARGUMENT", "InvalidSubjectError", 0],
      ["empty KV key", "INVALID_ARGUMENT", "InvalidSubjectError", 0],
      ["wildcard = false", "INVALID_ARGUMENT", "InvalidArgumentError", 0],
    ]);
    expect(h.server.publisher.subscriptionCount).toBe(0);
  });

  it("a wildcard is allowed on KV and ServiceList", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const ws = [
      c.subscribe({ topic: "TOPIC_KV", wildcard: true }),
      c.subscribe({ topic: "TOPIC_SERVICE_LIST", wildcard: true }),
    ];
    await Promise.all(ws.map((w) => w.snapshotDone()));
    expect(ws.map((w) => w.status)).toEqual([undefined, undefined]);
  });

  it("bad KV keys and a Register without a node are refused and commit nothing", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const results = [];
    for (const key of ["/leading-slash", "", "nul\u0000inside", "k".repeat(1025)]) {
      const err = await grpcError(c.put(key, "v"));
      results.push([JSON.stringify(key.slice(0, 20)), code(err.code), errorClass(err)]);
    }
    const reg = await grpcError(c.register({ node: { node: "" } }));
    results.push(["register", code(reg.code), errorClass(reg)]);
    expect(results).toEqual([
      ['"/leading-slash"', "INVALID_ARGUMENT", "ValidationError"],
      ['""', "INVALID_ARGUMENT", "ValidationError"],
      ['"nul\\u0000inside"', "INVALID_ARGUMENT", "ValidationError"],
      [JSON.stringify("k".repeat(20)), "INVALID_ARGUMENT", "ValidationError"],
      ["register", "INVALID_ARGUMENT", "InvalidArgumentError"],
    ]);
    // A new server's store starts at its creation commit (index 1); nothing was added.
    expect(h.server.publisher.index).toBe(1);
  });
});

describe("FAILED_PRECONDITION", () => {
  it("a failed check-and-set on Put or Delete; the stream sees only the writes that succeeded", async () => {
    const h = await Harness.start();
    const c = h.connect();
    const w = c.subscribe({ topic: "TOPIC_KV", key: "lock" });
    await w.snapshotDone();

    const created = await c.put("lock", "a", { cas: 0 });
    const again = await grpcError(c.put("lock", "b", { cas: 0 }));
    expect(code(again.code)).toBe("FAILED_PRECONDITION");
    expect(errorClass(again)).toBe("CasFailedError");
    const stale = await grpcError(c.put("lock", "b", { cas: created + 100 }));
    expect(code(stale.code)).toBe("FAILED_PRECONDITION");
    const swapped = await c.put("lock", "b", { cas: created });
    const del = await grpcError(c.delete("lock", { cas: created }));
    expect(code(del.code)).toBe("FAILED_PRECONDITION");
    expect(errorClass(del)).toBe("CasFailedError");
    // Without `cas`, a Put is unconditional (the optional field is absent, not 0).
    const plain = await c.put("lock", "c");
    const deleted = await c.delete("lock", { cas: plain });

    await w.changeCount(5);
    expect(w.changes.slice(1)).toEqual([
      `kv set lock=a@${created}`,
      `kv set lock=b@${swapped}`,
      `kv set lock=c@${plain}`,
      `kv delete lock@${deleted}`,
    ]);
    expect(h.server.publisher.index).toBe(deleted);
  });
});

describe("RESOURCE_EXHAUSTED", () => {
  it("more subscriptions on one connection than maxSubscriptionsPerConnection", async () => {
    const h = await Harness.start({ maxSubscriptionsPerConnection: 2 });
    const c = h.connect();
    const [w1, w2] = [
      c.subscribe({ topic: "TOPIC_KV", key: "a" }),
      c.subscribe({ topic: "TOPIC_KV", key: "b" }),
    ];
    await Promise.all([w1.snapshotDone(), w2.snapshotDone()]);
    const w3 = c.subscribe({ topic: "TOPIC_KV", key: "c" });
    const st = await w3.end();
    expect(code(st.code)).toBe("RESOURCE_EXHAUSTED");
    expect(errorClass(st)).toBe("TooManySubscriptionsError");
    expect(w3.messages).toEqual([]);

    // The limit is per connection: another connection may subscribe.
    const other = h.connect().subscribe({ topic: "TOPIC_KV", key: "c" });
    await other.snapshotDone();
    // And a slot freed on this connection can be used again.
    w1.cancel();
    await vi.waitFor(() => expect(h.server.publisher.subscriptionCount).toBe(2), {
      timeout: 2000,
      interval: 10,
    });
    const w4 = c.subscribe({ topic: "TOPIC_KV", key: "d" });
    await w4.snapshotDone();
  });

  it("more subscriptions for one token than maxSubscriptionsPerToken, across connections", async () => {
    const h = await Harness.start({ ...ACL, maxSubscriptionsPerToken: 2 });
    await h.bootstrapAcl();
    const t = await h.tokenWithRules(READ_ALL);
    const u = await h.tokenWithRules(READ_ALL);
    const subscribe = (secret: string) => h.connect(secret).subscribe({ topic: "TOPIC_KV", wildcard: true });
    const [w1, w2] = [subscribe(t.secret), subscribe(t.secret)];
    await Promise.all([w1.snapshotDone(), w2.snapshotDone()]);
    const w3 = subscribe(t.secret);
    const st = await w3.end();
    expect(code(st.code)).toBe("RESOURCE_EXHAUSTED");
    expect(errorClass(st)).toBe("TooManySubscriptionsError");
    // Another token is not affected.
    await subscribe(u.secret).snapshotDone();
  });
});
