import { randomUUID } from "node:crypto";
import {
  type ACLPolicyRow,
  type ACLRoleRow,
  type ACLTokenRow,
  ConflictError,
  type Index,
  MissingReferenceError,
  queries,
  type Store,
  ValidationError,
} from "../state/index.js";
import { AclDisabledError, BootstrapDoneError } from "./errors.js";
import { ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET, GLOBAL_MANAGEMENT_ID } from "./resolver.js";
import { GLOBAL_MANAGEMENT_RULES, parseRules } from "./rules.js";

/** A link to a policy or role, by ID or by name (Consul's `{ ID }` / `{ Name }`). */
export interface LinkRef {
  readonly ID?: string;
  readonly Name?: string;
}

export interface PolicyInput {
  readonly ID?: string;
  readonly Name: string;
  readonly Description?: string;
  readonly Rules: string;
}

export interface RoleInput {
  readonly ID?: string;
  readonly Name: string;
  readonly Description?: string;
  readonly Policies?: readonly LinkRef[];
}

export interface TokenInput {
  readonly AccessorID?: string;
  readonly SecretID?: string;
  readonly Description?: string;
  readonly Policies?: readonly LinkRef[];
  readonly Roles?: readonly LinkRef[];
  /** Absolute expiry, ms since the epoch. */
  readonly ExpirationTime?: number | null;
  /** Relative expiry in ms, turned into ExpirationTime at write time. */
  readonly ExpirationTTLms?: number;
  readonly Local?: boolean;
}

export interface AdminLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * ACL management: what `sluice acl`, the gRPC ACL service and the HTTP ACL endpoints call.
 * Rule documents are parsed here, before the store sees them, so a malformed policy never
 * reaches it.
 */
export class AclAdmin {
  constructor(
    private readonly store: Store,
    private readonly enabled: boolean,
    private readonly logger?: AdminLogger,
    private readonly now: () => number = Date.now,
  ) {}

  private requireEnabled(): void {
    if (!this.enabled) throw new AclDisabledError();
  }

  /** Creates the global-management policy and a management token, once. */
  async bootstrap(): Promise<{ index: Index; token: ACLTokenRow }> {
    this.requireEnabled();
    if (queries.getPolicy(this.store.root, GLOBAL_MANAGEMENT_ID)) throw new BootstrapDoneError();
    const accessor = randomUUID();
    try {
      const r = await this.store.commit([
        {
          op: "acl.policy.upsert",
          createOnly: true,
          policy: {
            ID: GLOBAL_MANAGEMENT_ID,
            Name: "global-management",
            Description: "Builtin Policy that grants unlimited access",
            Rules: GLOBAL_MANAGEMENT_RULES,
          },
        },
        {
          op: "acl.token.upsert",
          createOnly: true,
          token: {
            AccessorID: accessor,
            SecretID: randomUUID(),
            Description: "Bootstrap Token (Global Management)",
            Policies: [GLOBAL_MANAGEMENT_ID],
          },
        },
      ]);
      this.logger?.info({ accessor, index: r.index }, "ACL bootstrap done");
      return { index: r.index, token: queries.getToken(this.store.root, accessor)! };
    } catch (err) {
      if (err instanceof ConflictError && err.field === "ID") throw new BootstrapDoneError({ cause: err });
      throw err;
    }
  }

  /** Makes sure the anonymous token exists (ACLs on): requests without a token use it. */
  async ensureAnonymous(): Promise<void> {
    if (!this.enabled || queries.getToken(this.store.root, ANONYMOUS_ACCESSOR)) return;
    try {
      await this.store.commit([
        {
          op: "acl.token.upsert",
          createOnly: true,
          token: {
            AccessorID: ANONYMOUS_ACCESSOR,
            SecretID: ANONYMOUS_SECRET,
            Description: "Anonymous Token",
          },
        },
      ]);
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
    }
  }

