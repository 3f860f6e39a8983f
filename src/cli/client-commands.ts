import { aclCommand } from "./acl-command.js";
import { catalogCommand } from "./catalog-command.js";
import { kvCommand } from "./kv-command.js";
import { watchCommand } from "./watch-command.js";

/** The client commands of `sluice`, by name: each takes the arguments after its name and answers an exit code. */
export const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  watch: watchCommand,
  kv: kvCommand,
  catalog: catalogCommand,
  acl: aclCommand,
};
