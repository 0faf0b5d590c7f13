/**
 * The admin reads the benchmark makes of the MDM (what `pflex event list`, `pflex sds show`,
 * `pflex rebuild status` and `pflex pool show` call), typed for what it uses of them.
 */
import type { PoolRebuildStatus } from '../../src/common/rebuild-status.js';
import type { JsonHttp } from './http-json.js';

export interface EventRow {
  readonly id: number;
  readonly at: string;
  readonly severity: string;
  readonly type: string;
  readonly message: string;
  readonly sds_id: number | null;
  readonly pool_id: number | null;
}

const EVENTS_PAGE_MAX = 1000;
/** Reads answer fast on a healthy MDM; an MDM that cannot answer in this long is reported as such. */
const QUERY_TIMEOUT_MS = 30_000;

/** The event types the benchmark counts per phase (the ones that say the MDM judged or moved something). */
export const WATCHED_EVENT_TYPES = [
  'SDS_DOWN',
  'SDC_DOWN',
  'SDS_UP',
  'SDC_UP',
  'MDM_STALLED',
  'SDS_FENCED',
  'REPLICA_FENCED',
  'REBUILD_STARTED',
  'REBUILD_COMPLETED',
  'REBALANCE_STARTED',
  'RESYNC_WITHOUT_COPY',
  'RESYNC_AFTER_SDC',
  'CHUNKS_RECOVERED',
] as const;

export class MdmQueries {
  constructor(
    private readonly admin: JsonHttp,
    private readonly credential: string,
  ) {}

  /** The newest event's id (0 when there is none). */
  async lastEventId(): Promise<number> {
    const answer = await this.admin.get<EventRow[]>('/event/list?limit=1', this.credential, QUERY_TIMEOUT_MS);
    return answer.body.at(-1)?.id ?? 0;
  }

  /**
   * Events of one type after `sinceId`, oldest first: at most EVENTS_PAGE_MAX (the API answers
   * the newest ones; `truncated` says when there may be more).
   */
  async eventsOfType(type: string, sinceId: number): Promise<{ rows: EventRow[]; truncated: boolean }> {
    const answer = await this.admin.get<EventRow[]>(`/event/list?limit=${EVENTS_PAGE_MAX}&since_id=${sinceId}&type=${type}`, this.credential, QUERY_TIMEOUT_MS);
    return { rows: answer.body, truncated: answer.body.length >= EVENTS_PAGE_MAX };
  }

  /** How many events of each watched type came after `sinceId` (a count of 1000 means 1000 or more). */
  async countEventsSince(sinceId: number): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const type of WATCHED_EVENT_TYPES) {
      const { rows } = await this.eventsOfType(type, sinceId);
      if (rows.length > 0) counts[type] = rows.length;
    }
    return counts;
  }

  async sds(name: string): Promise<{ id: number; name: string; state: string; replica_count: number; allocated_bytes: number }> {
    return (await this.admin.get<{ id: number; name: string; state: string; replica_count: number; allocated_bytes: number }>(`/sds/${name}`, this.credential, QUERY_TIMEOUT_MS)).body;
  }

  /** The SDS nodes and their membership status (UP, DOWN, OFFLINE): a cheap read (cluster_nodes only). */
  async sdsNodes(): Promise<{ node_id: string; status: string }[]> {
    return (await this.admin.get<{ node_id: string; status: string }[]>('/discovery/peers/sds', this.credential, QUERY_TIMEOUT_MS)).body;
  }

  async rebuildStatus(): Promise<PoolRebuildStatus[]> {
    return (await this.admin.get<{ pools: PoolRebuildStatus[] }>('/rebuild/status', this.credential, QUERY_TIMEOUT_MS)).body.pools;
  }

  async poolHealth(pool: string): Promise<{ health: string; chunk_health: { chunks_placed: number; chunks_degraded: number; chunks_failed: number; replicas_expected: number; replicas_available: number } }> {
    return (await this.admin.get<{ health: string; chunk_health: { chunks_placed: number; chunks_degraded: number; chunks_failed: number; replicas_expected: number; replicas_available: number } }>(`/pool/${pool}/health`, this.credential, QUERY_TIMEOUT_MS)).body;
  }

  async poolCapacity(pool: string): Promise<{ raw_bytes: number; allocated_raw_bytes: number; used_bytes: number; free_bytes: number; provisioned_bytes: number; utilization_percent: number }> {
    return (await this.admin.get<{ capacity: { raw_bytes: number; allocated_raw_bytes: number; used_bytes: number; free_bytes: number; provisioned_bytes: number; utilization_percent: number } }>(`/pool/${pool}`, this.credential, QUERY_TIMEOUT_MS)).body.capacity;
  }
}
