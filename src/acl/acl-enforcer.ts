import type { ACLTokenRow, Commit, StateRoot } from "../state/index.js";
import { queries } from "../state/index.js";
import type { EventPublisher, SubscribeRequest, Subscription } from "../stream/index.js";
import { subscriptionFilter } from "./event-filter.js";
import type { ResolvedToken, TokenResolver } from "./resolver.js";

export interface EnforcerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * Ties ACLs to the change stream: subscriptions are opened with their token's filter, ACL
 * table changes close the streams of every token they touch before the commit's events go
 * out, and a token's expiry closes its streams when it expires.
 */
export class AclEnforcer {
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();
  private readonly unhook: () => void;
  private readonly revokeListeners = new Set<(secret: string, reason: string) => void>();

  constructor(
    private readonly publisher: EventPublisher,
    readonly resolver: TokenResolver,
    private readonly logger?: EnforcerLogger,
    /** Wall clock in ms since the epoch. */
    private readonly now: () => number = Date.now,
  ) {
    this.unhook = publisher.beforePublish((c, before, after) => this.onCommit(c, before, after));
  }

  /** Resolves a secret against the publisher's current state. */
  resolve(secret: string | undefined): Promise<ResolvedToken> {
    return this.resolver.resolve(this.publisher.state, secret);
  }

  /**
   * Opens a subscription filtered by the token. Throws TokenNotFoundError for an unknown or
   * expired token, and whatever `publisher.subscribe` throws.
   */
  async subscribe(
    req: Omit<SubscribeRequest, "token" | "filter">,
    secret: string | undefined,
  ): Promise<Subscription> {
    for (;;) {
      const resolved = await this.resolve(secret);
      // An ACL change while resolving may have revoked the token: resolve again, so that no
      // subscription opens with rules a commit has already taken back.
      if (resolved.generation === this.resolver.generation) return this.open(req, resolved);
    }
  }

  private open(req: Omit<SubscribeRequest, "token" | "filter">, resolved: ResolvedToken): Subscription {
    if (!this.resolver.enabled) return this.publisher.subscribe(req);
    const sub = this.publisher.subscribe({
      ...req,
      token: resolved.secret,
      filter: subscriptionFilter(resolved.authorizer, req.topic, req.subject),
    });
    this.armExpiry(resolved.secret, resolved.token);
    return sub;
  }

  /**
   * Calls `listener` with each token's secret when a commit changes or deletes that token, a
   * role or policy it uses, or when it expires — what closes its streams closes whatever else
   * a listener holds for it (the component broker's connections). Returns the unsubscribe.
   */
  onRevoke(listener: (secret: string, reason: string) => void): () => void {
    this.revokeListeners.add(listener);
    return () => this.revokeListeners.delete(listener);
  }

  /** Arms the expiry of a resolved token held by something other than a subscription. */
  watchExpiry(resolved: ResolvedToken): void {
    if (this.resolver.enabled) this.armExpiry(resolved.secret, resolved.token);
  }

  private revoked(secret: string, reason: string): void {
    for (const l of this.revokeListeners) {
      try {
        l(secret, reason);
      } catch (err) {
        this.logger?.warn({ err }, "revocation listener threw");
      }
    }
  }

  private armExpiry(secret: string, token: ACLTokenRow | undefined): void {
    const exp = token?.ExpirationTime;
    if (exp == null || this.expiryTimers.has(secret)) return;
    const delay = Math.max(0, exp - this.now());
    const timer = setTimeout(
      () => {
        this.expiryTimers.delete(secret);
        this.revoked(secret, "token expired");
        const n = this.publisher.closeToken(secret, "token expired");
        if (n > 0)
          this.logger?.info({ accessor: token?.AccessorID, closed: n }, "token expired: streams closed");
      },
      Math.min(delay, 2 ** 31 - 1),
    );
    timer.unref();
    this.expiryTimers.set(secret, timer);
  }

  /** Secrets of the tokens a commit's ACL changes affect, found through the indexes. */
  static affectedSecrets(commit: Commit, before: StateRoot, after: StateRoot): Set<string> {
    const secrets = new Set<string>();
    const addAccessor = (accessor: string): void => {
      const t = queries.getToken(before, accessor) ?? queries.getToken(after, accessor);
      if (t) secrets.add(t.SecretID);
    };
    for (const c of commit.changes) {
      switch (c.table) {
        case "aclTokens":
          if (c.before) secrets.add(c.before.SecretID);
          if (c.after) secrets.add(c.after.SecretID);
          break;
        case "aclRoles":
          for (const root of [before, after])
            for (const a of queries.tokensUsingRole(root, c.key)) addAccessor(a);
          break;
        case "aclPolicies":
          for (const root of [before, after])
            for (const a of queries.tokensAffectedByPolicy(root, c.key)) addAccessor(a);
          break;
        default:
          break;
      }
    }
    return secrets;
  }

  private onCommit(commit: Commit, before: StateRoot, after: StateRoot): void {
    if (
      !commit.changes.some(
        (c) => c.table === "aclTokens" || c.table === "aclRoles" || c.table === "aclPolicies",
      )
    ) {
      return;
    }
    this.resolver.invalidate(commit.changes, commit.index);
    if (!this.resolver.enabled) return;
    let closed = 0;
    for (const secret of AclEnforcer.affectedSecrets(commit, before, after)) {
      this.revoked(secret, "token, role or policy changed");
      closed += this.publisher.closeToken(secret, "token, role or policy changed");
      const timer = this.expiryTimers.get(secret);
      if (timer) {
        clearTimeout(timer);
        this.expiryTimers.delete(secret);
      }
    }
    if (closed > 0) this.logger?.info({ index: commit.index, closed }, "ACL change closed streams");
  }

  close(): void {
    this.unhook();
    for (const t of this.expiryTimers.values()) clearTimeout(t);
    this.expiryTimers.clear();
  }
}
