/**
 * The metadata plane's bookkeeping at scale (issue 11), on a real powerflex.db: the rebuild
 * queue's triggers and sweep, the replica counts kept for placement, epochs that cannot go back,
 * and the invariant checker that finds what breaks them.
 */
import t from 'tap';
import fc from 'fast-check';
import { RebuildQueue } from '../../src/mdm/rebuild-queue.js';
import { checkInvariants } from '../../src/mdm/invariants.js';
import { freshDb, populate } from '../helpers/mdm-db.js';



t.test('placing CURRENT replicas queues nothing; a state change, a rebuild target and a removal queue the chunk', async (t) => {
  const db = freshDb(t, 'pflex-queue-');
  populate(db, 4, 40);
  const queue = new RebuildQueue(db);
  queue.drain();
  t.equal(queue.size(1), 0, 'a healthy cluster: nothing to look at');
  db.prepare(`UPDATE replicas SET state = 'STALE' WHERE chunk_id = 3 AND sds_id = 4`).run();
  db.prepare(`INSERT INTO replicas (chunk_id, sds_id, pool_id, state) VALUES (5, 3, 1, 'REBUILDING')`).run();
  db.prepare(`DELETE FROM replicas WHERE chunk_id = 7 AND sds_id = 4`).run();
  db.prepare(`UPDATE replicas SET generation = generation + 1 WHERE chunk_id = 9`).run(); // not a state change
  queue.drain();
  t.same(queue.chunksOf(1), [3, 5, 7], 'exactly the chunks whose replica set changed');
  queue.drain();
  t.same(queue.chunksOf(1), [3, 5, 7], 'a drain with nothing new keeps what is watched');
  for (const id of [3, 5, 7]) queue.settle(1, id);
  t.equal(queue.size(1), 0, 'settled');
});

t.test('a chunk owed a job leaves the watch set until it changes or is settled', async (t) => {
  const db = freshDb(t, 'pflex-queue-');
  populate(db, 4, 40);
  const queue = new RebuildQueue(db);
  db.prepare(`UPDATE replicas SET state = 'STALE' WHERE chunk_id IN (3, 7) AND sds_id = 4`).run();
  queue.drain();
  t.same(queue.chunksOf(1), [3, 7]);
  queue.owe(1, 7);
  t.same(queue.chunksOf(1), [3], 'owed: no longer read by every pass');
  t.same(queue.owedOf(1), [7]);
  t.ok(queue.isOwed(1, 7));
  t.equal(queue.size(1), 2, 'size counts watched and owed');
  queue.drain();
  t.same(queue.owedOf(1), [7], 'a drain with nothing new leaves it owed');
  db.prepare(`UPDATE replicas SET state = 'CURRENT' WHERE chunk_id = 7 AND sds_id = 4`).run();
  queue.drain();
  t.same(queue.chunksOf(1), [3, 7], 'it changed: watched again');
  t.notOk(queue.isOwed(1, 7), 'and no longer owed: never in both');
  queue.owe(1, 3);
  queue.settle(1, 3);
  queue.settle(1, 7);
  t.equal(queue.size(1), 0, 'settled from either set');
});

t.test('an SDS that changes state queues every chunk it holds', async (t) => {
  const db = freshDb(t, 'pflex-queue-');
  populate(db, 4, 40);
  const queue = new RebuildQueue(db);
  db.prepare(`UPDATE sds SET state = 'UP' WHERE id = 2`).run(); // no change
  queue.drain();
  t.equal(queue.size(1), 0, 'an update to the same state queues nothing');
  db.prepare(`UPDATE sds SET state = 'DOWN' WHERE id = 2`).run();
  queue.drain();
  const held = (db.prepare('SELECT chunk_id FROM replicas WHERE sds_id = 2 ORDER BY chunk_id').all() as { chunk_id: number }[]).map((row) => row.chunk_id);
  t.equal(held.length, 20);
  t.same(queue.chunksOf(1), held, 'the chunks of the SDS that went DOWN');
});

