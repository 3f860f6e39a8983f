import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  ConflictError,
  LIMITS,
  MissingReferenceError,
  type Op,
  queries,
  type StateRoot,
  Store,
  type Txn,
  ValidationError,
  validateTxn,
} from "../../src/state/index.js";

/*
 * Malformed input is refused with ValidationError naming the offending field, before it
 * reaches the store; and the store's ACL tables keep their references and unique fields.
 * Errors are asserted by class and fields, never by message.
 */

const bytes = (n: number): Uint8Array => new Uint8Array(n);
const node = (name = "n1"): Op => ({ op: "node.register", node: { Node: name, Address: "10.0.0.1" } });
const service = (over: Record<string, unknown> = {}): Op =>
  ({ op: "service.register", service: { Node: "n1", ID: "web-1", Service: "web", ...over } }) as Op;
const check = (over: Record<string, unknown> = {}): Op =>
  ({ op: "check.register", check: { Node: "n1", CheckID: "c1", ...over } }) as Op;
const kvSet = (key: string, value = bytes(1)): Op => ({ op: "kv.set", key, value });
const filler = (n: number): Op[] => Array.from({ length: n }, (_, i) => kvSet(`k/${i}`));

/** The ValidationError a transaction draws, or a failure if it draws none or another error. */
function validationErrorOf(txn: unknown): ValidationError {
  try {
    validateTxn(txn as Txn);
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return err as ValidationError;
  }
  return expect.fail("validateTxn accepted the transaction");
}

