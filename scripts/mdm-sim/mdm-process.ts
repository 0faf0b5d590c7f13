/**
 * The MDM under test: `node dist/src/cli/main.js mdm` as its own process (so its RSS is its
 * own), on a kernel-chosen port of 127.0.0.1, with a temp data dir, a random admin credential in
 * its environment, and (unless BENCH_MDM_PROBE=0) the probe of mdm-probe.ts preloaded with an IPC
 * channel to read it. Its RSS and database size are read from /proc and the file system.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, readFileSync, statSync, existsSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { RpcChannel, stopChild, trackChild } from './ipc.js';
import { JsonHttp } from './http-json.js';
import { sleep } from './stats.js';
import type { ProbeReport } from './mdm-probe.js';
import { childNodeArgs } from '../../src/launcher/process-cluster.js';

const HERE = dirname(fileURLToPath(import.meta.url));
/** dist/scripts/mdm-sim → dist/src/cli/main.js */
export const PFLEX_BIN = resolve(HERE, '../../src/cli/main.js');
const PROBE_MODULE = resolve(HERE, 'mdm-probe.js');
const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 15_000;
const PROBE_TIMEOUT_MS = 120_000;

export interface MdmStartOptions {
  readonly dataDir: string;
  readonly heartbeatIntervalMs: number;
  readonly heartbeatMisses: number;
  readonly tokenTtlMs: number;
  readonly logLevel: string;
  readonly probe: boolean;
  readonly maxOldSpaceMib: number;
}

export interface MdmMemory {
  readonly rss_bytes: number;
  readonly peak_rss_bytes: number;
}

export interface MdmDbBytes {
  readonly db_bytes: number;
  readonly wal_bytes: number;
  readonly total_bytes: number;
}

/** A field of /proc/<pid>/status in bytes (VmRSS, VmHWM), or undefined when the process is gone. */
export function procStatusBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? undefined : Number(match[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) of a process in milliseconds, from /proc/<pid>/stat. */
export function procCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticksPerS = 100; // USER_HZ on Linux
    return ((Number(fields[11]) + Number(fields[12])) / ticksPerS) * 1000;
  } catch {
    return undefined;
  }
}

export class MdmProcess {
  private constructor(
    readonly child: ChildProcess,
    readonly url: string,
    readonly adminToken: string,
    readonly dataDir: string,
    readonly logFile: string,
    private readonly channel: RpcChannel | undefined,
    private readonly stderrTail: () => string,
  ) {}

  static async start(options: MdmStartOptions): Promise<MdmProcess> {
    const adminToken = `pfa_bench_${randomBytes(16).toString('hex')}`;
    const logFile = join(options.dataDir, 'mdm.log');
    const stderrFile = join(options.dataDir, 'mdm.stderr');
    const execArgv: string[] = [];
    if (options.maxOldSpaceMib > 0) execArgv.push(`--max-old-space-size=${options.maxOldSpaceMib}`);
    if (options.probe) execArgv.push('--import', pathToFileURL(PROBE_MODULE).href);
    // As for the cluster's children: PFLEX_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=/var/tmp/prof".
    execArgv.push(...childNodeArgs());
    const args = [
      ...execArgv,
      PFLEX_BIN,
      'mdm',
      '--host', '127.0.0.1',
      '--port', '0',
      '--data-dir', join(options.dataDir, 'mdm'),
      '--heartbeat-interval-ms', String(options.heartbeatIntervalMs),
      '--heartbeat-misses', String(options.heartbeatMisses),
      '--token-ttl-ms', String(options.tokenTtlMs),
      '--log-level', options.logLevel,
      '--log-file', logFile,
    ];
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...process.env, PFLEX_ADMIN_TOKEN: adminToken },
    });
    trackChild(child);
    child.stderr!.pipe(createWriteStream(stderrFile, { flags: 'a' }));
    let stderrText = '';
    const listening = new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error(`the MDM did not say it listens within ${START_TIMEOUT_MS} ms; stderr: ${stderrText.slice(-2000)}`)), START_TIMEOUT_MS);
      child.stderr!.on('data', (part: Buffer) => {
        stderrText = (stderrText + part.toString('utf8')).slice(-20_000);
        const match = /listening on (http:\/\/[^\s]+)/.exec(stderrText);
        if (match !== null) {
          clearTimeout(timer);
          resolveUrl(match[1]!);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the MDM exited while starting (code ${code}, signal ${signal}); stderr: ${stderrText.slice(-2000)}`));
      });
    });
    const url = await listening;
    const channel = options.probe ? new RpcChannel('mdm-probe', child) : undefined;
    const mdm = new MdmProcess(child, url, adminToken, options.dataDir, logFile, channel, () => stderrText.slice(-4000));
    await mdm.waitHealthy(START_TIMEOUT_MS);
    return mdm;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /** Why the MDM is gone (exit code or signal, and its last stderr), for reports. */
  exitReason(): string {
    return `the MDM exited (code ${this.child.exitCode}, signal ${this.child.signalCode}); stderr tail: ${this.stderrTail().slice(-1500)}`;
  }

  async waitHealthy(timeoutMs: number): Promise<void> {
    const client = new JsonHttp({ baseUrl: this.url, socketsMax: 1, timeoutMs: 2000 });
    const deadline = Date.now() + timeoutMs;
    try {
      for (;;) {
        try {
          await client.get('/health');
          return;
        } catch (error) {
          if (this.exited) throw new Error(this.exitReason());
          if (Date.now() > deadline) throw new Error(`the MDM at ${this.url} is not healthy after ${timeoutMs} ms: ${(error as Error).message}`);
          await sleep(100);
        }
      }
    } finally {
      client.close();
    }
  }

  memory(): MdmMemory | undefined {
    const rss = procStatusBytes(this.pid, 'VmRSS');
    const peak = procStatusBytes(this.pid, 'VmHWM');
    return rss === undefined || peak === undefined ? undefined : { rss_bytes: rss, peak_rss_bytes: peak };
  }

  cpuMs(): number | undefined {
    return procCpuMs(this.pid);
  }

  dbBytes(): MdmDbBytes {
    const size = (file: string): number => (existsSync(file) ? statSync(file).size : 0);
    const db = size(join(this.dataDir, 'mdm', 'powerflex.db'));
    const wal = size(join(this.dataDir, 'mdm', 'powerflex.db-wal'));
    return { db_bytes: db, wal_bytes: wal, total_bytes: db + wal };
  }

  /** Ends the probe's current phase (its report) and starts `next`; undefined without the probe. */
  async probePhase(next: string): Promise<ProbeReport | undefined> {
    if (this.channel === undefined || this.exited) return undefined;
    return this.channel.call<ProbeReport>('phase', { name: next }, PROBE_TIMEOUT_MS);
  }

  async stop(): Promise<void> {
    await stopChild(this.child, STOP_GRACE_MS);
  }
}
