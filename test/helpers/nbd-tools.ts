/**
 * Real NBD clients for tests (nbdinfo, nbdcopy, qemu-io, qemu-img, fio), run asynchronously so the
 * server under test keeps serving in the same process, and a memory-backed server to point them at.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createLogger } from '../../src/common/logger.js';
import { startNbdServer, type NbdServer } from '../../nbd/index.js';
import { MemoryExport, MemoryExportProvider } from './nbd-memory-export.js';

export interface ToolResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command without a shell (in tmpdir unless told, so stray files never land in the repo); kills it after timeoutMs. */
export function runTool(command: string, args: readonly string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd ?? tmpdir(), env: { ...process.env, LC_ALL: 'C', ...options.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function onPath(command: string): boolean {
  for (const directory of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    try {
      accessSync(join(directory, command), fsConstants.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}

/**
 * Waits (up to waitMs, for an apt-get install still running) until every command is on PATH; returns
 * the ones still missing so a test can skip with a reason instead of failing on a bare machine.
 */
export async function missingTools(commands: readonly string[], waitMs = 30_000): Promise<string[]> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const missing = commands.filter((command) => !onPath(command));
    if (missing.length === 0 || Date.now() >= deadline) return missing;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

export interface MemoryNbdServer {
  readonly server: NbdServer;
  readonly port: number;
  readonly provider: MemoryExportProvider;
  uri(name: string): string;
  close(): Promise<void>;
}

/** startNbdServer on a free loopback port over memory exports; log level from NBD_TEST_LOG (default silent). */
export async function startMemoryNbdServer(
  exports: readonly MemoryExport[],
  options: { defaultName?: string; connectionsMax?: number; requestsInFlightMax?: number; handshakeTimeoutMs?: number } = {},
): Promise<MemoryNbdServer> {
  const provider = new MemoryExportProvider(exports, options.defaultName);
  const level = (process.env.NBD_TEST_LOG ?? 'silent') as 'silent';
  const server = await startNbdServer({
    host: '127.0.0.1',
    port: 0,
    provider,
    log: createLogger('nbd-test', level),
    ...(options.connectionsMax === undefined ? {} : { connectionsMax: options.connectionsMax }),
    ...(options.requestsInFlightMax === undefined ? {} : { requestsInFlightMax: options.requestsInFlightMax }),
    ...(options.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: options.handshakeTimeoutMs }),
  });
  return {
    server,
    port: server.port,
    provider,
    uri: (name: string) => `nbd://127.0.0.1:${server.port}/${encodeURIComponent(name)}`,
    close: () => server.close(),
  };
}
