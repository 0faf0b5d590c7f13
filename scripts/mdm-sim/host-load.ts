/**
 * How busy a simulator host process was in a phase: its CPU share and its own event-loop delay.
 * A host near 100 % CPU or with a long delay would make the MDM look slower than it is; the
 * report shows both next to every figure the host measured.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

export interface HostLoad {
  readonly cpu_percent: number;
  readonly loop_delay_p99_ms: number;
  readonly loop_delay_max_ms: number;
  readonly rss_bytes: number;
}

/** What a host answers when a phase ends: the phase's name and length, its load, its figures. */
export interface HostPhaseResult<T> {
  readonly phase: string;
  readonly seconds: number;
  readonly load: HostLoad;
  readonly report: T;
}

export class HostLoadMeter {
  private readonly delay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });
  private startedMs = performance.now();
  private startedCpu = process.cpuUsage();

  constructor() {
    this.delay.enable();
  }

  /** The load since the last reset, and a new window from now. */
  take(): HostLoad {
    const cpu = process.cpuUsage(this.startedCpu);
    const wallMs = Math.max(1, performance.now() - this.startedMs);
    const load: HostLoad = {
      cpu_percent: Math.round(((cpu.user + cpu.system) / 1000 / wallMs) * 1000) / 10,
      loop_delay_p99_ms: Math.round(this.delay.percentile(99) / 1e4) / 100,
      loop_delay_max_ms: Math.round(this.delay.max / 1e4) / 100,
      rss_bytes: process.memoryUsage().rss,
    };
    this.delay.reset();
    this.startedMs = performance.now();
    this.startedCpu = process.cpuUsage();
    return load;
  }
}
