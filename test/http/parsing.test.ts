import { describe, expect, it } from "vitest";
import { PermissionDeniedError, TokenNotFoundError } from "../../src/acl/index.js";
import { parseBlocking } from "../../src/http/blocking.js";
import { BadRequestError, parseGoDuration, toHttpStatus } from "../../src/http/index.js";
import { RouteTable } from "../../src/http/route-table.js";
import { CasFailedError, ValidationError } from "../../src/state/index.js";
import { ShuttingDownError } from "../../src/stream/index.js";

/* The pure parts of the HTTP layer: Go durations, blocking parameters, the status mapping. */

describe("parseGoDuration", () => {
  it("reads what Go's time.ParseDuration reads, in milliseconds", () => {
    expect(parseGoDuration("0")).toBe(0);
    expect(parseGoDuration("10s")).toBe(10_000);
    expect(parseGoDuration("1m30s")).toBe(90_000);
    expect(parseGoDuration("1.5h")).toBe(5_400_000);
    expect(parseGoDuration("250ms")).toBe(250);
    expect(parseGoDuration("1500us")).toBe(1.5);
    expect(parseGoDuration("1\u00b5s")).toBe(0.001);
    expect(parseGoDuration(".5s")).toBe(500);
    expect(parseGoDuration("-2s")).toBe(-2000);
  });

  it("refuses what Go refuses", () => {
    for (const bad of ["", "10", "s", "1x", "1s2", "abc", "1 s", "--1s", "1.s.", "."])
      expect(parseGoDuration(bad), bad).toBeUndefined();
  });
});

describe("parseBlocking", () => {
  const top = () => 0.999_999;
  const none = () => 0;

  it("defaults to 5 minutes, caps at 10, and adds at most wait/16 of jitter", () => {
    expect(parseBlocking({}, none)).toEqual({ minIndex: 0, waitMs: 300_000 });
    expect(parseBlocking({ index: "7" }, none)).toEqual({ minIndex: 7, waitMs: 300_000 });
    expect(parseBlocking({ index: "7", wait: "0" }, none).waitMs).toBe(300_000);
    expect(parseBlocking({ index: "7", wait: "1h" }, none).waitMs).toBe(600_000);
    expect(parseBlocking({ index: "7", wait: "1h" }, top).waitMs).toBe(600_000 + 37_499);
    expect(parseBlocking({ index: "7", wait: "16s" }, top).waitMs).toBe(16_999);
  });

  it("refuses malformed values with a BadRequestError naming the parameter", () => {
    for (const [q, field] of [
      [{ index: "-1" }, "index"],
      [{ index: "1e3" }, "index"],
      [{ index: "99999999999999999999" }, "index"],
      [{ wait: "abc" }, "wait"],
      [{ wait: "-5s" }, "wait"],
      [{ stale: "", consistent: "" }, "consistent"],
    ] as const) {
      try {
        parseBlocking(q, none);
        expect.unreachable(JSON.stringify(q));
      } catch (err) {
        expect(err).toBeInstanceOf(BadRequestError);
        expect((err as BadRequestError).field).toBe(field);
      }
    }
  });
});

describe("toHttpStatus", () => {
  it("maps each internal error to its status, with its fields in the body", () => {
    expect(toHttpStatus(new TokenNotFoundError())).toEqual({
      status: 403,
      body: { error: "ACL not found" },
      kind: "TokenNotFoundError",
    });
    const denied = toHttpStatus(new PermissionDeniedError("key", "a/b", "write"));
    expect(denied.status).toBe(403);
    expect(denied.body).toMatchObject({ resource: "key", segment: "a/b", access: "write" });
    expect(toHttpStatus(new ValidationError("ops[0].key", "too long")).body).toMatchObject({
      field: "ops[0].key",
      reason: "too long",
    });
    expect(toHttpStatus(new CasFailedError("kv", "k", 3, 4)).status).toBe(409);
    expect(toHttpStatus(new ShuttingDownError()).status).toBe(503);
  });

  it("hides internal errors' messages and keeps fastify's client errors", () => {
    expect(toHttpStatus(new Error("secret detail"))).toEqual({
      status: 500,
      body: { error: "internal server error" },
      kind: "Error",
    });
    const tooBig = Object.assign(new Error("Request body is too large"), { statusCode: 413, code: "FST_X" });
    expect(toHttpStatus(tooBig).status).toBe(413);
  });
});

describe("RouteTable", () => {
  it("finds the methods of a path through params and wildcards", () => {
    const t = new RouteTable();
    t.add(["GET", "HEAD"], "/v1/kv/*");
    t.add("PUT", "/v1/kv/*");
    t.add("GET", "/v1/acl/policy/:id");
    t.add("PUT", "/v1/acl/policy");
    expect(t.methodsFor("/v1/kv/a/b")).toEqual(["GET", "HEAD", "PUT"]);
    expect(t.methodsFor("/v1/acl/policy/x")).toEqual(["GET"]);
    expect(t.methodsFor("/v1/acl/policy")).toEqual(["PUT"]);
    expect(t.methodsFor("/v1/acl/policy/x/y")).toEqual([]);
    expect(t.methodsFor("/v1/kvx")).toEqual([]);
  });
});
