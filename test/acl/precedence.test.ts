import { describe, expect, it } from "vitest";
import {
  type Authorizer,
  compileAuthorizer,
  type DefaultPolicy,
  type PolicyRules,
  PolicyRulesError,
  parseRules,
  type Resource,
  type SegmentRule,
} from "../../src/acl/index.js";
import { type Action, type Level, refAllows, toHcl, toJsonRules } from "../helpers/acl-reference.js";

/*
 * Consul's precedence, table by table: every case is compiled three ways (the rule objects
 * themselves, the HCL document and the JSON document) and each way must give every
 * expected decision.
 */

type Segmented = SegmentRule["resource"];
type Global = PolicyRules["globals"][number]["resource"];
type Expect = readonly [resource: Resource, name: string, action: Action, allowed: boolean];

interface Case {
  readonly title: string;
  /** One entry per policy linked to the token. */
  readonly policies: readonly PolicyRules[];
  readonly def?: DefaultPolicy;
  readonly expect: readonly Expect[];
}

const seg = (
  resource: Segmented,
  match: "exact" | "prefix",
  segment: string,
  access: Level,
): SegmentRule => ({ resource, match, segment, access });
const policy = (...segments: SegmentRule[]): PolicyRules => ({ segments, globals: [] });
const globals = (...gs: [Global, Level][]): PolicyRules => ({
  segments: [],
  globals: gs.map(([resource, access]) => ({ resource, access })),
});

