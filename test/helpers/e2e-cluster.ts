/**
 * A real pflex cluster for end-to-end tests: `pflex mdm`, three `pflex sds` and `pflex sdc` as
 * OS processes on free loopback ports, data in a disk-backed temp dir (O_DIRECT works there), so
 * tests run beside a live `npm start` cluster. Plus small helpers to run real clients.
 */
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
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

export async function startE2eCluster(volumes: readonly VolumeSpec[], options: { heartbeatIntervalMs?: number } = {}): Promise<E2eCluster> {
  const dataDir = directTempDir('pflex-e2e-');
  const ports = await Promise.all(Array.from({ length: 14 }, () => freePort()));
  const cluster = await ProcessCluster.start({
    dataDir,
    mdmPort: ports[0]!,
    sds: [0, 1, 2].map((n) => ({ data: ports[1 + n * 3]!, control: ports[2 + n * 3]!, mgmt: ports[3 + n * 3]! })),
    sdc: { nbd: ports[10]!, device: ports[11]!, control: ports[12]!, mgmt: ports[13]! },
    sdsDeviceBytes: 2 * 1024 ** 3,
    volumes,
    logLevel: process.env.PFLEX_TEST_LOG_LEVEL ?? 'info',
    ...(options.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: options.heartbeatIntervalMs } : {}),
  });
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
