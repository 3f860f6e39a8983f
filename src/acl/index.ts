/** ACLs: rules, authorizers, token resolution, stream enforcement and management. Public face. */
export { AclAdmin, type LinkRef, type PolicyInput, type RoleInput, type TokenInput } from "./acl-admin.js";
export { AclEnforcer } from "./acl-enforcer.js";
export { ALLOW_ALL, type Authorizer, compileAuthorizer, type DefaultPolicy } from "./authorizer.js";
export * from "./errors.js";
export { eventFilterFor, subscriptionFilter } from "./event-filter.js";
export { authorizeTxn, requirePermission } from "./permissions.js";
export {
  ANONYMOUS_ACCESSOR,
  ANONYMOUS_SECRET,
  GLOBAL_MANAGEMENT_ID,
  type ResolvedToken,
  TokenResolver,
} from "./resolver.js";
export {
  Access,
  GLOBAL_MANAGEMENT_RULES,
  type PolicyRules,
  parseRules,
  type Resource,
  rulesFromJson,
  type SegmentRule,
} from "./rules.js";