/** The same precedence cases for every segmented resource. */
function segmentCases(r: Segmented): Case[] {
  const ex = (s: string, a: Level) => seg(r, "exact", s, a);
  const px = (s: string, a: Level) => seg(r, "prefix", s, a);
  const e = (name: string, action: Action, allowed: boolean): Expect => [r, name, action, allowed];
  const cases: Case[] = [
    {
      title: "an exact deny beats a stronger prefix",
      policies: [policy(px("", "write"), ex("ab", "deny"))],
      expect: [
        e("ab", "read", false),
        e("ab", "write", false),
        e("abc", "write", true),
        e("a", "write", true),
      ],
    },
    {
      title: "a weaker exact rule beats a stronger prefix",
      policies: [policy(px("a", "write"), ex("ab", "read"))],
      expect: [
        e("ab", "read", true),
        e("ab", "write", false),
        e("abc", "write", true),
        e("a", "write", true),
        e("b", "read", false),
      ],
    },
    {
      title: "a stronger exact rule beats a prefix deny",
      policies: [policy(px("a", "deny"), ex("ab", "write"))],
      expect: [e("ab", "write", true), e("abc", "read", false), e("a", "read", false)],
    },
    {
      title: "an exact rule matches only its own name",
      policies: [policy(ex("ab", "write"))],
      expect: [e("ab", "write", true), e("a", "read", false), e("abc", "read", false), e("", "read", false)],
    },
    {
      title: "a longer prefix beats a shorter one",
      policies: [policy(px("", "deny"), px("ab", "read"))],
      expect: [
        e("a", "read", false),
        e("ab", "read", true),
        e("abc", "read", true),
        e("abc", "write", false),
        e("b", "read", false),
      ],
    },
    {
      title: "a longer weaker prefix takes away what a shorter stronger one gave",
      policies: [policy(px("a", "write"), px("ab", "read"))],
      expect: [
        e("a", "write", true),
        e("ax", "write", true),
        e("ab", "write", false),
        e("abc", "write", false),
        e("abc", "read", true),
      ],
    },
    {
      title: "the order of rules in the document does not matter",
      policies: [policy(px("ab", "read"), px("a", "write"))],
      expect: [e("a", "write", true), e("ab", "write", false), e("abc", "read", true)],
    },
    {
      title: "the same split across two policies",
      policies: [policy(px("ab", "read")), policy(px("a", "write"))],
      expect: [e("a", "write", true), e("ab", "write", false), e("abc", "read", true)],
    },
    {
      title: "a longer deny prefix takes away what the empty prefix gave",
      policies: [policy(px("", "write"), px("ab", "deny"))],
      expect: [e("a", "write", true), e("b", "read", true), e("ab", "read", false), e("abc", "read", false)],
    },
    {
      title: "deny wins over allow at equal specificity across two policies (exact)",
      policies: [policy(ex("ab", "write")), policy(ex("ab", "deny"))],
      expect: [e("ab", "read", false), e("ab", "write", false)],
    },
    {
      title: "deny wins over allow at equal specificity across two policies (prefix)",
      policies: [policy(px("a", "write")), policy(px("a", "deny"))],
      expect: [e("a", "read", false), e("ab", "read", false), e("b", "read", false)],
    },
    {
      title: "a more specific allow still beats an equal-specificity deny pair below it",
      policies: [policy(px("a", "write")), policy(px("a", "deny")), policy(px("ab", "read"))],
      expect: [e("a", "read", false), e("ab", "read", true), e("abc", "write", false)],
    },
    {
      title: "deny wins over allow at equal specificity in one policy",
      policies: [policy(ex("ab", "read"), ex("ab", "deny"))],
      expect: [e("ab", "read", false)],
    },
    {
      title: "at equal specificity the most permissive non-deny wins",
      policies: [policy(px("a", "read")), policy(px("a", "write"))],
      expect: [e("ab", "read", true), e("ab", "write", true)],
    },
    {
      title: "default deny when nothing matches",
      policies: [policy(ex("ab", "write"))],
      def: "deny",
      expect: [e("zz", "read", false), e("b", "read", false), e("ab", "write", true)],
    },
    {
      title: "default allow when nothing matches, but a matching rule decides",
      policies: [policy(ex("ab", "read"))],
      def: "allow",
      expect: [e("zz", "write", true), e("ab", "read", true), e("ab", "write", false)],
    },
    {
      title: "default allow with a prefix deny",
      policies: [policy(px("a", "deny"))],
      def: "allow",
      expect: [e("ab", "read", false), e("b", "write", true)],
    },
    { title: "no rules, default deny", policies: [], def: "deny", expect: [e("a", "read", false)] },
    { title: "no rules, default allow", policies: [], def: "allow", expect: [e("a", "write", true)] },
    {
      title: "write implies read",
      policies: [policy(ex("ab", "write"))],
      expect: [e("ab", "read", true), e("ab", "write", true)],
    },
    {
      title: "read does not imply write",
      policies: [policy(px("a", "read"))],
      expect: [e("ab", "read", true), e("ab", "write", false)],
    },
    {
      title: "rules of one resource say nothing of the others",
      policies: [policy(px("", "write"))],
      def: "deny",
      expect: (["service", "node", "key", "component", "acl", "operator"] as const)
        .filter((o) => o !== r)
        .map((o): Expect => [o, "ab", "read", false]),
    },
  ];
  if (r === "key") {
    cases.push(
      {
        title: "key write implies list",
        policies: [policy(ex("ab", "write"))],
        expect: [e("ab", "list", true)],
      },
      {
        title: "key list implies read but not write",
        policies: [policy(px("a", "list"))],
        expect: [e("ab", "read", true), e("ab", "list", true), e("ab", "write", false)],
      },
      {
        title: "key read does not imply list",
        policies: [policy(px("a", "read"))],
        expect: [e("ab", "list", false)],
      },
      {
        title: "a longer read prefix takes list away",
        policies: [policy(px("a", "list"), px("ab", "read"))],
        expect: [e("a", "list", true), e("ab", "list", false), e("ab", "read", true)],
      },
      {
        title: "list beats read at equal specificity",
        policies: [policy(px("a", "read")), policy(px("a", "list"))],
        expect: [e("ab", "list", true), e("ab", "write", false)],
      },
    );
  }
  return cases;
}

function globalCases(g: Global): Case[] {
  const e = (action: Action, allowed: boolean, name = ""): Expect => [g, name, action, allowed];
  return [
    { title: "read", policies: [globals([g, "read"])], expect: [e("read", true), e("write", false)] },
    {
      title: "write implies read",
      policies: [globals([g, "write"])],
      expect: [e("read", true), e("write", true)],
    },
    {
      title: "deny wins across two policies",
      policies: [globals([g, "write"]), globals([g, "deny"])],
      expect: [e("read", false), e("write", false)],
    },
    {
      title: "the most permissive non-deny wins across two policies",
      policies: [globals([g, "read"]), globals([g, "write"])],
      expect: [e("write", true)],
    },
    { title: "nothing matches, default deny", policies: [], def: "deny", expect: [e("read", false)] },
    { title: "nothing matches, default allow", policies: [], def: "allow", expect: [e("write", true)] },
    {
      title: "a deny beats default allow",
      policies: [globals([g, "deny"])],
      def: "allow",
      expect: [e("read", false)],
    },
    {
      title: "a read rule caps default allow",
      policies: [globals([g, "read"])],
      def: "allow",
      expect: [e("read", true), e("write", false)],
    },
    {
      title: "the name asked about does not matter",
      policies: [globals([g, "read"])],
      expect: [e("read", true, "anything"), e("write", false, "anything")],
    },
  ];
}

