/**
 * sds_local.db: this SDS's own metadata (DESIGN §1): its devices, which chunk lives in which
 * slot at which epoch, and the write-intent records of chunks that may have writes in flight.
 * synchronous=FULL: a write intent must be on disk before the data write it covers.
 */
import { openSqlite, type SqliteDb } from '../common/sqlite.js';

export type SdsDb = SqliteDb;

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
  /* v2: the highest epoch a mutation was applied at (a returning peer resyncs only chunks written
     after it was fenced), and whether the chunk is a replica still being rebuilt here. */ `
  ALTER TABLE chunks ADD COLUMN written_epoch INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE chunks ADD COLUMN rebuilding INTEGER NOT NULL DEFAULT 0;
  `,
];

export function openSdsDatabase(path: string): SdsDb {
  return openSqlite(path, { synchronous: 'FULL', foreignKeys: true, migrations: MIGRATIONS });
}
