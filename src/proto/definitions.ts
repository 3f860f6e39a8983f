import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { loadSync, type PackageDefinition } from "@grpc/proto-loader";
import protobuf from "protobufjs";
import type { ProtoGrpcType as AclProto } from "../generated/acl.js";
import type { ProtoGrpcType as BrokerProto } from "../generated/broker.js";
import type { ProtoGrpcType as CatalogProto } from "../generated/catalog.js";
import type { ProtoGrpcType as KvProto } from "../generated/kv.js";
import type { ProtoGrpcType as StreamProto } from "../generated/stream.js";

/** Where the .proto files live: `proto/` at the package root (same depth from src/ and dist/). */
export const PROTO_DIR = fileURLToPath(new URL("../../proto", import.meta.url));
export const PROTO_FILES = [
  "sluice/v1/stream.proto",
  "sluice/v1/catalog.proto",
  "sluice/v1/kv.proto",
  "sluice/v1/acl.proto",
  "sluice/v1/broker.proto",
] as const;

/** Loader options matching the generated types (`npm run gen`). */
export const LOADER_OPTIONS = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

export const packageDefinition: PackageDefinition = loadSync([...PROTO_FILES], LOADER_OPTIONS);

export type SluiceProto = StreamProto & CatalogProto & KvProto & AclProto & BrokerProto;

/** The sluice.v1 package as grpc-js sees it (service constructors and definitions). */
export const sluiceV1 = (grpc.loadPackageDefinition(packageDefinition) as unknown as SluiceProto).sluice.v1;

/** protobufjs types, for encoding events once and decoding them on the client. */
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => (target.startsWith("/") ? target : `${PROTO_DIR}/${target}`);
root.loadSync([...PROTO_FILES], { keepCase: true });
export const EventType = root.lookupType("sluice.v1.Event");
/** The broker's envelope (archived in JetStream and carried between brokers over NATS). */
export const EnvelopeType = root.lookupType("sluice.v1.Envelope");
