/**
 * WAL checkpoints in a worker thread (src/common/sqlite-checkpoint.ts) on a real database file:
 * the worker copies committed pages while the owner writes, the owner's automatic checkpoint is
 * raised (not off: it restarts the WAL), the WAL stays bounded under steady writes, every commit
 * reads back after close and reopen, and a closed database is one file again.
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnSync } from 'node:child_process';
import { checkpointStatsOf, openSqlite } from '../../src/common/sqlite.js';
import { AUTOCHECKPOINT_PAGES, CHECKPOINT_INTERVAL_MS, checkpointInBackground, WAL_KEPT_BYTES_MAX } from '../../src/common/sqlite-checkpoint.js';

const MIGRATIONS = ['CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, b TEXT NOT NULL)'];

function scratch(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pflex-ckpt-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'test.db');
}

t.test('the worker checkpoints while the owner commits; the WAL restarts and stays bounded', async (t) => {
  const path = scratch(t);
  const db = openSqlite(path, { synchronous: 'NORMAL', foreignKeys: false, migrations: MIGRATIONS });
  t.equal(db.pragma('wal_autocheckpoint', { simple: true }), AUTOCHECKPOINT_PAGES, "the owner's automatic checkpoint is raised, not off");
  const stats = checkpointStatsOf(db);
  t.ok(stats?.running, 'a checkpointer runs for a file database');
  const insert = db.prepare('INSERT INTO t (a, b) VALUES (?, ?)');
  const written = 4 * AUTOCHECKPOINT_PAGES; // a frame or more each: the WAL passes the owner's limit
  for (let i = 0; i < written; i += 1) {
    db.transaction(() => insert.run(i, 'x'.repeat(200)))();
    if (i % 500 === 0) await sleep(2);
  }
  await sleep(3 * CHECKPOINT_INTERVAL_MS);
  t.ok(stats!.checkpoints > 0, `the worker checkpointed (${stats!.checkpoints} times)`);
  t.equal(stats!.failures, 0, 'no checkpoint failed');
  t.ok(stats!.walFrames < 2 * AUTOCHECKPOINT_PAGES, `the WAL started over (${stats!.walFrames} frames at the last checkpoint, ${written} commits written)`);
  t.equal(stats!.checkpointedFrames, stats!.walFrames, 'with the owner idle, the worker copied every frame');
  t.ok(statSync(`${path}-wal`).size <= WAL_KEPT_BYTES_MAX, 'the WAL file is within its bound');
  db.close();
  t.notOk(existsSync(`${path}-wal`) && statSync(`${path}-wal`).size > 0, 'closed: the WAL is folded into the file');
  const again = openSqlite(path, { synchronous: 'FULL', foreignKeys: false, migrations: MIGRATIONS });
  t.equal((again.prepare('SELECT COUNT(*) AS n, MAX(a) AS last FROM t').get() as { n: number; last: number }).n, written, 'every commit reads back after reopen');
  again.close();
});

t.test('no worker for :memory: or when asked to checkpoint inline; a bad interval is refused', async (t) => {
  const memory = openSqlite(':memory:', { synchronous: 'NORMAL', foreignKeys: false, migrations: MIGRATIONS });
  t.equal(checkpointStatsOf(memory), undefined, ':memory: has no checkpointer');
  memory.close();
  const path = scratch(t);
  const inline = openSqlite(path, { synchronous: 'NORMAL', foreignKeys: false, migrations: MIGRATIONS, checkpoint: 'inline' });
  t.equal(checkpointStatsOf(inline), undefined, "'inline' has no checkpointer");
  t.equal(inline.pragma('wal_autocheckpoint', { simple: true }), 1000, "'inline' keeps SQLite's automatic checkpoint");
  t.throws(() => checkpointInBackground(inline, path, 0), /checkpoint interval must be an integer >= 10 ms, got 0/);
  t.equal(inline.pragma('wal_autocheckpoint', { simple: true }), 1000, 'a refused interval changes nothing');
  inline.close();
});

t.test('a checkpointer whose worker cannot open the file stops; the owner checkpoints alone', async (t) => {
  const path = scratch(t);
  const db = openSqlite(path, { synchronous: 'NORMAL', foreignKeys: false, migrations: MIGRATIONS, checkpoint: 'inline' });
  const checkpointer = checkpointInBackground(db, join(path, 'missing', 'nowhere.db'), 50);
  for (let waited = 0; checkpointer.stats.running && waited < 5000; waited += 50) await sleep(50);
  t.notOk(checkpointer.stats.running, 'the worker is gone');
  const insert = db.prepare('INSERT INTO t (a, b) VALUES (?, ?)');
  for (let i = 0; i < 3 * AUTOCHECKPOINT_PAGES; i += 1) insert.run(i, 'y'.repeat(200));
  t.ok(statSync(`${path}-wal`).size < 2 * AUTOCHECKPOINT_PAGES * 4096 + 1024 * 1024, "the owner's automatic checkpoints still bound the WAL");
  db.close();
});

t.test('a process with an open database and nothing else to do exits: the checkpointer holds nothing open', async (t) => {
  // A daemon that failed to start (a port taken) reports its error and must exit, database open or
  // not; a referenced worker kept such an SDC running until its launcher gave up.
  const path = scratch(t);
  const sqlite = new URL('../../src/common/sqlite.js', import.meta.url).href;
  const script = `import { openSqlite } from ${JSON.stringify(sqlite)};
    openSqlite(${JSON.stringify(path)}, { synchronous: 'FULL', foreignKeys: false, migrations: [] });
    process.exitCode = 3;
    setTimeout(() => {}, 1500); // idle only once the worker has checkpointed and answered a few times`;
  const file = join(dirname(path), 'idle.mjs'); // a file, as a daemon runs (with -e the bug did not show)
  writeFileSync(file, script);
  const started = Date.now();
  const child = spawnSync(process.execPath, [file], { timeout: 20_000, encoding: 'utf8' });
  t.equal(child.signal, null, `not killed by the timeout (${Date.now() - started} ms)`);
  t.equal(child.status, 3, child.stderr);
});
