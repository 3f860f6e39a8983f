import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  compileAuthorizer,
  type DefaultPolicy,
  type PolicyRules,
  parseRules,
  type Resource,
  type SegmentRule,
} from "../../src/acl/index.js";
import { type Action, fcParams, refAllows, toHcl, toJsonRules } from "../helpers/acl-reference.js";

/*
 * For random policies, a random default policy and random questions, the CASL-compiled
 * authorizer answers exactly as the reference evaluator written from issue 4's precedence
 * rules. Segments and names come from one small alphabet of mutual prefixes, so exact and
 * prefix rules of every length collide often.
 *
 * Replay a failure with SLUICE_FC_SEED=<seed> (and SLUICE_FC_PATH=<path>); SLUICE_FC_RUNS
 * sets the number of runs.
 */

const SEGMENTED = ["service", "node", "key", "component"] as const;
const RESOURCES: readonly Resource[] = [...SEGMENTED, "acl", "operator"];
const SEGMENTS = ["", "a", "ab", "abc", "b"] as const;
const NAMES = ["", "a", "ab", "abc", "abd", "abcd", "b", "ba", "c"] as const;
const ACTIONS: readonly Action[] = ["read", "list", "write"];

const segmentRule: fc.Arbitrary<SegmentRule> = fc
  .record({
    resource: fc.constantFrom(...SEGMENTED),
    match: fc.constantFrom("exact" as const, "prefix" as const),
    segment: fc.constantFrom(...SEGMENTS),
    level: fc.constantFrom("deny" as const, "read" as const, "list" as const, "write" as const),
  })
  // `list` is a key level only: elsewhere it is refused at parse time, so it never compiles.
  .map(({ resource, match, segment, level }) => ({
    resource,
    match,
    segment,
    access: level === "list" && resource !== "key" ? "read" : level,
  }));

/** A policy: any number of segment rules, at most one value per global (HCL refuses a repeat). */
const policyRules: fc.Arbitrary<PolicyRules> = fc
  .record({
    segments: fc.array(segmentRule, { maxLength: 6 }),
    acl: fc.option(fc.constantFrom("deny" as const, "read" as const, "write" as const), { nil: undefined }),
    operator: fc.option(fc.constantFrom("deny" as const, "read" as const, "write" as const), {
      nil: undefined,
    }),
  })
  .map(({ segments, acl, operator }) => ({
    segments,
    globals: [
      ...(acl === undefined ? [] : [{ resource: "acl" as const, access: acl }]),
      ...(operator === undefined ? [] : [{ resource: "operator" as const, access: operator }]),
    ],
  }));

const question = fc.tuple(
  fc.constantFrom(...RESOURCES),
  fc.constantFrom(...NAMES),
  fc.constantFrom(...ACTIONS),
);
const defaultPolicy = fc.constantFrom<DefaultPolicy>("allow", "deny");

const describeRules = (ps: readonly PolicyRules[]): string => ps.map(toHcl).join("---\n");

describe("compileAuthorizer against the reference evaluator", () => {
  it("gives the reference decision for every question, asked twice", () => {
    fc.assert(
      fc.property(
        fc.array(policyRules, { maxLength: 4 }),
        defaultPolicy,
        fc.array(question, { minLength: 1, maxLength: 30 }),
        (policies, def, questions) => {
          const authz = compileAuthorizer(policies, def);
          for (let round = 0; round < 2; round++) {
            for (const [resource, name, action] of questions) {
              const want = refAllows(policies, def, resource, name, action);
              if (authz.allows(resource, name, action) !== want) {
                expect.fail(
                  `${resource}:${action} on "${name}" (default ${def}) should be ${want}; rules:\n${describeRules(policies)}`,
                );
              }
            }
          }
        },
      ),
      fcParams(1000),
    );
  });

  it("every question over the whole alphabet, for rules of one resource", () => {
    // Denser than the above: one resource, so that every rule bears on the questions.
    fc.assert(
      fc.property(
        fc.constantFrom(...SEGMENTED),
        fc.array(fc.array(segmentRule, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 3 }),
        defaultPolicy,
        (resource, lists, def) => {
          const policies = lists.map((segments) => ({
            segments: segments.map((r) => ({
              ...r,
              resource,
              access: r.access === "list" && resource !== "key" ? ("read" as const) : r.access,
            })),
            globals: [],
          }));
          const authz = compileAuthorizer(policies, def);
          for (const name of NAMES) {
            for (const action of ACTIONS) {
              const want = refAllows(policies, def, resource, name, action);
              if (authz.allows(resource, name, action) !== want) {
                expect.fail(
                  `${resource}:${action} on "${name}" (default ${def}) should be ${want}; rules:\n${describeRules(policies)}`,
                );
              }
            }
          }
        },
      ),
      fcParams(1000),
    );
  });

  it("the HCL and JSON documents of random rules compile to the same decisions", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(policyRules, { minLength: 1, maxLength: 3 }),
        defaultPolicy,
        async (policies, def) => {
          const fromHcl = await Promise.all(policies.map((p) => parseRules(toHcl(p))));
          const fromJson = await Promise.all(policies.map((p) => parseRules(toJsonRules(p))));
          const a = compileAuthorizer(fromHcl, def);
          const b = compileAuthorizer(fromJson, def);
          for (const resource of RESOURCES) {
            for (const name of NAMES) {
              for (const action of ACTIONS) {
                const want = refAllows(policies, def, resource, name, action);
                expect([resource, name, action, a.allows(resource, name, action)]).toEqual([
                  resource,
                  name,
                  action,
                  want,
                ]);
                expect([resource, name, action, b.allows(resource, name, action)]).toEqual([
                  resource,
                  name,
                  action,
                  want,
                ]);
              }
            }
          }
        },
      ),
      fcParams(200),
    );
  });
});
