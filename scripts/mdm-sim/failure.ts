/**
 * One SDS fails (its heartbeats stop, its ports close, its connections drop) and the benchmark
 * times what the MDM does about it, by its events and its rebuild status:
 *
 *   down     SDS_DOWN (its time as the MDM recorded it)
 *   fenced   SDS_FENCED: its replicas stale, new epochs installed on the survivors
 *   planned  the rebuild status first counts every chunk that had a replica there (pending +
 *            active + done): the planner has seen all of them
 *   rebuilt  the planner has nothing left to rebuild: the pool's state turns to rebalancing (the
 *            rebuilder rebalances only when nothing is pending or active), or REBUILD_COMPLETED
 *            comes after the fence; checked against the pool's health at the end
 *
 * With detect = sdc-report every SDC whose plans name the SDS reports it unreachable right away
 * (as an SDC whose IO to it failed would); with heartbeat, the MDM finds out by itself.
 */
import type { PoolRebuildStatus } from '../../src/common/rebuild-status.js';
import type { RpcChannel } from './ipc.js';
import type { MdmQueries } from './mdm-queries.js';
import { sleep } from './stats.js';
import type { FailDetect } from './config.js';

const EVENT_POLL_MS = 1000;
const TIMELINE_STEP_MS = 1000;
const REPORT_JITTER_MS = 100;

export interface TimelinePoint {
  readonly t_s: number;
  readonly state: string;
  readonly pending: number;
  readonly active: number;
  readonly done: number;
}

export interface FailureReport {
  readonly victim: string;
  readonly victim_sds_id: number;
  readonly detect: FailDetect;
  /** Chunks with a replica on the victim when it failed: what must be rebuilt. */
  readonly affected_chunks: number;
  readonly failed_at: string;
  readonly reporters: number;
  readonly down_s: number | null;
  readonly fenced_s: number | null;
  readonly planned_s: number | null;
  readonly first_copy_s: number | null;
  readonly rebuilt_s: number | null;
  readonly timed_out: boolean;
  readonly fence_message: string | null;
  readonly rebuild: {
    readonly chunks_done: number;
    readonly bytes_copied: number;
    /** Over the window from the first job to the end (or now): chunks per second. */
    readonly chunks_per_s: number;
    readonly mb_per_s: number;
    /** Only when it did not finish: elapsed + what is left at the rate so far. A projection, not a measurement. */
    readonly projected_total_s: number | null;
    readonly last: PoolRebuildStatus['last'];
  };
  readonly pool_health_after: { readonly health: string; readonly chunks_degraded: number; readonly chunks_failed: number } | null;
  readonly timeline: readonly TimelinePoint[];
  readonly error: string | null;
}

export interface FailureInputs {
  readonly queries: MdmQueries;
  readonly sdsHost: RpcChannel;
  readonly sdcHost: RpcChannel;
  readonly victim: string;
  readonly pool: string;
  readonly detect: FailDetect;
  readonly pollMs: number;
  readonly timeoutS: number;
  readonly chunkBytes: number;
  readonly mdmAlive: () => boolean;
  readonly log: (line: string) => void;
}

function secondsSince(startMs: number, at: string): number {
  return Math.round((Date.parse(at) - startMs) / 10) / 100;
}

