/**
 * Benchmark instrumentation loaded into the MDM process with `node --import` (src/ is not
 * changed): it times, per benchmark phase,
 *
 *   - every SQL statement (better-sqlite3 Statement run/get/all, keyed by its SQL text) and every
 *     transaction (keyed by the src/mdm file and line that made it), COMMIT's fsync included;
 *   - the MDM's passes and jobs (Rebuilder.tick/planPool/run/begin/commit, SdsOrders.retry,
 *     Fencing.fenceNow/recoverLostNow, SdsControl.call by path): the synchronous part (how long
 *     it held the event loop) and the whole (until its promise settled);
 *   - the callbacks of timers made in src/mdm (the health monitor's pass is one);
 *   - HTTP routes, server side (request to response finished);
 *   - the event loop's delay, and each stall over STALL_MS_MIN with its time.
 *
 * The benchmark reads and resets them over the IPC channel ('phase', 'peek'). A hook whose
 * target is missing (a renamed method) is listed under `hooks_missing` instead of failing.
 */
import Database from 'better-sqlite3';
import { Server } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Samples, SampleSets, type Summary } from './stats.js';
import { serveRpc } from './ipc.js';

const STALL_MS_MIN = 50;
const STALL_CHECK_MS = 10;
const STALLS_KEPT_MAX = 2000;
const SQL_TEXT_LENGTH_MAX = 220;
const SQL_SAMPLES_MAX = 5000;
const TOP_SQL_MAX = 30;

type Method = (...args: unknown[]) => unknown;

interface Aggregate {
  count: number;
  totalMs: number;
  maxMs: number;
  samples: Samples;
}

class PhaseStats {
  readonly startedAtMs = Date.now();
  readonly sql = new Map<string, Aggregate>();
  readonly transactions = new Map<string, Aggregate>();
  readonly passes = new SampleSets(11);
  readonly routes = new SampleSets(23);
  readonly stalls: { at: string; ms: number }[] = [];
  stallCount = 0;
  stallTotalMs = 0;

  constructor(readonly name: string) {}
}

const originalSetInterval = globalThis.setInterval;
const originalSetTimeout = globalThis.setTimeout;
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
let phase = new PhaseStats('start');
const hooksMissing: string[] = [];
const hooksInstalled: string[] = [];

function aggregate(map: Map<string, Aggregate>, key: string, ms: number): void {
  let entry = map.get(key);
  if (entry === undefined) {
    entry = { count: 0, totalMs: 0, maxMs: 0, samples: new Samples(map.size + 1, SQL_SAMPLES_MAX) };
    map.set(key, entry);
  }
  entry.count += 1;
  entry.totalMs += ms;
  if (ms > entry.maxMs) entry.maxMs = ms;
  entry.samples.add(ms);
}

// ------------------------------------------------------------ SQL statements and transactions

const sqlKeys = new Map<string, string>();

/** A statement's text on one line (cached: a regular expression per executed statement cost 2% of a busy MDM). */
function sqlKey(source: unknown): string {
  if (typeof source !== 'string') return '(unknown)';
  let key = sqlKeys.get(source);
  if (key === undefined) {
    key = source.replace(/\s+/g, ' ').trim().slice(0, SQL_TEXT_LENGTH_MAX);
    sqlKeys.set(source, key);
  }
  return key;
}

(() => {
  const scratch = new Database(':memory:');
  const statementProto = Object.getPrototypeOf(scratch.prepare('SELECT 1')) as Record<string, unknown>;
  scratch.close();
  for (const method of ['run', 'get', 'all'] as const) {
    const original = statementProto[method];
    if (typeof original !== 'function') {
      hooksMissing.push(`Statement.${method}`);
      continue;
    }
    statementProto[method] = function timedStatement(this: { source?: string }, ...args: unknown[]): unknown {
      const startedMs = performance.now();
      try {
        return (original as (...a: unknown[]) => unknown).apply(this, args);
      } finally {
        aggregate(phase.sql, sqlKey(this.source), performance.now() - startedMs);
      }
    };
    hooksInstalled.push(`Statement.${method}`);
  }
  const databaseProto = Database.prototype as unknown as { transaction: (fn: Method) => Method };
  const originalTransaction = databaseProto.transaction;
  databaseProto.transaction = function timedTransaction(this: unknown, fn: Method): Method {
    const made = originalTransaction.call(this, fn) as Method & Record<string, unknown>;
    const site = callerSite();
    const timed = function timedTransactionCall(this: unknown, ...args: unknown[]): unknown {
      const startedMs = performance.now();
      try {
        return made.apply(this, args);
      } finally {
        aggregate(phase.transactions, site, performance.now() - startedMs);
      }
    };
    for (const variant of ['default', 'deferred', 'immediate', 'exclusive', 'database']) {
      Object.defineProperty(timed, variant, { value: made[variant] });
    }
    return timed;
  };
  hooksInstalled.push('Database.transaction');
})();

