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
export { SluiceServer } from "./sluice-server.js";
