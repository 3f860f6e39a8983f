import { availableParallelism, cpus, loadavg, release, totalmem, type } from "node:os";

/** What a result was measured on. */
export interface MachineInfo {
  readonly os: string;
  readonly cpuModel: string;
  readonly cpus: number;
  readonly memGiB: number;
  readonly node: string;
  /** 1, 5 and 15 minute load averages when the run started. */
  readonly loadavg: readonly number[];
}

export function machineInfo(): MachineInfo {
  const c = cpus();
  return {
    os: `${type()} ${release()}`,
    cpuModel: c[0]?.model.trim() ?? "unknown",
    cpus: availableParallelism(),
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    loadavg: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function describeMachine(m: MachineInfo): string {
  return `${m.cpus} CPUs (${m.cpuModel}), ${m.memGiB} GiB, ${m.os}, Node ${m.node}, load ${m.loadavg.join(" ")}`;
}