/** The first stack frame in src/mdm (file:line), or a frame outside it. */
function callerSite(): string {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, callerSite);
  const lines = (holder.stack ?? '').split('\n').slice(1);
  const inMdm = lines.find((line) => line.includes('/src/mdm/'));
  const line = inMdm ?? lines.find((l) => !l.includes('mdm-probe')) ?? '';
  const match = /\/src\/(mdm\/[^:)]+):(\d+)/.exec(line) ?? /([^/(\s]+):(\d+):\d+\)?$/.exec(line);
  return match === null ? '(unknown)' : `${match[1]}:${match[2]}`;
}

// ------------------------------------------------------------ timers made in src/mdm

function timerLabel(site: string): string {
  if (site.startsWith('mdm/membership.js')) return 'health-monitor.pass';
  if (site.startsWith('mdm/rebuild.js')) return `rebuild.timer ${site}`;
  if (site.startsWith('mdm/sds-orders.js')) return 'orders.timer';
  if (site.startsWith('mdm/mdm-service.js')) return 'events-prune.timer';
  return `timer ${site}`;
}

function patchTimer(name: 'setInterval' | 'setTimeout', original: typeof setInterval | typeof setTimeout): void {
  const patched = function timedTimer(this: unknown, callback: unknown, ...rest: unknown[]): unknown {
    if (typeof callback !== 'function') return (original as (...a: unknown[]) => unknown).call(this, callback, ...rest);
    const site = callerSite();
    if (!site.startsWith('mdm/')) return (original as (...a: unknown[]) => unknown).call(this, callback, ...rest);
    const label = timerLabel(site);
    const timed = function timedCallback(this: unknown, ...args: unknown[]): unknown {
      const startedMs = performance.now();
      try {
        return (callback as (...a: unknown[]) => unknown).apply(this, args);
      } finally {
        phase.passes.add(label, performance.now() - startedMs);
      }
    };
    return (original as (...a: unknown[]) => unknown).call(this, timed, ...rest);
  };
  for (const key of Reflect.ownKeys(original)) {
    const descriptor = Object.getOwnPropertyDescriptor(original, key);
    if (descriptor !== undefined && !(key in patched)) Object.defineProperty(patched, key, descriptor);
  }
  (globalThis as Record<string, unknown>)[name] = patched;
  hooksInstalled.push(`global.${name} (src/mdm timers)`);
}

patchTimer('setInterval', originalSetInterval);
patchTimer('setTimeout', originalSetTimeout);

// ------------------------------------------------------------ passes and jobs

function wrapMethod(proto: Record<string, unknown> | undefined, className: string, method: string, label: (args: unknown[]) => string): void {
  const original = proto?.[method];
  if (proto === undefined || typeof original !== 'function') {
    hooksMissing.push(`${className}.${method}`);
    return;
  }
  proto[method] = function timedMethod(this: unknown, ...args: unknown[]): unknown {
    const name = label(args);
    const startedMs = performance.now();
    let result: unknown;
    try {
      result = (original as Method).apply(this, args);
    } finally {
      phase.passes.add(`${name}.sync`, performance.now() - startedMs);
    }
    if (typeof (result as Promise<unknown> | undefined)?.then === 'function') {
      const settle = (): void => phase.passes.add(`${name}.wall`, performance.now() - startedMs);
      (result as Promise<unknown>).then(settle, settle);
    }
    return result;
  };
  hooksInstalled.push(`${className}.${method}`);
}

