/** The server process: configuration and the composition root. Public face. */
export { ConfigError, DEFAULTS, type ServerConfig, SETTINGS, envName, flagName, loadConfig } from "./config.js";
export { SluiceServer } from "./sluice-server.js";
