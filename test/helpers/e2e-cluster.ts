/**
 * A real pflex cluster for end-to-end tests: `pflex mdm`, three `pflex sds` and `pflex sdc` as
 * OS processes on free loopback ports, data in a disk-backed temp dir (O_DIRECT works there), so
 * tests run beside a live `npm start` cluster. Plus small helpers to run real clients.
 */
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { deriveControlCredential } from '../../src/common/sds-protocol.js';
import { ProcessCluster, PFLEX_BIN, type VolumeSpec } from '../../src/launcher/process-cluster.js';
import { freePort } from '../../src/launcher/free-port.js';
import { directTempDir } from './sds.js';
import { cleanEnv } from './cli.js';

export { ProcessCluster };

export interface E2eCluster {
  readonly cluster: ProcessCluster;
  readonly dataDir: string;
  uri(volume: string): string;
  /** Runs the real `pflex` CLI as this cluster's admin. */
  pflex(...args: string[]): Promise<RunOutput>;
  /** `pflex --json …`, parsed; throws with pflex's stderr when it exits non-zero. */
  pflexJson<T>(...args: string[]): Promise<T>;
  stop(): Promise<void>;
}

export interface RunOutput {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(command: string, args: readonly string[], options: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunOutput> {
  return new Promise((resolve) => {
    const child = execFile(
      command,
      args,
      { timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8', env: options.env ?? process.env },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : 1;
        resolve({ code, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

export interface E2eOptions {
  heartbeatIntervalMs?: number;
  /** Environment for every child (PFLEX_FAULT_INJECTION=1 turns on the SDS fault layer). */
  env?: NodeJS.ProcessEnv;
  sdsDeviceBytes?: number;
  pool?: { rebuildRateMbps?: number; sparePercent?: number };
}

/** The SDS fault layer on, with its volatile write cache model from the first write. */
export const FAULT_ENV: NodeJS.ProcessEnv = { PFLEX_FAULT_INJECTION: '1', PFLEX_FAULT_VOLATILE_CACHE: '1' };

/** Clusters of this test process: killed if the process is told to stop (a tap timeout), never orphaned. */
const live = new Set<ProcessCluster>();
let killOnSignal = false;

function guardAgainstOrphans(cluster: ProcessCluster): void {
  live.add(cluster);
  if (killOnSignal) return;
  killOnSignal = true;
  const killAll = (): void => {
    for (const each of live) for (const entry of each.processes.values()) entry.child.kill('SIGKILL');
  };
  process.on('exit', killAll);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      killAll();
      process.exit(signal === 'SIGTERM' ? 143 : 130);
    });
  }
}

export async function startE2eCluster(volumes: readonly VolumeSpec[], options: E2eOptions = {}): Promise<E2eCluster> {
  const dataDir = directTempDir('pflex-e2e-');
  const ports = await Promise.all(Array.from({ length: 14 }, () => freePort()));
  const cluster = await ProcessCluster.start({
    dataDir,
    mdmPort: ports[0]!,
    sds: [0, 1, 2].map((n) => ({ data: ports[1 + n * 3]!, control: ports[2 + n * 3]!, mgmt: ports[3 + n * 3]! })),
    sdc: { nbd: ports[10]!, device: ports[11]!, control: ports[12]!, mgmt: ports[13]! },
    sdsDeviceBytes: options.sdsDeviceBytes ?? 2 * 1024 ** 3,
    volumes,
    logLevel: process.env.PFLEX_TEST_LOG_LEVEL ?? 'info',
    ...(options.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: options.heartbeatIntervalMs } : {}),
    ...(options.env !== undefined ? { env: options.env } : {}),
    ...(options.pool !== undefined ? { pool: options.pool } : {}),
  });
  guardAgainstOrphans(cluster);
  const pflex = (...args: string[]): Promise<RunOutput> =>
    run(process.execPath, [PFLEX_BIN, '--mdm', cluster.mdmUrl, '--token-file', cluster.adminTokenFile, ...args], { env: cleanEnv() });
  return {
    cluster,
    dataDir,
    uri: (volume) => `${cluster.nbdUri}/${volume}`,
    pflex,
    async pflexJson<T>(...args: string[]): Promise<T> {
      const result = await pflex('--json', ...args);
      if (result.code !== 0) throw new Error(`pflex ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
      return JSON.parse(result.stdout) as T;
    },
    async stop() {
      await cluster.stop();
      live.delete(cluster);
      if (process.env.PFLEX_KEEP_TEST_DATA === undefined) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** qemu-io against one of the cluster's NBD exports, one `-c` per command (`readOnly`: `-r`). */
export function qemuIo(e2e: E2eCluster, volume: string, commands: readonly string[], options: { readOnly?: boolean } = {}): Promise<RunOutput> {
  return run('qemu-io', [...(options.readOnly === true ? ['-r'] : []), '-f', 'raw', e2e.uri(volume), ...commands.flatMap((command) => ['-c', command])], {
    timeoutMs: 120_000,
  });
}

/** An order on an SDS's control plane, with the MDM's credential (from the SDS's node.json). */
export async function sdsControl(e2e: E2eCluster, index: number, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const name = e2e.cluster.sdsName(index);
  const node = JSON.parse(readFileSync(join(e2e.dataDir, name, 'node.json'), 'utf8')) as { signing_key: string };
  const credential = deriveControlCredential(Buffer.from(node.signing_key, 'base64'));
  const response = await fetch(`http://127.0.0.1:${e2e.cluster.spec.sds[index]!.control}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  return { status: response.status, body: text.length > 0 ? JSON.parse(text) : undefined };
}

/** Replaces SDS `index`'s fault config (fault-config.ts); throws unless it took it. */
export async function setSdsFaults(e2e: E2eCluster, index: number, config: Record<string, unknown>): Promise<void> {
  const answer = await sdsControl(e2e, index, '/debug/faults', config);
  if (answer.status !== 200) throw new Error(`faults on ${e2e.cluster.sdsName(index)}: ${answer.status} ${JSON.stringify(answer.body)}`);
}

/** Power cut on SDS `index` (its unsynced writes dropped, the process killed); resolves once it is gone. */
export async function powerCut(e2e: E2eCluster, index: number, torn = false): Promise<void> {
  const name = e2e.cluster.sdsName(index);
  const child = e2e.cluster.processes.get(name)!.child;
  const gone = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  await sdsControl(e2e, index, '/debug/power-cut', { torn }).catch(() => undefined);
  await gone;
}

interface WholeStatus {
  pools: { health: string }[];
  sds: { state: string }[];
  replicas: { expected: number; available: number };
  rebuild: { state: string }[];
}

/**
 * Waits until the cluster is whole: every pool OK, every chunk with all its current replicas,
 * nothing rebuilding (and with `allSdsUp`, every SDS UP). False when it is not by the deadline.
 */
export async function waitWhole(e2e: E2eCluster, timeoutMs = 120_000, allSdsUp = false): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = await e2e.cluster.admin.get<WholeStatus>('/cluster/status').catch(() => undefined);
    if (
      status !== undefined &&
      status.pools.every((pool) => pool.health === 'OK') &&
      status.replicas.available === status.replicas.expected &&
      status.rebuild.every((pool) => pool.state === 'idle') &&
      (!allSdsUp || status.sds.every((sds) => sds.state === 'UP'))
    ) {
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return false;
}
