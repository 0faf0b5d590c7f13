/**
 * A whole pflex cluster as real OS processes on loopback: `pflex mdm`, N × `pflex sds`, and
 * `pflex sdc`, each its own process whose command line names its role and node. Used by
 * `npm start` (fixed ports, ./data), `pflex scenario run`, the end-to-end tests (free ports,
 * temp dirs) and the benchmarks. Bootstraps PD, fault sets, a two-copy pool, SDS records with file devices, the SDC
 * and volumes, idempotently, so a restart finds everything where it was.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, existsSync, readFileSync, closeSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HttpClient, HttpClientError } from '../common/http-client.js';
import { GiB } from '../common/units.js';

export const PFLEX_BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../cli/main.js');
const STOP_GRACE_MS = 10_000;
/** How much of a child's log a start timeout quotes. */
const LOG_TAIL_LINES = 20;
const LOG_TAIL_BYTES_MAX = 16 * 1024;

export interface SdsPorts {
  readonly data: number;
  readonly control: number;
  readonly mgmt: number;
}

export interface SdcPorts {
  readonly nbd: number;
  readonly device: number;
  readonly control: number;
  readonly mgmt: number;
}

export interface VolumeSpec {
  readonly name: string;
  readonly sizeBytes: number;
  readonly provisioning: 'thin' | 'thick';
  readonly accessMode?: 'readWrite' | 'readOnly';
  /** Map it to sdc1 at bootstrap (default true); false leaves the mapping to the caller. */
  readonly mapToSdc1?: boolean;
}

export interface ClusterSpec {
  readonly dataDir: string;
  readonly mdmPort: number;
  readonly sds: readonly SdsPorts[];
  readonly sdc: SdcPorts;
  readonly sdsDeviceBytes?: number;
  /** Settings of pool1 when it is created. */
  readonly pool?: { readonly rebuildRateMbps?: number; readonly sparePercent?: number };
  readonly volumes?: readonly VolumeSpec[];
  readonly logLevel?: string;
  readonly heartbeatIntervalMs?: number;
  /** Extra environment for every child (never secrets on command lines). */
  readonly env?: NodeJS.ProcessEnv;
  /** Aborting it makes start() stop what it started and throw (e.g. a child died while starting). */
  readonly signal?: AbortSignal;
  /** Called when a child exits on its own (not through stop()). */
  readonly onUnexpectedExit?: (name: string, code: number | null, signal: NodeJS.Signals | null) => void;
}

export interface ClusterProcess {
  readonly name: string;
  readonly args: readonly string[];
  /** What spawn() was given, to start the process again the same way. */
  readonly spawnArgs: readonly string[];
  readonly spawnEnv: NodeJS.ProcessEnv;
  /** When this child was spawned (Date.now()). */
  readonly startedAtMs: number;
  child: ChildProcess;
}

export type ClusterRole = 'mdm' | 'sds' | 'sdc';

/** A child's role, from its name: sdc…, sds…, else the MDM. */
export function roleOf(name: string): ClusterRole {
  return name.startsWith('sdc') ? 'sdc' : name.startsWith('sds') ? 'sds' : 'mdm';
}

export class ProcessCluster {
  readonly processes = new Map<string, ClusterProcess>();
  readonly mdmUrl: string;
  readonly admin: HttpClient;
  private stopping = false;
  private joinToken: string | undefined;

  private constructor(
    readonly spec: ClusterSpec,
    adminToken: string,
  ) {
    this.mdmUrl = `http://127.0.0.1:${spec.mdmPort}`;
    this.admin = new HttpClient({ baseUrl: this.mdmUrl, credential: adminToken });
  }

  get nbdUri(): string {
    return `nbd://127.0.0.1:${this.spec.sdc.nbd}`;
  }

  get adminTokenFile(): string {
    return join(this.spec.dataDir, 'mdm', 'admin.token');
  }

