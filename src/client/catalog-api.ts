import type { CatalogClient } from "../generated/sluice/v1/Catalog.js";
import type { DeregisterRequest } from "../generated/sluice/v1/DeregisterRequest.js";
import type { ListNodesResponse__Output } from "../generated/sluice/v1/ListNodesResponse.js";
import type { ListServicesResponse__Output } from "../generated/sluice/v1/ListServicesResponse.js";
import type { RegisterRequest } from "../generated/sluice/v1/RegisterRequest.js";
import type { ServiceHealthResponse__Output } from "../generated/sluice/v1/ServiceHealthResponse.js";
import type { UpdateCheckRequest } from "../generated/sluice/v1/UpdateCheckRequest.js";
import type { WriteResponse__Output } from "../generated/sluice/v1/WriteResponse.js";
import { ProtocolError } from "./errors.js";
import { asIndex, type Index, type Node, type ServiceInstance } from "./types.js";
import { type CallContext, type CallOptions, unaryCall } from "./unary-call.js";

/** A registration: a node and, optionally, a service and checks on it, in one transaction. */
export type RegisterInput = RegisterRequest;
/** Which registration to remove: a node (with everything on it), a service, or a check. */
export type DeregisterInput = DeregisterRequest;
export type UpdateCheckInput = UpdateCheckRequest;

export interface ServiceHealthQuery extends CallOptions {
  /** Only instances whose checks all pass. */
  readonly passingOnly?: boolean;
  /** Only instances carrying this tag. */
  readonly tag?: string;
}

/** Unary catalog calls (sluice.v1.Catalog). Writes answer the commit index. */
export class CatalogApi {
  constructor(
    private readonly ctx: CallContext,
    private readonly stub: CatalogClient,
  ) {}

  async register(input: RegisterInput, options: CallOptions = {}): Promise<Index> {
    const res = await unaryCall<WriteResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.Register(input, md, o, cb),
      options,
    );
    return asIndex(res.index);
  }

  async deregister(input: DeregisterInput, options: CallOptions = {}): Promise<Index> {
    const res = await unaryCall<WriteResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.Deregister(input, md, o, cb),
      options,
    );
    return asIndex(res.index);
  }

  /** Sets a check's status (passing | warning | critical | maintenance). */
  async updateCheck(input: UpdateCheckInput, options: CallOptions = {}): Promise<Index> {
    const res = await unaryCall<WriteResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.UpdateCheck(input, md, o, cb),
      options,
    );
    return asIndex(res.index);
  }

  /** Service names with the tags seen on their instances. */
  async services(options: CallOptions = {}): Promise<{ index: Index; services: Map<string, string[]> }> {
    const res = await unaryCall<ListServicesResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.ListServices({}, md, o, cb),
      options,
    );
    const names = Object.keys(res.services).sort();
    return {
      index: asIndex(res.index),
      services: new Map(names.map((n) => [n, res.services[n]?.tags ?? []])),
    };
  }

  /** Instances of a service with their nodes and checks. */
  async serviceHealth(
    service: string,
    options: ServiceHealthQuery = {},
  ): Promise<{ index: Index; instances: ServiceInstance[] }> {
    const req = { service, passing_only: options.passingOnly ?? false, tag: options.tag ?? "" };
    const res = await unaryCall<ServiceHealthResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.ServiceHealth(req, md, o, cb),
      options,
    );
    const instances = res.instances.map(({ node, service: svc, checks }) => {
      if (!node || !svc) throw new ProtocolError("service instance without node or service");
      return { node, service: svc, checks };
    });
    return { index: asIndex(res.index), instances };
  }

  async nodes(options: CallOptions = {}): Promise<{ index: Index; nodes: Node[] }> {
    const res = await unaryCall<ListNodesResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.ListNodes({}, md, o, cb),
      options,
    );
    return { index: asIndex(res.index), nodes: res.nodes };
  }
}
