/**
 * What `npm start` does when one of its children dies, and what `pflex local …` asks of it: the
 * others keep serving, the death is reported (name, PID, exit code or signal, log, how to bring it
 * back), and the child can be started again (the same command line and environment), stopped
 * (SIGTERM, no automatic restart) or killed (SIGKILL, then handled like any unexpected death).
 * With a restart delay set, a child that died is started again by itself after that delay, at most
 * restartsPerMinuteMax times a minute; past that the launcher gives up on it and says so.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { PflexError } from '../common/errors.js';
import { roleOf, waitForHealth, type ProcessCluster } from './process-cluster.js';
import { localCommandHint, type ChildStatus } from './local-control-protocol.js';

/** The window the restart cap counts in. */
export const RESTART_WINDOW_MS = 60_000;
/** How long `pflex local start` waits for the child to answer /health. */
export const START_HEALTH_TIMEOUT_MS = 30_000;

export interface SupervisorOptions {
  readonly dataDir: string;
  /** Seconds before a child that died is started again by itself; undefined: never. */
  readonly restartDelayS: number | undefined;
  readonly restartsPerMinuteMax: number;
  /** Where notices go (the launcher's stderr). */
  readonly log: (line: string) => void;
}

interface ChildExit {
  readonly code: number | null;
  readonly signal: string | null;
  readonly reason: string;
}

interface ChildRecord {
  state: ChildStatus['state'];
  sinceMs: number;
  exit: ChildExit | null;
  restarts: number;
  /** When each automatic restart within the last RESTART_WINDOW_MS happened. */
  autoRestartsMs: number[];
  restartTimer: NodeJS.Timeout | undefined;
  restartAtMs: number | undefined;
  gaveUp: boolean;
  /** The process a `pflex local stop` or `kill` was aimed at, so its exit is told apart. */
  requested: { child: ChildProcess; op: 'stop' | 'kill' } | undefined;
}

function describeExit(code: number | null, signal: string | null): string {
  return signal !== null ? `killed by ${signal}` : `exit code ${code}`;
}

export class LocalSupervisor {
  private readonly records = new Map<string, ChildRecord>();
  private stopping = false;

  constructor(
    private readonly cluster: ProcessCluster,
    private readonly options: SupervisorOptions,
  ) {
    for (const [name, entry] of cluster.processes) {
      this.records.set(name, {
        state: 'running',
        sinceMs: entry.startedAtMs,
        exit: null,
        restarts: 0,
        autoRestartsMs: [],
        restartTimer: undefined,
        restartAtMs: undefined,
        gaveUp: false,
        requested: undefined,
      });
    }
  }

  logPath(name: string): string {
    return join(this.options.dataDir, 'logs', `${name}.log`);
  }

  private command(op: string, name?: string): string {
    return localCommandHint(this.options.dataDir, op, name);
  }

  status(): ChildStatus[] {
    return [...this.records.keys()].map((name) => this.childStatus(name));
  }

  childStatus(name: string): ChildStatus {
    const record = this.record(name);
    return {
      name,
      role: roleOf(name),
      pid: this.cluster.pid(name) ?? null,
      state: record.state,
      since: new Date(record.sinceMs).toISOString(),
      exit: record.exit,
      log: this.logPath(name),
      restarts: record.restarts,
      restart_at: record.restartAtMs === undefined ? null : new Date(record.restartAtMs).toISOString(),
      restart_given_up: record.gaveUp,
    };
  }

  /** ProcessCluster's onUnexpectedExit: every exit not caused by ProcessCluster.stop(). */
  onExit(name: string, code: number | null, signal: NodeJS.Signals | null): void {
    const record = this.records.get(name);
    const entry = this.cluster.processes.get(name);
    if (record === undefined || entry === undefined || this.stopping) return;
    const requested = record.requested?.child === entry.child ? record.requested.op : undefined;
    record.requested = undefined;
    const how = describeExit(code, signal);
    const pid = entry.child.pid;
    record.sinceMs = Date.now();
    if (requested === 'stop') {
      record.state = 'stopped';
      record.exit = { code, signal, reason: `stopped by pflex local stop (${how})` };
      this.options.log(`local-cluster: ${name} (pid ${pid}) stopped (${how}); start it again with: ${this.command('start', name)}`);
      return;
    }
    record.state = 'exited';
    record.exit = { code, signal, reason: requested === 'kill' ? `${how} (pflex local kill)` : how };
    this.options.log(
      [
        `local-cluster: ${name} (pid ${pid}) died: ${record.exit.reason}; the rest of the cluster keeps serving`,
        `local-cluster:   its log:       ${this.logPath(name)}`,
        `local-cluster:   ${this.scheduleRestart(name, record)}`,
      ].join('\n'),
    );
  }