t.test('an SDS holding more than a drain reads is read over several, and from its start again when it changes again', async (t) => {
  const db = freshDb(t, 'pflex-queue-');
  populate(db, 4, 40); // 20 replicas an SDS
  const queue = new RebuildQueue(db, 8);
  const heldBy = (sdsId: number): number[] =>
    (db.prepare('SELECT chunk_id FROM replicas WHERE sds_id = ? ORDER BY chunk_id').all(sdsId) as { chunk_id: number }[]).map((row) => row.chunk_id);
  const queuedSds = (): number => (db.prepare('SELECT COUNT(*) AS n FROM rebuild_queue_sds').get() as { n: number }).n;
  db.prepare(`UPDATE sds SET state = 'DOWN' WHERE id = 2`).run();
  queue.drain();
  t.equal(queue.size(1), 8, 'one drain reads at most its budget of replica rows');
  t.equal(queuedSds(), 1, 'the SDS stays queued until read whole');
  queue.drain();
  t.equal(queue.size(1), 16);
  queue.drain();
  t.same(queue.chunksOf(1), heldBy(2), 'after three drains: every chunk of the SDS, each once');
  t.equal(queuedSds(), 0, 'then it leaves the queue');
  for (const id of queue.chunksOf(1)) queue.settle(1, id);
  db.prepare(`UPDATE sds SET state = 'DOWN' WHERE id = 3`).run();
  queue.drain();
  t.equal(queue.size(1), 8);
  for (const id of queue.chunksOf(1)) queue.settle(1, id); // judged meanwhile
  db.prepare(`UPDATE sds SET state = 'UP' WHERE id = 3`).run(); // changed again mid-read
  for (let pass = 0; pass < 10; pass += 1) queue.drain();
  t.same(queue.chunksOf(1), heldBy(3), 'read from its start again: the chunks already read and judged are looked at again');
  t.equal(queuedSds(), 0, 'nothing left queued');
  const plan = db.prepare(`EXPLAIN QUERY PLAN SELECT id, chunk_id, pool_id FROM replicas WHERE sds_id = ? AND (pool_id, id) > (?, ?) ORDER BY pool_id, id LIMIT ?`).all(1, -1, -1, 8) as { detail: string }[];
  t.match(plan.map((row) => row.detail).join('; '), /USING INDEX replicas_by_sds \(sds_id=\? AND/, 'a page is a range of the (sds_id, pool_id) index, not a sort of every replica of the SDS');
  t.notMatch(plan.map((row) => row.detail).join('; '), /TEMP B-TREE/, 'no sort');
});

t.test('the sweep finds what no trigger saw: a chunk short of replicas, a replica on an SDS not UP', async (t) => {
  const db = freshDb(t, 'pflex-queue-');
  populate(db, 4, 12_000); // more than two sweep pages
  const queue = new RebuildQueue(db);
  db.prepare(`DELETE FROM replicas WHERE chunk_id = 11000 AND sds_id = (SELECT MIN(sds_id) FROM replicas WHERE chunk_id = 11000)`).run();
  db.prepare(`UPDATE replicas SET state = 'STALE' WHERE chunk_id = 42 AND sds_id = (SELECT MIN(sds_id) FROM replicas WHERE chunk_id = 42)`).run();
  db.prepare('DELETE FROM rebuild_queue').run(); // as if written by an MDM that did not run the triggers
  queue.drain();
  t.equal(queue.size(1), 0, 'nothing queued');
  await queue.sweep(() => false);
  t.same(queue.chunksOf(1), [42, 11000], 'the sweep found both');
});

t.test('replica counts kept by triggers equal the replicas there are, whatever happens to them', async (t) => {
  const db = freshDb(t, 'pflex-queue-');
  populate(db, 5, 50);
  const operation = fc.oneof(
    fc.record({ kind: fc.constant('insert' as const), chunk: fc.integer({ min: 1, max: 50 }), sds: fc.integer({ min: 1, max: 5 }) }),
    fc.record({ kind: fc.constant('delete' as const), chunk: fc.integer({ min: 1, max: 50 }), sds: fc.integer({ min: 1, max: 5 }) }),
    fc.record({ kind: fc.constant('move' as const), chunk: fc.integer({ min: 1, max: 50 }), sds: fc.integer({ min: 1, max: 5 }) }),
    fc.record({ kind: fc.constant('dropChunk' as const), chunk: fc.integer({ min: 1, max: 50 }), sds: fc.constant(0) }),
  );
  const seed = Number(process.env.PFLEX_TEST_SEED ?? Date.now() % 1_000_000);
  t.comment(`seed ${seed}`);
  fc.assert(
    fc.property(fc.array(operation, { maxLength: 60 }), (operations) => {
      db.exec('SAVEPOINT run');
      try {
        for (const op of operations) {
          if (op.kind === 'insert') db.prepare(`INSERT OR IGNORE INTO replicas (chunk_id, sds_id, pool_id, state) SELECT ?, ?, 1, 'REBUILDING' WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?)`).run(op.chunk, op.sds, op.chunk);
          if (op.kind === 'delete') db.prepare('DELETE FROM replicas WHERE chunk_id = ? AND sds_id = ?').run(op.chunk, op.sds);
          if (op.kind === 'move') db.prepare('UPDATE OR IGNORE replicas SET sds_id = ? WHERE chunk_id = ? AND sds_id = (SELECT MIN(sds_id) FROM replicas WHERE chunk_id = ?)').run(op.sds, op.chunk, op.chunk);
          if (op.kind === 'dropChunk') db.prepare('DELETE FROM chunks WHERE id = ?').run(op.chunk); // replicas go by cascade
        }
        const wrong = db
          .prepare(
            `SELECT COUNT(*) AS n FROM (SELECT sds_id, pool_id, COUNT(*) AS n FROM replicas GROUP BY sds_id, pool_id) a
             LEFT JOIN sds_pool_usage u USING (sds_id, pool_id) WHERE COALESCE(u.replica_count, -1) != a.n`,
          )
          .get() as { n: number };
        const total = db.prepare('SELECT (SELECT COUNT(*) FROM replicas) AS real, (SELECT SUM(replica_count) FROM sds_pool_usage) AS kept').get() as { real: number; kept: number };
        return wrong.n === 0 && total.real === total.kept;
      } finally {
        db.exec('ROLLBACK TO run');
        db.exec('RELEASE run');
      }
    }),
    { seed, numRuns: 200 },
  );
  t.pass('counts kept equal counts real (200 runs)');
});

t.test('an epoch never goes back, whatever path tries', async (t) => {
  const db = freshDb(t, 'pflex-queue-');
  populate(db, 3, 3);
  db.prepare('UPDATE chunks SET epoch = 5 WHERE id = 1').run();
  t.throws(() => db.prepare('UPDATE chunks SET epoch = 4 WHERE id = 1').run(), /never goes back/, 'refused');
  t.equal((db.prepare('SELECT epoch FROM chunks WHERE id = 1').get() as { epoch: number }).epoch, 5, 'and unchanged');
});

t.test('the invariant checker is clean on a sound pool and names each broken invariant', async (t) => {
  const db = freshDb(t, 'pflex-queue-');
  populate(db, 4, 9000);
  const clean = await checkInvariants(db);
  t.equal(clean.chunks_checked, 9000, 'every chunk checked');
  t.same(clean.violations, [], 'no violation');
  db.prepare(`INSERT INTO replicas (chunk_id, sds_id, pool_id, state) VALUES (10, 1, 1, 'REBUILDING')`).run();
  db.prepare(`INSERT INTO replicas (chunk_id, sds_id, pool_id, state) VALUES (10, 4, 1, 'REBUILDING')`).run();
  db.prepare(`DELETE FROM replicas WHERE chunk_id = 8000`).run();
  db.prepare(`UPDATE sds_pool_usage SET replica_count = replica_count + 1 WHERE sds_id = 3`).run();
  db.prepare('DELETE FROM chunks WHERE id = 8500').run();
  const broken = await checkInvariants(db);
  t.match(broken.violations.join('\n'), /chunk 1:9 has 4 live replicas/, 'too many replicas');
  t.match(broken.violations.join('\n'), /chunk 1:7999 has no replica/, 'no replica');
  t.match(broken.violations.join('\n'), /SDS #3 holds \d+ replicas of pool #1, but \d+ are counted/, 'counts that drifted');
  t.match(broken.violations.join('\n'), /thick volume vol1 has 8999 of its 9000 chunks placed/, 'a thick volume with a hole');
  t.equal(broken.violation_count, 4, 'and nothing else');
  db.prepare(`UPDATE sds SET fault_set_id = 2 WHERE id = 1`).run(); // sds-1 and sds-2 now share fs2
  const shared = await checkInvariants(db);
  t.match(shared.violations[0], /chunk 1:0 has two current replicas in one fault set/, 'a shared fault set');
  t.equal(shared.violations.length, 100, 'at most 100 listed');
  t.ok(shared.violation_count > 2000, `all counted (${shared.violation_count})`);
});
