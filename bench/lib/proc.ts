/*
 * A process's resources as Linux shows them under /proc (memory, open-file limit), and raising
 * that limit for a running process with util-linux `prlimit` (needs root or CAP_SYS_RESOURCE
 * to go above the hard limit).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

export interface ProcMemory {
  /** Resident set size now, bytes. */
  readonly rss: number;
  /** Peak resident set size since the process started (VmHWM), bytes. */
  readonly hwm: number;
}

/** VmRSS and VmHWM of a process, NaN when unreadable. */
export function procMemory(pid: number): ProcMemory {
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (field: string) => {
      const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(s);
      return m ? Number(m[1]) * 1024 : Number.NaN;
    };
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return { rss: Number.NaN, hwm: Number.NaN };
  }
}

/** The soft and hard limits on open files of a process (`unlimited` as Infinity). */
export function fdLimit(pid: number | "self" = "self"): { soft: number; hard: number } {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
    const n = (v: string | undefined) => (v === "unlimited" ? Number.POSITIVE_INFINITY : Number(v));
    return m ? { soft: n(m[1]), hard: n(m[2]) } : { soft: Number.NaN, hard: Number.NaN };
  } catch {
    return { soft: Number.NaN, hard: Number.NaN };
  }
}

/**
 * Makes sure a running process may open at least `need` files: if its soft limit is lower,
 * raises soft and hard limits with `prlimit --pid`. Returns the soft limit it ends with
 * (unchanged if prlimit is missing or not permitted: the caller decides whether that is fatal).
 */
export function ensureFdLimit(pid: number, need: number): number {
  const cur = fdLimit(pid);
  if (!(cur.soft < need)) return cur.soft;
  const hard = Math.max(need, Number.isFinite(cur.hard) ? cur.hard : need);
  try {
    execFileSync("prlimit", [`--pid=${pid}`, `--nofile=${need}:${hard}`], { stdio: "pipe" });
  } catch {
    // Not permitted or not installed: report what the process has.
  }
  return fdLimit(pid).soft;
}
