import { readFileSync } from "node:fs";
import type { FsyncMode } from "../state/index.js";

/** Every setting of `sluice server`, after defaults, config file, environment and flags. */
export interface ServerConfig {
  readonly grpcAddr: string;
  readonly httpAddr: string;
  readonly dataDir: string;
  /** In-memory store, ACLs off: for quick trials. */
  readonly dev: boolean;
  readonly fsync: FsyncMode;
  readonly aclEnabled: boolean;
  readonly aclDefaultPolicy: "allow" | "deny";
  readonly historyMaxEvents: number;
  readonly historyMaxBytes: number;
  readonly snapshotCacheTtlMs: number;
  readonly progressIntervalMs: number;
  readonly maxSubscriptionsPerToken: number;
  readonly maxSubscriptionsPerConnection: number;
  readonly snapshotEvery: number;
  readonly shutdownGraceMs: number;
  /** Event streams: idle time after which a keep-alive comment is sent. */
  readonly sseKeepAliveMs: number;
  /** Open notification channels per token. */
  readonly notificationChannelsPerToken: number;
  /** Subscriptions per token across its notification channels. */
  readonly notificationSubscriptionsPerToken: number;
  readonly logLevel: "debug" | "info" | "warn" | "error";
  /** NATS URL(s): publish the commit log to JetStream (writer), or replicate from it (edge). Empty: off. */
  readonly nats: string;
  /** The JetStream stream of the commit log. */
  readonly natsStream: string;
  /** Subject prefix of the feed (`<prefix>.log`, `<prefix>.events.…`, `<prefix>.write`). */
  readonly natsPrefix: string;
  /** Commits between state snapshots the writer stores in JetStream for new edges. */
  readonly natsSnapshotEvery: number;
  /** Stream retention: oldest message age in seconds (0: unlimited). */
  readonly natsMaxAgeSec: number;
  /** Stream retention: total bytes (0: unlimited). */
  readonly natsMaxBytes: number;
  /** Run as an edge: state replicated from the writer through JetStream (`sluice edge`). */
  readonly edge: boolean;
  /** On an edge: forward writes to the writer (else they fail naming it). */
  readonly edgeForwardWrites: boolean;
  /** The component broker's id (default: host name plus a random suffix). */
  readonly brokerId: string;
  /** Subject prefix every broker that should reach the others shares (`<prefix>.broker.*`). */
  readonly brokerNatsPrefix: string;
  /** Hosts (`host` or `host:port`, comma-separated) the built-in `http` component may call. */
  readonly brokerHttpAllow: string;
  /** How long broker events stay in the JetStream archive, seconds (with --nats). */
  readonly brokerArchiveMaxAgeSec: number;
}

export const DEFAULTS: ServerConfig = {
  grpcAddr: "127.0.0.1:8502",
  httpAddr: "127.0.0.1:8500",
  dataDir: "./data",
  dev: false,
  fsync: "always",
  aclEnabled: false,
  aclDefaultPolicy: "deny",
  historyMaxEvents: 100_000,
  historyMaxBytes: 64 * 1024 * 1024,
  snapshotCacheTtlMs: 10_000,
  progressIntervalMs: 10_000,
  maxSubscriptionsPerToken: 100_000,
  maxSubscriptionsPerConnection: 10_000,
  snapshotEvery: 50_000,
  shutdownGraceMs: 10_000,
  sseKeepAliveMs: 15_000,
  notificationChannelsPerToken: 16,
  notificationSubscriptionsPerToken: 256,
  logLevel: "info",
  nats: "",
  natsStream: "SLUICE",
  natsPrefix: "sluice",
  natsSnapshotEvery: 10_000,
  natsMaxAgeSec: 0,
  natsMaxBytes: 0,
  edge: false,
  edgeForwardWrites: true,
  brokerId: "",
  brokerNatsPrefix: "sluice",
  brokerHttpAllow: "",
  brokerArchiveMaxAgeSec: 3 * 24 * 3600,
};

/** A setting is missing, malformed or out of range. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    readonly setting: string,
    readonly reason: string,
    /** Where the bad value came from: flag, environment, or config file. */
    readonly source: string,
    options?: ErrorOptions,
  ) {
    super(`invalid setting ${setting} (from ${source}): ${reason}`, options);
  }
}

type Key = keyof ServerConfig;
type Kind = "string" | "optString" | "bool" | "int" | { readonly oneOf: readonly string[] };

