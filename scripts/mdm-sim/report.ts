/**
 * The benchmark's tables: one column per scale (and one per SDS count for the rebuild sweep),
 * one row per figure with its unit, as Markdown so docs/SCALE.md can take them as they are.
 * Then the hot spots the MDM probe saw (slowest SQL, routes) per run. Every figure comes from
 * the run's JSON; a figure that was not measured shows "-".
 */
import type { RunResult, PhaseResult } from './scale-run.js';
import type { Summary } from './stats.js';

const MiB = 1024 * 1024;
const HOT_SPOTS_MAX = 6;

type Cell = string;
type Row = readonly [metric: string, unit: string, cell: (run: RunResult) => Cell];

function phaseOf(run: RunResult, name: string): PhaseResult | undefined {
  return run.phases.find((phase) => phase.name === name);
}

function num(value: number | null | undefined, digits = 1): Cell {
  if (value === null || value === undefined || !Number.isFinite(value)) return '-';
  if (Math.abs(value) >= 1000 && digits <= 1) return Math.round(value).toLocaleString('en-US');
  return value.toFixed(digits).replace(/\.0+$/, '');
}

function mib(bytes: number | null | undefined, digits = 0): Cell {
  return bytes === null || bytes === undefined ? '-' : num(bytes / MiB, digits);
}

function triple(summary: Summary | undefined, digits = 1): Cell {
  if (summary === undefined || summary.count === 0) return '-';
  return `${num(summary.p50, digits)} / ${num(summary.p99, digits)} / ${num(summary.max, digits)}`;
}

function pair(summary: Summary | undefined, digits = 1): Cell {
  if (summary === undefined || summary.count === 0) return '-';
  return `${num(summary.p50, digits)} / ${num(summary.max, digits)}`;
}

function perTib(bytes: number | null | undefined, run: RunResult): Cell {
  return bytes === null || bytes === undefined || run.raw_tib <= 0 ? '-' : num(bytes / MiB / run.raw_tib, 1);
}

function seconds(value: number | null | undefined): Cell {
  return value === null || value === undefined ? '-' : num(value, 2);
}

function passSummary(phase: PhaseResult | undefined, key: string): Summary | undefined {
  return phase?.probe?.passes[key];
}

/** A lease renewal request (POST /io/renew, many leases each): what an SDC waits for at half-life. */
function renewBatch(phase: PhaseResult | undefined): Summary | undefined {
  return phase?.sdc?.report.authorize.ms['renew-batch'];
}

/** Authorizations of a window whose lease could not be renewed (its plan changed). */
function authorizeRenew(phase: PhaseResult | undefined): Summary | undefined {
  return phase?.sdc?.report.authorize.ms.renew;
}

function ratePerS(count: number | undefined, phase: PhaseResult | undefined): Cell {
  if (count === undefined || phase === undefined || phase.seconds <= 0) return '-';
  return num(count / phase.seconds, 1);
}

function creationRates(run: RunResult): Cell {
  const steps = run.setup.thick?.steps ?? [];
  if (steps.length === 0) return '-';
  return `${num(steps[0]!.volumes_per_s)} → ${num(steps.at(-1)!.volumes_per_s)}`;
}

function lateMissed(late: number | undefined, missed: number | undefined): Cell {
  return late === undefined || missed === undefined ? '-' : `${late} / ${missed}`;
}

function events(phase: PhaseResult | undefined, ...types: string[]): Cell {
  if (phase === undefined) return '-';
  return types.map((type) => String(phase.events[type] ?? 0)).join(' / ');
}

function stalls(phase: PhaseResult | undefined): Cell {
  const found = phase?.probe?.stalls;
  return found === undefined ? '-' : `${found.count} / ${found.longest[0]?.ms ?? 0}`;
}

function settled(result: { settled: boolean; seconds: number; sds_down_at_end: number } | undefined): Cell {
  if (result === undefined) return '-';
  return result.settled ? num(result.seconds, 1) : `not in ${num(result.seconds, 0)} (${result.sds_down_at_end} SDS not UP)`;
}