async function classPrototype(modulePath: string, className: string): Promise<Record<string, unknown> | undefined> {
  try {
    const module = (await import(new URL(modulePath, import.meta.url).href)) as Record<string, unknown>;
    const candidate = module[className];
    return typeof candidate === 'function' ? (candidate.prototype as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const fixed = (name: string) => () => name;
const rebuilder = await classPrototype('../../src/mdm/rebuild.js', 'Rebuilder');
wrapMethod(rebuilder, 'Rebuilder', 'tick', fixed('rebuild.tick'));
wrapMethod(rebuilder, 'Rebuilder', 'planPool', fixed('rebuild.planPool'));
wrapMethod(rebuilder, 'Rebuilder', 'run', fixed('rebuild.job'));
wrapMethod(rebuilder, 'Rebuilder', 'beginMany', fixed('rebuild.jobs.begin'));
wrapMethod(rebuilder, 'Rebuilder', 'finishMany', fixed('rebuild.jobs.commit'));
wrapMethod(rebuilder, 'Rebuilder', 'listing', fixed('rebuild.listing'));
wrapMethod(rebuilder, 'Rebuilder', 'resyncAfterSdcLoss', fixed('rebuild.resyncAfterSdcLoss'));
// Since fcb39a8 (the rebuild work queue): the paged sweep, the SDS queries of a pass, the suspect watch.
for (const method of ['sweep', 'chunkFacts', 'watchSuspects']) {
  if (typeof rebuilder?.[method] === 'function') wrapMethod(rebuilder, 'Rebuilder', method, fixed(`rebuild.${method}`));
}
const orders = await classPrototype('../../src/mdm/sds-orders.js', 'SdsOrders');
wrapMethod(orders, 'SdsOrders', 'retry', fixed('orders.retry'));
wrapMethod(orders, 'SdsOrders', 'installEpochs', fixed('orders.installEpochs'));
const fencing = await classPrototype('../../src/mdm/fencing.js', 'Fencing');
wrapMethod(fencing, 'Fencing', 'fenceNow', fixed('fencing.fenceNow'));
wrapMethod(fencing, 'Fencing', 'recoverLostNow', fixed('fencing.recoverLostNow'));
const control = await classPrototype('../../src/mdm/sds-control.js', 'SdsControl');
wrapMethod(control, 'SdsControl', 'call', (args) => `control ${String(args[4] ?? 'POST')} ${String(args[1])}`);

// ------------------------------------------------------------ HTTP routes, server side

const ROUTE_WORDS = new Set([
  'create', 'list', 'add', 'remove', 'map', 'unmap', 'extend', 'rename', 'modify', 'health', 'status', 'heartbeat', 'register', 'deregister',
  'topology', 'mappings', 'ack', 'report-unreachable', 'report-failed', 'replicas', 'lost', 'suspect', 'join-token', 'device', 'peers', 'tx', 'io',
  'authorize', 'chunks', 'verify',
]);

function routeKey(method: string | undefined, url: string | undefined): string {
  const path = (url ?? '').split('?')[0]!;
  const parts = path.split('/').map((part, index) => (index >= 2 && part !== '' && !ROUTE_WORDS.has(part) ? ':id' : part));
  return `${method ?? '?'} ${parts.join('/')}`;
}

(() => {
  const originalEmit = Server.prototype.emit as (this: Server, event: string, ...args: unknown[]) => boolean;
  Server.prototype.emit = function timedEmit(this: Server, event: string, ...args: unknown[]): boolean {
    if (event === 'request') {
      const request = args[0] as { method?: string; url?: string };
      const response = args[1] as { once(event: string, listener: () => void): void };
      const startedMs = performance.now();
      const key = routeKey(request.method, request.url);
      const stats = phase;
      response.once('finish', () => stats.routes.add(key, performance.now() - startedMs));
    }
    return originalEmit.call(this, event, ...args);
  } as typeof Server.prototype.emit;
  hooksInstalled.push('http.Server request timing');
})();

// ------------------------------------------------------------ event-loop stalls

let lastCheckMs = performance.now();
const stallTimer = originalSetInterval(() => {
  const nowMs = performance.now();
  const lateMs = nowMs - lastCheckMs - STALL_CHECK_MS;
  lastCheckMs = nowMs;
  if (lateMs < STALL_MS_MIN) return;
  phase.stallCount += 1;
  phase.stallTotalMs += lateMs;
  if (phase.stalls.length < STALLS_KEPT_MAX) phase.stalls.push({ at: new Date(Date.now() - lateMs).toISOString(), ms: Math.round(lateMs) });
}, STALL_CHECK_MS);
stallTimer.unref();

// ------------------------------------------------------------ reports

export interface AggregateReport {
  readonly key: string;
  readonly count: number;
  readonly total_ms: number;
  readonly max_ms: number;
  readonly p50_ms: number;
  readonly p99_ms: number;
}

export interface ProbeReport {
  readonly phase: string;
  readonly started_at: string;
  readonly seconds: number;
  readonly hooks_installed: readonly string[];
  readonly hooks_missing: readonly string[];
  readonly event_loop_delay_ms: { readonly p50: number; readonly p99: number; readonly max: number; readonly mean: number };
  readonly stalls: { readonly count: number; readonly total_ms: number; readonly longest: readonly { at: string; ms: number }[]; readonly all: readonly { at: string; ms: number }[] };
  readonly passes: Record<string, Summary>;
  readonly routes: Record<string, Summary>;
  readonly sql_by_total: readonly AggregateReport[];
  readonly sql_by_max: readonly AggregateReport[];
  readonly transactions: readonly AggregateReport[];
  readonly rss_bytes: number;
  readonly heap_used_bytes: number;
}

function aggregates(map: Map<string, Aggregate>, order: 'total' | 'max', limit: number): AggregateReport[] {
  return [...map.entries()]
    .map(([key, entry]) => {
      const summary = entry.samples.summary();
      return { key, count: entry.count, total_ms: Math.round(entry.totalMs * 10) / 10, max_ms: Math.round(entry.maxMs * 100) / 100, p50_ms: summary.p50, p99_ms: summary.p99 };
    })
    .sort((a, b) => (order === 'total' ? b.total_ms - a.total_ms : b.max_ms - a.max_ms))
    .slice(0, limit);
}

function report(stats: PhaseStats): ProbeReport {
  const ns = (value: number): number => Math.round((value / 1e6) * 100) / 100;
  const memory = process.memoryUsage();
  return {
    phase: stats.name,
    started_at: new Date(stats.startedAtMs).toISOString(),
    seconds: Math.round((Date.now() - stats.startedAtMs) / 100) / 10,
    hooks_installed: hooksInstalled,
    hooks_missing: hooksMissing,
    event_loop_delay_ms: { p50: ns(loopDelay.percentile(50)), p99: ns(loopDelay.percentile(99)), max: ns(loopDelay.max), mean: ns(loopDelay.mean) },
    stalls: {
      count: stats.stallCount,
      total_ms: Math.round(stats.stallTotalMs),
      longest: [...stats.stalls].sort((a, b) => b.ms - a.ms).slice(0, 20),
      all: stats.stalls,
    },
    passes: stats.passes.summaries(),
    routes: stats.routes.summaries(),
    sql_by_total: aggregates(stats.sql, 'total', TOP_SQL_MAX),
    sql_by_max: aggregates(stats.sql, 'max', TOP_SQL_MAX),
    transactions: aggregates(stats.transactions, 'total', TOP_SQL_MAX),
    rss_bytes: memory.rss,
    heap_used_bytes: memory.heapUsed,
  };
}

if (process.send !== undefined) {
  serveRpc({
    /** Ends the current phase (its report is the answer) and starts `name`. */
    phase: (params: { name: string }) => {
      const ended = report(phase);
      phase = new PhaseStats(params.name);
      loopDelay.reset();
      return ended;
    },
    peek: () => report(phase),
  });
  process.channel?.unref();
  // The benchmark went away (killed, crashed): stop this MDM cleanly rather than outlive it.
  process.on('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}