  /** Starts (or restarts, with its data) the whole cluster and waits until the SDC exports. */
  static async start(spec: ClusterSpec): Promise<ProcessCluster> {
    mkdirSync(spec.dataDir, { recursive: true });
    const { signal } = spec;
    const mdmArgs = ['mdm', '--port', String(spec.mdmPort), '--data-dir', join(spec.dataDir, 'mdm')];
    if (spec.heartbeatIntervalMs !== undefined) mdmArgs.push('--heartbeat-interval-ms', String(spec.heartbeatIntervalMs));
    const bootstrapCluster = new ProcessCluster(spec, '');
    bootstrapCluster.spawn('mdm', mdmArgs, spec.env ?? {});
    try {
      await waitForHealth(bootstrapCluster.mdmUrl, 30_000, false, signal);
    } catch (error) {
      await bootstrapCluster.stop();
      throw error;
    }
    const tokenFile = join(spec.dataDir, 'mdm', 'admin.token');
    const adminToken = process.env.PFLEX_ADMIN_TOKEN ?? (existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : '');
    const cluster = new ProcessCluster(spec, adminToken);
    for (const [name, entry] of bootstrapCluster.processes) cluster.processes.set(name, entry);
    try {
      await cluster.bootstrap();
      signal?.throwIfAborted();
      for (let index = 0; index < spec.sds.length; index += 1) cluster.startSds(index);
      for (let index = 0; index < spec.sds.length; index += 1) await cluster.waitForChild(cluster.sdsName(index), `http://127.0.0.1:${spec.sds[index]!.mgmt}`, 30_000, signal);
      cluster.startSdc();
      await cluster.waitForSdc(30_000, signal);
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  sdsName(index: number): string {
    return `sds-${index + 1}`;
  }

  private async bootstrap(): Promise<void> {
    const { admin, spec } = this;
    await ensure(admin, '/pd/pd1', '/pd/create', { name: 'pd1', description: 'local cluster' });
    for (let n = 1; n <= spec.sds.length; n += 1) await ensure(admin, `/fault_set/fs${n}`, '/fault_set/create', { pd: 'pd1', name: `fs${n}` });
    await ensure(admin, '/pool/pool1', '/pool/create', {
      pd: 'pd1',
      name: 'pool1',
      protection_policy: 'two_copies',
      ...(spec.pool?.rebuildRateMbps !== undefined ? { rebuild_rate_mbps: spec.pool.rebuildRateMbps } : {}),
      ...(spec.pool?.sparePercent !== undefined ? { spare_percent: spec.pool.sparePercent } : {}),
    });
    for (const [index, ports] of spec.sds.entries()) {
      const name = this.sdsName(index);
      await ensure(admin, `/sds/${name}`, '/sds/add', {
        name,
        pd: 'pd1',
        fault_set: `fs${index + 1}`,
        host: '127.0.0.1',
        data_port: ports.data,
        control_port: ports.control,
        mgmt_port: ports.mgmt,
        devices: [{ path: join(spec.dataDir, name, 'device0.img'), capacity_bytes: spec.sdsDeviceBytes ?? 4 * GiB, pool: 'pool1' }],
      });
    }
    await ensure(admin, '/sdc/sdc1', '/sdc/add', { name: 'sdc1', host: '127.0.0.1' });
    for (const volume of spec.volumes ?? [{ name: 'vol1', sizeBytes: GiB, provisioning: 'thin' as const }]) {
      await ensure(admin, `/vol/${volume.name}`, '/vol/create', { name: volume.name, pool: 'pool1', size_bytes: volume.sizeBytes, provisioning: volume.provisioning });
      if (volume.mapToSdc1 === false) continue;
      const view = await admin.get<{ mappings: { sdc: string }[] }>(`/vol/${volume.name}`);
      if (!view.mappings.some((mapping) => mapping.sdc === 'sdc1')) {
        await admin.post('/vol/map', { volume: volume.name, sdc: 'sdc1', access_mode: volume.accessMode ?? 'readWrite' });
      }
    }
    this.joinToken = (await admin.post<{ join_token: string }>('/cluster/join-token', { roles: ['sds', 'sdc'], ttl_s: 3600 })).join_token;
  }

  private childEnv(): NodeJS.ProcessEnv {
    return { POWERFLEX_MDM_ADDRESS: this.mdmUrl, PFLEX_JOIN_TOKEN: this.joinToken ?? '', ...(this.spec.env ?? {}) };
  }

  startSds(index: number): ClusterProcess {
    const ports = this.spec.sds[index]!;
    const name = this.sdsName(index);
    return this.spawn(
      name,
      ['sds', '--node-id', name, '--data-dir', join(this.spec.dataDir, name), '--data-port', String(ports.data), '--control-port', String(ports.control), '--mgmt-port', String(ports.mgmt)],
      this.childEnv(),
    );
  }

  /**
   * An SDS beyond the spec's, in a fault set of its own, with one device in pool1: its record is
   * created, then it runs and registers (and the MDM may rebalance onto it).
   */
  async addSds(name: string, ports: SdsPorts, deviceBytes: number): Promise<ClusterProcess> {
    const faultSet = `fs-${name}`;
    await ensure(this.admin, `/fault_set/${faultSet}`, '/fault_set/create', { pd: 'pd1', name: faultSet });
    await ensure(this.admin, `/sds/${name}`, '/sds/add', {
      name,
      pd: 'pd1',
      fault_set: faultSet,
      host: '127.0.0.1',
      data_port: ports.data,
      control_port: ports.control,
      mgmt_port: ports.mgmt,
      devices: [{ path: join(this.spec.dataDir, name, 'device0.img'), capacity_bytes: deviceBytes, pool: 'pool1' }],
    });
    const child = this.spawn(
      name,
      ['sds', '--node-id', name, '--data-dir', join(this.spec.dataDir, name), '--data-port', String(ports.data), '--control-port', String(ports.control), '--mgmt-port', String(ports.mgmt)],
      this.childEnv(),
    );
    await this.waitForChild(name, `http://127.0.0.1:${ports.mgmt}`, 30_000);
    return child;
  }

  /** An SDC beyond the first: its record is created, then it runs and registers like sdc1. */
  async startExtraSdc(name: string, ports: SdcPorts): Promise<ClusterProcess> {
    await ensure(this.admin, `/sdc/${name}`, '/sdc/add', { name, host: '127.0.0.1' });
    const child = this.spawn(
      name,
      [
        'sdc', '--node-id', name, '--data-dir', join(this.spec.dataDir, name),
        '--nbd-port', String(ports.nbd), '--device-port', String(ports.device), '--control-port', String(ports.control), '--mgmt-port', String(ports.mgmt),
      ],
      this.childEnv(),
    );
    await this.waitForChild(name, `http://127.0.0.1:${ports.mgmt}`, 30_000);
    return child;
  }

  startSdc(): ClusterProcess {
    const ports = this.spec.sdc;
    return this.spawn(
      'sdc1',
      [
        'sdc', '--node-id', 'sdc1', '--data-dir', join(this.spec.dataDir, 'sdc1'),
        '--nbd-port', String(ports.nbd), '--device-port', String(ports.device), '--control-port', String(ports.control), '--mgmt-port', String(ports.mgmt),
      ],
      this.childEnv(),
    );
  }

  /**
   * Waits until a child's /health says registered; a timeout names the child, says whether it
   * still runs, and quotes the end of its log, so a start that fails under load can be told apart
   * from one that crashed or could not bind its port.
   */
  async waitForChild(name: string, url: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    try {
      await waitForHealth(url, timeoutMs, true, signal);
    } catch (error) {
      if (signal?.aborted === true) throw error;
      const child = this.processes.get(name)?.child;
      const state = child === undefined ? 'never started' : child.exitCode !== null || child.signalCode !== null ? `exited (${child.signalCode ?? `code ${child.exitCode}`})` : `still running`;
      throw new Error(`${name} (pid ${child?.pid ?? '-'}, ${state}): ${(error as Error).message}; last lines of ${this.logPath(name)}:\n${logTail(this.logPath(name), LOG_TAIL_LINES)}`);
    }
  }

  logPath(name: string): string {
    return join(this.spec.dataDir, 'logs', `${name}.log`);
  }

  /** Waits until the SDC is registered and exports every volume of the spec. */
  async waitForSdc(timeoutMs = 30_000, signal?: AbortSignal): Promise<void> {
    const wanted = (this.spec.volumes ?? [{ name: 'vol1' }]).filter((volume) => !('mapToSdc1' in volume) || volume.mapToSdc1 !== false).map((volume) => volume.name);
    await waitForExports(this.spec.sdc.mgmt, wanted, timeoutMs, signal);
  }

  spawn(name: string, args: string[], env: NodeJS.ProcessEnv = {}): ClusterProcess {
    mkdirSync(join(this.spec.dataDir, 'logs'), { recursive: true });
    const log = openSync(this.logPath(name), 'a');
    const fullArgs = [...args, '--log-level', this.spec.logLevel ?? 'info'];
    const nodeArgs = childNodeArgs();
    // The SDS runs device IO on libuv's threadpool, sized at process start (the bin's shebang does the same).
    const poolEnv = { UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' };
    const child = spawn(process.execPath, [...nodeArgs, PFLEX_BIN, ...fullArgs], { stdio: ['ignore', log, log], env: { ...process.env, ...poolEnv, ...env } });
    closeSync(log);
    const entry: ClusterProcess = { name, args: fullArgs, spawnArgs: args, spawnEnv: env, startedAtMs: Date.now(), child };
    this.processes.set(name, entry);
    child.on('exit', (code, signal) => {
      if (!this.stopping && this.processes.get(name)?.child === child) this.spec.onUnexpectedExit?.(name, code, signal);
    });
    return entry;
  }

  /** Starts a stopped or killed process again with the same command line and environment. */
  restart(name: string): ClusterProcess {
    const entry = this.processes.get(name);
    if (entry === undefined) throw new Error(`no process ${name}`);
    if (entry.child.exitCode === null && entry.child.signalCode === null) throw new Error(`${name} is still running`);
    return this.spawn(name, [...entry.spawnArgs], entry.spawnEnv);
  }

  /** The URL whose /health answers once the named child of the spec serves (undefined for others). */
  healthUrl(name: string): string | undefined {
    if (name === 'mdm') return this.mdmUrl;
    if (name === 'sdc1') return `http://127.0.0.1:${this.spec.sdc.mgmt}`;
    const index = this.spec.sds.findIndex((_, n) => this.sdsName(n) === name);
    return index === -1 ? undefined : `http://127.0.0.1:${this.spec.sds[index]!.mgmt}`;
  }

  pid(name: string): number | undefined {
    return this.processes.get(name)?.child.pid;
  }

  /** kill -9 one process (by its PID) and wait for it to be gone. */
  async kill9(name: string): Promise<void> {
    const entry = this.processes.get(name);
    if (entry === undefined) throw new Error(`no process ${name}`);
    await stopChild(entry.child, 'SIGKILL');
  }

  async stopProcess(name: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const entry = this.processes.get(name);
    if (entry !== undefined) await stopChild(entry.child, signal);
  }

  /** Stops every child: SIGTERM, then SIGKILL after a grace period. SDC first, MDM last. */
  async stop(): Promise<void> {
    this.stopping = true;
    const order = [...this.processes.values()].sort((a, b) => rank(a.name) - rank(b.name));
    for (const group of [order.filter((p) => rank(p.name) === 0), order.filter((p) => rank(p.name) === 1), order.filter((p) => rank(p.name) === 2)]) {
      await Promise.all(group.map((entry) => stopChild(entry.child, 'SIGTERM')));
    }
  }
}

function rank(name: string): number {
  return { sdc: 0, sds: 1, mdm: 2 }[roleOf(name)];
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  return new Promise((resolveStop) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolveStop();
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      resolveStop();
    });
    child.kill(signal);
  });
}

