/**
 * sds_local.db: this SDS's own metadata (DESIGN §1): its devices, which chunk lives in which
 * slot at which epoch, and the write-intent records of chunks that may have writes in flight.
 * synchronous=FULL: a write intent must be on disk before the data write it covers.
 */
import { randomBytes } from 'node:crypto';
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
  /* v3: device identity. Each device has a superblock in its first DEVICE_HEADER_BYTES (uuid
     made at format); header_bytes 0 marks a device of a pflex before superblocks (slots from 0).
     node_state gets 'incarnation' (made when this database is) and 'cluster_id'. */ `
  ALTER TABLE devices ADD COLUMN uuid TEXT;
  ALTER TABLE devices ADD COLUMN header_bytes INTEGER NOT NULL DEFAULT 0;
  `,
];

/** This SDS's incarnation: made once, with the database; a new database is a new incarnation. */
export function sdsIncarnation(db: SdsDb): { incarnation: string; created: boolean } {
  const row = db.prepare(`SELECT value FROM node_state WHERE key = 'incarnation'`).get() as { value: string } | undefined;
  if (row !== undefined) return { incarnation: row.value, created: false };
  const incarnation = randomBytes(16).toString('hex');
  db.prepare(`INSERT INTO node_state (key, value) VALUES ('incarnation', ?)`).run(incarnation);
  return { incarnation, created: true };
}

/** A node_state value (cluster_id, ...), or undefined. */
export function nodeState(db: SdsDb, key: string): string | undefined {
  return (db.prepare('SELECT value FROM node_state WHERE key = ?').get(key) as { value: string } | undefined)?.value;
}

export function setNodeState(db: SdsDb, key: string, value: string): void {
  db.prepare('INSERT INTO node_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
}

export function openSdsDatabase(path: string): SdsDb {
  return openSqlite(path, { synchronous: 'FULL', foreignKeys: true, migrations: MIGRATIONS });
}
