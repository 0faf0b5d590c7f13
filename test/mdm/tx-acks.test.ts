/**
 * Transaction acks off the database's hot path (issue 11): summed in memory, written in pages of
 * transactions that give the event loop back between them; acks naming another volume's token are ignored; the token registry is
 * bounded.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../src/mdm/database.js';
import { createLogger } from '../../src/common/logger.js';
import { ISSUED_TOKENS_MAX, TX_ACK_FLUSH_PAGE_SUMS, TxAcks } from '../../src/mdm/tx-acks.js';
import type { MdmContext } from '../../src/mdm/context.js';

const dir = mkdtempSync(join(tmpdir(), 'pflex-txacks-'));
const db = openDatabase(join(dir, 'powerflex.db'));
t.teardown(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});
db.exec(`
  INSERT INTO protection_domains (id, name) VALUES (1, 'pd1');
  INSERT INTO storage_pools (id, pd_id, name, protection_policy, chunk_size_bytes, spare_percent, rebuild_rate_mbps, capacity_alert_high_percent, capacity_alert_critical_percent)
    VALUES (1, 1, 'pool1', 'two_copies', 4194304, 10, 100, 80, 90);
  INSERT INTO sds (id, name, pd_id, host, data_port, control_port, mgmt_port, state) VALUES (1, 'sds-1', 1, '127.0.0.1', 1, 1, 1, 'UP');
  INSERT INTO volumes (id, name, pool_id, size_bytes, provisioning) VALUES (1, 'vol1', 1, 8388608, 'thick'), (2, 'vol2', 1, 4194304, 'thick');
  INSERT INTO chunks (id, volume_id, chunk_index) VALUES (1, 1, 0), (2, 1, 1), (3, 2, 0);
  INSERT INTO replicas (chunk_id, sds_id, pool_id) VALUES (1, 1, 1), (2, 1, 1), (3, 1, 1);
`);
const context = { db, log: createLogger('mdm', 'silent') } as unknown as MdmContext;
const token = (n: number): string => n.toString(16).padStart(32, '0');

t.test('acks are summed in memory and written in one flush', async (t) => {
  const acks = new TxAcks(context);
  acks.tokenIssued(token(1), 1, Date.now() + 30_000);
  const first = acks.record('sds-1', [
    { token_id: token(1), volume_id: 1, chunk_index: 0, operation: 'write', requests: 3, bytes: 12288 },
    { token_id: token(1), volume_id: 1, chunk_index: 0, operation: 'read', requests: 9, bytes: 36864 },
    { token_id: token(1), volume_id: 2, chunk_index: 0, operation: 'write', requests: 1, bytes: 4096 }, // another volume's token
    { token_id: token(7), volume_id: 1, chunk_index: 1, operation: 'trim', requests: 1, bytes: 4096 }, // unknown token: counted
  ]);
  t.same(first, { accepted: 3, ignored: 1 });
  acks.record('sds-1', [{ token_id: token(1), volume_id: 1, chunk_index: 0, operation: 'write', requests: 2, bytes: 8192 }]);
  const before = db.prepare('SELECT generation, bytes_written FROM replicas WHERE chunk_id = 1').get();
  t.same(before, { generation: 0, bytes_written: 0 }, 'nothing written before the flush');
  t.same(acks.flush(), { applied: 2, skipped: 0 }, 'two replicas written');
  t.same(db.prepare('SELECT generation, bytes_written FROM replicas WHERE chunk_id = 1').get(), { generation: 5, bytes_written: 20480 }, 'the sums');
  t.same(db.prepare('SELECT generation, bytes_written FROM chunks WHERE id = 1').get(), { generation: 5, bytes_written: 20480 }, 'the chunk follows its replica');
  t.same(db.prepare('SELECT generation FROM replicas WHERE chunk_id = 3').get(), { generation: 0 }, 'the ignored ack changed nothing');
  acks.record('sds-1', [{ token_id: token(1), volume_id: 1, chunk_index: 5, operation: 'write', requests: 1, bytes: 1 }]);
  t.same(acks.flush(), { applied: 0, skipped: 1 }, 'a chunk the SDS does not hold is skipped');
  t.same(acks.flush(), { applied: 0, skipped: 0 }, 'an empty flush writes nothing');
});

t.test('the timer\'s flush goes in pages and gives the event loop back between them', async (t) => {
  // A volume of 2.5 pages of chunks, one replica each on sds-1.
  const chunkCount = Math.floor(TX_ACK_FLUSH_PAGE_SUMS * 2.5);
  db.transaction(() => {
    db.prepare(`INSERT INTO volumes (id, name, pool_id, size_bytes, provisioning) VALUES (3, 'vol3', 1, ?, 'thick')`).run(chunkCount * 4194304);
    for (let index = 0; index < chunkCount; index += 1) {
      const chunkId = Number(db.prepare('INSERT INTO chunks (volume_id, chunk_index) VALUES (3, ?)').run(index).lastInsertRowid);
      db.prepare('INSERT INTO replicas (chunk_id, sds_id, pool_id) VALUES (?, 1, 1)').run(chunkId);
    }
  })();
  const acks = new TxAcks(context);
  acks.record('sds-1', Array.from({ length: chunkCount }, (_, index) => ({ token_id: token(99), volume_id: 3, chunk_index: index, operation: 'write' as const, requests: 1, bytes: 4096 })));
  const written = (): number => (db.prepare(`SELECT COUNT(*) AS n FROM replicas r JOIN chunks c ON c.id = r.chunk_id WHERE c.volume_id = 3 AND r.generation = 1`).get() as { n: number }).n;
  let seenBetweenPages: number | undefined;
  setImmediate(() => (seenBetweenPages = written())); // queued before the flush's own first yield
  const flushing = acks.flushPaged();
  t.same(await flushing, { applied: chunkCount, skipped: 0 }, 'every sum written');
  t.equal(seenBetweenPages, TX_ACK_FLUSH_PAGE_SUMS, 'the loop ran after the first page, with that page committed');
  t.equal(written(), chunkCount, 'all of them in the end');
});

t.test('the registry of issued tokens forgets expired ones and stays bounded', async (t) => {
  const acks = new TxAcks(context);
  const now = Date.now();
  acks.tokenIssued(token(1), 2, now - 1, now); // already expired
  for (let n = 2; n < ISSUED_TOKENS_MAX + 12; n += 1) acks.tokenIssued(token(n), 1, now + 30_000, now);
  t.equal((acks as unknown as { issued: Map<string, unknown> }).issued.size, ISSUED_TOKENS_MAX, 'at most ISSUED_TOKENS_MAX');
  t.same(acks.record('sds-1', [{ token_id: token(1), volume_id: 1, chunk_index: 0, operation: 'read', requests: 1, bytes: 1 }]), { accepted: 1, ignored: 0 }, 'the expired token is forgotten');
});
