/**
 * Epochs only grow, durably (issue 10, item 6): powerflex.db commits with synchronous=FULL, so an
 * epoch bump an SDS has been told of can never be lost in a power cut and its number handed out
 * again; sds_local.db too (write intents and epochs before the data they cover).
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../src/mdm/database.js';
import { openSdsDatabase } from '../../src/sds/sds-database.js';

const SYNCHRONOUS_FULL = 2;
const dir = mkdtempSync(join(tmpdir(), 'pflex-db-durability-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('powerflex.db: WAL with synchronous=FULL', async (t) => {
  const db = openDatabase(join(dir, 'powerflex.db'));
  t.teardown(() => db.close());
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  t.equal(db.pragma('synchronous', { simple: true }), SYNCHRONOUS_FULL, 'every commit is on disk before it returns');
});

t.test('sds_local.db: WAL with synchronous=FULL', async (t) => {
  const db = openSdsDatabase(join(dir, 'sds_local.db'));
  t.teardown(() => db.close());
  t.equal(db.pragma('synchronous', { simple: true }), SYNCHRONOUS_FULL);
});