/** [case, transaction, field the error must name]. */
const REJECTED: readonly (readonly [string, unknown, string])[] = [
  // Transactions
  ["an empty transaction", [], "ops"],
  ["a transaction that is not a list", { op: "kv.set" }, "ops"],
  [`more than ${LIMITS.maxOpsPerTxn} operations`, filler(LIMITS.maxOpsPerTxn + 1), "ops"],
  ["an unknown operation", [{ op: "kv.frobnicate", key: "a" }], "ops[0].op"],
  ["an operation that is not an object", [null], "ops[0]"],
  ["an unknown operation after good ones", [node(), kvSet("a"), { op: "node.explode" }], "ops[2].op"],
  // KV
  ["a value over 512 KiB", [kvSet("a", bytes(LIMITS.maxValueBytes + 1))], "ops[0].value"],
  ["a value that is not bytes", [{ op: "kv.set", key: "a", value: "text" }], "ops[0].value"],
  ["a key over 1 KiB", [kvSet("k".repeat(LIMITS.maxKeyBytes + 1))], "ops[0].key"],
  // 513 two-byte characters: 513 UTF-16 units, 1026 UTF-8 bytes.
  ["a key over 1 KiB in UTF-8 bytes", [kvSet("\u00e9".repeat(513))], "ops[0].key"],
  ["a key starting with '/'", [kvSet("/a/b")], "ops[0].key"],
  ["an empty key", [kvSet("")], "ops[0].key"],
  ["an empty key to delete", [{ op: "kv.delete", key: "" }], "ops[0].key"],
  ["a NUL in a key", [kvSet("a\u0000b")], "ops[0].key"],
  ["a NUL in a key to delete", [{ op: "kv.delete", key: "a\u0000" }], "ops[0].key"],
  ["a NUL in a tree prefix", [{ op: "kv.deleteTree", prefix: "a\u0000" }], "ops[0].prefix"],
  ["a tree prefix starting with '/'", [{ op: "kv.deleteTree", prefix: "/a" }], "ops[0].prefix"],
  ["negative flags", [{ op: "kv.set", key: "a", value: bytes(1), flags: -1 }], "ops[0].flags"],
  ["a negative cas", [{ op: "kv.set", key: "a", value: bytes(1), cas: -1 }], "ops[0].cas"],
  ["a fractional cas", [{ op: "kv.delete", key: "a", cas: 1.5 }], "ops[0].cas"],
  // Checks
  ["an unknown check status", [check({ Status: "ok" })], "ops[0].check.Status"],
  ["an upper-case check status", [check({ Status: "PASSING" })], "ops[0].check.Status"],
  [
    "an unknown status update",
    [{ op: "check.status", node: "n1", checkId: "c1", status: "bogus" }],
    "ops[0].status",
  ],
  ["a control character in a check ID", [check({ CheckID: "c\u007f" })], "ops[0].check.CheckID"],
  // Services
  ["a port over 65535", [service({ Port: 65_536 })], "ops[0].service.Port"],
  ["a negative port", [service({ Port: -1 })], "ops[0].service.Port"],
  ["a fractional port", [service({ Port: 80.5 })], "ops[0].service.Port"],
  ["a port that is a string", [service({ Port: "80" })], "ops[0].service.Port"],
  ["a meta key with a space", [service({ Meta: { "bad key": "v" } })], "ops[0].service.Meta.bad key"],
  [
    "a meta key with a dot",
    [node(), { op: "node.register", node: { Node: "n2", Address: "", Meta: { "a.b": "v" } } }],
    "ops[1].node.Meta.a.b",
  ],
  ["an empty meta key", [service({ Meta: { "": "v" } })], "ops[0].service.Meta."],
  [
    `a meta key over ${LIMITS.maxMetaKeyLength} characters`,
    [service({ Meta: { ["k".repeat(LIMITS.maxMetaKeyLength + 1)]: "v" } })],
    `ops[0].service.Meta.${"k".repeat(LIMITS.maxMetaKeyLength + 1)}`,
  ],
  ["a newline in a service name", [service({ Service: "we\nb" })], "ops[0].service.Service"],
  ["a tab in a service ID", [service({ ID: "web\t1" })], "ops[0].service.ID"],
  ["an empty service name", [service({ Service: "" })], "ops[0].service.Service"],
  ["an empty tag", [service({ Tags: ["a", ""] })], "ops[0].service.Tags[1]"],
  ["a NUL in a service name", [service({ Service: "we\u0000b" })], "ops[0].service.Service"],
  // Nodes
  ["a control character in a node name", [node("n\u0001")], "ops[0].node.Node"],
  ["an escape in a node to deregister", [{ op: "node.deregister", node: "\u001bn1" }], "ops[0].node"],
  ["a node name over 256 characters", [node("n".repeat(LIMITS.maxNameLength + 1))], "ops[0].node.Node"],
  ["a missing node address", [{ op: "node.register", node: { Node: "n1" } }], "ops[0].node.Address"],
  // ACL
  [
    "a policy name with a space",
    [{ op: "acl.policy.upsert", policy: { ID: "p1", Name: "a b", Rules: "" } }],
    "ops[0].policy.Name",
  ],
  [
    "a token without a secret",
    [{ op: "acl.token.upsert", token: { AccessorID: "a1" } }],
    "ops[0].token.SecretID",
  ],
  [
    "a token linking a malformed policy ID",
    [{ op: "acl.token.upsert", token: { AccessorID: "a1", SecretID: "s1", Policies: ["ok", "not ok"] } }],
    "ops[0].token.Policies[1]",
  ],
];

/** Transactions right at the limits: accepted. */
const ACCEPTED: readonly (readonly [string, Txn])[] = [
  [`exactly ${LIMITS.maxOpsPerTxn} operations`, filler(LIMITS.maxOpsPerTxn)],
  ["a value of exactly 512 KiB", [kvSet("a", bytes(LIMITS.maxValueBytes))]],
  ["a key of exactly 1 KiB", [kvSet("k".repeat(LIMITS.maxKeyBytes))]],
  ["an empty tree prefix (the whole tree)", [{ op: "kv.deleteTree", prefix: "" }]],
  ["ports 0 and 65535", [node(), service({ Port: 0 }), service({ ID: "web-2", Port: 65_535 })]],
  ["meta keys of letters, digits, '-' and '_'", [service({ Meta: { "a-B_9": "" } })]],
  ["a node-level check (empty ServiceID)", [node(), check({ ServiceID: "", Status: "passing" })]],
  ["non-ASCII names", [node("n\u00e9"), service({ Node: "n\u00e9", Service: "\u00fcber" })]],
];

