import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { PROMETHEUS_CONTENT_TYPE } from "../../src/http/index.js";
import { sluiceV1 } from "../../src/proto/index.js";
import { type HttpApi, startServer } from "./http-harness.js";

/*
 * GET /v1/agent/metrics on a real server: the Prometheus text format with the publisher's
 * counters, subscriptions by topic, blocking queries in flight, commit and fsync latency and
 * HTTP request counts; prom-client's JSON without `format`; 400 for an unknown format.
 */

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function scrape(api: HttpApi): Promise<string> {
  const r = await api.fetch("GET", "/v1/agent/metrics?format=prometheus");
  expect(r.status).toBe(200);
  expect(r.headers.get("content-type")).toBe(PROMETHEUS_CONTENT_TYPE);
  return r.text();
}

/** The value of one sample line (`name{labels} value`), or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

async function until(check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("GET /v1/agent/metrics", () => {
  it("exposes publisher, blocking-query, commit and HTTP metrics in the text format", async () => {
    const api = await startServer();
    const put = await api.put("/v1/kv/app/config", "v1");
    expect(put.status).toBe(200);
    const first = await api.get("/v1/kv/app/config");
    expect(first.status).toBe(200);

    // A blocking read on the key: held by a KV view (one subscription) until it changes.
    const blocked = api.get(`/v1/kv/app/config?index=${first.index}&wait=10s`);
    let text = "";
    await until(async () => {
      text = await scrape(api);
      return sample(text, "sluice_blocking_queries_in_flight") === 1;
    });
    expect(sample(text, 'sluice_subscriptions{topic="KV"}')).toBe(1);
    expect(sample(text, "sluice_events_published_total")).toBeGreaterThanOrEqual(1);
    expect(sample(text, "sluice_snapshot_builds_total")).toBeGreaterThanOrEqual(1);
    for (const name of [
      "sluice_events_delivered_total",
      "sluice_snapshot_cache_hits_total",
      "sluice_subscriber_resets_total",
      "sluice_force_closes_total",
    ]) {
      expect(sample(text, name), name).toBeGreaterThanOrEqual(0);
    }
    expect(sample(text, 'sluice_commit_duration_seconds_count{result="ok"}')).toBe(1);
    expect(sample(text, "sluice_wal_fsync_seconds_count")).toBe(0); // --dev: no log, no fsync
    expect(sample(text, 'sluice_http_requests_total{method="PUT",route="/v1/kv/*",status="200"}')).toBe(1);
    expect(
      sample(text, 'sluice_http_request_duration_seconds_count{method="PUT",route="/v1/kv/*",status="200"}'),
    ).toBe(1);
    expect(text).toContain("# TYPE sluice_events_published_total counter");
    expect(text).toContain("# TYPE sluice_commit_duration_seconds histogram");
    expect(text).toContain("process_cpu_seconds_total"); // Node's default metrics
    expect(text).toContain("nodejs_heap_size_used_bytes");

    // The change answers the blocked read; the event is delivered and the gauge drops.
    expect((await api.put("/v1/kv/app/config", "v2")).status).toBe(200);
    const answered = await blocked;
    expect(answered.status).toBe(200);
    expect(answered.index).toBeGreaterThan(first.index);
    text = await scrape(api);
    expect(sample(text, "sluice_blocking_queries_in_flight")).toBe(0);
    expect(sample(text, "sluice_events_delivered_total")).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'sluice_commit_duration_seconds_count{result="ok"}')).toBe(2);
    expect(
      sample(text, 'sluice_http_requests_total{method="GET",route="/v1/kv/*",status="200"}'),
    ).toBeGreaterThanOrEqual(2);
    // Earlier scrapes are counted too, and requests that match no route.
    expect(
      sample(text, 'sluice_http_requests_total{method="GET",route="/v1/agent/metrics",status="200"}'),
    ).toBeGreaterThanOrEqual(1);
    await api.get("/v1/no/such/route");
    text = await scrape(api);
    expect(sample(text, 'sluice_http_requests_total{method="GET",route="unmatched",status="404"}')).toBe(1);
  });

  it("feeds the WAL fsync histogram with fsync always", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "sluice-metrics-"));
    dirs.push(dataDir);
    const api = await startServer({ dev: false, dataDir, fsync: "always" });
    expect((await api.put("/v1/kv/a", "1")).status).toBe(200);
    const text = await scrape(api);
    expect(sample(text, "sluice_wal_fsync_seconds_count")).toBeGreaterThanOrEqual(1);
    expect(sample(text, "sluice_wal_fsync_seconds_sum")).toBeGreaterThan(0);
  });

  it("counts and times unary gRPC calls by method and status code", async () => {
    const api = await startServer();
    const kv = new sluiceV1.KV(`127.0.0.1:${api.server.grpcPort}`, grpc.credentials.createInsecure());
    const put = (key: string) =>
      new Promise<grpc.ServiceError | null>((resolve) =>
        kv.Put({ key, value: Buffer.from("v") }, (err) => resolve(err)),
      );
    expect(await put("a")).toBeNull();
    expect((await put("/bad"))?.code).toBe(grpc.status.INVALID_ARGUMENT);
    kv.close();
    const text = await scrape(api);
    expect(sample(text, 'sluice_grpc_requests_total{method="/sluice.v1.KV/Put",code="OK"}')).toBe(1);
    expect(
      sample(text, 'sluice_grpc_requests_total{method="/sluice.v1.KV/Put",code="INVALID_ARGUMENT"}'),
    ).toBe(1);
    expect(
      sample(text, 'sluice_grpc_request_duration_seconds_count{method="/sluice.v1.KV/Put",code="OK"}'),
    ).toBe(1);
  });

  it("answers JSON without a format and 400 for an unknown one; /v1/health is unchanged", async () => {
    const api = await startServer();
    const j = await api.get<{ name: string; type: string }[]>("/v1/agent/metrics");
    expect(j.status).toBe(200);
    expect(j.headers.get("content-type")).toMatch(/^application\/json/);
    const names = j.body.map((m) => m.name);
    expect(names).toContain("sluice_subscriptions");
    expect(names).toContain("sluice_http_requests_total");

    const bad = await api.get<{ error: string }>("/v1/agent/metrics?format=xml");
    expect(bad.status).toBe(400);
    expect(bad.headers.get("x-sluice-error")).toBeTruthy();

    const health = await api.get<{ status: string; index: number }>("/v1/health");
    expect(health.status).toBe(200);
    expect(health.body.status).toBe("ok");
  });
});
