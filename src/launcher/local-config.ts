/**
 * The settings of `npm start` (scripts/local-cluster.ts), read from the environment and checked
 * before anything starts: where the data lives, which ports the children use, and whether a child
 * that dies is restarted by itself. A bad value is refused with a message naming the variable.
 */
import { resolve } from 'node:path';
import type { SdcPorts, SdsPorts } from './process-cluster.js';

export const LOCAL_SDS_COUNT = 3;
/** PFLEX_LOCAL_PORT_BASE=B uses B … B + LOCAL_PORT_SPAN - 1 (see localPortsFromBase). */
export const LOCAL_PORT_SPAN = 33;
export const LOCAL_PORT_BASE_MIN = 1024;
export const LOCAL_RESTART_DELAY_S_MAX = 3600;
/** Automatic restarts of one child within a minute before the launcher gives up on it. */
export const LOCAL_RESTARTS_PER_MINUTE_MAX = 5;

export interface LocalPorts {
  readonly mdm: number;
  readonly sds: readonly SdsPorts[];
  readonly sdc: SdcPorts;
}

export interface LocalClusterConfig {
  readonly dataDir: string;
  readonly ports: LocalPorts;
  /** Seconds after an unexpected exit before the child is started again; undefined: never. */
  readonly restartDelayS: number | undefined;
  readonly restartsPerMinuteMax: number;
}

export class LocalConfigError extends Error {}

/** The ports of a local cluster without PFLEX_LOCAL_PORT_BASE: the documented defaults. */
export const DEFAULT_LOCAL_PORTS: LocalPorts = {
  mdm: 8001,
  sds: Array.from({ length: LOCAL_SDS_COUNT }, (_, n) => ({ data: 9700 + n, control: 9100 + n, mgmt: 9200 + n })),
  sdc: { nbd: 10809, device: 8005, control: 8003, mgmt: 8004 },
};

/**
 * Every port from one base B: MDM B, SDC NBD B+1, JSON device B+2, control B+3, mgmt B+4, and
 * SDS n (0, 1, 2) data B+10+n, control B+20+n, mgmt B+30+n.
 */
export function localPortsFromBase(base: number): LocalPorts {
  return {
    mdm: base,
    sds: Array.from({ length: LOCAL_SDS_COUNT }, (_, n) => ({ data: base + 10 + n, control: base + 20 + n, mgmt: base + 30 + n })),
    sdc: { nbd: base + 1, device: base + 2, control: base + 3, mgmt: base + 4 },
  };
}

function integerVariable(env: NodeJS.ProcessEnv, name: string, min: number, max: number, hint: string): number | undefined {
  const text = env[name];
  if (text === undefined || text.trim() === '') return undefined;
  const value = Number(text);
  if (!/^\s*\d+\s*$/.test(text) || value < min || value > max) {
    throw new LocalConfigError(`${name}="${text}" is not valid: ${hint} (a whole number from ${min} to ${max})`);
  }
  return value;
}

export function localClusterConfig(env: NodeJS.ProcessEnv = process.env): LocalClusterConfig {
  const base = integerVariable(env, 'PFLEX_LOCAL_PORT_BASE', LOCAL_PORT_BASE_MIN, 65536 - LOCAL_PORT_SPAN, `the first of ${LOCAL_PORT_SPAN} ports the local cluster uses`);
  const ports = base === undefined ? DEFAULT_LOCAL_PORTS : localPortsFromBase(base);
  // The two ports `npm start` always took from the environment still override.
  const mdm = integerVariable(env, 'POWERFLEX_MDM_PORT', 1, 65535, "the MDM's API port") ?? ports.mdm;
  const nbd = integerVariable(env, 'POWERFLEX_SDC_NBD_PORT', 1, 65535, "the SDC's NBD port") ?? ports.sdc.nbd;
  const delay = env.PFLEX_LOCAL_RESTART_DELAY_S?.trim().toLowerCase() === 'off'
    ? undefined
    : integerVariable(env, 'PFLEX_LOCAL_RESTART_DELAY_S', 1, LOCAL_RESTART_DELAY_S_MAX, 'seconds before a child that died is started again, or "off"');
  return {
    dataDir: resolve(env.PFLEX_DATA_DIR ?? 'data'),
    ports: { mdm, sds: ports.sds, sdc: { ...ports.sdc, nbd } },
    restartDelayS: delay,
    restartsPerMinuteMax: LOCAL_RESTARTS_PER_MINUTE_MAX,
  };
}
