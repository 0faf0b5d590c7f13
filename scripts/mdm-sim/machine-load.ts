/**
 * Whether the machine was the benchmark's alone during a phase: CPU time used by everything
 * (/proc/stat) against CPU time of the benchmark's own processes (the MDM, the simulator hosts,
 * this process; /proc/PID/stat). Other work on a 2-core machine (a test suite, a build) makes
 * every latency here worse, so the report flags a phase where it took more than a little.
 */
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { procCpuMs } from './mdm-process.js';

/** Others using more than this many cores on average mark a phase as shared. */
export const OTHERS_CORES_MAX = 0.1;

export interface MachineLoad {
  readonly cores: number;
  readonly busy_cores: number;
  readonly ours_cores: number;
  readonly others_cores: number;
  readonly load_average_1m: number;
  readonly shared: boolean;
}

function machineBusyMs(): number | undefined {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
    return ((user + nice + system + irq + softirq + steal) / 100) * 1000; // USER_HZ
  } catch {
    return undefined;
  }
}

export class MachineLoadMeter {
  private startedMs = Date.now();
  private startedBusyMs = machineBusyMs();
  private startedOursMs: number;

  constructor(private readonly pids: () => readonly number[]) {
    this.startedOursMs = this.oursMs();
  }

  private oursMs(): number {
    const self = process.cpuUsage();
    let total = (self.user + self.system) / 1000;
    for (const pid of this.pids()) total += procCpuMs(pid) ?? 0;
    return total;
  }

  /** The load since the last take, and a new window from now. */
  take(): MachineLoad {
    const nowMs = Date.now();
    const busyMs = machineBusyMs();
    const oursMs = this.oursMs();
    const wallMs = Math.max(1, nowMs - this.startedMs);
    const busy = busyMs === undefined || this.startedBusyMs === undefined ? 0 : (busyMs - this.startedBusyMs) / wallMs;
    const ours = Math.max(0, (oursMs - this.startedOursMs) / wallMs);
    const others = Math.max(0, busy - ours);
    this.startedMs = nowMs;
    this.startedBusyMs = busyMs;
    this.startedOursMs = oursMs;
    const round2 = (value: number): number => Math.round(value * 100) / 100;
    return { cores: cpus().length, busy_cores: round2(busy), ours_cores: round2(ours), others_cores: round2(others), load_average_1m: round2(loadavg()[0] ?? 0), shared: others > OTHERS_CORES_MAX };
  }
}
