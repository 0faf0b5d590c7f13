/**
 * Chunk health from what is unusual (chunk-health.ts, issue 11) against a count of every chunk,
 * on a real powerflex.db: random replica states, DOWN SDS, replicas dropped and added, volumes
 * deleted. The kept chunk counts (volume_chunk_counts) follow every insert and delete.
 */
import t from 'tap';
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase, type Db } from '../../src/mdm/database.js';
import { chunkHealthByVolume, poolChunkHealth, sumHealth, volumeChunkHealth } from '../../src/mdm/chunk-health.js';
import { checkInvariants } from '../../src/mdm/invariants.js';
import { freshDb, populate } from '../helpers/mdm-db.js';

const SEED = Number(process.env.PFLEX_TEST_SEED ?? Date.now() % 1_000_000);
t.comment(`seed ${SEED} (PFLEX_TEST_SEED replays it)`);

const SDS_COUNT = 4;
const COPIES = 2;


/** Volume 1 (40 chunks, from populate) and volume 2 (thin, 12 chunks), both in pool 1. */
function twoVolumes(db: Db): void {
  populate(db, SDS_COUNT, 40);
  db.prepare(`INSERT INTO volumes (id, name, pool_id, size_bytes, provisioning) VALUES (2, 'vol2', 1, ?, 'thin')`).run(64 * 4 * 1024 * 1024);
  for (let index = 0; index < 12; index += 1) {
    const chunkId = Number(db.prepare('INSERT INTO chunks (volume_id, chunk_index) VALUES (2, ?)').run(index * 3).lastInsertRowid);
    db.prepare('INSERT INTO replicas (chunk_id, sds_id, pool_id) VALUES (?, ?, 1)').run(chunkId, (index % SDS_COUNT) + 1);
    db.prepare('INSERT INTO replicas (chunk_id, sds_id, pool_id) VALUES (?, ?, 1)').run(chunkId, ((index + 2) % SDS_COUNT) + 1);
  }
}

/** Every volume's health by reading each of its chunks (what the views did before). */
function exact(db: Db) {
  const ids = (db.prepare('SELECT id FROM volumes ORDER BY id').all() as { id: number }[]).map((row) => row.id);
  const byVolume = new Map(ids.map((id) => [id, volumeChunkHealth(db, id, COPIES)]));
  return { byVolume, pool: sumHealth([...byVolume.values()], COPIES) };
}

/** From the unusual chunks only (`shareMaxInverse` 0: however many there are), or as the views do. */
function fromUnusual(db: Db, shareMaxInverse = 0) {
  const volumes = new Map((db.prepare('SELECT id, pool_id FROM volumes ORDER BY id').all() as { id: number; pool_id: number }[]).map((row) => [row.id, row.pool_id]));
  return { byVolume: chunkHealthByVolume(db, new Map([[1, COPIES]]), volumes, shareMaxInverse), pool: poolChunkHealth(db, 1, COPIES, shareMaxInverse) };
}

type Change =
  | { kind: 'state'; chunk: number; sds: number; state: 'CURRENT' | 'STALE' | 'REBUILDING' }
  | { kind: 'sds'; sds: number; state: 'UP' | 'DOWN' }
  | { kind: 'drop'; chunk: number; sds: number }
  | { kind: 'add'; chunk: number; sds: number; state: 'STALE' | 'REBUILDING' }
  | { kind: 'delete-volume' };

const sdsArb = fc.integer({ min: 1, max: SDS_COUNT });
const chunkArb = fc.integer({ min: 1, max: 52 });
const changeArb: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ kind: fc.constant('state' as const), chunk: chunkArb, sds: sdsArb, state: fc.constantFrom('CURRENT' as const, 'STALE' as const, 'REBUILDING' as const) }),
  fc.record({ kind: fc.constant('sds' as const), sds: sdsArb, state: fc.constantFrom('UP' as const, 'DOWN' as const) }),
  fc.record({ kind: fc.constant('drop' as const), chunk: chunkArb, sds: sdsArb }),
  fc.record({ kind: fc.constant('add' as const), chunk: chunkArb, sds: sdsArb, state: fc.constantFrom('STALE' as const, 'REBUILDING' as const) }),
  fc.constant({ kind: 'delete-volume' as const }),
);

