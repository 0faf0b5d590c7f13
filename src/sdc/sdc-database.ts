/**
 * sdc_chunks.db: this SDC's own state (DESIGN §1): the mappings it last heard from the MDM, so
 * a restarted SDC exports its volumes before the MDM answers, and its export registry.
 */
import { openSqlite, type SqliteDb } from '../common/sqlite.js';

export type SdcDb = SqliteDb;

const MIGRATIONS: readonly string[] = [
  /* v1 */ `
  CREATE TABLE node_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE mappings (
    volume_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    size_bytes INTEGER NOT NULL,
    chunk_size_bytes INTEGER NOT NULL,
    pool_id INTEGER NOT NULL,
    access_mode TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );
  `,
];

export interface MappingRow {
  volume_id: number;
  name: string;
  size_bytes: number;
  chunk_size_bytes: number;
  pool_id: number;
  access_mode: 'readWrite' | 'readOnly';
}

export function openSdcDatabase(path: string): SdcDb {
  return openSqlite(path, { synchronous: 'NORMAL', foreignKeys: false, migrations: MIGRATIONS });
}

export function loadMappings(db: SdcDb): MappingRow[] {
  return db.prepare('SELECT * FROM mappings ORDER BY name').all() as MappingRow[];
}

export function saveMappings(db: SdcDb, mappings: readonly MappingRow[]): void {
  db.transaction(() => {
    db.prepare('DELETE FROM mappings').run();
    const insert = db.prepare(
      'INSERT INTO mappings (volume_id, name, size_bytes, chunk_size_bytes, pool_id, access_mode) VALUES (?, ?, ?, ?, ?, ?)',
    );
    for (const m of mappings) insert.run(m.volume_id, m.name, m.size_bytes, m.chunk_size_bytes, m.pool_id, m.access_mode);
  })();
}
