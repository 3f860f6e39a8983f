import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

/*
 * CPU time of this process and of child servers, to tell how many cores a measured window
 * used: on a 2-core machine a peer's client and server compete with each other.
 */

let clockTicks: number | undefined;

function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds of a process (Linux /proc), or NaN when unreadable. */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return Number.NaN;
  }
}

/** User + system CPU seconds of this process. */
export function ownCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Measures cores used (CPU seconds per wall second) between `start()` and `stop()`. */
export class CpuMeter {
  private t0 = 0;
  private own0 = 0;
  private peer0 = 0;
  /** Cores used by this process over the last start..stop. */
  own = Number.NaN;
  /** Cores used by the peer process (if a pid was given). */
  peer = Number.NaN;

  constructor(private readonly peerPid?: number) {}

  start(): void {
    this.t0 = performance.now();
    this.own0 = ownCpuSeconds();
    this.peer0 = this.peerPid === undefined ? Number.NaN : processCpuSeconds(this.peerPid);
  }

  stop(): void {
    const secs = (performance.now() - this.t0) / 1000;
    this.own = (ownCpuSeconds() - this.own0) / secs;
    if (this.peerPid !== undefined) this.peer = (processCpuSeconds(this.peerPid) - this.peer0) / secs;
  }
}
