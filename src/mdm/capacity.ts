/**
 * Pool capacity, all in bytes. Raw capacity is the pool's devices; spare is held back for
 * rebuilds; replicas are charged a whole chunk each. Volume-visible figures divide by copies.
 */
import type { Db } from './database.js';
import { copiesOf, type PoolRow } from './rows.js';
import type { PlacementCandidate } from './placement.js';

export interface PoolCapacity {
  raw_bytes: number;
  spare_bytes: number;
  /** Raw bytes replicas may use: raw minus spare. */
  usable_raw_bytes: number;
  allocated_raw_bytes: number;
  free_raw_bytes: number;
  /** What volumes can hold: usable raw divided by the number of copies. */
  usable_bytes: number;
  used_bytes: number;
  free_bytes: number;
  provisioned_bytes: number;
  thin_provisioned_bytes: number;
  thick_provisioned_bytes: number;
  utilization_percent: number;
}

/** SDS that may receive new replicas: registered-or-new and not being removed, nor down. */
const PLACEABLE_STATES = `('NEW','UP')`;

/**
 * SDS that may take a replica of the pool, with the capacity they offer: without the spare for
 * new data, with it for rebuilds (the spare exists so a failed SDS's replicas have somewhere to go).
 */
export function placementCandidates(db: Db, pool: PoolRow, options: { useSpare?: boolean; nowMs?: number } = {}): PlacementCandidate[] {
  const rows = db
    .prepare(
      // The pool's devices and usage rows read once each, grouped by SDS (a sub-query per SDS
      // read the pool's devices again for each: 2–3 ms of every placement with 100 SDS).
      `SELECT s.id AS sds_id, s.fault_set_id AS fault_set_id, s.avoid_until_ms,
              COALESCE(d.capacity_bytes, 0) AS capacity_bytes, COALESCE(u.replica_count, 0) AS replica_count
       FROM sds s
       LEFT JOIN (SELECT sds_id, SUM(capacity_bytes) AS capacity_bytes FROM sds_devices WHERE pool_id = ? AND state = 'OK' GROUP BY sds_id) d ON d.sds_id = s.id
       LEFT JOIN (SELECT sds_id, replica_count FROM sds_pool_usage WHERE pool_id = ?) u ON u.sds_id = s.id
       WHERE s.state IN ${PLACEABLE_STATES} AND s.pd_id = ?
       ORDER BY s.id`,
    )
    .all(pool.id, pool.id, pool.pd_id) as {
    sds_id: number;
    fault_set_id: number | null;
    avoid_until_ms: number;
    capacity_bytes: number;
    replica_count: number;
  }[];
  // SDS that SDCs could not reach lately take no new replica, unless the pool has too few others.
  const nowMs = options.nowMs ?? Date.now();
  const withRoom = rows.filter((row) => row.capacity_bytes > 0);
  const reachable = withRoom.filter((row) => row.avoid_until_ms <= nowMs);
  return (reachable.length >= copiesOf(pool.protection_policy) ? reachable : withRoom)
    .map((row) => ({
      sdsId: row.sds_id,
      faultSetId: row.fault_set_id,
      capacityBytes: options.useSpare === true ? row.capacity_bytes : Math.floor((row.capacity_bytes * (100 - pool.spare_percent)) / 100),
      usedBytes: row.replica_count * pool.chunk_size_bytes,
    }));
}

/** Raw bytes and replicas of the pool: a row per device and per SDS, never per volume or chunk. */
function rawAndReplicas(db: Db, pool: PoolRow): { raw: number; replicaCount: number } {
  const raw = (
    db
      .prepare(
        `SELECT COALESCE(SUM(d.capacity_bytes),0) AS bytes FROM sds_devices d JOIN sds s ON s.id = d.sds_id
         WHERE d.pool_id = ? AND s.state != 'REMOVING' AND d.state = 'OK'`,
      )
      .get(pool.id) as { bytes: number }
  ).bytes;
  const replicaCount = (db.prepare(`SELECT COALESCE(SUM(replica_count),0) AS n FROM sds_pool_usage WHERE pool_id = ?`).get(pool.id) as { n: number }).n;
  return { raw, replicaCount };
}

/**
 * What new replicas may still take (poolCapacity's free_raw_bytes), without the provisioned
 * sums over every volume: a thin chunk's placement asks it on every first write (issue 11: the
 * volume sums were 2 ms of each placement with 10 000 volumes).
 */
export function poolFreeRawBytes(db: Db, pool: PoolRow): number {
  const { raw, replicaCount } = rawAndReplicas(db, pool);
  return Math.max(0, raw - Math.ceil((raw * pool.spare_percent) / 100) - replicaCount * pool.chunk_size_bytes);
}

export function poolCapacity(db: Db, pool: PoolRow): PoolCapacity {
  const copies = copiesOf(pool.protection_policy);
  const { raw, replicaCount } = rawAndReplicas(db, pool);
  const provisioned = db
    .prepare(
      `SELECT COALESCE(SUM(CASE WHEN provisioning='thin' THEN size_bytes END),0) AS thin,
              COALESCE(SUM(CASE WHEN provisioning='thick' THEN size_bytes END),0) AS thick
       FROM volumes WHERE pool_id = ?`,
    )
    .get(pool.id) as { thin: number; thick: number };
  const spare = Math.ceil((raw * pool.spare_percent) / 100);
  const usableRaw = raw - spare;
  const allocatedRaw = replicaCount * pool.chunk_size_bytes;
  const freeRaw = Math.max(0, usableRaw - allocatedRaw);
  return {
    raw_bytes: raw,
    spare_bytes: spare,
    usable_raw_bytes: usableRaw,
    allocated_raw_bytes: allocatedRaw,
    free_raw_bytes: freeRaw,
    usable_bytes: Math.floor(usableRaw / copies),
    used_bytes: Math.floor(allocatedRaw / copies),
    free_bytes: Math.floor(freeRaw / copies),
    provisioned_bytes: provisioned.thin + provisioned.thick,
    thin_provisioned_bytes: provisioned.thin,
    thick_provisioned_bytes: provisioned.thick,
    utilization_percent: usableRaw > 0 ? Math.round((allocatedRaw / usableRaw) * 1000) / 10 : 0,
  };
}
