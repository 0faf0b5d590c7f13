/**
 * sds_local.db: this SDS's own metadata (DESIGN §1): its devices, which chunk lives in which
 * slot at which epoch, and the write-intent records of chunks that may have writes in flight.
 * synchronous=FULL: a write intent must be on disk before the data write it covers.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export type SdsDb = Database.Database;

const MIGRATIONS: readonly string[] = [
  /* v1 */ `
  CREATE TABLE node_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);

  CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    mdm_device_id INTEGER NOT NULL UNIQUE,
    path TEXT NOT NULL UNIQUE,
    pool_id INTEGER NOT NULL,
    capacity_bytes INTEGER NOT NULL,
    slot_bytes INTEGER NOT NULL,
    slot_count INTEGER NOT NULL,
    added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );

  -- A chunk this SDS knows: its epoch, and its slot once written. A row without a slot is an
  -- epoch installed by the MDM (or a placed chunk never written here): it reads as zeros.
  CREATE TABLE chunks (
    volume_id INTEGER NOT NULL,
    chunk_index INTEGER NOT NULL,
    pool_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    device_id INTEGER REFERENCES devices(id),
    slot_index INTEGER,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (volume_id, chunk_index),
    UNIQUE (device_id, slot_index)
  );

  -- Chunks that may hold writes not yet durable or not yet on every replica: resynced after a crash.
  CREATE TABLE write_intents (
    volume_id INTEGER NOT NULL,
    chunk_index INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (volume_id, chunk_index)
  );
  `,
];

export function openSdsDatabase(path: string): SdsDb {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))`);
  const current = (db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null }).v ?? 0;
  if (current > MIGRATIONS.length) throw new Error(`sds_local.db has schema v${current}, newer than this SDS`);
  for (let version = current + 1; version <= MIGRATIONS.length; version += 1) {
    db.transaction(() => {
      db.exec(MIGRATIONS[version - 1]!);
      db.prepare('INSERT INTO schema_migrations (version) VALUES (?)').run(version);
    })();
  }
  return db;
}