/** PFLEX_CHILD_NODE_ARGS: extra node flags for every child, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof". */
export function childNodeArgs(): string[] {
  return (process.env.PFLEX_CHILD_NODE_ARGS ?? '').split(' ').filter((arg) => arg.length > 0);
}

/** The last `lines` lines of a log file (empty when it cannot be read). */
function logTail(path: string, lines: number): string {
  try {
    const text = readFileSync(path, 'utf8');
    return text.slice(Math.max(0, text.length - LOG_TAIL_BYTES_MAX)).split('\n').slice(-lines - 1).join('\n');
  } catch {
    return '';
  }
}

/** Creates an object unless it exists: the bootstrap runs at every start. */
async function ensure(client: HttpClient, showPath: string, createPath: string, body: unknown): Promise<void> {
  try {
    await client.get(showPath);
  } catch (error) {
    if (!(error instanceof HttpClientError) || error.status !== 404) throw error;
    await client.post(createPath, body);
  }
}

/** Waits until the SDC whose mgmt plane is on `mgmtPort` is registered and exports every named volume. */
export async function waitForExports(mgmtPort: number, volumes: readonly string[], timeoutMs = 30_000, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await waitForHealth(`http://127.0.0.1:${mgmtPort}`, timeoutMs, true, signal);
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    try {
      const response = await fetch(`http://127.0.0.1:${mgmtPort}/mappings`, { signal: AbortSignal.timeout(1000) });
      const body = (await response.json()) as { mappings: { name: string }[] };
      if (volumes.every((name) => body.mappings.some((mapping) => mapping.name === name))) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the SDC did not export ${volumes.join(', ')} within ${timeoutMs} ms`);
}

/** Waits until `${url}/health` answers (and, when asked, says registered: true); an abort throws. */
export async function waitForHealth(url: string, timeoutMs: number, registered = false, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    try {
      const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
      if (response.ok && (!registered || ((await response.json()) as { registered?: boolean }).registered === true)) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer /health${registered ? ' as registered' : ''} within ${timeoutMs} ms`);
}