function rebuilt(run: RunResult): Cell {
  const failure = run.failure;
  if (failure === null) return '-';
  if (failure.rebuilt_s !== null) return seconds(failure.rebuilt_s);
  if (failure.timed_out) {
    const elapsedS = failure.timeline.at(-1)?.t_s ?? 0;
    return `not in ${num(elapsedS, 0)} s: the pool copied ${failure.rebuild.chunks_done} chunks (the failed SDS held ${failure.affected_chunks}), projected ${num(failure.rebuild.projected_total_s, 0)} s`;
  }
  return failure.error ?? '-';
}

function copies(run: RunResult): Cell {
  const report = phaseOf(run, 'failure')?.sds?.report.copies;
  return report === undefined || report.done === 0 ? '-' : `${report.peak_in_flight} / ${num(report.average_in_flight, 2)}`;
}

const SCALE_ROWS: readonly Row[] = [
  ['raw capacity', 'TiB', (run) => num(run.raw_tib, 2)],
  ['SDS / SDC', 'count', (run) => `${run.sds_count} / ${run.sdc_count}`],
  ['volumes created thick / thin', 'count', (run) => `${run.setup.thick?.created ?? '-'} / ${run.setup.thin?.created ?? '-'}`],
  ['chunks placed (replicas) after setup', 'count', (run) => (run.cluster === null ? '-' : `${num(run.cluster.chunks)} (${num(run.cluster.replicas)})`)],
  ['thick create rate, first → last tenth', 'volumes/s', creationRates],
  ['thick create latency p50 / p99 / max', 'ms', (run) => triple(run.setup.thick?.ms)],
  ['thick create total', 's', (run) => num(run.setup.thick?.seconds)],
  ['vol map latency p50 / p99 / max', 'ms', (run) => triple(run.setup.mappings?.ms)],
  ['SDC start (register + lease all windows)', 's', (run) => num(run.setup.sdc_start?.seconds)],
  ['MDM RSS at end of steady', 'MiB', (run) => mib(phaseOf(run, 'steady')?.mdm.rss_bytes)],
  ['MDM RSS per TiB raw', 'MiB/TiB', (run) => perTib(phaseOf(run, 'steady')?.mdm.rss_bytes, run)],
  ['MDM RSS above empty MDM, per TiB', 'MiB/TiB', (run) => perTib((phaseOf(run, 'steady')?.mdm.rss_bytes ?? NaN) - (run.baseline?.rss_bytes ?? NaN), run)],
  ['MDM peak RSS (VmHWM) over the run', 'MiB', (run) => mib(Math.max(...run.phases.map((phase) => phase.mdm.peak_rss_bytes ?? 0)))],
  ['powerflex.db + -wal at end of steady', 'MiB', (run) => mib(phaseOf(run, 'steady')?.db.total_bytes, 1)],
  ['database per TiB raw', 'MiB/TiB', (run) => perTib(phaseOf(run, 'steady')?.db.total_bytes, run)],
  ['idle: rebuild pass (planPool, sync) p50 / max', 'ms', (run) => pair(passSummary(phaseOf(run, 'idle'), 'rebuild.planPool.sync'))],
  ['idle: rebuild tick (whole) p50 / max', 'ms', (run) => pair(passSummary(phaseOf(run, 'idle'), 'rebuild.tick.wall'))],
  ['idle: health monitor pass p50 / max', 'ms', (run) => pair(passSummary(phaseOf(run, 'idle'), 'health-monitor.pass'))],
  ['idle: lost-chunk recovery query p50 / max', 'ms', (run) => pair(passSummary(phaseOf(run, 'idle'), 'fencing.recoverLostNow.sync'))],
  ['idle: order retry pass p50 / max', 'ms', (run) => pair(passSummary(phaseOf(run, 'idle'), 'orders.retry.sync'))],
  ['idle: event-loop stalls > 50 ms (count / longest)', 'n / ms', (run) => stalls(phaseOf(run, 'idle'))],
  ['idle: GET /health from outside p50 / p99 / max', 'ms', (run) => triple(phaseOf(run, 'idle')?.lag.rtt_ms)],
  ['idle: SDS heartbeat RTT p50 / p99 / max', 'ms', (run) => triple(phaseOf(run, 'idle')?.sds?.report.heartbeats.rtt_ms)],
  ['idle: MDM CPU', '%', (run) => num(phaseOf(run, 'idle')?.mdm.cpu_percent)],
  ['SDC start: registration p50 / p99 / max', 'ms', (run) => triple(phaseOf(run, 'setup-sdc')?.sdc?.report.registration.ms)],
  ['SDC start: first leases (authorize) p50 / p99 / max', 'ms', (run) => triple(phaseOf(run, 'setup-sdc')?.sdc?.report.authorize.ms.prime)],
  ['SDC start: SDS heartbeats late / missed', 'count', (run) => lateMissed(phaseOf(run, 'setup-sdc')?.sds?.report.heartbeats.late, phaseOf(run, 'setup-sdc')?.sds?.report.heartbeats.missed)],
  ['SDC start: events SDS_DOWN / SDS_FENCED / MDM_STALLED', 'count', (run) => events(phaseOf(run, 'setup-sdc'), 'SDS_DOWN', 'SDS_FENCED', 'MDM_STALLED')],
  ['SDC start: settled (all SDS UP, nothing to rebuild) after', 's', (run) => settled(run.setup.settle_after_sdc_start)],
  ['steady: rebuild pass (planPool, sync) p50 / max', 'ms', (run) => pair(passSummary(phaseOf(run, 'steady'), 'rebuild.planPool.sync'))],
  ['steady: event-loop stalls > 50 ms (count / longest)', 'n / ms', (run) => stalls(phaseOf(run, 'steady'))],
  ['steady: GET /health from outside p50 / p99 / max', 'ms', (run) => triple(phaseOf(run, 'steady')?.lag.rtt_ms)],
  ['steady: MDM CPU', '%', (run) => num(phaseOf(run, 'steady')?.mdm.cpu_percent)],
  ['steady: leases renewed / authorized again (plan changed)', 'per s', (run) => {
    const phase = phaseOf(run, 'steady');
    const renewals = phase?.sdc?.report.renewals;
    return `${ratePerS(renewals?.renewed, phase)} / ${ratePerS(renewals?.replanned, phase)}`;
  }],
  ['steady: renew requests / leases per request p50 / max', 'per s / n', (run) => {
    const phase = phaseOf(run, 'steady');
    const tokens = phase?.sdc?.report.renewals?.tokens_per_request;
    return `${ratePerS(renewBatch(phase)?.count, phase)} / ${tokens === undefined || tokens.count === 0 ? '-' : `${num(tokens.p50)} / ${num(tokens.max)}`}`;
  }],
  ['steady: renew request p50 / p99 / max', 'ms', (run) => triple(renewBatch(phaseOf(run, 'steady')))],
  ['steady: renew requests refused or timed out', 'count', (run) => {
    const errors = phaseOf(run, 'steady')?.sdc?.report.authorize.errors ?? {};
    return num(Object.entries(errors).filter(([key]) => key.startsWith('renew')).reduce((total, [, count]) => total + count, 0));
  }],
  ['steady: authorize (plan changed) p50 / p99 / max', 'ms', (run) => triple(authorizeRenew(phaseOf(run, 'steady')))],
  ['steady: authorize answer, largest', 'KiB', (run) => {
    const bytes = phaseOf(run, 'steady')?.sdc?.report.authorize.answer_bytes_max ?? 0;
    return bytes === 0 ? '-' : num(bytes / 1024, 1);
  }],
  ['steady: SDS heartbeat RTT p50 / p99 / max', 'ms', (run) => triple(phaseOf(run, 'steady')?.sds?.report.heartbeats.rtt_ms)],
  ['steady: SDS heartbeats late / missed', 'count', (run) => lateMissed(phaseOf(run, 'steady')?.sds?.report.heartbeats.late, phaseOf(run, 'steady')?.sds?.report.heartbeats.missed)],
  ['steady: SDC heartbeat RTT p50 / p99 / max', 'ms', (run) => triple(phaseOf(run, 'steady')?.sdc?.report.heartbeats.rtt_ms)],
  ['steady: SDC heartbeats late / missed', 'count', (run) => lateMissed(phaseOf(run, 'steady')?.sdc?.report.heartbeats.late, phaseOf(run, 'steady')?.sdc?.report.heartbeats.missed)],
  ['steady: tx ack batch p50 / p99 / max', 'ms', (run) => triple(phaseOf(run, 'steady')?.sds?.report.tx_acks.rtt_ms)],
  ['steady: events SDS_DOWN / SDC_DOWN / SDS_FENCED / MDM_STALLED', 'count', (run) => events(phaseOf(run, 'steady'), 'SDS_DOWN', 'SDC_DOWN', 'SDS_FENCED', 'MDM_STALLED')],
  ['volume creation: SDS heartbeats late / missed', 'count', (run) => lateMissed(phaseOf(run, 'setup-volumes')?.sds?.report.heartbeats.late, phaseOf(run, 'setup-volumes')?.sds?.report.heartbeats.missed)],
  ['setup (before SDCs): events SDS_DOWN / SDS_FENCED / MDM_STALLED', 'count', (run) => {
    const names = ['setup-sds', 'setup-volumes', 'setup-map', 'idle'];
    const sum = (type: string): number => names.reduce((total, name) => total + (phaseOf(run, name)?.events[type] ?? 0), 0);
    return `${sum('SDS_DOWN')} / ${sum('SDS_FENCED')} / ${sum('MDM_STALLED')}`;
  }],
  ['thin placements', 'chunks/s', (run) => (run.placement === null ? '-' : num(run.placement.per_s, 1))],
  ['thin placement (allocate) p50 / p99 / max', 'ms', (run) => triple(phaseOf(run, 'placement')?.sdc?.report.authorize.ms.allocate)],
  ['placement: SDS heartbeat RTT p99 / max', 'ms', (run) => {
    const rtt = phaseOf(run, 'placement')?.sds?.report.heartbeats.rtt_ms;
    return rtt === undefined || rtt.count === 0 ? '-' : `${num(rtt.p99)} / ${num(rtt.max)}`;
  }],
  ['failure: cluster settled before it, after', 's', (run) => settled(run.setup.settle_before_failure)],
  ['failure: chunks on the failed SDS', 'count', (run) => num(run.failure?.affected_chunks)],
  ['failure: detection', 'mode', (run) => run.failure?.detect ?? '-'],
  ['failure: time to DOWN', 's', (run) => seconds(run.failure?.down_s)],
  ['failure: time to fenced', 's', (run) => seconds(run.failure?.fenced_s)],
  ['failure: time to every chunk planned', 's', (run) => seconds(run.failure?.planned_s)],
  ['failure: time to first copy', 's', (run) => seconds(run.failure?.first_copy_s)],
  ['failure: time to rebuilt', 's', rebuilt],
  ['failure: copies in flight peak / average', 'copies', copies],
  ['failure: SDS used as copy targets / sources', 'count', (run) => {
    const report = phaseOf(run, 'failure')?.sds?.report.copies;
    return report === undefined ? '-' : `${report.targets} / ${report.sources}`;
  }],
  ['failure: rebuild rate', 'chunks/s (MB/s)', (run) => (run.failure === null ? '-' : `${num(run.failure.rebuild.chunks_per_s, 1)} (${num(run.failure.rebuild.mb_per_s, 1)})`)],
  ['failure: renew request p50 / p99 / max', 'ms', (run) => triple(renewBatch(phaseOf(run, 'failure')))],
  ['failure: authorize (plan changed) p50 / p99 / max', 'ms', (run) => triple(authorizeRenew(phaseOf(run, 'failure')))],
  ['failure: leases renewed / planned again in the renewal / authorized again', 'count', (run) => {
    const renewals = phaseOf(run, 'failure')?.sdc?.report.renewals;
    return renewals === undefined ? '-' : `${num(renewals.renewed)} / ${num(renewals.replanned_in_renewal ?? 0)} / ${num(renewals.replanned)}`;
  }],
  ['failure: SDS heartbeat RTT p99 / max', 'ms', (run) => {
    const rtt = phaseOf(run, 'failure')?.sds?.report.heartbeats.rtt_ms;
    return rtt === undefined || rtt.count === 0 ? '-' : `${num(rtt.p99)} / ${num(rtt.max)}`;
  }],
  ['failure: SDS heartbeats late / missed / failed', 'count', (run) => {
    const beats = phaseOf(run, 'failure')?.sds?.report.heartbeats;
    if (beats === undefined) return '-';
    const failed = Object.entries(beats.errors).map(([code, count]) => `${count} ${code}`).join(', ');
    return `${lateMissed(beats.late, beats.missed)} / ${failed === '' ? 0 : failed}`;
  }],
  ['failure: tx ack batch p50 / p99 / max (ticks skipped, one in flight)', 'ms (n)', (run) => {
    const acks = phaseOf(run, 'failure')?.sds?.report.tx_acks;
    return acks === undefined ? '-' : `${triple(acks.rtt_ms)} (${num(acks.ticks_skipped_in_flight ?? 0)})`;
  }],
  ['failure: events SDS_DOWN / SDS_FENCED / MDM_STALLED / MDM_OVERLOADED', 'count', (run) => events(phaseOf(run, 'failure'), 'SDS_DOWN', 'SDS_FENCED', 'MDM_STALLED', 'MDM_OVERLOADED')],
  ['invariants after the run: violations / chunks checked (time)', 'count (s)', (run) => {
    const check = run.invariants;
    if (check === null || !check.available) return '-';
    return check.error !== null ? `error: ${check.error.slice(0, 60)}` : `${check.violation_count} / ${num(check.chunks_checked)} (${num(check.seconds, 2)})`;
  }],
  ['simulators: SDS host / SDC host CPU (steady)', '%', (run) => {
    const phase = phaseOf(run, 'steady');
    return phase === undefined ? '-' : `${num(phase.sds?.load.cpu_percent)} / ${num(phase.sdc?.load.cpu_percent)}`;
  }],
  ['simulators: event-loop delay p99, SDS / SDC host (steady)', 'ms', (run) => {
    const phase = phaseOf(run, 'steady');
    return phase === undefined ? '-' : `${num(phase.sds?.load.loop_delay_p99_ms)} / ${num(phase.sdc?.load.loop_delay_p99_ms)}`;
  }],
  ['machine: other processes\' CPU, idle / steady / failure', 'cores', (run) => ['idle', 'steady', 'failure'].map((name) => num(phaseOf(run, name)?.machine.others_cores, 2)).join(' / ')],
  ['run wall time', 's', (run) => num(run.wall_s, 0)],
  ['run error', '', (run) => run.error ?? ''],
];

