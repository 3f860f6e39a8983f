/*
 * CPU time of kernel threads that compete with the benchmarked servers for the machine's
 * CPUs. On the VMs these benchmarks run on, `kdamond` (DAMON, the kernel's data-access
 * monitor, here driving proactive reclaim) wakes every ~0.5 s and holds a CPU for up to
 * ~20 ms: on 2 vCPUs that is half the machine for a moment, which shows in every server's
 * latency tail. Reading it next to the latency figures tells a reader where a tail came from.
 */
import { readdirSync, readFileSync } from "node:fs";

export interface KernelThreadsCpu {
  /** Time on a CPU, ms, summed over the matching threads. */
  readonly runMs: number;
  /** Timeslices they ran (schedstat's third field), summed. */
  readonly slices: number;
  /** How many threads matched. */
  readonly threads: number;
}

/** Summed schedstat of the processes (kernel threads are processes) whose name matches. */
export function kernelThreadsCpu(name: RegExp = /^kdamond/): KernelThreadsCpu {
  let runNs = 0;
  let slices = 0;
  let threads = 0;
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return { runMs: Number.NaN, slices: Number.NaN, threads: 0 };
  }
  for (const pid of entries) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (!name.test(readFileSync(`/proc/${pid}/comm`, "utf8").trim())) continue;
      const [run, , n] = readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ").map(Number);
      runNs += run ?? 0;
      slices += n ?? 0;
      threads++;
    } catch {
      // gone meanwhile, or not readable
    }
  }
  return { runMs: runNs / 1e6, slices, threads };
}

/** The difference of two readings (what ran in between). */
export function kernelThreadsDelta(a: KernelThreadsCpu, b: KernelThreadsCpu): KernelThreadsCpu {
  return { runMs: b.runMs - a.runMs, slices: b.slices - a.slices, threads: b.threads };
}