const SCHEMA: { readonly [K in Key]: { kind: Kind; min?: number } } = {
  grpcAddr: { kind: "string" },
  httpAddr: { kind: "string" },
  dataDir: { kind: "string" },
  dev: { kind: "bool" },
  fsync: { kind: { oneOf: ["always", "batch", "never"] } },
  aclEnabled: { kind: "bool" },
  aclDefaultPolicy: { kind: { oneOf: ["allow", "deny"] } },
  historyMaxEvents: { kind: "int", min: 1 },
  historyMaxBytes: { kind: "int", min: 1024 },
  snapshotCacheTtlMs: { kind: "int", min: 0 },
  progressIntervalMs: { kind: "int", min: 100 },
  maxSubscriptionsPerToken: { kind: "int", min: 1 },
  maxSubscriptionsPerConnection: { kind: "int", min: 1 },
  snapshotEvery: { kind: "int", min: 1 },
  shutdownGraceMs: { kind: "int", min: 0 },
  sseKeepAliveMs: { kind: "int", min: 10 },
  notificationChannelsPerToken: { kind: "int", min: 1 },
  notificationSubscriptionsPerToken: { kind: "int", min: 1 },
  logLevel: { kind: { oneOf: ["debug", "info", "warn", "error"] } },
  nats: { kind: "optString" },
  natsStream: { kind: "string" },
  natsPrefix: { kind: "string" },
  natsSnapshotEvery: { kind: "int", min: 1 },
  natsMaxAgeSec: { kind: "int", min: 0 },
  natsMaxBytes: { kind: "int", min: 0 },
  edge: { kind: "bool" },
  edgeForwardWrites: { kind: "bool" },
  brokerId: { kind: "optString" },
  brokerNatsPrefix: { kind: "string" },
  brokerHttpAllow: { kind: "optString" },
  brokerArchiveMaxAgeSec: { kind: "int", min: 1 },
};

/** `grpcAddr` → `grpc-addr` (flag) and `SLUICE_GRPC_ADDR` (environment). */
export const flagName = (k: string): string => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const envName = (k: string): string => `SLUICE_${flagName(k).replace(/-/g, "_").toUpperCase()}`;
export const SETTINGS = Object.keys(SCHEMA) as Key[];

function coerce(key: Key, raw: unknown, source: string): unknown {
  const { kind, min } = SCHEMA[key];
  const setting = source === "flag" ? `--${flagName(key)}` : source === "environment" ? envName(key) : key;
  if (kind === "optString") {
    if (typeof raw !== "string") throw new ConfigError(setting, "must be a string", source);
    return raw;
  }
  if (kind === "string") {
    if (typeof raw !== "string" || raw === "")
      throw new ConfigError(setting, "must be a non-empty string", source);
    if (
      (key === "grpcAddr" || key === "httpAddr") &&
      !/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(raw)
    ) {
      throw new ConfigError(setting, `must be host:port, got "${raw}"`, source);
    }
    if (key === "natsStream" && !/^[A-Za-z0-9_-]+$/.test(raw)) {
      throw new ConfigError(setting, `must be letters, digits, - and _, got "${raw}"`, source);
    }
    if (
      (key === "natsPrefix" || key === "brokerNatsPrefix") &&
      !/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(raw)
    ) {
      throw new ConfigError(
        setting,
        `must be dot-separated tokens of letters, digits, - and _, got "${raw}"`,
        source,
      );
    }
    return raw;
  }
  if (kind === "bool") {
    if (typeof raw === "boolean") return raw;
    if (raw === "true" || raw === "1") return true;
    if (raw === "false" || raw === "0") return false;
    throw new ConfigError(setting, `must be true or false, got "${String(raw)}"`, source);
  }
  if (kind === "int") {
    const n =
      typeof raw === "number" ? raw : typeof raw === "string" && /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(n))
      throw new ConfigError(setting, `must be an integer, got "${String(raw)}"`, source);
    if (min !== undefined && n < min)
      throw new ConfigError(setting, `must be at least ${min}, got ${n}`, source);
    return n;
  }
  if (typeof raw !== "string" || !kind.oneOf.includes(raw)) {
    throw new ConfigError(setting, `must be one of ${kind.oneOf.join(", ")}, got "${String(raw)}"`, source);
  }
  return raw;
}

/**
 * Builds the configuration: defaults, then the JSON config file (`--config` or
 * SLUICE_CONFIG), then SLUICE_* environment variables, then flags. Every value is checked;
 * the first bad one throws {@link ConfigError} naming it.
 */
export function loadConfig(flags: Readonly<Record<string, unknown>>, env: NodeJS.ProcessEnv): ServerConfig {
  const out: Record<string, unknown> = { ...DEFAULTS };
  const file = (flags.config as string | undefined) ?? env.SLUICE_CONFIG;
  if (file) {
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(file, "utf8"));
    } catch (err) {
      throw new ConfigError("config", `cannot read ${file}: ${(err as Error).message}`, "flag", {
        cause: err,
      });
    }
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
      throw new ConfigError("config", `${file} must hold a JSON object`, "config file");
    }
    for (const [k, v] of Object.entries(doc)) {
      if (!(k in SCHEMA)) throw new ConfigError(k, `unknown setting in ${file}`, "config file");
      out[k] = coerce(k as Key, v, "config file");
    }
  }
  for (const k of SETTINGS) {
    const v = env[envName(k)];
    if (v !== undefined) out[k] = coerce(k, v, "environment");
  }
  for (const k of SETTINGS) {
    const v = flags[flagName(k)];
    if (v !== undefined) out[k] = coerce(k, v, "flag");
  }
  if (out.edge === true && out.nats === "") {
    throw new ConfigError("--nats", "an edge replicates from JetStream: give the writer's NATS URL", "flag");
  }
  // --dev means in memory with ACLs off by default; an explicit --acl-enabled still counts.
  return out as unknown as ServerConfig;
}
