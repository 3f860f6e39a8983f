import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { errorClass, Harness, metadataFor, Watch } from "../helpers/grpc-harness.js";

/*
 * ACLs as a client sees them on the wire: a token's events are filtered (never an error),
 * and changing or deleting the token ends its streams with ABORTED.
 */

const code = (c: number): string => grpc.status[c] ?? String(c);
const ACL = { aclEnabled: true, aclDefaultPolicy: "deny" } as const;
const PUB_READ = 'key_prefix "pub/" { policy = "read" }';

describe("ACL filtering on the wire", () => {
  it('a token with key_prefix "pub/" read sees only pub/ keys, in the snapshot and live', async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const pub = await h.tokenWithRules(PUB_READ);
    const admin = h.connect(h.management);
    await admin.put("pub/a", "1");
    await admin.put("secret/a", "2");
    const s = await admin.put("pub/b", "3");

    const w = h.connect(pub.secret).subscribe({ topic: "TOPIC_KV", wildcard: true });
    const all = admin.subscribe({ topic: "TOPIC_KV", wildcard: true });
    await Promise.all([w.snapshotDone(), all.snapshotDone()]);
    expect(w.frames).toEqual([`B@${s}[kv set pub/a=1@${s} | kv set pub/b=3@${s}]`, `EOS@${s}`]);
    expect(all.frames).toEqual([
      `B@${s}[kv set pub/a=1@${s} | kv set pub/b=3@${s} | kv set secret/a=2@${s}]`,
      `EOS@${s}`,
    ]);

    const l1 = await admin.put("secret/b", "4");
    const l2 = await admin.put("pub/c", "5");
    await admin.put("public", "6"); // not under "pub/"
    const l4 = await admin.delete("pub/a");
    const l5 = await admin.delete("", { recurse: true });
    await all.until((x) => x.changes.length >= 3 + 5 + 4, "every change on the management stream");
    await w.until((x) => x.changes.some((l) => l.endsWith(`@${l5}`)), "the recursive delete");
    expect(w.changes.slice(3)).toEqual([
      `kv set pub/c=5@${l2}`,
      `kv delete pub/a@${l4}`,
      `kv delete pub/b@${l5}`,
      `kv delete pub/c@${l5}`,
    ]);
    expect(w.lines.join(" ")).not.toContain("secret");
    expect(all.changes).toContain(`kv set secret/b=4@${l1}`);
  });

  it("a token's filtered-out commits still move its resume index, through Progress", async () => {
    const h = await Harness.start({ ...ACL, progressIntervalMs: 100 });
    await h.bootstrapAcl();
    const pub = await h.tokenWithRules(PUB_READ);
    const w = h.connect(pub.secret).subscribe({ topic: "TOPIC_KV", wildcard: true });
    await w.snapshotDone();
    const hidden = await h.connect(h.management).put("secret/x", "1");
    await w.until((x) => x.lines.includes(`P@${hidden}`), "progress past the hidden commit", 2000);
    expect(w.changes.filter((l) => l.startsWith("kv"))).toEqual([]);
  });

  it("service and node rules filter ServiceList and ServiceHealth events", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const t = await h.tokenWithRules(
      'service_prefix "pub-" { policy = "read" }\nnode "n1" { policy = "read" }',
    );
    const admin = h.connect(h.management);
    await admin.register({
      node: { node: "n1", address: "10.0.0.1" },
      service: { id: "a", service: "pub-web" },
    });
    await admin.register({
      node: { node: "n2", address: "10.0.0.2" },
      service: { id: "b", service: "pub-web" },
    });
    const s = await admin.register({
      node: { node: "n1", address: "10.0.0.1" },
      service: { id: "c", service: "priv" },
    });

    const c = h.connect(t.secret);
    const list = c.subscribe({ topic: "TOPIC_SERVICE_LIST", wildcard: true });
    const health = c.subscribe({ topic: "TOPIC_SERVICE_HEALTH", key: "pub-web" });
    const hidden = c.subscribe({ topic: "TOPIC_SERVICE_HEALTH", key: "priv" });
    await Promise.all([list.snapshotDone(), health.snapshotDone(), hidden.snapshotDone()]);
    expect(list.frames).toEqual([`B@${s}[sl register pub-web@${s}]`, `EOS@${s}`]);
    // Instance b is on n2, which the token may not read.
    expect(health.frames).toEqual([`B@${s}[sh register n1/a @${s}]`, `EOS@${s}`]);
    expect(hidden.frames).toEqual([`EOS@${s}`]);

    await admin.register({
      node: { node: "n3", address: "10.0.0.3" },
      service: { id: "d", service: "priv2" },
    });
    const l = await admin.register({
      node: { node: "n1", address: "10.0.0.1" },
      service: { id: "e", service: "pub-api" },
    });
    await list.changeCount(3);
    expect(list.changes.at(-1)).toBe(`sl register pub-api@${l}`);
  });

  it("ServiceList names keep the case they were registered with, and ACL rules match that name", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const t = await h.tokenWithRules('service "Web" { policy = "read" }');
    const i = await h
      .connect(h.management)
      .register({ node: { node: "n1", address: "10.0.0.1" }, service: { id: "web-1", service: "Web" } });
    const c = h.connect(t.secret);
    // The read API shows the service to this token, under its registered name.
    const listed = await new Promise<string[]>((resolve, reject) =>
      c.catalog.ListServices({}, metadataFor(t.secret), (err, r) =>
        err ? reject(err) : resolve(Object.keys(r!.services)),
      ),
    );
    expect(listed).toEqual(["Web"]);
    // A view built from the stream must agree with it.
    const w = c.subscribe({ topic: "TOPIC_SERVICE_LIST", wildcard: true });
    await w.snapshotDone();
    expect(w.frames).toEqual([`B@${i}[sl register Web@${i}]`, `EOS@${i}`]);
  });

  it("an expired token's streams end with ABORTED, and the token is then refused", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const t = await h.tokenWithRules(PUB_READ, { expirationTtlMs: 400 });
    const c = h.connect(t.secret);
    const w = c.subscribe({ topic: "TOPIC_KV", wildcard: true });
    await w.snapshotDone();
    const st = await w.end(3000);
    expect(code(st.code)).toBe("ABORTED");
    expect(errorClass(st)).toBe("SubscriptionForceClosedError");
    const again = await c.subscribe({ topic: "TOPIC_KV", wildcard: true }).end();
    expect(code(again.code)).toBe("PERMISSION_DENIED");
    expect(errorClass(again)).toBe("TokenNotFoundError");
  });

  it("the token may come as authorization: Bearer", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const pub = await h.tokenWithRules(PUB_READ);
    const i = await h.connect(h.management).put("pub/a", "1");
    const c = h.connect();
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${pub.secret}`);
    const w = new Watch(c.stream.Subscribe({ topic: "TOPIC_KV", wildcard: true }, md));
    await w.snapshotDone();
    expect(w.frames).toEqual([`B@${i}[kv set pub/a=1@${i}]`, `EOS@${i}`]);
  });

  it("the token may come in the request instead of metadata", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const pub = await h.tokenWithRules(PUB_READ);
    const admin = h.connect(h.management);
    await admin.put("secret/a", "1");
    const i = await admin.put("pub/a", "2");
    const w = h.connect().subscribe({ topic: "TOPIC_KV", wildcard: true, token: pub.secret });
    await w.snapshotDone();
    expect(w.frames).toEqual([`B@${i}[kv set pub/a=2@${i}]`, `EOS@${i}`]);
  });
});

describe("ACL changes end streams", () => {
  it("editing the token's policy ends its streams with ABORTED; a new Subscribe gets the new rules", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const t = await h.tokenWithRules(PUB_READ);
    const other = await h.tokenWithRules(PUB_READ);
    const admin = h.connect(h.management);
    await admin.put("pub/a", "1");
    await admin.put("secret/a", "2");
    const c = h.connect(t.secret);
    const w = c.subscribe({ topic: "TOPIC_KV", wildcard: true });
    const bystander = h.connect(other.secret).subscribe({ topic: "TOPIC_KV", wildcard: true });
    await Promise.all([w.snapshotDone(), bystander.snapshotDone()]);

    const edit = await admin
      .upsertPolicy(t.policyName, 'key_prefix "secret/" { policy = "read" }', { id: t.policyId })
      .then(() => h.server.publisher.index);
    const st = await w.end();
    expect(code(st.code)).toBe("ABORTED");
    expect(errorClass(st)).toBe("SubscriptionForceClosedError");
    // Nothing of the revoking commit or later reached the closed stream.
    expect(w.messages.every((m) => m.index < edit)).toBe(true);

    const w2 = c.subscribe({ topic: "TOPIC_KV", wildcard: true });
    await w2.snapshotDone();
    // (The KV snapshot may be a cached one from before the edit: KV did not change since.)
    const at = w2.lastIndex;
    expect(at).toBeLessThanOrEqual(edit);
    expect(w2.changes).toEqual([`kv set secret/a=2@${at}`, `EOS@${at}`]);
    // Another token's stream is untouched.
    const j = await admin.put("pub/b", "3");
    await bystander.changeCount(3);
    expect(bystander.changes.at(-1)).toBe(`kv set pub/b=3@${j}`);
    expect(bystander.status).toBeUndefined();
  });

  it("deleting the token ends every stream of it, on every connection, with ABORTED", async () => {
    const h = await Harness.start(ACL);
    await h.bootstrapAcl();
    const t = await h.tokenWithRules(PUB_READ);
    const ws = [
      h.connect(t.secret).subscribe({ topic: "TOPIC_KV", wildcard: true }),
      h.connect(t.secret).subscribe({ topic: "TOPIC_KV", key: "pub/x" }),
      h.connect(t.secret).subscribe({ topic: "TOPIC_SERVICE_LIST", wildcard: true }),
    ];
    await Promise.all(ws.map((w) => w.snapshotDone()));
    await h.connect(h.management).deleteToken(t.accessor);
    const codes = await Promise.all(ws.map(async (w) => code((await w.end()).code)));
    expect(codes).toEqual(["ABORTED", "ABORTED", "ABORTED"]);
    expect(h.server.publisher.subscriptionCount).toBe(0);
  });
});
