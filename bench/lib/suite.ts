import type { FlagSpecs, FlagValues } from "./flags.js";

/** What the harness hands a suite while it runs. */
export interface SuiteContext {
  /** Aborted on Ctrl-C: a suite stops its load and returns or throws soon after. */
  readonly signal: AbortSignal;
  /** This run's temporary directory; every data directory lives under it. */
  readonly tmpRoot: string;
  /** `--keep`: leave data directories behind for inspection. */
  readonly keep: boolean;
  /** A line of output. */
  log(line?: string): void;
  /** A progress line for a long step (indented, with the time since the run started). */
  progress(line: string): void;
  /** Creates a fresh directory under {@link tmpRoot} (name plus a random suffix). */
  tempDir(name: string): string;
  /** Removes a directory made by {@link tempDir}, unless `--keep`. */
  removeDir(dir: string): void;
  /** Registers a cleanup that runs when the suite ends, even on failure (last in, first out). */
  defer(cleanup: () => unknown): void;
}

/** A benchmark suite module: `bench/<name>.ts` exporting `suite`. */
export interface Suite {
  /** The suite's own flags (the harness adds --keep, --tmp and --help). */
  readonly flags: FlagSpecs;
  /**
   * Runs the suite, printing as it goes; returns what goes into
   * `bench/results/<suite>-<timestamp>.json` (plain JSON data).
   */
  run(ctx: SuiteContext, flags: FlagValues): Promise<unknown>;
}

/** An entry of the suite table in `bench/main.ts`. */
export interface SuiteEntry {
  readonly summary: string;
  /** Imported lazily, so listing suites loads none of them. */
  readonly load: () => Promise<Suite>;
}
