import { LRUCache } from "lru-cache";
import type { ACLTokenRow, Change, StateRoot } from "../state/index.js";
import { queries } from "../state/index.js";
import { ALLOW_ALL, type Authorizer, compileAuthorizer, type DefaultPolicy } from "./authorizer.js";
import { TokenNotFoundError } from "./errors.js";
import { type PolicyRules, parseRules } from "./rules.js";

/** The secret presented by requests without a token. */
export const ANONYMOUS_SECRET = "anonymous";
export const ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002";
export const GLOBAL_MANAGEMENT_ID = "00000000-0000-0000-0000-000000000001";

export interface ResolvedToken {
  /** The token row; undefined when ACLs are off or for a built-in default. */
  readonly token: ACLTokenRow | undefined;
  /** The key that the publisher files the token's subscriptions under. */
  readonly secret: string;
  readonly authorizer: Authorizer;
  /** The resolver's generation when this was resolved: stale once ACL tables change. */
  readonly generation: number;
}

export interface ResolverOptions {
  readonly enabled: boolean;
  readonly defaultPolicy: DefaultPolicy;
  /** Resolved tokens kept (default 10,000). */
  readonly cacheSize?: number;
  /** Wall clock in ms since the epoch, for token expiry. */
  readonly now?: () => number;
}

interface Cached {
  readonly token: ACLTokenRow | undefined;
  readonly authorizer: Authorizer;
}

/**
 * Secret → token → effective rules → authorizer, cached. Any change to the ACL tables drops
 * the cached resolutions it could affect; a policy's parsed rules are cached by its
 * ModifyIndex so that recompiling after a change parses only what changed.
 */
export class TokenResolver {
  private readonly cache: LRUCache<string, Cached>;
  private readonly parsed = new Map<string, { modifyIndex: number; rules: PolicyRules }>();
  private readonly now: () => number;
  /** Bumped by every ACL table change; resolutions from an older generation are stale. */
  generation = 0;
  /** Index of the last commit that changed an ACL table. */
  private lastAclIndex = 0;

  constructor(readonly opts: ResolverOptions) {
    this.cache = new LRUCache({ max: opts.cacheSize ?? 10_000 });
    this.now = opts.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.opts.enabled;
  }

  /** Resolves a secret against `root`. Throws {@link TokenNotFoundError} for an unknown or expired token. */
  async resolve(root: StateRoot, secret: string | undefined): Promise<ResolvedToken> {
    const key = secret || ANONYMOUS_SECRET;
    if (!this.opts.enabled) {
      return { token: undefined, secret: key, authorizer: ALLOW_ALL, generation: this.generation };
    }
    const hit = this.cache.get(key);
    if (hit && !this.expired(hit.token)) {
      return { token: hit.token, secret: key, authorizer: hit.authorizer, generation: this.generation };
    }
    const token = queries.tokenBySecret(root, key);
    let authorizer: Authorizer;
    if (!token) {
      if (key !== ANONYMOUS_SECRET) throw new TokenNotFoundError();
      // No anonymous token in the store: the default policy alone decides.
      authorizer = compileAuthorizer([], this.opts.defaultPolicy);
    } else {
      if (this.expired(token)) throw new TokenNotFoundError();
      authorizer = compileAuthorizer(await this.rulesOf(root, token), this.opts.defaultPolicy);
    }
    // Resolved against a root older than the last ACL change (handed an old root, or the
    // change landed while policies were parsed): stale, so neither cached nor current.
    if (root.index < this.lastAclIndex) return { token, secret: key, authorizer, generation: -1 };
    this.cache.set(key, { token, authorizer });
    return { token, secret: key, authorizer, generation: this.generation };
  }

  private expired(token: ACLTokenRow | undefined): boolean {
    return token?.ExpirationTime != null && this.now() >= token.ExpirationTime;
  }

  /** The token's policies, direct and through its roles, parsed. */
  private async rulesOf(root: StateRoot, token: ACLTokenRow): Promise<PolicyRules[]> {
    const ids = new Set(token.Policies);
    for (const roleId of token.Roles)
      for (const p of queries.getRole(root, roleId)?.Policies ?? []) ids.add(p);
    const out: PolicyRules[] = [];
    for (const id of ids) {
      const policy = queries.getPolicy(root, id);
      if (!policy) continue;
      const cached = this.parsed.get(id);
      if (cached && cached.modifyIndex === policy.ModifyIndex) {
        out.push(cached.rules);
        continue;
      }
      const rules = await parseRules(policy.Rules);
      this.parsed.set(id, { modifyIndex: policy.ModifyIndex, rules });
      out.push(rules);
    }
    return out;
  }

  /** Drops cached resolutions after ACL table changes made by the commit at `index`. */
  invalidate(changes: readonly Change[], index: number): void {
    let any = false;
    for (const c of changes) {
      if (c.table === "aclPolicies") {
        this.parsed.delete(c.key);
        any = true;
      } else if (c.table === "aclTokens" || c.table === "aclRoles") any = true;
    }
    if (any) {
      this.generation++;
      this.lastAclIndex = Math.max(this.lastAclIndex, index);
      this.cache.clear();
    }
  }
}
