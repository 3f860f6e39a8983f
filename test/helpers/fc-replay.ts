import fc from "fast-check";

/*
 * Seed, run count and replay path of fast-check properties come from the environment, so that
 * a failure prints one line that replays it:
 *
 *   SLUICE_FC_SEED=<seed> SLUICE_FC_PATH=<path> [SLUICE_FC_REPLAY_PATH=<commands>] npx vitest run <file> -t <test>
 *
 * SLUICE_FC_REPLAY_PATH is fast-check's replay path of a model run's commands (pass
 * {@link commandsReplayPath} to `fc.commands`). SLUICE_FC_RUNS overrides each property's default
 * number of runs.
 */

export interface ReplayConfig {
  readonly seed: number;
  readonly numRuns: number;
  readonly path: string | undefined;
}

function envInt(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${raw}`);
  return n;
}

/** The commands' replay path to pass to `fc.commands`, when replaying a failure. */
export const commandsReplayPath: string | undefined = process.env.SLUICE_FC_REPLAY_PATH || undefined;

/** The run configuration: env values, else a fresh seed and `defaultRuns`. */
export function replayConfig(defaultRuns: number): ReplayConfig {
  return {
    seed: envInt("SLUICE_FC_SEED") ?? (Math.random() * 0x7fffffff) | 0,
    numRuns: envInt("SLUICE_FC_RUNS") ?? defaultRuns,
    path: process.env.SLUICE_FC_PATH || undefined,
  };
}

/**
 * Runs an async property; on failure throws an error whose message starts with the line that
 * replays the shrunk counterexample, followed by fast-check's report.
 */
export async function assertReplayable<Ts>(
  /** How to run the test alone: `<file> -t '<test name>'`. */
  name: string,
  property: fc.IAsyncProperty<Ts>,
  cfg: ReplayConfig,
  extra: Partial<fc.Parameters<Ts>> = {},
): Promise<fc.RunDetails<Ts>> {
  const details = await fc.check(property, {
    ...extra,
    seed: cfg.seed,
    numRuns: cfg.numRuns,
    ...(cfg.path === undefined ? {} : { path: cfg.path }),
  });
  if (details.failed) {
    const report = fc.defaultReportMessage(details) ?? "";
    const commands = /replayPath="([^"]*)"/.exec(report)?.[1];
    const replay = [
      `SLUICE_FC_SEED=${details.seed}`,
      `SLUICE_FC_PATH=${details.counterexamplePath ?? ""}`,
      ...(commands === undefined ? [] : [`SLUICE_FC_REPLAY_PATH='${commands}'`]),
      `npx vitest run ${name}`,
    ].join(" ");
    console.error(`property failed; replay with: ${replay}`);
    throw new Error(`property failed; replay with: ${replay}\n${report}`, { cause: details.errorInstance });
  }
  return details;
}