const SWEEP_ROWS: readonly Row[] = [
  ['SDS', 'count', (run) => String(run.sds_count)],
  ['raw capacity', 'TiB', (run) => num(run.raw_tib, 3)],
  ['replicas in the pool', 'count', (run) => num(run.cluster?.replicas)],
  ['chunks on the failed SDS', 'count', (run) => num(run.failure?.affected_chunks)],
  ['idle: rebuild pass (planPool, sync) p50 / max', 'ms', (run) => pair(passSummary(phaseOf(run, 'idle'), 'rebuild.planPool.sync'))],
  ['time to fenced', 's', (run) => seconds(run.failure?.fenced_s)],
  ['time to every chunk planned', 's', (run) => seconds(run.failure?.planned_s)],
  ['time to rebuilt', 's', rebuilt],
  ['rebuild rate', 'chunks/s (MB/s)', (run) => (run.failure === null ? '-' : `${num(run.failure.rebuild.chunks_per_s, 1)} (${num(run.failure.rebuild.mb_per_s, 1)})`)],
  ['copies in flight peak / average', 'copies', copies],
  ['copy targets / sources used (sources: whose reads the copies shared)', 'SDS', (run) => {
    const report = phaseOf(run, 'failure')?.sds?.report.copies;
    return report === undefined ? '-' : `${report.targets} / ${report.sources}`;
  }],
  ['rebuild job (begin → commit) p50 / max', 'ms', (run) => pair(passSummary(phaseOf(run, 'failure'), 'rebuild.job.wall'))],
  ['invariant violations after the run', 'count', (run) => (run.invariants === null || !run.invariants.available ? '-' : String(run.invariants.violation_count))],
  ['run error', '', (run) => run.error ?? ''],
];

function markdownTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((cell, column) => Math.max(cell.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]): string => `| ${cells.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

export function scaleTable(runs: readonly RunResult[]): string {
  const rows = SCALE_ROWS.map(([metric, unit, cell]) => [metric, unit, ...runs.map((run) => cell(run))]);
  return markdownTable(['figure', 'unit', ...runs.map((run) => run.label)], rows.filter((row) => row[0] !== 'run error' || row.slice(2).some((cell) => cell !== '')));
}

export function sweepTable(runs: readonly RunResult[]): string {
  const rows = SWEEP_ROWS.map(([metric, unit, cell]) => [metric, unit, ...runs.map((run) => cell(run))]);
  return markdownTable(['figure', 'unit', ...runs.map((run) => run.label)], rows.filter((row) => row[0] !== 'run error' || row.slice(2).some((cell) => cell !== '')));
}

/** Phases where other processes took CPU (their figures are not the MDM's alone). */
export function sharedPhases(runs: readonly RunResult[]): string[] {
  const found: string[] = [];
  for (const run of runs) {
    for (const phase of run.phases) {
      if (phase.machine.shared) found.push(`${run.label} ${phase.name} (others ${phase.machine.others_cores} of ${phase.machine.cores} cores)`);
    }
  }
  return found;
}

/** The slowest SQL statements and routes the probe saw, per phase of interest. */
export function hotSpots(run: RunResult): string {
  const lines: string[] = [`### Hot spots, ${run.label} (MDM probe)`];
  for (const name of ['setup-volumes', 'idle', 'setup-sdc', 'steady', 'placement', 'failure']) {
    const probe = phaseOf(run, name)?.probe;
    if (probe === null || probe === undefined) continue;
    lines.push('', `${name} (${probe.seconds} s): event-loop delay p99 ${probe.event_loop_delay_ms.p99} ms, max ${probe.event_loop_delay_ms.max} ms; stalls > 50 ms: ${probe.stalls.count} (${probe.stalls.total_ms} ms in all)`);
    const sql = probe.sql_by_total.slice(0, HOT_SPOTS_MAX).map((entry) => [num(entry.total_ms, 0), String(entry.count), num(entry.p99_ms, 2), num(entry.max_ms, 1), entry.key.slice(0, 110)]);
    if (sql.length > 0) lines.push('', markdownTable(['SQL total ms', 'calls', 'p99 ms', 'max ms', 'statement'], sql));
    const routes = Object.entries(probe.routes)
      .sort((a, b) => b[1].mean * b[1].count - a[1].mean * a[1].count)
      .slice(0, HOT_SPOTS_MAX)
      .map(([route, summary]) => [route, String(summary.count), num(summary.p50, 2), num(summary.p99, 1), num(summary.max, 1)]);
    if (routes.length > 0) lines.push('', markdownTable(['route (server side)', 'calls', 'p50 ms', 'p99 ms', 'max ms'], routes));
    if (probe.hooks_missing.length > 0) lines.push('', `probe hooks missing: ${probe.hooks_missing.join(', ')}`);
  }
  return lines.join('\n');
}
