import { readFile } from "node:fs/promises";
import { type ACLPolicy, type ACLToken, asAccessorId } from "../client/index.js";
import {
  CONNECTION_HELP,
  connect,
  EXIT_OK,
  flag,
  list,
  out,
  outJson,
  parse,
  parseDuration,
  positionals,
  run,
  str,
  UsageError,
} from "./base-command.js";

export const ACL_USAGE = `sluice acl <subcommand> [flags]

  bootstrap                                   create the management token (once)
  policy create --name n --rules <hcl|@file> [--description d]
  policy list
  token create [--policy name]... [--ttl 1h] [--description d]
  token delete <accessor-id>
  token list

${CONNECTION_HELP}`;

function tokenLines(t: ACLToken): string[] {
  return [
    `AccessorID:   ${t.accessor_id}`,
    ...(t.secret_id ? [`SecretID:     ${t.secret_id}`] : []),
    `Description:  ${t.description}`,
    `Policies:     ${t.policies.join(", ")}`,
    ...(t.roles.length > 0 ? [`Roles:        ${t.roles.join(", ")}`] : []),
    `Expires:      ${t.expiration_time > 0 ? new Date(t.expiration_time).toISOString() : "never"}`,
  ];
}

function policyLines(p: ACLPolicy): string[] {
  return [
    `ID:           ${p.id}`,
    `Name:         ${p.name}`,
    `Description:  ${p.description}`,
    "Rules:",
    p.rules,
  ];
}

/** `sluice acl bootstrap | policy create|list | token create|delete|list`. */
export function aclCommand(argv: string[]): Promise<number> {
  return run(ACL_USAGE, argv, async () => {
    const [sub, ...rest0] = argv;
    const nested = sub === "policy" || sub === "token";
    const action = nested ? rest0[0] : undefined;
    const rest = nested ? rest0.slice(1) : rest0;
    const p = parse(
      rest,
      {
        name: { type: "string" },
        rules: { type: "string" },
        description: { type: "string" },
        policy: { type: "string", multiple: true },
        ttl: { type: "string" },
      },
      ACL_USAGE,
    );
    const json = flag(p, "json");
    const what = nested ? `${sub} ${action ?? ""}`.trim() : (sub ?? "");
    // Parse everything that can be wrong locally before connecting.
    let rules: string | undefined;
    let ttlMs: number | undefined;
    if (what === "policy create") {
      positionals(p, [], ACL_USAGE);
      const raw = str(p, "rules");
      if (!str(p, "name") || raw === undefined)
        throw new UsageError("--name and --rules are required", ACL_USAGE);
      rules = raw.startsWith("@") ? await readFile(raw.slice(1), "utf8") : raw;
    }
    if (what === "token create") {
      positionals(p, [], ACL_USAGE);
      const ttl = str(p, "ttl");
      if (ttl !== undefined) {
        ttlMs = parseDuration(ttl);
        if (ttlMs === undefined || ttlMs <= 0) {
          throw new UsageError(
            `--ttl must be a positive duration like 90s, 10m or 1h, got "${ttl}"`,
            ACL_USAGE,
          );
        }
      }
    }
    const client = connect(p);
    try {
      switch (what) {
        case "bootstrap": {
          positionals(p, [], ACL_USAGE);
          const { index, token } = await client.acl.bootstrap();
          if (json) outJson({ index, token });
          else for (const l of tokenLines(token)) out(l);
          return EXIT_OK;
        }
        case "policy create": {
          const { index, policy } = await client.acl.createPolicy({
            name: str(p, "name")!,
            rules: rules!,
            description: str(p, "description") ?? "",
          });
          if (json) outJson({ index, policy });
          else for (const l of policyLines(policy)) out(l);
          return EXIT_OK;
        }
        case "policy list": {
          positionals(p, [], ACL_USAGE);
          const { index, policies } = await client.acl.listPolicies();
          if (json) outJson({ index, policies });
          else for (const pol of policies) out(`${pol.id}\t${pol.name}`);
          return EXIT_OK;
        }
        case "token create": {
          const { index, token } = await client.acl.createToken({
            policies: list(p, "policy"),
            description: str(p, "description") ?? "",
            ...(ttlMs !== undefined ? { ttlMs } : {}),
          });
          if (json) outJson({ index, token });
          else for (const l of tokenLines(token)) out(l);
          return EXIT_OK;
        }
        case "token delete": {
          const [accessor] = positionals(p, ["accessor-id"], ACL_USAGE) as [string];
          const index = await client.acl.deleteToken(asAccessorId(accessor));
          if (json) outJson({ index });
          else out(`Token ${accessor} deleted (index ${index})`);
          return EXIT_OK;
        }
        case "token list": {
          positionals(p, [], ACL_USAGE);
          const { index, tokens } = await client.acl.listTokens();
          if (json) outJson({ index, tokens });
          else
            tokens.forEach((t, i) => {
              if (i > 0) out("");
              for (const l of tokenLines(t)) out(l);
            });
          return EXIT_OK;
        }
        default:
          throw new UsageError(what ? `unknown subcommand "acl ${what}"` : "missing subcommand", ACL_USAGE);
      }
    } finally {
      client.close();
    }
  });
}
