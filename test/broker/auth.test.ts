import { status as Status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { ComponentClient } from "../helpers/component-client.js";
import { errorClass, Harness } from "../helpers/grpc-harness.js";

/*
 * Who may connect as what: a component's token needs `component "<name>"` write, its events
 * must carry its registered identity, and changing or deleting the token ends the connection.
 */

const ACL = { aclEnabled: true, aclDefaultPolicy: "deny" } as const;
const WORKER_WRITE = 'component "worker" { policy = "write" }';

async function aclHarness(): Promise<Harness> {
  const h = await Harness.start(ACL);
  await h.bootstrapAcl();
  return h;
}

describe("connecting", () => {
  it("without a token (ACLs on): UNAUTHENTICATED", async () => {
    const h = await aclHarness();
    const c = ComponentClient.open(h.address, { name: "worker", id: "w1" });
    expect((await c.end()).code).toBe(Status.UNAUTHENTICATED);
    expect(h.server.broker.router.has({ name: "worker", id: "" })).toBe(false);
  });

  it("with an unknown token: UNAUTHENTICATED", async () => {
    const h = await aclHarness();
    const c = ComponentClient.open(h.address, {
      name: "worker",
      id: "w1",
      token: "00000000-0000-4000-8000-000000000000",
    });
    expect((await c.end()).code).toBe(Status.UNAUTHENTICATED);
  });

  it("with a first message that is not register: UNAUTHENTICATED", async () => {
    const h = await aclHarness();
    const t = await h.tokenWithRules(WORKER_WRITE);
    const c = ComponentClient.open(h.address, { name: "worker", id: "w1", token: t.secret, register: false });
    c.send({ kind: "ENVELOPE_KIND_EVENT", target: { name: "worker", id: "" } });
    const s = await c.end();
    expect(s.code).toBe(Status.UNAUTHENTICATED);
    expect(errorClass(s)).toBe("NotRegisteredError");
  });

  it("a register without an id: UNAUTHENTICATED", async () => {
    const h = await aclHarness();
    const t = await h.tokenWithRules(WORKER_WRITE);
    const c = ComponentClient.open(h.address, { name: "worker", id: "", token: t.secret });
    expect((await c.end()).code).toBe(Status.UNAUTHENTICATED);
  });

  it("a token without component write on that name: PERMISSION_DENIED", async () => {
    const h = await aclHarness();
    const readOnly = await h.tokenWithRules('component "worker" { policy = "read" }');
    const other = await h.tokenWithRules('component "other" { policy = "write" }');
    for (const token of [readOnly.secret, other.secret]) {
      const c = ComponentClient.open(h.address, { name: "worker", id: "w1", token });
      const s = await c.end();
      expect(s.code).toBe(Status.PERMISSION_DENIED);
      expect(errorClass(s)).toBe("PermissionDeniedError");
    }
  });

  it("component and component_prefix write allow registering; the token's other rules do not matter", async () => {
    const h = await aclHarness();
    const exact = await h.tokenWithRules(WORKER_WRITE);
    const prefix = await h.tokenWithRules('component_prefix "pay-" { policy = "write" }');
    const w = await ComponentClient.connect(h.address, { name: "worker", id: "w1", token: exact.secret });
    const p = await ComponentClient.connect(h.address, { name: "pay-api", id: "p1", token: prefix.secret });
    expect(w.brokerId).toBe(h.server.broker.id);
    // Registering a name is all a component needs to send to any other one.
    expect((await p.request({ name: "worker", id: "" })).status_code).toBe(Status.OK);
    const wrong = ComponentClient.open(h.address, { name: "payroll", id: "x", token: prefix.secret });
    expect((await wrong.end()).code).toBe(Status.PERMISSION_DENIED);
  });

  it("the management token may register anything", async () => {
    const h = await aclHarness();
    const c = await ComponentClient.connect(h.address, { name: "any", id: "a1", token: h.management! });
    expect(c.brokerId).toBe(h.server.broker.id);
  });
});

describe("identity", () => {
  it("an event whose source is not the registered identity ends the stream with PERMISSION_DENIED", async () => {
    const h = await aclHarness();
    const t = await h.tokenWithRules('component_prefix "" { policy = "write" }');
    const victim = await ComponentClient.connect(h.address, { name: "victim", id: "v1", token: t.secret });
    const c = await ComponentClient.connect(h.address, { name: "worker", id: "w1", token: t.secret });
    c.send({ kind: "ENVELOPE_KIND_EVENT", source: { name: "worker", id: "w2" }, target: victim.ref });
    const s = await c.end();
    expect(s.code).toBe(Status.PERMISSION_DENIED);
    expect(errorClass(s)).toBe("SourceMismatchError");

    const d = await ComponentClient.connect(h.address, { name: "worker", id: "w3", token: t.secret });
    d.send({ kind: "ENVELOPE_KIND_EVENT", source: { name: "admin", id: "w3" }, target: victim.ref });
    expect((await d.end()).code).toBe(Status.PERMISSION_DENIED);
    // Nothing spoofed was delivered.
    expect(victim.received).toEqual([]);
    // The replica left its group with the stream.
    expect(h.server.broker.router.has({ name: "worker", id: "" })).toBe(false);
  });

  it("a second register on a registered stream is INVALID_ARGUMENT", async () => {
    const h = await Harness.start();
    const c = await ComponentClient.connect(h.address, { name: "worker", id: "w1" });
    c.write({ register: { name: "other", id: "o1" } });
    expect((await c.end()).code).toBe(Status.INVALID_ARGUMENT);
  });
});

describe("revocation", () => {
  it("deleting the token closes the connection with ABORTED, and the replica leaves its group", async () => {
    const h = await aclHarness();
    const t = await h.tokenWithRules(WORKER_WRITE);
    const w = await ComponentClient.connect(h.address, { name: "worker", id: "w1", token: t.secret });
    await h.connect(h.management).deleteToken(t.accessor);
    const s = await w.end();
    expect(s.code).toBe(Status.ABORTED);
    expect(h.server.broker.router.has({ name: "worker", id: "w1" })).toBe(false);
    // It cannot come back with the deleted token.
    const again = ComponentClient.open(h.address, { name: "worker", id: "w1", token: t.secret });
    expect((await again.end()).code).toBe(Status.UNAUTHENTICATED);
  });

  it("changing the token's policy closes the connection too; other tokens' connections stay", async () => {
    const h = await aclHarness();
    const t = await h.tokenWithRules(WORKER_WRITE);
    const u = await h.tokenWithRules('component "other" { policy = "write" }');
    const w = await ComponentClient.connect(h.address, { name: "worker", id: "w1", token: t.secret });
    const o = await ComponentClient.connect(h.address, { name: "other", id: "o1", token: u.secret });
    await h
      .connect(h.management)
      .upsertPolicy(t.policyName, 'component "worker" { policy = "read" }', { id: t.policyId });
    expect((await w.end()).code).toBe(Status.ABORTED);
    expect((await o.request({ name: "other", id: "o1" })).status_code).toBe(Status.OK);
    expect(o.status).toBeUndefined();
  });

  it("an expiring token closes the connection when it expires", async () => {
    const h = await aclHarness();
    const t = await h.tokenWithRules(WORKER_WRITE, { expirationTtlMs: 1500 });
    const w = await ComponentClient.connect(h.address, { name: "worker", id: "w1", token: t.secret });
    expect((await w.end(5000)).code).toBe(Status.ABORTED);
  });
});

describe("GetEvent and ACLs", () => {
  it("needs a known token", async () => {
    const h = await aclHarness();
    const t = await h.tokenWithRules(WORKER_WRITE);
    const w = await ComponentClient.connect(h.address, { name: "worker", id: "w1", token: t.secret });
    const r = await w.request({ name: "worker", id: "w1" }, { id: "ev-1" });
    expect(r.status_code).toBe(Status.OK);
    expect((await w.getEvent("ev-1")).id).toBe("ev-1");
    const err = await w.getEvent("ev-1", "00000000-0000-4000-8000-000000000000").catch((e) => e);
    expect(err.code).toBe(Status.PERMISSION_DENIED);
  });

  it("needs component read permission on the event's sender or target", async () => {
    const h = await aclHarness();
    const t = await h.tokenWithRules(WORKER_WRITE);
    const w = await ComponentClient.connect(h.address, { name: "worker", id: "w1", token: t.secret });
    expect((await w.request({ name: "worker", id: "w1" }, { id: "ev-2" })).status_code).toBe(Status.OK);
    const other = await h.tokenWithRules(`component "billing" { policy = "write" }`);
    const err = await w.getEvent("ev-2", other.secret).catch((e) => e);
    expect(err.code).toBe(Status.PERMISSION_DENIED);
    expect(err.details).toContain('component:read on "worker"');
  });
});