function apply(db: Db, change: Change): void {
  switch (change.kind) {
    case 'state':
      // Never a third CURRENT replica: the one corner the sums cannot see (chunk-health.ts).
      if (change.state === 'CURRENT') {
        const current = (db.prepare(`SELECT COUNT(*) AS n FROM replicas WHERE chunk_id = ? AND state = 'CURRENT' AND sds_id != ?`).get(change.chunk, change.sds) as { n: number }).n;
        if (current >= COPIES) return;
      }
      db.prepare(`UPDATE replicas SET state = ? WHERE chunk_id = ? AND sds_id = ?`).run(change.state, change.chunk, change.sds);
      return;
    case 'sds':
      db.prepare(`UPDATE sds SET state = ? WHERE id = ?`).run(change.state, change.sds);
      return;
    case 'drop':
      db.prepare(`DELETE FROM replicas WHERE chunk_id = ? AND sds_id = ?`).run(change.chunk, change.sds);
      return;
    case 'add':
      db.prepare(`INSERT OR IGNORE INTO replicas (chunk_id, sds_id, pool_id, state) SELECT id, ?, 1, ? FROM chunks WHERE id = ?`).run(change.sds, change.state, change.chunk);
      return;
    case 'delete-volume':
      db.prepare(`DELETE FROM chunks WHERE volume_id = 2`).run();
      db.prepare(`DELETE FROM volumes WHERE id = 2`).run();
      return;
  }
}

t.test('a healthy pool: every chunk whole, read from no chunk at all', async (t) => {
  const db = freshDb(t, 'pflex-health-');
  twoVolumes(db);
  const health = fromUnusual(db);
  t.same(health.pool, exact(db).pool);
  t.equal(health.pool.health, 'OK');
  t.equal(health.pool.chunks_placed, 52);
  t.equal(health.pool.replicas_available, 104);
  t.same(db.prepare('SELECT volume_id, chunk_count FROM volume_chunk_counts ORDER BY volume_id').all(), [{ volume_id: 1, chunk_count: 40 }, { volume_id: 2, chunk_count: 12 }], 'chunk counts kept by the triggers');
});

t.test('a replica dropped with no trigger marking its chunk unusual: the sums disagree, the pool is read whole', async (t) => {
  const db = freshDb(t, 'pflex-health-');
  twoVolumes(db);
  db.prepare(`DELETE FROM replicas WHERE chunk_id = 5 AND sds_id = (SELECT MIN(sds_id) FROM replicas WHERE chunk_id = 5)`).run();
  const health = fromUnusual(db);
  t.same(health.pool, exact(db).pool);
  t.equal(health.pool.chunks_degraded, 1, 'the short chunk is degraded');
  t.equal(health.byVolume.get(1)?.health, 'DEGRADED');
  t.equal(health.byVolume.get(2)?.health, 'OK');
});

t.test('random changes: the health read from unusual chunks equals a count of every chunk', async (t) => {
  let runs = 0;
  fc.assert(
    fc.property(fc.array(changeArb, { minLength: 1, maxLength: 25 }), (changes) => {
      const dir = mkdtempSync(join(tmpdir(), 'pflex-health-'));
      const db = openDatabase(join(dir, 'powerflex.db'));
      try {
        twoVolumes(db);
        for (const change of changes) apply(db, change);
        const want = exact(db);
        const got = fromUnusual(db);
        runs += 1;
        if (JSON.stringify(fromUnusual(db, 20).pool) !== JSON.stringify(want.pool)) throw new Error('the views (every chunk past a share of unusual ones) disagree');
        if (JSON.stringify(got.pool) !== JSON.stringify(want.pool)) throw new Error(`pool: ${JSON.stringify(got.pool)} != ${JSON.stringify(want.pool)} after ${JSON.stringify(changes)}`);
        for (const [id, health] of want.byVolume) {
          if (JSON.stringify(got.byVolume.get(id)) !== JSON.stringify(health)) throw new Error(`volume ${id}: ${JSON.stringify(got.byVolume.get(id))} != ${JSON.stringify(health)}`);
        }
      } finally {
        db.close();
        rmSync(dir, { recursive: true, force: true });
      }
    }),
    { seed: SEED, numRuns: 150 },
  );
  t.equal(runs, 150, 'every run compared pool and volumes');
});

t.test('the invariant checker names a chunk count that drifted', async (t) => {
  const db = freshDb(t, 'pflex-health-');
  twoVolumes(db);
  t.equal((await checkInvariants(db)).violation_count, 0, 'kept counts match');
  db.prepare(`UPDATE volume_chunk_counts SET chunk_count = 11 WHERE volume_id = 2`).run();
  const report = await checkInvariants(db);
  t.equal(report.violation_count, 1);
  t.match(report.violations[0], /volume vol2 has 12 chunks placed, but 11 are counted/);
});
