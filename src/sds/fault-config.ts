/**
 * The SDS's fault-injection switchboard, for tests only: off unless the process starts with
 * PFLEX_FAULT_INJECTION=1, and then set through the control plane (POST /debug/faults, the MDM's
 * credential). One config, replaced whole on every POST, with a seeded PRNG so a run replays:
 *
 * - device_errors: EIO or ENOSPC on chosen reads, writes, syncs or zeroings (device-faults.ts)
 * - device_latency: added milliseconds before chosen device operations
 * - volatile_cache: a volatile write cache model; POST /debug/power-cut drops (or tears at 4 KiB)
 *   every write not covered by a completed fdatasync, then kills the process
 * - data: requests on the data port left unanswered and unexecuted (blackhole), or the reading of
 *   the connections open now paused for a while (stall), as a stuck or cut-off SDS would
 * - control: the next N orders to a control path answered with an error status
 */
import { z } from 'zod';
import { Prng } from '../common/prng.js';

export const FAULT_INJECTION_ENV = 'PFLEX_FAULT_INJECTION';
export const FAULT_RULES_MAX = 64;
export const FAULT_LATENCY_MS_MAX = 600_000;

export function faultInjectionEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[FAULT_INJECTION_ENV] === '1';
}

export const DEVICE_OPS = ['read', 'write', 'sync', 'zero'] as const;
export type DeviceOp = (typeof DEVICE_OPS)[number];
export const DATA_OPCODE_NAMES = ['read', 'write', 'flush', 'trim', 'write_zeroes', 'token', 'peer_read', 'ping', 'hello'] as const;
export type DataOpcodeName = (typeof DATA_OPCODE_NAMES)[number];

const count = z.number().int().min(1).max(1_000_000_000);
const deviceId = z.number().int().positive().max(0xffffffff);

const deviceErrorRule = z.strictObject({
  op: z.enum(DEVICE_OPS),
  errno: z.enum(['EIO', 'ENOSPC']),
  /** Only this device (the MDM's id); every device when absent. */
  mdm_device_id: deviceId.optional(),
  probability: z.number().min(0).max(1).default(1),
  /** Matching operations let through before the rule bites. */
  skip: z.number().int().min(0).max(1_000_000_000).default(0),
  /** How many errors, then the rule is spent; unlimited when absent. */
  count: count.optional(),
});

const deviceLatencyRule = z.strictObject({
  op: z.enum(DEVICE_OPS),
  ms: z.number().int().min(1).max(FAULT_LATENCY_MS_MAX),
  mdm_device_id: deviceId.optional(),
});

const dataRule = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('blackhole'), opcodes: z.array(z.enum(DATA_OPCODE_NAMES)).min(1).max(DATA_OPCODE_NAMES.length) }),
  z.strictObject({ kind: z.literal('stall'), ms: z.number().int().min(1).max(FAULT_LATENCY_MS_MAX) }),
]);

const controlRule = z.strictObject({
  path: z.string().min(1).max(100).regex(/^\/[a-z/_-]*$/),
  count,
  status: z.number().int().min(400).max(599).default(503),
});

export const faultConfigSchema = z.strictObject({
  seed: z.number().int().min(0).max(0xffffffff).default(1),
  volatile_cache: z.boolean().default(false),
  device_errors: z.array(deviceErrorRule).max(FAULT_RULES_MAX).default([]),
  device_latency: z.array(deviceLatencyRule).max(FAULT_RULES_MAX).default([]),
  data: z.array(dataRule).max(FAULT_RULES_MAX).default([]),
  control: z.array(controlRule).max(FAULT_RULES_MAX).default([]),
});
export type FaultConfig = z.infer<typeof faultConfigSchema>;

export const powerCutSchema = z.strictObject({
  /** Tear unsynced writes at 4 KiB: each block keeps its new or its old bytes, at random. */
  torn: z.boolean().default(false),
});

export interface FaultCounters {
  device_errors: number;
  device_delays: number;
  data_blackholed: number;
  control_failures: number;
}

interface DeviceErrorState {
  readonly rule: z.infer<typeof deviceErrorRule>;
  skipped: number;
  injected: number;
}

/** The live rules and what they did. Everything is decided with the config's seeded PRNG. */
export class Faults {
  private current: FaultConfig = faultConfigSchema.parse({});
  private prng = new Prng(1);
  private deviceErrors: DeviceErrorState[] = [];
  private controlLeft: { path: string; left: number; status: number }[] = [];
  private readonly stallListeners: ((ms: number) => void)[] = [];
  readonly counters: FaultCounters = { device_errors: 0, device_delays: 0, data_blackholed: 0, control_failures: 0 };

  get config(): FaultConfig {
    return this.current;
  }

  get volatileCache(): boolean {
    return this.current.volatile_cache;
  }

  /** The PRNG of the current config (torn writes use it too). */
  get random(): Prng {
    return this.prng;
  }

  /** Replaces the whole config; stall rules act at once on the connections open now. */
  set(config: FaultConfig): void {
    this.current = config;
    this.prng = new Prng(config.seed);
    this.deviceErrors = config.device_errors.map((rule) => ({ rule, skipped: 0, injected: 0 }));
    this.controlLeft = config.control.map((rule) => ({ path: rule.path, left: rule.count, status: rule.status }));
    for (const rule of config.data) if (rule.kind === 'stall') for (const listener of this.stallListeners) listener(rule.ms);
  }

  onStall(listener: (ms: number) => void): void {
    this.stallListeners.push(listener);
  }

  /** The errno to fail this device operation with, or undefined. */
  deviceError(op: DeviceOp, mdmDeviceId: number | undefined): 'EIO' | 'ENOSPC' | undefined {
    for (const state of this.deviceErrors) {
      const { rule } = state;
      if (rule.op !== op || (rule.mdm_device_id !== undefined && rule.mdm_device_id !== mdmDeviceId)) continue;
      if (rule.count !== undefined && state.injected >= rule.count) continue;
      if (state.skipped < rule.skip) {
        state.skipped += 1;
        continue;
      }
      if (rule.probability < 1 && this.prng.next() >= rule.probability) continue;
      state.injected += 1;
      this.counters.device_errors += 1;
      return rule.errno;
    }
    return undefined;
  }

  /** Milliseconds to wait before this device operation (the longest matching rule). */
  deviceLatencyMs(op: DeviceOp, mdmDeviceId: number | undefined): number {
    let ms = 0;
    for (const rule of this.current.device_latency) {
      if (rule.op === op && (rule.mdm_device_id === undefined || rule.mdm_device_id === mdmDeviceId)) ms = Math.max(ms, rule.ms);
    }
    if (ms > 0) this.counters.device_delays += 1;
    return ms;
  }

  /** True when requests of this opcode must vanish: read, never executed, never answered. */
  blackholes(opcode: DataOpcodeName): boolean {
    for (const rule of this.current.data) {
      if (rule.kind === 'blackhole' && rule.opcodes.includes(opcode)) {
        this.counters.data_blackholed += 1;
        return true;
      }
    }
    return false;
  }

  /** The status to fail this control order with, or undefined. */
  controlFailure(path: string): number | undefined {
    for (const rule of this.controlLeft) {
      if (rule.path !== path || rule.left <= 0) continue;
      rule.left -= 1;
      this.counters.control_failures += 1;
      return rule.status;
    }
    return undefined;
  }
}
