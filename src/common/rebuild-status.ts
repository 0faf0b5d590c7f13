/** What GET /rebuild/status (and cluster status) answers per pool: the MDM writes it, the CLI reads it. */
export interface PoolRebuildStatus {
  pool_id: number;
  pool: string;
  /** disabled: the pool's rebuild is switched off (pool modify) while chunks wait for it. */
  state: 'idle' | 'rebuilding' | 'rebalancing' | 'disabled';
  chunks_pending: number;
  chunks_active: number;
  chunks_done: number;
  chunks_resynced_without_copy: number;
  bytes_remaining: number;
  bytes_copied: number;
  percent: number;
  rate_bytes_per_s: number;
  rate_limit_bytes_per_s: number;
  eta_s: number | null;
  started_at: string | null;
  last: { finished_at: string; chunks: number; bytes: number; seconds: number; rate_bytes_per_s: number } | null;
}