async function threeWays(c: Case): Promise<[string, Authorizer][]> {
  const def = c.def ?? "deny";
  const fromHcl = await Promise.all(c.policies.map((p) => parseRules(toHcl(p))));
  const fromJson = await Promise.all(c.policies.map((p) => parseRules(toJsonRules(p))));
  return [
    ["rules", compileAuthorizer(c.policies, def)],
    ["HCL", compileAuthorizer(fromHcl, def)],
    ["JSON", compileAuthorizer(fromJson, def)],
  ];
}

function check(c: Case, ways: [string, Authorizer][]): void {
  for (const [way, authz] of ways) {
    for (const [resource, name, action, allowed] of c.expect) {
      expect({ way, resource, name, action, allowed: authz.allows(resource, name, action) }).toEqual({
        way,
        resource,
        name,
        action,
        allowed,
      });
      // The reference evaluator of the property test agrees with the table too.
      expect(refAllows(c.policies, c.def ?? "deny", resource, name, action)).toBe(allowed);
    }
  }
}

describe.each(["service", "node", "key", "component"] as const)("%s rules", (r) => {
  it.each(segmentCases(r).map((c) => [c.title, c] as const))("%s", async (_title, c) => {
    check(c, await threeWays(c));
  });
});

describe.each(["service", "node", "component"] as const)("%s rules", (r) => {
  it('refuse policy = "list" (keys only)', async () => {
    for (const doc of [
      `${r} "ab" { policy = "list" }`,
      `${r}_prefix "" {\n  policy = "list"\n}`,
      JSON.stringify({ [r]: { ab: { policy: "list" } } }),
    ]) {
      const err = await parseRules(doc).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PolicyRulesError);
      if (!doc.startsWith("{")) expect((err as PolicyRulesError).line).toBe(1);
    }
  });
});

describe.each(["acl", "operator"] as const)("%s rules", (g) => {
  it.each(globalCases(g).map((c) => [c.title, c] as const))("%s", async (_title, c) => {
    check(c, await threeWays(c));
  });

  it('refuses policy = "list"', async () => {
    for (const doc of [`${g} = "list"`, JSON.stringify({ [g]: "list" })]) {
      await expect(parseRules(doc)).rejects.toBeInstanceOf(PolicyRulesError);
    }
  });
});

describe("documents", () => {
  const hcl = `# The web team's policy
service_prefix "" {
  policy = "read"
}
service "web" {
  policy     = "write"
  intentions = "read"
}
node_prefix "" { policy = "read" }
node "db-1" { policy = "deny" }
key_prefix "app/" { policy = "list" }
key "app/secret" { policy = "deny" }
component_prefix "" { policy = "read" }
acl = "read"
operator = "deny"
`;
  const json = `{
  "service_prefix": { "": { "policy": "read" } },
  "service": { "web": { "policy": "write", "intentions": "read" } },
  "node_prefix": { "": { "policy": "read" } },
  "node": { "db-1": { "policy": "deny" } },
  "key_prefix": { "app/": { "policy": "list" } },
  "key": { "app/secret": { "policy": "deny" } },
  "component_prefix": { "": { "policy": "read" } },
  "acl": "read",
  "operator": "deny"
}`;
  const expected: Expect[] = [
    ["service", "web", "write", true],
    ["service", "web-api", "write", false],
    ["service", "api", "read", true],
    ["node", "db-1", "read", false],
    ["node", "db-10", "read", true],
    ["key", "app/config", "list", true],
    ["key", "app/config", "write", false],
    ["key", "app/secret", "read", false],
    ["key", "other", "read", false],
    ["component", "x", "read", true],
    ["acl", "", "read", true],
    ["acl", "", "write", false],
    ["operator", "", "read", false],
  ];

  it("a Consul-style HCL document and its JSON form give the same decisions", async () => {
    const a = compileAuthorizer([await parseRules(hcl)], "deny");
    const b = compileAuthorizer([await parseRules(json)], "deny");
    for (const [resource, name, action, allowed] of expected) {
      expect([resource, name, action, a.allows(resource, name, action)]).toEqual([
        resource,
        name,
        action,
        allowed,
      ]);
      expect([resource, name, action, b.allows(resource, name, action)]).toEqual([
        resource,
        name,
        action,
        allowed,
      ]);
    }
  });

  it("parses to the same rules either way", async () => {
    const byKey = (r: PolicyRules) => ({
      segments: [...r.segments].sort((x, y) =>
        `${x.resource}/${x.match}/${x.segment}`.localeCompare(`${y.resource}/${y.match}/${y.segment}`),
      ),
      globals: [...r.globals].sort((x, y) => x.resource.localeCompare(y.resource)),
    });
    expect(byKey(await parseRules(hcl))).toEqual(byKey(await parseRules(json)));
  });

  it("an empty document has no rules", async () => {
    for (const doc of ["", "  \n", "{}", "# nothing\n"]) {
      expect(await parseRules(doc)).toEqual({ segments: [], globals: [] });
    }
  });

  it("asking twice gives the same answer (decision cache)", async () => {
    const a = compileAuthorizer([await parseRules(hcl)], "deny");
    for (let i = 0; i < 3; i++) {
      expect(a.allows("key", "app/secret", "read")).toBe(false);
      expect(a.allows("key", "app/x", "read")).toBe(true);
    }
  });
});