  private resolveLinks(
    refs: readonly LinkRef[] | undefined,
    kind: "aclPolicies" | "aclRoles",
    field: string,
  ): string[] {
    const root = this.store.root;
    return (refs ?? []).map((ref, i) => {
      if (ref.ID) return ref.ID;
      if (!ref.Name) throw new ValidationError(`${field}[${i}]`, "needs an ID or a Name");
      const row =
        kind === "aclPolicies" ? queries.policyByName(root, ref.Name) : queries.roleByName(root, ref.Name);
      if (!row) throw new MissingReferenceError(kind, ref.Name, `${field}[${i}].Name`);
      return row.ID;
    });
  }

  async upsertPolicy(input: PolicyInput): Promise<{ index: Index; policy: ACLPolicyRow }> {
    this.requireEnabled();
    if (typeof input.Rules !== "string") throw new ValidationError("Rules", "must be a string");
    await parseRules(input.Rules);
    const id = input.ID ?? randomUUID();
    if (id === GLOBAL_MANAGEMENT_ID && input.Rules !== GLOBAL_MANAGEMENT_RULES) {
      throw new ValidationError("Rules", "the rules of the global-management policy cannot change");
    }
    const r = await this.store.commit([
      {
        op: "acl.policy.upsert",
        policy: { ID: id, Name: input.Name, Description: input.Description ?? "", Rules: input.Rules },
      },
    ]);
    return { index: r.index, policy: queries.getPolicy(this.store.root, id)! };
  }

  async deletePolicy(id: string): Promise<Index> {
    this.requireEnabled();
    if (id === GLOBAL_MANAGEMENT_ID) {
      this.logger?.warn(
        { policy: id },
        "deleting the global-management policy: bootstrap tokens lose management rights",
      );
    }
    return (await this.store.commit([{ op: "acl.policy.delete", id }])).index;
  }

  async upsertRole(input: RoleInput): Promise<{ index: Index; role: ACLRoleRow }> {
    this.requireEnabled();
    const id = input.ID ?? randomUUID();
    const policies = this.resolveLinks(input.Policies, "aclPolicies", "Policies");
    const r = await this.store.commit([
      {
        op: "acl.role.upsert",
        role: { ID: id, Name: input.Name, Description: input.Description ?? "", Policies: policies },
      },
    ]);
    return { index: r.index, role: queries.getRole(this.store.root, id)! };
  }

  async deleteRole(id: string): Promise<Index> {
    this.requireEnabled();
    return (await this.store.commit([{ op: "acl.role.delete", id }])).index;
  }

  async upsertToken(input: TokenInput): Promise<{ index: Index; token: ACLTokenRow }> {
    this.requireEnabled();
    const accessor = input.AccessorID ?? randomUUID();
    const existing = queries.getToken(this.store.root, accessor);
    if (
      input.ExpirationTTLms !== undefined &&
      (!Number.isFinite(input.ExpirationTTLms) || input.ExpirationTTLms <= 0)
    ) {
      throw new ValidationError("ExpirationTTL", "must be a positive duration");
    }
    const expiration =
      input.ExpirationTTLms !== undefined
        ? this.now() + input.ExpirationTTLms
        : (input.ExpirationTime ?? existing?.ExpirationTime ?? null);
    const r = await this.store.commit([
      {
        op: "acl.token.upsert",
        token: {
          AccessorID: accessor,
          SecretID: input.SecretID ?? existing?.SecretID ?? randomUUID(),
          Description: input.Description ?? existing?.Description ?? "",
          Policies: this.resolveLinks(input.Policies, "aclPolicies", "Policies"),
          Roles: this.resolveLinks(input.Roles, "aclRoles", "Roles"),
          ExpirationTime: expiration,
          Local: input.Local ?? existing?.Local ?? false,
        },
      },
    ]);
    return { index: r.index, token: queries.getToken(this.store.root, accessor)! };
  }

  async deleteToken(accessor: string): Promise<Index> {
    this.requireEnabled();
    if (!queries.getToken(this.store.root, accessor))
      throw new MissingReferenceError("aclTokens", accessor, "AccessorID");
    return (await this.store.commit([{ op: "acl.token.delete", accessorId: accessor }])).index;
  }
}
