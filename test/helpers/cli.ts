/** Runs the real `pflex` binary and real `pflex mdm` processes for CLI tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../src/launcher/free-port.js';
import { waitForHealth } from '../../src/launcher/process-cluster.js';

export { waitForHealth };

/** dist/src/cli/main.js, found from this compiled file at dist/test/helpers/cli.js. */
export const PFLEX_BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A clean environment: no admin token or MDM address leaks in from the developer's shell. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  for (const key of Object.keys(env)) if (key.startsWith('PFLEX_') || key.startsWith('POWERFLEX_')) delete env[key];
  return { ...env, ...extra };
}

export function runPflex(args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [PFLEX_BIN, ...args], {
      env: options.env ?? cleanEnv(),
      cwd: options.cwd ?? tmpdir(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

export interface MdmProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly tokenFile: string;
  /** Stops the process; removes a data dir this helper made unless keepData. */
  stop(signal?: NodeJS.Signals, keepData?: boolean): Promise<number | null>;
}


/** Starts `pflex mdm` as its own OS process on a free port with a fresh data dir. */
export async function startMdmProcess(extraArgs: readonly string[] = [], dataDir?: string): Promise<MdmProcess> {
  const port = await freePort();
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'pflex-cli-mdm-'));
  const child = spawn(
    process.execPath,
    [PFLEX_BIN, 'mdm', '--port', String(port), '--data-dir', dir, '--log-file', join(dir, 'mdm.log'), ...extraArgs],
    { env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForHealth(url, 15_000);
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`${(error as Error).message}; stderr: ${stderr}`);
  }
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return {
    child,
    url,
    port,
    dataDir: dir,
    tokenFile: join(dir, 'admin.token'),
    async stop(signal: NodeJS.Signals = 'SIGTERM', keepData = false) {
      if (child.exitCode === null) child.kill(signal);
      const code = await exited;
      if (dataDir === undefined && !keepData) rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}
