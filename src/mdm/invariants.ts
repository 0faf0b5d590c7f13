/**
 * The metadata's invariants, checked over every chunk (`GET /cluster/invariants`, used by the
 * chaos, soak and scale runs after they are done with a cluster):
 *   - each chunk has no more live replicas (CURRENT or REBUILDING) than its pool's copies plus
 *     one (a move holds the new replica and the one it replaces), and at least one replica row;
 *   - a chunk's replicas are in its volume's pool, and its CURRENT ones in distinct fault sets
 *     wherever the pool has SDS in at least as many fault sets as copies;
 *   - the replica counts kept for placement (sds_pool_usage) equal the replicas there are, and
 *     the chunk counts kept for chunk health (volume_chunk_counts) the chunks;
 *   - a thick volume has every chunk placed.
 * Epochs only growing is not checked here: powerflex.db refuses an update that lowers one.
 * Pages of chunks are read with the event loop running between them.
 */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Db } from './database.js';
import { chunkCountOf } from './volumes.js';
import { copiesOf, type ProtectionPolicy } from './rows.js';

const PAGE_CHUNKS = 5000;
/** Violations reported at most; the count goes on. */
const VIOLATIONS_LISTED_MAX = 100;

export interface InvariantReport {
  chunks_checked: number;
  violation_count: number;
  violations: string[];
}

export async function checkInvariants(db: Db): Promise<InvariantReport> {
  const report: InvariantReport = { chunks_checked: 0, violation_count: 0, violations: [] };
  const violate = (text: string): void => {
    report.violation_count += 1;
    if (report.violations.length < VIOLATIONS_LISTED_MAX) report.violations.push(text);
  };

  const pools = db.prepare('SELECT id, protection_policy, chunk_size_bytes FROM storage_pools').all() as { id: number; protection_policy: ProtectionPolicy; chunk_size_bytes: number }[];
  const faultSetsOfPool = new Map<number, number>();
  for (const pool of pools) {
    const row = db
      .prepare(
        `SELECT COUNT(DISTINCT s.fault_set_id) AS sets, SUM(s.fault_set_id IS NULL) AS loose
         FROM sds s WHERE s.state != 'REMOVING' AND EXISTS (SELECT 1 FROM sds_devices d WHERE d.sds_id = s.id AND d.pool_id = ?)`,
      )
      .get(pool.id) as { sets: number; loose: number | null };
    faultSetsOfPool.set(pool.id, (row.loose ?? 0) > 0 ? 0 : row.sets);
  }
  const poolById = new Map(pools.map((pool) => [pool.id, pool]));

  const page = db.prepare(
    `SELECT c.id AS chunk_id, c.volume_id, c.chunk_index, v.pool_id AS volume_pool_id, r.pool_id, r.state, s.fault_set_id
     FROM chunks c JOIN volumes v ON v.id = c.volume_id LEFT JOIN replicas r ON r.chunk_id = c.id LEFT JOIN sds s ON s.id = r.sds_id
     WHERE c.id > ? AND c.id <= ? ORDER BY c.id`,
  );
  const nextIds = db.prepare('SELECT id FROM chunks WHERE id > ? ORDER BY id LIMIT ?');
  let afterId = 0;
  for (;;) {
    const ids = nextIds.all(afterId, PAGE_CHUNKS) as { id: number }[];
    if (ids.length === 0) break;
    const lastId = ids[ids.length - 1]!.id;
    const rows = page.all(afterId, lastId) as { chunk_id: number; volume_id: number; chunk_index: number; volume_pool_id: number; pool_id: number | null; state: string | null; fault_set_id: number | null }[];
    let at = 0;
    while (at < rows.length) {
      const chunkId = rows[at]!.chunk_id;
      let end = at;
      while (end < rows.length && rows[end]!.chunk_id === chunkId) end += 1;
      const replicas = rows.slice(at, end).filter((row) => row.state !== null);
      at = end;
      report.chunks_checked += 1;
      const first = rows[end - 1]!;
      const name = `chunk ${first.volume_id}:${first.chunk_index}`;
      const pool = poolById.get(first.volume_pool_id);
      if (pool === undefined) continue;
      const copies = copiesOf(pool.protection_policy);
      if (replicas.length === 0) violate(`${name} has no replica`);
      const live = replicas.filter((row) => row.state === 'CURRENT' || row.state === 'REBUILDING');
      if (live.length > copies + 1) violate(`${name} has ${live.length} live replicas, more than ${copies} copies and a move`);
      if (replicas.some((row) => row.pool_id !== first.volume_pool_id)) violate(`${name} has a replica outside its volume's pool`);
      if ((faultSetsOfPool.get(pool.id) ?? 0) >= copies) {
        const sets = replicas.filter((row) => row.state === 'CURRENT').map((row) => row.fault_set_id);
        if (new Set(sets).size < sets.length) violate(`${name} has two current replicas in one fault set`);
      }
    }
    afterId = lastId;
    await yieldToEventLoop();
  }

  const usage = db
    .prepare(
      `SELECT a.sds_id, a.pool_id, a.n, COALESCE(u.replica_count, 0) AS kept FROM (SELECT sds_id, pool_id, COUNT(*) AS n FROM replicas GROUP BY sds_id, pool_id) a
       LEFT JOIN sds_pool_usage u ON u.sds_id = a.sds_id AND u.pool_id = a.pool_id
       UNION ALL
       SELECT u.sds_id, u.pool_id, 0, u.replica_count FROM sds_pool_usage u
       WHERE u.replica_count != 0 AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.sds_id = u.sds_id AND r.pool_id = u.pool_id)`,
    )
    .all() as { sds_id: number; pool_id: number; n: number; kept: number }[];
  for (const row of usage) if (row.n !== row.kept) violate(`SDS #${row.sds_id} holds ${row.n} replicas of pool #${row.pool_id}, but ${row.kept} are counted`);

  const counted = db
    .prepare(
      `SELECT v.id, v.name, (SELECT COUNT(*) FROM chunks c WHERE c.volume_id = v.id) AS placed, k.chunk_count AS kept
       FROM volumes v LEFT JOIN volume_chunk_counts k ON k.volume_id = v.id`,
    )
    .all() as { id: number; name: string; placed: number; kept: number | null }[];
  for (const volume of counted) {
    if (volume.placed !== (volume.kept ?? 0)) violate(`volume ${volume.name} has ${volume.placed} chunks placed, but ${volume.kept ?? 'none'} are counted`);
  }

  const thick = db.prepare(`SELECT v.id, v.name, v.size_bytes, v.pool_id, (SELECT COUNT(*) FROM chunks c WHERE c.volume_id = v.id) AS placed FROM volumes v WHERE v.provisioning = 'thick'`).all() as {
    id: number;
    name: string;
    size_bytes: number;
    pool_id: number;
    placed: number;
  }[];
  for (const volume of thick) {
    const pool = poolById.get(volume.pool_id);
    if (pool === undefined) continue;
    const expected = chunkCountOf(volume.size_bytes, pool.chunk_size_bytes);
    if (volume.placed !== expected) violate(`thick volume ${volume.name} has ${volume.placed} of its ${expected} chunks placed`);
  }
  return report;
}