describe("validation", () => {
  describe.each(REJECTED)("refuses %s", (_name, txn, field) => {
    it("in validateTxn, naming the field", () => {
      expect(validationErrorOf(txn).field).toBe(field);
    });

    it("in Store.commit, changing nothing", async () => {
      const store = await Store.open({ inMemory: true });
      try {
        await store.commit([node(), kvSet("before")]);
        const root = store.root;
        const err = await store.commit(txn as Txn).then(
          () => expect.fail("the store accepted the transaction"),
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(ValidationError);
        expect((err as ValidationError).field).toBe(field);
        expect(store.index).toBe(1);
        expect(store.root).toBe(root);
        // The refused transaction used no index.
        expect((await store.commit([kvSet("after")])).index).toBe(2);
      } finally {
        await store.close();
      }
    });
  });

  it.each(ACCEPTED)("accepts %s", (_name, txn) => {
    expect(() => validateTxn(txn)).not.toThrow();
  });

  it("refuses a whole transaction when one operation is malformed, applying none of it", async () => {
    const store = await Store.open({ inMemory: true });
    try {
      await store.commit([node(), service(), kvSet("a")]);
      const root = store.root;
      const err = await store
        .commit([kvSet("b"), { op: "node.deregister", node: "n1" }, kvSet("/c")])
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as ValidationError).field).toBe("ops[2].key");
      expect(store.root).toBe(root);
      expect(queries.kvGet(store.root, "b")).toBeUndefined();
      expect(queries.getNode(store.root, "n1")).toBeDefined();
    } finally {
      await store.close();
    }
  });
});

