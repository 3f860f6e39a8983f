import { execFileSync } from "node:child_process";

/** Which source a result was measured on: the commit, and files under src/ that differ from it. */
export interface SourceState {
  readonly commit: string;
  /** Paths under src/ with uncommitted changes (modified or untracked) when the run started. */
  readonly uncommitted: readonly string[];
}

/** The git state of src/, or undefined outside a git checkout. */
export function sourceState(): SourceState | undefined {
  try {
    const git = (...args: string[]) => execFileSync("git", args, { encoding: "utf8", stdio: "pipe" });
    const commit = git("rev-parse", "--short", "HEAD").trim();
    const uncommitted = git("status", "--porcelain", "--", "src")
      .split("\n")
      .filter((l) => l.length > 3)
      .map((l) => l.slice(3));
    return { commit, uncommitted };
  } catch {
    return undefined;
  }
}

export function describeSource(s: SourceState | undefined): string {
  if (!s) return "source: not a git checkout";
  if (s.uncommitted.length === 0) return `source: commit ${s.commit}, src/ clean`;
  return `source: commit ${s.commit} plus uncommitted changes under src/: ${s.uncommitted.join(", ")}`;
}