export async function failOneSds(inputs: FailureInputs): Promise<FailureReport> {
  const { queries, log } = inputs;
  const before = await queries.sds(inputs.victim);
  const affected = before.replica_count;
  const baselineId = await queries.lastEventId();
  const failed = await inputs.sdsHost.call<{ failed_at_ms: number }>('fail', { name: inputs.victim }, 60_000);
  const t0Ms = failed.failed_at_ms;
  log(`${inputs.victim} (#${before.id}, ${affected} replicas) failed at ${new Date(t0Ms).toISOString()}; detect: ${inputs.detect}`);
  let reporters = 0;
  const reports =
    inputs.detect === 'sdc-report'
      ? inputs.sdcHost.call<{ reporters: number }>('reportUnreachable', { sdsId: before.id, jitterMs: REPORT_JITTER_MS }, 120_000).then(
          (answer) => {
            reporters = answer.reporters;
          },
          (error: unknown) => log(`unreachable reports failed: ${(error as Error).message}`),
        )
      : Promise.resolve();

  const timeline: TimelinePoint[] = [];
  let downAt: string | null = null;
  let fencedAt: string | null = null;
  let fenceMessage: string | null = null;
  let completedAt: string | null = null;
  let rebuiltMs: number | null = null;
  let doneAtRebuilt = 0;
  let sawRebuilding = false;
  let plannedMs: number | null = null;
  let firstCopyMs: number | null = null;
  let lastStatus: PoolRebuildStatus | undefined;
  let maxDone = 0;
  let lastEventPollMs = 0;
  let lastTimelineMs = -Infinity;
  let error: string | null = null;
  const deadlineMs = t0Ms + inputs.timeoutS * 1000;
  let finished = false;

  const pollEvents = async (): Promise<void> => {
    if (downAt === null) downAt = (await queries.eventsOfType('SDS_DOWN', baselineId)).rows.find((row) => row.sds_id === before.id)?.at ?? null;
    if (fencedAt === null) {
      const fence = (await queries.eventsOfType('SDS_FENCED', baselineId)).rows.find((row) => row.sds_id === before.id);
      fencedAt = fence?.at ?? null;
      fenceMessage = fence?.message ?? null;
    }
    if (fencedAt !== null && completedAt === null) {
      completedAt = (await queries.eventsOfType('REBUILD_COMPLETED', baselineId)).rows.find((row) => Date.parse(row.at) >= Date.parse(fencedAt!))?.at ?? null;
    }
  };

  while (!finished) {
    if (!inputs.mdmAlive()) {
      error = 'the MDM exited during the failure phase';
      break;
    }
    const nowMs = Date.now();
    try {
      const status = (await queries.rebuildStatus()).find((pool) => pool.pool === inputs.pool);
      if (status !== undefined) {
        lastStatus = status;
        const seen = status.chunks_pending + status.chunks_active + status.chunks_done + status.chunks_resynced_without_copy;
        maxDone = Math.max(maxDone, status.chunks_done);
        if (plannedMs === null && affected > 0 && seen >= affected) plannedMs = Date.now();
        if (firstCopyMs === null && (status.chunks_active > 0 || status.chunks_done > 0)) firstCopyMs = Date.now();
        if (status.state === 'rebuilding' && status.chunks_pending + status.chunks_active > 0) sawRebuilding = true;
        if (rebuiltMs === null && sawRebuilding && status.state === 'rebalancing') {
          rebuiltMs = Date.now();
          doneAtRebuilt = status.chunks_done;
        }
        if (nowMs - lastTimelineMs >= TIMELINE_STEP_MS) {
          lastTimelineMs = nowMs;
          timeline.push({ t_s: Math.round((nowMs - t0Ms) / 100) / 10, state: status.state, pending: status.chunks_pending, active: status.chunks_active, done: status.chunks_done });
        }
      }
      if (nowMs - lastEventPollMs >= EVENT_POLL_MS) {
        lastEventPollMs = nowMs;
        await pollEvents();
      }
      if (rebuiltMs === null && completedAt !== null && lastStatus !== undefined && lastStatus.chunks_pending === 0 && lastStatus.chunks_active === 0) {
        rebuiltMs = Date.parse(completedAt);
        doneAtRebuilt = lastStatus.last?.chunks ?? maxDone;
      }
      if (rebuiltMs !== null) finished = true;
    } catch (caught) {
      log(`failure phase poll failed: ${(caught as Error).message}`);
    }
    if (Date.now() > deadlineMs) break;
    if (!finished) await sleep(inputs.pollMs);
  }
  await reports;
  if (!finished && error === null) {
    await pollEvents().catch(() => undefined);
  }

  const endMs = Date.now();
  const done = rebuiltMs !== null ? doneAtRebuilt : maxDone;
  const bytesCopied = completedAt !== null && rebuiltMs === Date.parse(completedAt) ? (lastStatus?.last?.bytes ?? 0) : (lastStatus?.bytes_copied ?? 0);
  const jobsFromMs = firstCopyMs ?? endMs;
  const jobsUntilMs = rebuiltMs ?? endMs;
  const windowS = Math.max(0.001, (jobsUntilMs - jobsFromMs) / 1000);
  const rate = done / windowS;
  let health: FailureReport['pool_health_after'] = null;
  if (inputs.mdmAlive()) {
    try {
      const answer = await queries.poolHealth(inputs.pool);
      health = { health: answer.health, chunks_degraded: answer.chunk_health.chunks_degraded, chunks_failed: answer.chunk_health.chunks_failed };
    } catch (caught) {
      log(`pool health after the failure could not be read: ${(caught as Error).message}`);
    }
  }
  const round2 = (value: number): number => Math.round(value * 100) / 100;
  return {
    victim: inputs.victim,
    victim_sds_id: before.id,
    detect: inputs.detect,
    affected_chunks: affected,
    failed_at: new Date(t0Ms).toISOString(),
    reporters,
    down_s: downAt === null ? null : secondsSince(t0Ms, downAt),
    fenced_s: fencedAt === null ? null : secondsSince(t0Ms, fencedAt),
    planned_s: plannedMs === null ? null : round2((plannedMs - t0Ms) / 1000),
    first_copy_s: firstCopyMs === null ? null : round2((firstCopyMs - t0Ms) / 1000),
    rebuilt_s: rebuiltMs === null ? null : round2((rebuiltMs - t0Ms) / 1000),
    timed_out: !finished && error === null,
    fence_message: fenceMessage,
    rebuild: {
      chunks_done: done,
      bytes_copied: bytesCopied,
      chunks_per_s: round2(rate),
      mb_per_s: round2((rate * inputs.chunkBytes) / 1e6),
      projected_total_s: finished || rate <= 0 ? null : Math.round((endMs - t0Ms) / 1000 + Math.max(0, affected - done) / rate),
      last: lastStatus?.last ?? null,
    },
    pool_health_after: health,
    timeline,
    error,
  };
}
