import type { Check, RegisterInput, ServiceInstance } from "../client/index.js";
import {
  CONNECTION_HELP,
  connect,
  EXIT_OK,
  flag,
  list,
  out,
  outJson,
  parse,
  positionals,
  run,
  str,
  UsageError,
  uint,
} from "./base-command.js";

export const CATALOG_USAGE = `sluice catalog <subcommand> [flags]

  register --node n --address a [--service s [--id i] [--port p] [--tag t]... [--check-status st]]
                             register a node, optionally with a service (and a check of status st)
  deregister --node n [--service-id i]
                             remove a node (with its services), or one service
  services                   list service names with their tags
  service <name> [--passing] [--tag t]
                             list a service's instances with their health

${CONNECTION_HELP}`;

const SEVERITY = ["passing", "maintenance", "warning", "critical"];

/** The worst status among an instance's checks ("passing" with none). */
export function aggregateStatus(checks: readonly Check[]): string {
  let worst = "passing";
  for (const c of checks) if (SEVERITY.indexOf(c.status) > SEVERITY.indexOf(worst)) worst = c.status;
  return worst;
}

/** One line per instance: node, address:port, service id, health, tags. */
export function instanceLine(i: ServiceInstance): string {
  const addr = i.service.address || i.node.address;
  const tags = i.service.tags.length > 0 ? `\t${i.service.tags.join(",")}` : "";
  return `${i.node.node}\t${addr}:${i.service.port}\t${i.service.id}\t${aggregateStatus(i.checks)}${tags}`;
}

/** `sluice catalog register|deregister|services|service`. */
export function catalogCommand(argv: string[]): Promise<number> {
  return run(CATALOG_USAGE, argv, async () => {
    const [sub, ...rest] = argv;
    const p = parse(
      rest,
      {
        node: { type: "string" },
        address: { type: "string" },
        service: { type: "string" },
        id: { type: "string" },
        port: { type: "string" },
        tag: { type: "string", multiple: true },
        "check-status": { type: "string" },
        "service-id": { type: "string" },
        passing: { type: "boolean" },
      },
      CATALOG_USAGE,
    );
    const json = flag(p, "json");
    const client = connect(p);
    try {
      switch (sub) {
        case "register": {
          positionals(p, [], CATALOG_USAGE);
          const node = str(p, "node");
          if (!node) throw new UsageError("--node is required", CATALOG_USAGE);
          const service = str(p, "service");
          const id = str(p, "id") ?? service;
          const checkStatus = str(p, "check-status");
          if (!service && (str(p, "id") || str(p, "port") || list(p, "tag").length > 0 || checkStatus)) {
            throw new UsageError("--id, --port, --tag and --check-status need --service", CATALOG_USAGE);
          }
          const req: RegisterInput = {
            node: { node, address: str(p, "address") ?? "" },
            ...(service
              ? { service: { service, id, port: uint(p, "port", CATALOG_USAGE) ?? 0, tags: list(p, "tag") } }
              : {}),
            ...(service && checkStatus
              ? {
                  checks: [
                    {
                      check_id: `service:${id}`,
                      name: `Service '${service}' check`,
                      status: checkStatus,
                      service_id: id,
                    },
                  ],
                }
              : {}),
          };
          const index = await client.catalog.register(req);
          if (json) outJson({ index });
          else out(`Registered node ${node}${service ? `, service ${id}` : ""} (index ${index})`);
          return EXIT_OK;
        }
        case "deregister": {
          positionals(p, [], CATALOG_USAGE);
          const node = str(p, "node");
          if (!node) throw new UsageError("--node is required", CATALOG_USAGE);
          const serviceId = str(p, "service-id");
          const index = await client.catalog.deregister({
            node,
            ...(serviceId ? { service_id: serviceId } : {}),
          });
          if (json) outJson({ index });
          else
            out(
              `Deregistered ${serviceId ? `service ${serviceId} on node ${node}` : `node ${node}`} (index ${index})`,
            );
          return EXIT_OK;
        }
        case "services": {
          positionals(p, [], CATALOG_USAGE);
          const { index, services } = await client.catalog.services();
          if (json) outJson({ index, services: Object.fromEntries(services) });
          else
            for (const [name, tags] of services) out(tags.length > 0 ? `${name}\t${tags.join(",")}` : name);
          return EXIT_OK;
        }
        case "service": {
          const [name] = positionals(p, ["name"], CATALOG_USAGE) as [string];
          const tags = list(p, "tag");
          if (tags.length > 1) throw new UsageError("at most one --tag", CATALOG_USAGE);
          const tag = tags[0];
          const { index, instances } = await client.catalog.serviceHealth(name, {
            passingOnly: flag(p, "passing"),
            ...(tag ? { tag } : {}),
          });
          if (json) outJson({ index, instances });
          else for (const i of instances) out(instanceLine(i));
          return EXIT_OK;
        }
        default:
          throw new UsageError(
            sub ? `unknown subcommand "catalog ${sub}"` : "missing subcommand",
            CATALOG_USAGE,
          );
      }
    } finally {
      client.close();
    }
  });
}
