import type { ACLClient } from "../generated/sluice/v1/ACL.js";
import type { ACLToken__Output } from "../generated/sluice/v1/ACLToken.js";
import type { DeleteAclResponse__Output } from "../generated/sluice/v1/DeleteAclResponse.js";
import type { ListPoliciesResponse__Output } from "../generated/sluice/v1/ListPoliciesResponse.js";
import type { ListTokensResponse__Output } from "../generated/sluice/v1/ListTokensResponse.js";
import type { PolicyResponse__Output } from "../generated/sluice/v1/PolicyResponse.js";
import type { TokenResponse__Output } from "../generated/sluice/v1/TokenResponse.js";
import { ProtocolError } from "./errors.js";
import { type ACLPolicy, type ACLToken, type AccessorId, asIndex, type Index } from "./types.js";
import { type CallContext, type CallOptions, unaryCall } from "./unary-call.js";

/** A policy or role named by name (a bare string), by name, or by id. */
export type LinkRef = string | { readonly name: string } | { readonly id: string };

export interface PolicyInput {
  readonly name: string;
  /** HCL or JSON in Consul's rule language. */
  readonly rules: string;
  readonly description?: string;
}

export interface TokenInput {
  readonly description?: string;
  readonly policies?: readonly LinkRef[];
  readonly roles?: readonly LinkRef[];
  /** Expires this long after creation, in ms. */
  readonly ttlMs?: number;
  /** Chosen ids (generated when absent). */
  readonly accessorId?: string;
  readonly secretId?: string;
  readonly local?: boolean;
}

const link = (l: LinkRef) =>
  typeof l === "string" ? { name: l } : "id" in l ? { id: l.id } : { name: l.name };

function token(t: ACLToken__Output | null | undefined): ACLToken {
  if (!t) throw new ProtocolError("token response without a token");
  return t as ACLToken;
}

/** Unary ACL calls (sluice.v1.ACL). Writes answer the commit index. */
export class AclApi {
  constructor(
    private readonly ctx: CallContext,
    private readonly stub: ACLClient,
  ) {}

  /** Creates the management token, once (then `FailedPreconditionError`). */
  async bootstrap(options: CallOptions = {}): Promise<{ index: Index; token: ACLToken }> {
    const res = await unaryCall<TokenResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.Bootstrap({}, md, o, cb),
      options,
    );
    return { index: asIndex(res.index), token: token(res.token) };
  }

  async createPolicy(
    input: PolicyInput,
    options: CallOptions = {},
  ): Promise<{ index: Index; policy: ACLPolicy }> {
    const req = { name: input.name, rules: input.rules, description: input.description ?? "" };
    const res = await unaryCall<PolicyResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.UpsertPolicy(req, md, o, cb),
      options,
    );
    if (!res.policy) throw new ProtocolError("policy response without a policy");
    return { index: asIndex(res.index), policy: res.policy };
  }

  /** Replaces a policy's name, rules and description; tokens using it have their streams closed. */
  async updatePolicy(
    id: string,
    input: PolicyInput,
    options: CallOptions = {},
  ): Promise<{ index: Index; policy: ACLPolicy }> {
    const req = { id, name: input.name, rules: input.rules, description: input.description ?? "" };
    const res = await unaryCall<PolicyResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.UpsertPolicy(req, md, o, cb),
      options,
    );
    if (!res.policy) throw new ProtocolError("policy response without a policy");
    return { index: asIndex(res.index), policy: res.policy };
  }

  async listPolicies(options: CallOptions = {}): Promise<{ index: Index; policies: ACLPolicy[] }> {
    const res = await unaryCall<ListPoliciesResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.ListPolicies({}, md, o, cb),
      options,
    );
    return { index: asIndex(res.index), policies: res.policies };
  }

  /** Deletes a policy by id. */
  async deletePolicy(id: string, options: CallOptions = {}): Promise<Index> {
    const res = await unaryCall<DeleteAclResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.DeletePolicy({ id }, md, o, cb),
      options,
    );
    return asIndex(res.index);
  }

  async createToken(
    input: TokenInput = {},
    options: CallOptions = {},
  ): Promise<{ index: Index; token: ACLToken }> {
    const req = {
      description: input.description ?? "",
      policies: (input.policies ?? []).map(link),
      roles: (input.roles ?? []).map(link),
      expiration_ttl_ms: input.ttlMs ?? 0,
      local: input.local ?? false,
      ...(input.accessorId ? { accessor_id: input.accessorId } : {}),
      ...(input.secretId ? { secret_id: input.secretId } : {}),
    };
    const res = await unaryCall<TokenResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.UpsertToken(req, md, o, cb),
      options,
    );
    return { index: asIndex(res.index), token: token(res.token) };
  }

  /** Tokens without their secrets. */
  async listTokens(options: CallOptions = {}): Promise<{ index: Index; tokens: ACLToken[] }> {
    const res = await unaryCall<ListTokensResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.ListTokens({}, md, o, cb),
      options,
    );
    return { index: asIndex(res.index), tokens: res.tokens.map(token) };
  }

  /** Deletes a token; its open streams are closed by the server. */
  async deleteToken(accessor: AccessorId, options: CallOptions = {}): Promise<Index> {
    const res = await unaryCall<DeleteAclResponse__Output>(
      this.ctx,
      (md, o, cb) => this.stub.DeleteToken({ id: accessor }, md, o, cb),
      options,
    );
    return asIndex(res.index);
  }
}