describe("rule document errors", () => {
  async function parseError(doc: string): Promise<PolicyRulesError> {
    const err = await parseRules(doc).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyRulesError);
    return err as PolicyRulesError;
  }

  it.each([
    ["an unfinished attribute", 'service "web" {\n  policy = "read"\n}\nnode "n1" { policy = ', 4],
    // HCL names the block left open.
    ["an unclosed block", 'key "a" { policy = "read" }\nkey "b" {\n  policy = "read"\n', 2],
    ["a stray token", 'service "web" { policy = "read" }\n\n}}\n', 3],
    ["an unterminated string", 'acl = "read"\noperator = "wri\n', 2],
  ])("malformed HCL (%s) points at its line", async (_what, doc, line) => {
    const err = await parseError(doc);
    expect(err.line).toBe(line);
    expect(err.column).toBeTypeOf("number");
  });

  it.each([
    ["a bad policy value", 'service "web" { policy = "read" }\n\nservice "api" { policy = "bogus" }', 3],
    ["an unknown resource", 'service "web" { policy = "read" }\nfoo "x" { policy = "read" }', 2],
    ["an unknown resource attribute", 'key "a" { policy = "read" }\nkeys = "read"', 2],
    ["a bad global value", 'acl = "read"\noperator = "bogus"', 2],
    ["a missing policy", 'node "n1" { policy = "read" }\nnode "n2" {\n}', 2],
    ["list on a service", 'key "a" { policy = "list" }\nservice_prefix "" { policy = "list" }', 2],
    // The error points at the block; the document lost the field's own position on the way to JSON.
    [
      "an unknown field",
      'service "web" { policy = "read" }\nservice "api" {\n  policy = "read"\n  color = "red"\n}',
      2,
    ],
    ["a block that is not a block", 'key "a" { policy = "read" }\n\nservice = "read"', 3],
  ])("a semantic error (%s) is a PolicyRulesError at its line", async (_what, doc, line) => {
    const err = await parseError(doc);
    expect(err.line).toBe(line);
  });

  it.each([
    ["a bad policy value", '{ "service": { "web": { "policy": "bogus" } } }'],
    ["an unknown resource", '{ "foo": { "x": { "policy": "read" } } }'],
    ["an unknown field", '{ "key": { "a": { "policy": "read", "color": "red" } } }'],
    ["a missing policy", '{ "node": { "n1": {} } }'],
    ["a non-object resource", '{ "service": "read" }'],
    ["a list of rules", '[{ "service": {} }]'],
  ])("the JSON form with %s is a PolicyRulesError", async (_what, doc) => {
    await parseError(doc);
  });

  it("malformed JSON points at its line when the parser gives a position", async () => {
    const err = await parseError('{\n  "service": {\n    "web": { "policy": "read" },\n  }\n}');
    expect(err.line).toBe(4);
  });

  // BUG (src/acl/rules.ts, locate): the line search finds the first block with the label, so
  // an error in the second of two blocks labelled alike points at the first one.
  it("an error in the second of two blocks with the same label points at the second", async () => {
    const err = await parseError('service "web" { policy = "read" }\nservice "web" { policy = "bogus" }');
    expect(err.line).toBe(2);
  });

  // BUG (src/acl/rules.ts, parseRules): the JSON line is counted in the trimmed text, so
  // leading blank lines shift it.
  it("malformed JSON after blank lines points at its line in the document", async () => {
    const err = await parseError('\n\n{\n  "service": {,}\n}');
    expect(err.line).toBe(4);
  });

  // BUG (src/acl/rules.ts, parseRules): V8 names no position for "Unexpected token" errors,
  // so the line is lost for them (the issue asks for the line of every malformed policy).
  it("malformed JSON whose parser message has no position still gets a line", async () => {
    const err = await parseError('{\n  "service":\n}');
    expect(err.line).toBe(3);
  });
});