  /** Schedules the automatic restart, if there is one to be, and says what happens next. */
  private scheduleRestart(name: string, record: ChildRecord): string {
    const bringBack = `bring it back: ${this.command('start', name)}    (every child: ${this.command('status')})`;
    const delayS = this.options.restartDelayS;
    if (delayS === undefined) return bringBack;
    const nowMs = Date.now();
    record.autoRestartsMs = record.autoRestartsMs.filter((atMs) => nowMs - atMs < RESTART_WINDOW_MS);
    if (record.autoRestartsMs.length >= this.options.restartsPerMinuteMax) {
      record.gaveUp = true;
      return (
        `giving up on ${name}: it died again after ${record.autoRestartsMs.length} automatic restarts within ${RESTART_WINDOW_MS / 1000} s, ` +
        `so it is not restarted any more; see its log, then ${bringBack}`
      );
    }
    record.restartAtMs = nowMs + delayS * 1000;
    record.restartTimer = setTimeout(() => this.autoRestart(name), delayS * 1000);
    return `restarting it in ${delayS} s (PFLEX_LOCAL_RESTART_DELAY_S; automatic restart ${record.autoRestartsMs.length + 1} of at most ${this.options.restartsPerMinuteMax} a minute)`;
  }

  private cancelRestart(record: ChildRecord): void {
    clearTimeout(record.restartTimer);
    record.restartTimer = undefined;
    record.restartAtMs = undefined;
  }

  private autoRestart(name: string): void {
    const record = this.record(name);
    this.cancelRestart(record);
    if (this.stopping || record.state === 'running') return;
    record.autoRestartsMs.push(Date.now());
    const entry = this.respawn(name, record);
    this.options.log(`local-cluster: restarted ${name} (pid ${entry.child.pid}) after ${this.options.restartDelayS} s`);
  }

  private respawn(name: string, record: ChildRecord): ReturnType<ProcessCluster['restart']> {
    const entry = this.cluster.restart(name);
    record.state = 'running';
    record.sinceMs = entry.startedAtMs;
    record.restarts += 1;
    return entry;
  }

  private record(name: string): ChildRecord {
    const record = this.records.get(name);
    if (record === undefined) {
      throw new PflexError('NOT_FOUND', `no child named "${name}" in this local cluster; its children are ${[...this.records.keys()].join(', ')}`);
    }
    return record;
  }

  private refuseWhileStopping(): void {
    if (this.stopping) throw new PflexError('UNAVAILABLE', 'the local cluster is stopping');
  }

  /** `pflex local start`: starts a child that is not running; returns once it answers /health. */
  async start(name: string): Promise<ChildStatus> {
    this.refuseWhileStopping();
    const record = this.record(name);
    if (record.state === 'running') {
      throw new PflexError('CONFLICT', `${name} is already running (pid ${this.cluster.pid(name)}); stop or kill it first to start it anew`);
    }
    this.cancelRestart(record);
    record.gaveUp = false;
    record.autoRestartsMs = [];
    const entry = this.respawn(name, record);
    this.options.log(`local-cluster: started ${name} again (pid ${entry.child.pid}, pflex local start)`);
    await this.waitServing(name, entry.child);
    return this.childStatus(name);
  }

  private async waitServing(name: string, child: ChildProcess): Promise<void> {
    const url = this.cluster.healthUrl(name);
    if (url === undefined) return;
    const abort = new AbortController();
    const exited = new Promise<'exited'>((resolvePromise) => {
      if (child.exitCode !== null || child.signalCode !== null) resolvePromise('exited');
      child.once('exit', () => resolvePromise('exited'));
    });
    try {
      const outcome = await Promise.race([waitForHealth(url, START_HEALTH_TIMEOUT_MS, false, abort.signal).then(() => 'serving' as const), exited]);
      if (outcome === 'exited') {
        throw new PflexError('UNAVAILABLE', `${name} exited while starting (${describeExit(child.exitCode, child.signalCode)}); see ${this.logPath(name)}`);
      }
    } catch (error) {
      if (error instanceof PflexError) throw error;
      throw new PflexError('UNAVAILABLE', `${name} (pid ${child.pid}) runs but did not answer ${url}/health within ${START_HEALTH_TIMEOUT_MS} ms; see ${this.logPath(name)}`);
    } finally {
      abort.abort();
    }
  }

  /** `pflex local stop`: SIGTERM (SIGKILL after the grace period), and no automatic restart. */
  async stop(name: string): Promise<ChildStatus> {
    this.refuseWhileStopping();
    const record = this.record(name);
    if (record.state !== 'running') {
      if (record.restartTimer === undefined) throw new PflexError('CONFLICT', `${name} is not running (${record.state} since ${new Date(record.sinceMs).toISOString()})`);
      this.cancelRestart(record); // it died and waits for its automatic restart: that is called off
      record.state = 'stopped';
      record.sinceMs = Date.now();
      this.options.log(`local-cluster: ${name} will not be restarted (pflex local stop)`);
      return this.childStatus(name);
    }
    record.requested = { child: this.cluster.processes.get(name)!.child, op: 'stop' };
    await this.cluster.stopProcess(name, 'SIGTERM');
    return this.childStatus(name);
  }

  /** `pflex local kill`: SIGKILL; the exit is then handled like any unexpected one. */
  async kill(name: string): Promise<ChildStatus> {
    this.refuseWhileStopping();
    const record = this.record(name);
    if (record.state !== 'running') throw new PflexError('CONFLICT', `${name} is not running (${record.state} since ${new Date(record.sinceMs).toISOString()})`);
    record.requested = { child: this.cluster.processes.get(name)!.child, op: 'kill' };
    await this.cluster.kill9(name);
    return this.childStatus(name);
  }

  /** From here on no child is started again; call before ProcessCluster.stop(). */
  shutdown(): void {
    this.stopping = true;
    for (const record of this.records.values()) this.cancelRestart(record);
  }
}
