/**
 * `npm start` as a test runs it: `node dist/scripts/local-cluster.js` as a child process with its
 * own disk-backed data dir (O_DIRECT works there) and PFLEX_LOCAL_PORT_BASE on free ports, so it
 * runs beside a live `npm start`. Plus the real `pflex` CLI against it: `pflex local …` through its
 * control socket and admin commands through its MDM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePortRange } from '../../src/launcher/free-port.js';
import { LOCAL_PORT_SPAN, localPortsFromBase, type LocalPorts } from '../../src/launcher/local-config.js';
import { localControlSocketPath, type StatusReply, type ChildStatus } from '../../src/launcher/local-control-protocol.js';
import { cleanEnv, runPflex, type RunResult } from './cli.js';
import { waitFor } from './api.js';
import { directTempDir } from './sds.js';

/** dist/scripts/local-cluster.js, from this compiled file at dist/test/helpers/. */
export const LOCAL_CLUSTER_SCRIPT = resolve(dirname(fileURLToPath(import.meta.url)), '../../scripts/local-cluster.js');
const BANNER = 'pflex local cluster is up';
const START_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 60_000;

export interface LauncherExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface LocalLauncher {
  readonly child: ChildProcess;
  readonly dataDir: string;
  readonly ports: LocalPorts;
  readonly socketPath: string;
  readonly mdmUrl: string;
  readonly tokenFile: string;
  readonly exited: Promise<LauncherExit>;
  stdout(): string;
  stderr(): string;
  running(): boolean;
  nbdUri(volume: string): string;
  /** `pflex local <args…> --data-dir <its data dir>`, the real CLI. */
  local(...args: string[]): Promise<RunResult>;
  /** `pflex --json local status`, parsed; throws when it fails. */
  status(): Promise<StatusReply>;
  childStatus(name: string): Promise<ChildStatus>;
  /** `pflex --json <args…>` as this cluster's admin, parsed; throws when it fails. */
  adminJson<T>(...args: string[]): Promise<T>;
  /** SIGTERM to the launcher (by its PID), then waits for it to exit. */
  stop(): Promise<LauncherExit>;
}

function exitOf(child: ChildProcess): Promise<LauncherExit> {
  return new Promise((resolvePromise) => {
    if (child.exitCode !== null || child.signalCode !== null) resolvePromise({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolvePromise({ code, signal }));
  });
}

/**
 * Runs the launcher until it prints its banner; `dataDir` defaults to a directory that does not
 * exist yet in a new disk-backed temp dir (a first `npm start` makes ./data itself).
 */
export async function startLocalLauncher(env: Record<string, string> = {}, dataDir = join(directTempDir('pflex-local-'), 'data')): Promise<LocalLauncher> {
  const base = await freePortRange(LOCAL_PORT_SPAN);
  const ports = localPortsFromBase(base);
  const launcher = spawnLauncher({ PFLEX_DATA_DIR: dataDir, PFLEX_LOCAL_PORT_BASE: String(base), ...env }, dirname(dirname(dataDir))); // an existing dir that is not the data dir's parent, so commands name --data-dir
  const up = await waitFor(async () => (launcher.stdout().includes(BANNER) ? true : launcher.running() ? undefined : false), START_TIMEOUT_MS, 200);
  if (up !== true) {
    if (launcher.running()) await stopLauncher(launcher.child);
    throw new Error(`the local cluster did not come up (${up === false ? 'the launcher exited' : 'timeout'}); stderr:\n${launcher.stderr()}`);
  }
  const tokenFile = join(dataDir, 'mdm', 'admin.token');
  const mdmUrl = `http://127.0.0.1:${ports.mdm}`;
  const local = (...args: string[]): Promise<RunResult> => runPflex(['local', ...args, '--data-dir', dataDir], { timeoutMs: 90_000 });
  const status = async (): Promise<StatusReply> => {
    const result = await runPflex(['--json', 'local', 'status', '--data-dir', dataDir]);
    if (result.code !== 0) throw new Error(`pflex local status exited ${result.code}: ${result.stderr}`);
    return { ok: true, ...(JSON.parse(result.stdout) as Omit<StatusReply, 'ok'>) };
  };
  return {
    ...launcher,
    dataDir,
    ports,
    socketPath: localControlSocketPath(dataDir),
    mdmUrl,
    tokenFile,
    nbdUri: (volume) => `nbd://127.0.0.1:${ports.sdc.nbd}/${volume}`,
    local,
    status,
    async childStatus(name: string) {
      const child = (await status()).children.find((entry) => entry.name === name);
      if (child === undefined) throw new Error(`pflex local status lists no ${name}`);
      return child;
    },
    async adminJson<T>(...args: string[]): Promise<T> {
      const result = await runPflex(['--mdm', mdmUrl, '--token-file', tokenFile, '--json', ...args]);
      if (result.code !== 0) throw new Error(`pflex ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
      return JSON.parse(result.stdout) as T;
    },
  };
}

/** Launchers this test process started and has not seen exit: stopped when it exits (a tap timeout too). */
const launchers = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of launchers) child.kill('SIGTERM');
});

/** The launcher process alone (it may refuse to start: see `exited`). */
export function spawnLauncher(env: Record<string, string>, cwd: string) {
  const child = spawn(process.execPath, [LOCAL_CLUSTER_SCRIPT], { env: cleanEnv(env), cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  launchers.add(child);
  child.once('exit', () => launchers.delete(child));
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  // A spawn that fails (no such cwd, no node) is an exit with its reason, not an uncaught error.
  let spawnFailed = false;
  child.once('error', (error) => {
    spawnFailed = true;
    stderr += `spawn failed: ${error.message}\n`;
  });
  return {
    child,
    exited: exitOf(child),
    stdout: () => stdout,
    stderr: () => stderr,
    running: () => !spawnFailed && child.exitCode === null && child.signalCode === null,
    stop: () => stopLauncher(child),
  };
}

/** The launcher's exit if it comes within `timeoutMs`; otherwise it is stopped and undefined returned. */
export async function exitWithin(launcher: ReturnType<typeof spawnLauncher>, timeoutMs: number): Promise<LauncherExit | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([
    launcher.exited,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (exit === undefined) await launcher.stop();
  return exit;
}

async function stopLauncher(child: ChildProcess): Promise<LauncherExit> {
  const exited = exitOf(child);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  const exit = await exited;
  clearTimeout(timer);
  return exit;
}

/** True while a process with this PID exists. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes a launcher's data dir, and the temp dir it was made in when it is the default one. */
export function removeDataDir(dataDir: string): void {
  if (process.env.PFLEX_KEEP_TEST_DATA !== undefined) return;
  rmSync(basename(dataDir) === 'data' ? dirname(dataDir) : dataDir, { recursive: true, force: true });
}
