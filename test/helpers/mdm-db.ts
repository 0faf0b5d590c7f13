/**
 * A small cluster written straight into a real powerflex.db, for tests of the MDM's bookkeeping
 * (rebuild queue, fencing holds, invariants): no process, no network.
 */
import type { Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase, type Db } from '../../src/mdm/database.js';

export const CHUNK_BYTES = 4 * 2 ** 20;

/** An empty powerflex.db in a temp dir, closed and removed when the test ends. */
export function freshDb(t: Test, prefix = 'pflex-db-'): Db {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const db = openDatabase(join(dir, 'powerflex.db'));
  t.teardown(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return db;
}

/** One pool (two copies) over `sdsCount` SDS in their own fault sets, and one thick volume of `chunkCount` chunks. */
export function populate(db: Db, sdsCount: number, chunkCount: number): void {
  db.transaction(() => {
    db.prepare(`INSERT INTO protection_domains (id, name) VALUES (1, 'pd1')`).run();
    db.prepare(
      `INSERT INTO storage_pools (id, pd_id, name, protection_policy, chunk_size_bytes, spare_percent, rebuild_rate_mbps, capacity_alert_high_percent, capacity_alert_critical_percent)
       VALUES (1, 1, 'pool1', 'two_copies', ?, 10, 100, 80, 90)`,
    ).run(CHUNK_BYTES);
    for (let id = 1; id <= sdsCount; id += 1) {
      db.prepare(`INSERT INTO fault_sets (id, pd_id, name) VALUES (?, 1, ?)`).run(id, `fs${id}`);
      db.prepare(`INSERT INTO sds (id, name, pd_id, fault_set_id, host, data_port, control_port, mgmt_port, state) VALUES (?, ?, 1, ?, '127.0.0.1', 1, 1, 1, 'UP')`).run(id, `sds-${id}`, id);
      db.prepare(`INSERT INTO sds_devices (sds_id, pool_id, path, capacity_bytes) VALUES (?, 1, '/dev/x', ?)`).run(id, 1024 * CHUNK_BYTES);
    }
    db.prepare(`INSERT INTO volumes (id, name, pool_id, size_bytes, provisioning) VALUES (1, 'vol1', 1, ?, 'thick')`).run(chunkCount * CHUNK_BYTES);
    for (let index = 0; index < chunkCount; index += 1) {
      const chunkId = Number(db.prepare('INSERT INTO chunks (volume_id, chunk_index) VALUES (1, ?)').run(index).lastInsertRowid);
      db.prepare('INSERT INTO replicas (chunk_id, sds_id, pool_id) VALUES (?, ?, 1)').run(chunkId, (index % sdsCount) + 1);
      db.prepare('INSERT INTO replicas (chunk_id, sds_id, pool_id) VALUES (?, ?, 1)').run(chunkId, ((index + 1) % sdsCount) + 1);
    }
  })();
}

