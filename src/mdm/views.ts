/**
 * What the API shows of each object: the row plus what an operator wants next to it (health,
 * capacity, mappings, replica counts). Chunk health: chunk-health.ts.
 */
import type { Db } from './database.js';
import { poolCapacity, type PoolCapacity } from './capacity.js';
import { chunkHealthByVolume, poolChunkHealth, sumHealth, volumeChunkHealth, type ChunkHealth, type Health } from './chunk-health.js';
import { chunkCountOf } from './volumes.js';
import {
  copiesOf,
  type DeviceRow,
  type FaultSetRow,
  type PdRow,
  type PoolRow,
  type SdcRow,
  type SdsRow,
  type VolumeRow,
} from './rows.js';

export function pdView(db: Db, pd: PdRow) {
  const count = (table: string): number =>
    (db.prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE pd_id = ?`).get(pd.id) as { n: number }).n;
  return { ...pd, pools: count('storage_pools'), fault_sets: count('fault_sets'), sds: count('sds') };
}

export function faultSetView(db: Db, faultSet: FaultSetRow) {
  const pd = db.prepare('SELECT name FROM protection_domains WHERE id = ?').get(faultSet.pd_id) as { name: string };
  const sds = (db.prepare('SELECT name FROM sds WHERE fault_set_id = ? ORDER BY name').all(faultSet.id) as { name: string }[]).map(
    (row) => row.name,
  );
  return { ...faultSet, pd: pd.name, sds };
}

export function poolView(db: Db, pool: PoolRow, precomputed?: ChunkHealth): Omit<PoolRow, 'rebuild_enabled' | 'rebalance_enabled'> & {
  rebuild_enabled: boolean;
  rebalance_enabled: boolean;
  pd: string;
  copies: number;
  health: Health;
  capacity: PoolCapacity;
  chunk_health: ChunkHealth;
  volumes: number;
  sds: number;
  capacity_alert: 'none' | 'high' | 'critical';
} {
  const pd = db.prepare('SELECT name FROM protection_domains WHERE id = ?').get(pool.pd_id) as { name: string };
  const copies = copiesOf(pool.protection_policy);
  const capacity = poolCapacity(db, pool);
  const health = precomputed ?? poolChunkHealth(db, pool.id, copies);
  const volumes = (db.prepare('SELECT COUNT(*) AS n FROM volumes WHERE pool_id = ?').get(pool.id) as { n: number }).n;
  const sds = (db.prepare('SELECT COUNT(DISTINCT sds_id) AS n FROM sds_devices WHERE pool_id = ?').get(pool.id) as { n: number }).n;
  const alert =
    capacity.utilization_percent >= pool.capacity_alert_critical_percent
      ? 'critical'
      : capacity.utilization_percent >= pool.capacity_alert_high_percent
        ? 'high'
        : 'none';
  return {
    ...pool,
    rebuild_enabled: pool.rebuild_enabled === 1,
    rebalance_enabled: pool.rebalance_enabled === 1,
    pd: pd.name,
    copies,
    health: health.health,
    capacity,
    chunk_health: health,
    volumes,
    sds,
    capacity_alert: alert,
  };
}

export function sdsView(db: Db, sds: SdsRow) {
  const pd = db.prepare('SELECT name FROM protection_domains WHERE id = ?').get(sds.pd_id) as { name: string };
  const faultSet =
    sds.fault_set_id === null
      ? null
      : (db.prepare('SELECT name FROM fault_sets WHERE id = ?').get(sds.fault_set_id) as { name: string }).name;
  const devices = db
    .prepare('SELECT d.*, p.name AS pool FROM sds_devices d JOIN storage_pools p ON p.id = d.pool_id WHERE d.sds_id = ? ORDER BY d.id')
    .all(sds.id) as (DeviceRow & { pool: string })[];
  const replicas = db
    .prepare(
      `SELECT COALESCE(SUM(u.replica_count),0) AS n, COALESCE(SUM(u.replica_count * p.chunk_size_bytes),0) AS bytes
       FROM sds_pool_usage u JOIN storage_pools p ON p.id = u.pool_id WHERE u.sds_id = ?`,
    )
    .get(sds.id) as { n: number; bytes: number };
  return {
    ...sds,
    pd: pd.name,
    fault_set: faultSet,
    devices,
    capacity_bytes: devices.reduce((sum, device) => sum + device.capacity_bytes, 0),
    allocated_bytes: replicas.bytes,
    replica_count: replicas.n,
    last_heartbeat_at: sds.last_heartbeat_at_ms === null ? null : new Date(sds.last_heartbeat_at_ms).toISOString(),
  };
}

export function sdcView(db: Db, sdc: SdcRow) {
  const mappings = db
    .prepare(
      `SELECT v.id AS volume_id, v.name AS volume, m.access_mode FROM volume_mappings m JOIN volumes v ON v.id = m.volume_id
       WHERE m.sdc_id = ? ORDER BY v.name`,
    )
    .all(sdc.id) as { volume_id: number; volume: string; access_mode: string }[];
  return {
    ...sdc,
    mappings,
    last_heartbeat_at: sdc.last_heartbeat_at_ms === null ? null : new Date(sdc.last_heartbeat_at_ms).toISOString(),
  };
}

export function volumeView(db: Db, volume: VolumeRow, precomputed?: ChunkHealth) {
  const pool = db.prepare('SELECT * FROM storage_pools WHERE id = ?').get(volume.pool_id) as PoolRow;
  const mappings = db
    .prepare(
      `SELECT s.id AS sdc_id, s.name AS sdc, m.access_mode FROM volume_mappings m JOIN sdc s ON s.id = m.sdc_id
       WHERE m.volume_id = ? ORDER BY s.name`,
    )
    .all(volume.id) as { sdc_id: number; sdc: string; access_mode: string }[];
  const health = precomputed ?? volumeChunkHealth(db, volume.id, copiesOf(pool.protection_policy));
  return {
    ...volume,
    pool: pool.name,
    chunk_size_bytes: pool.chunk_size_bytes,
    chunk_count: chunkCountOf(volume.size_bytes, pool.chunk_size_bytes),
    allocated_bytes: health.chunks_placed * pool.chunk_size_bytes,
    state: mappings.length > 0 ? 'IN_USE' : 'AVAILABLE',
    health: health.health,
    chunk_health: health,
    mappings,
  };
}

/** The replicas of a volume's chunks, for `pflex vol chunks` and, later, `pflex vol verify`. */
export function volumeChunksView(db: Db, volume: VolumeRow) {
  const rows = db
    .prepare(
      `SELECT c.chunk_index, c.epoch, c.generation, c.bytes_written, r.sds_id, s.name AS sds, r.state, r.failed_reason, s.state AS sds_state, r.generation AS replica_generation
       FROM chunks c JOIN replicas r ON r.chunk_id = c.id JOIN sds s ON s.id = r.sds_id
       WHERE c.volume_id = ? ORDER BY c.chunk_index, r.sds_id`,
    )
    .all(volume.id) as {
    chunk_index: number;
    epoch: number;
    generation: number;
    bytes_written: number;
    sds_id: number;
    sds: string;
    state: string;
    failed_reason: string | null;
    sds_state: string;
    replica_generation: number;
  }[];
  type ReplicaView = { sds_id: number; sds: string; state: string; sds_state: string; generation: number; failed_reason?: string };
  const chunks = new Map<number, { index: number; epoch: number; generation: number; bytes_written: number; replicas: ReplicaView[] }>();
  for (const row of rows) {
    let chunk = chunks.get(row.chunk_index);
    if (chunk === undefined) {
      chunk = { index: row.chunk_index, epoch: row.epoch, generation: row.generation, bytes_written: row.bytes_written, replicas: [] };
      chunks.set(row.chunk_index, chunk);
    }
    const replica: ReplicaView = { sds_id: row.sds_id, sds: row.sds, state: row.state, sds_state: row.sds_state, generation: row.replica_generation };
    if (row.failed_reason !== null) replica.failed_reason = row.failed_reason;
    chunk.replicas.push(replica);
  }
  return [...chunks.values()];
}

export function clusterStatus(db: Db, clusterId: string) {
  const poolRows = db.prepare('SELECT * FROM storage_pools ORDER BY name').all() as PoolRow[];
  const volumeRows = db.prepare('SELECT * FROM volumes ORDER BY name').all() as VolumeRow[];
  const copiesByPool = new Map(poolRows.map((pool) => [pool.id, copiesOf(pool.protection_policy)]));
  const byVolume = chunkHealthByVolume(db, copiesByPool, new Map(volumeRows.map((volume) => [volume.id, volume.pool_id])));
  const pools = poolRows.map((pool) => {
    const copies = copiesByPool.get(pool.id) ?? 0;
    return poolView(db, pool, sumHealth(volumeRows.filter((volume) => volume.pool_id === pool.id).map((volume) => byVolume.get(volume.id)!), copies));
  });
  const sds = (db.prepare('SELECT * FROM sds ORDER BY name').all() as SdsRow[]).map((row) => sdsView(db, row));
  const sdc = (db.prepare('SELECT * FROM sdc ORDER BY name').all() as SdcRow[]).map((row) => sdcView(db, row));
  const volumes = volumeRows.map((row) => volumeView(db, row, byVolume.get(row.id)));
  const pds = (db.prepare('SELECT * FROM protection_domains ORDER BY name').all() as PdRow[]).map((row) => pdView(db, row));
  const worst: Health = pools.some((p) => p.health === 'FAILED')
    ? 'FAILED'
    : pools.some((p) => p.health === 'DEGRADED')
      ? 'DEGRADED'
      : 'OK';
  return {
    cluster_id: clusterId,
    health: worst,
    protection_domains: pds,
    pools,
    sds,
    sdc,
    volumes,
    replicas: {
      chunks: pools.reduce((sum, p) => sum + p.chunk_health.chunks_placed, 0),
      expected: pools.reduce((sum, p) => sum + p.chunk_health.replicas_expected, 0),
      available: pools.reduce((sum, p) => sum + p.chunk_health.replicas_available, 0),
      degraded_chunks: pools.reduce((sum, p) => sum + p.chunk_health.chunks_degraded, 0),
      failed_chunks: pools.reduce((sum, p) => sum + p.chunk_health.chunks_failed, 0),
    },
  };
}
