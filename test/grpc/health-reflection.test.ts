import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { service as healthService } from "grpc-health-check";
import { describe, expect, it, onTestFinished } from "vitest";
import { Harness, withTimeout } from "../helpers/grpc-harness.js";

/* The standard services next to sluice.v1: grpc.health.v1 and server reflection. */

const HealthClient = grpc.makeClientConstructor(healthService, "grpc.health.v1.Health");

type Callback = (err: grpc.ServiceError | null, res?: { status: string }) => void;
interface HealthCheck {
  Check(req: { service: string }, cb: Callback): grpc.ClientUnaryCall;
}

function check(client: HealthCheck, service: string): Promise<string> {
  return new Promise((resolve, reject) =>
    client.Check({ service }, (err, res) => (err ? reject(err) : resolve(res!.status))),
  );
}

const reflectionProtoDir = join(
  dirname(createRequire(import.meta.url).resolve("@grpc/reflection/package.json")),
  "build/proto",
);

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
}

describe("grpc.health.v1", () => {
  it("answers SERVING for the server and for each sluice.v1 service", async () => {
    const h = await Harness.start();
    const client = new HealthClient(h.address, grpc.credentials.createInsecure()) as unknown as HealthCheck &
      grpc.Client;
    onTestFinished(() => client.close());
    const names = [
      "",
      "sluice.v1.StateChangeSubscription",
      "sluice.v1.KV",
      "sluice.v1.Catalog",
      "sluice.v1.ACL",
    ];
    expect(await Promise.all(names.map((n) => check(client, n)))).toEqual(names.map(() => "SERVING"));
    const unknown = await check(client, "no.such.Service").catch((err: grpc.ServiceError) => err.code);
    expect(unknown).toBe(grpc.status.NOT_FOUND);
  });
});

describe("server reflection", () => {
  it("lists the sluice.v1 services", async () => {
    const h = await Harness.start();
    const def = loadSync("grpc/reflection/v1/reflection.proto", {
      keepCase: true,
      includeDirs: [reflectionProtoDir],
    });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
    };
    const client = new pkg.grpc.reflection.v1.ServerReflection(h.address, grpc.credentials.createInsecure());
    onTestFinished(() => client.close());
    const call = (
      client as unknown as { ServerReflectionInfo(): grpc.ClientDuplexStream<object, ReflectionResponse> }
    ).ServerReflectionInfo();
    const first = new Promise<ReflectionResponse>((resolve, reject) => {
      call.once("data", resolve);
      call.once("error", reject);
    });
    call.write({ list_services: "*" });
    const res = await withTimeout(first, 5000, "the reflection answer");
    call.end();
    const names = (res.list_services_response?.service ?? []).map((s) => s.name);
    expect(names).toEqual(
      expect.arrayContaining([
        "sluice.v1.StateChangeSubscription",
        "sluice.v1.Catalog",
        "sluice.v1.KV",
        "sluice.v1.ACL",
      ]),
    );
  });
});
