/** The server process: configuration and the composition root. Public face. */
export {
  ConfigError,
  DEFAULTS,
  envName,
  flagName,
  loadConfig,
  SETTINGS,
  type ServerConfig,
} from "./config.js";
export { ListenError } from "./errors.js";
export { SluiceServer } from "./sluice-server.js";