describe("ACL tables", () => {
  let store: Store;
  beforeEach(async () => {
    store = await Store.open({ inMemory: true });
  });
  afterEach(async () => {
    await store.close();
  });

  const policy = (ID: string, Name = ID): Op => ({
    op: "acl.policy.upsert",
    policy: { ID, Name, Rules: "" },
  });
  const role = (ID: string, Policies: string[], Name = ID): Op => ({
    op: "acl.role.upsert",
    role: { ID, Name, Policies },
  });
  const token = (
    AccessorID: string,
    SecretID: string,
    links: { Policies?: string[]; Roles?: string[] } = {},
  ): Op => ({
    op: "acl.token.upsert",
    token: { AccessorID, SecretID, ...links },
  });

  /** Commits a transaction that must fail; returns its error after checking nothing changed. */
  async function refused(txn: Txn): Promise<unknown> {
    const root: StateRoot = store.root;
    const err = await store.commit(txn).then(
      () => expect.fail("the store accepted the transaction"),
      (e: unknown) => e,
    );
    expect(store.root).toBe(root);
    expect(store.index).toBe(root.index);
    return err;
  }

  it("refuses a token that links an unknown policy or role", async () => {
    await store.commit([policy("p1")]);
    const err = await refused([token("a1", "s1", { Policies: ["p1", "p-missing"] })]);
    expect(err).toBeInstanceOf(MissingReferenceError);
    expect(err).toMatchObject({ table: "aclPolicies", key: "p-missing", field: "ops[0].token.Policies[1]" });

    const err2 = await refused([token("a1", "s1", { Roles: ["r-missing"] })]);
    expect(err2).toBeInstanceOf(MissingReferenceError);
    expect(err2).toMatchObject({ table: "aclRoles", key: "r-missing", field: "ops[0].token.Roles[0]" });
    expect(queries.getToken(store.root, "a1")).toBeUndefined();
  });

  it("refuses a role that links an unknown policy", async () => {
    const err = await refused([role("r1", ["p-missing"])]);
    expect(err).toBeInstanceOf(MissingReferenceError);
    expect(err).toMatchObject({ table: "aclPolicies", key: "p-missing" });
  });

  it("accepts a policy and a token linking it in the same transaction", async () => {
    const { index } = await store.commit([policy("p1"), token("a1", "s1", { Policies: ["p1"] })]);
    expect(queries.getToken(store.root, "a1")).toMatchObject({ Policies: ["p1"], CreateIndex: index });
    expect([...queries.tokensUsingPolicy(store.root, "p1")]).toEqual(["a1"]);
  });

  it("refuses a SecretID already held by another accessor", async () => {
    await store.commit([token("a1", "secret-1")]);
    const err = await refused([token("a2", "secret-1")]);
    expect(err).toBeInstanceOf(ConflictError);
    expect(err).toMatchObject({ table: "aclTokens", field: "SecretID" });
    expect(queries.getToken(store.root, "a2")).toBeUndefined();
    expect(queries.tokenBySecret(store.root, "secret-1")?.AccessorID).toBe("a1");
  });

  it("frees a SecretID when its token is deleted", async () => {
    await store.commit([token("a1", "secret-1")]);
    await store.commit([{ op: "acl.token.delete", accessorId: "a1" }]);
    expect(queries.tokenBySecret(store.root, "secret-1")).toBeUndefined();
    await store.commit([token("a2", "secret-1")]);
    expect(queries.tokenBySecret(store.root, "secret-1")?.AccessorID).toBe("a2");
  });

  it("refuses to change a token's SecretID", async () => {
    await store.commit([token("a1", "secret-1")]);
    const err = await refused([token("a1", "secret-2")]);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).field).toBe("ops[0].token.SecretID");
    expect(queries.tokenBySecret(store.root, "secret-2")).toBeUndefined();
    // Updating anything else under the same secret is fine.
    await store.commit([
      { op: "acl.token.upsert", token: { AccessorID: "a1", SecretID: "secret-1", Description: "d" } },
    ]);
    expect(queries.getToken(store.root, "a1")?.Description).toBe("d");
  });

  it("refuses createOnly for an existing accessor", async () => {
    await store.commit([token("a1", "secret-1")]);
    const err = await refused([
      { op: "acl.token.upsert", token: { AccessorID: "a1", SecretID: "secret-1" }, createOnly: true },
    ]);
    expect(err).toBeInstanceOf(ConflictError);
    expect(err).toMatchObject({ table: "aclTokens", field: "AccessorID" });
  });

  it("refuses a policy Name already used by another policy, and frees a name on rename", async () => {
    await store.commit([policy("p1", "read-all")]);
    const err = await refused([policy("p2", "read-all")]);
    expect(err).toBeInstanceOf(ConflictError);
    expect(err).toMatchObject({ table: "aclPolicies", field: "Name", value: "read-all" });
    expect(queries.getPolicy(store.root, "p2")).toBeUndefined();

    await store.commit([policy("p1", "read-some")]);
    expect(queries.policyByName(store.root, "read-all")).toBeUndefined();
    expect(queries.policyByName(store.root, "read-some")?.ID).toBe("p1");
    await store.commit([policy("p2", "read-all")]);
    expect(queries.policyByName(store.root, "read-all")?.ID).toBe("p2");
  });

  it("refuses a role Name already used by another role", async () => {
    await store.commit([role("r1", [], "ops")]);
    const err = await refused([role("r2", [], "ops")]);
    expect(err).toBeInstanceOf(ConflictError);
    expect(err).toMatchObject({ table: "aclRoles", field: "Name" });
  });

  it("unlinks a deleted policy from every token and role", async () => {
    await store.commit([
      policy("p1"),
      policy("p2"),
      role("r1", ["p1", "p2"]),
      role("r2", ["p2"]),
      token("a1", "s1", { Policies: ["p1", "p2"] }),
      token("a2", "s2", { Policies: ["p1"], Roles: ["r1"] }),
      token("a3", "s3", { Roles: ["r2"] }),
    ]);
    expect(new Set(queries.tokensUsingPolicy(store.root, "p1"))).toEqual(new Set(["a1", "a2"]));
    expect([...queries.rolesUsingPolicy(store.root, "p1")]).toEqual(["r1"]);

    const { index, changes } = await store.commit([{ op: "acl.policy.delete", id: "p1" }]);
    const root = store.root;
    expect(queries.getPolicy(root, "p1")).toBeUndefined();
    expect([...queries.tokensUsingPolicy(root, "p1")]).toEqual([]);
    expect([...queries.rolesUsingPolicy(root, "p1")]).toEqual([]);
    expect(queries.tokensAffectedByPolicy(root, "p1")).toEqual(new Set());
    // The tokens and the role stay, without the link, modified at the deleting commit.
    expect(queries.getToken(root, "a1")).toMatchObject({ Policies: ["p2"], ModifyIndex: index });
    expect(queries.getToken(root, "a2")).toMatchObject({ Policies: [], Roles: ["r1"], ModifyIndex: index });
    expect(queries.getRole(root, "r1")).toMatchObject({ Policies: ["p2"], ModifyIndex: index });
    expect(queries.getToken(root, "a3")?.ModifyIndex).toBeLessThan(index);
    expect(changes.map((c) => [c.table, c.op, c.key])).toEqual(
      expect.arrayContaining([
        ["aclTokens", "update", "a1"],
        ["aclTokens", "update", "a2"],
        ["aclRoles", "update", "r1"],
        ["aclPolicies", "delete", "p1"],
      ]),
    );
    expect(changes).toHaveLength(4);
    // Other links are intact.
    expect(new Set(queries.tokensUsingPolicy(root, "p2"))).toEqual(new Set(["a1"]));
    expect(new Set(queries.rolesUsingPolicy(root, "p2"))).toEqual(new Set(["r1", "r2"]));
  });

  it("counts tokens linked through a role as affected by a policy", async () => {
    await store.commit([
      policy("p1"),
      policy("p2"),
      role("r1", ["p1"]),
      role("r2", ["p2"]),
      token("direct", "s1", { Policies: ["p1"] }),
      token("via-role", "s2", { Roles: ["r1"] }),
      token("both", "s3", { Policies: ["p1"], Roles: ["r1"] }),
      token("other", "s4", { Policies: ["p2"], Roles: ["r2"] }),
      token("none", "s5"),
    ]);
    expect(queries.tokensAffectedByPolicy(store.root, "p1")).toEqual(new Set(["direct", "via-role", "both"]));
    expect(queries.tokensAffectedByPolicy(store.root, "p2")).toEqual(new Set(["other"]));
    expect(queries.tokensAffectedByPolicy(store.root, "p-none")).toEqual(new Set());

    // Deleting the role unlinks it; its tokens are no longer affected through it.
    await store.commit([{ op: "acl.role.delete", id: "r1" }]);
    expect(queries.tokensAffectedByPolicy(store.root, "p1")).toEqual(new Set(["direct", "both"]));
    expect(queries.getToken(store.root, "via-role")?.Roles).toEqual([]);
    expect([...queries.tokensUsingRole(store.root, "r1")]).toEqual([]);

    // Relinking a role to another policy moves its tokens with it.
    await store.commit([role("r2", ["p1"])]);
    expect(queries.tokensAffectedByPolicy(store.root, "p1")).toEqual(new Set(["direct", "both", "other"]));
    expect(queries.tokensAffectedByPolicy(store.root, "p2")).toEqual(new Set(["other"]));
  });

  it("unlinks a policy deleted in the same transaction that linked it", async () => {
    await store.commit([policy("p1"), policy("p2")]);
    await store.commit([
      token("a1", "s1", { Policies: ["p1", "p2"] }),
      role("r1", ["p1"]),
      { op: "acl.policy.delete", id: "p1" },
    ]);
    expect(queries.getToken(store.root, "a1")?.Policies).toEqual(["p2"]);
    expect(queries.getRole(store.root, "r1")?.Policies).toEqual([]);
    expect([...queries.tokensUsingPolicy(store.root, "p1")]).toEqual([]);
    expect([...queries.rolesUsingPolicy(store.root, "p1")]).toEqual([]);
  });

  it("drops duplicate links", async () => {
    await store.commit([policy("p1"), token("a1", "s1", { Policies: ["p1", "p1"] })]);
    expect(queries.getToken(store.root, "a1")?.Policies).toEqual(["p1"]);
    expect([...queries.tokensUsingPolicy(store.root, "p1")]).toEqual(["a1"]);
  });

  it("leaves ACL tables untouched when a later operation of the transaction fails", async () => {
    await store.commit([policy("p1")]);
    const err = await refused([
      token("a1", "s1", { Policies: ["p1"] }),
      { op: "acl.policy.delete", id: "p1" },
      policy("p2", "p1"),
      token("a2", "s1"),
    ]);
    expect(err).toBeInstanceOf(ConflictError);
    expect(queries.getToken(store.root, "a1")).toBeUndefined();
    expect(queries.getPolicy(store.root, "p1")).toBeDefined();
    expect(queries.getPolicy(store.root, "p2")).toBeUndefined();
    expect(queries.tokenBySecret(store.root, "s1")).toBeUndefined();
  });
});
