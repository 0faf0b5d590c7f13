/**
 * powerflex.db: the MDM's SQLite database, the only store of cluster metadata (DESIGN §1).
 * WAL mode, foreign keys on, and versioned migrations applied in one transaction each at open.
 */
import { openSqlite, type SqliteDb } from '../common/sqlite.js';

export type Db = SqliteDb;

/** Each entry is one schema version; never edit a released entry, append a new one. */
const MIGRATIONS: readonly string[] = [
  /* v1: the domain, membership, tokens and events. */ `
  CREATE TABLE cluster_config (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );

  CREATE TABLE protection_domains (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );

  CREATE TABLE fault_sets (
    id INTEGER PRIMARY KEY,
    pd_id INTEGER NOT NULL REFERENCES protection_domains(id),
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );

  CREATE TABLE storage_pools (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pd_id INTEGER NOT NULL REFERENCES protection_domains(id),
    name TEXT NOT NULL UNIQUE,
    protection_policy TEXT NOT NULL CHECK (protection_policy IN ('two_copies','three_copies')),
    chunk_size_bytes INTEGER NOT NULL,
    spare_percent INTEGER NOT NULL,
    rebuild_rate_mbps INTEGER NOT NULL,
    capacity_alert_high_percent INTEGER NOT NULL,
    capacity_alert_critical_percent INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );

  CREATE TABLE sds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    pd_id INTEGER NOT NULL REFERENCES protection_domains(id),
    fault_set_id INTEGER REFERENCES fault_sets(id),
    host TEXT NOT NULL,
    data_port INTEGER NOT NULL,
    control_port INTEGER NOT NULL,
    mgmt_port INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'NEW' CHECK (state IN ('NEW','UP','DOWN','REMOVING')),
    last_heartbeat_at_ms INTEGER,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );

  CREATE TABLE sds_devices (
    id INTEGER PRIMARY KEY,
    sds_id INTEGER NOT NULL REFERENCES sds(id),
    pool_id INTEGER NOT NULL REFERENCES storage_pools(id),
    path TEXT NOT NULL,
    capacity_bytes INTEGER NOT NULL CHECK (capacity_bytes > 0),
    state TEXT NOT NULL DEFAULT 'OK',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (sds_id, path)
  );

  CREATE TABLE sdc (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL DEFAULT '',
    control_port INTEGER,
    mgmt_port INTEGER,
    nbd_port INTEGER,
    state TEXT NOT NULL DEFAULT 'NEW' CHECK (state IN ('NEW','UP','DOWN')),
    last_heartbeat_at_ms INTEGER,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );

  CREATE TABLE volumes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    pool_id INTEGER NOT NULL REFERENCES storage_pools(id),
    size_bytes INTEGER NOT NULL CHECK (size_bytes > 0),
    provisioning TEXT NOT NULL CHECK (provisioning IN ('thin','thick')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );

  CREATE TABLE volume_mappings (
    id INTEGER PRIMARY KEY,
    volume_id INTEGER NOT NULL REFERENCES volumes(id),
    sdc_id INTEGER NOT NULL REFERENCES sdc(id),
    access_mode TEXT NOT NULL CHECK (access_mode IN ('readWrite','readOnly')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (volume_id, sdc_id)
  );

  -- Ids that leave the MDM (volumes, SDS, SDC, pools in tokens and on SDS) are AUTOINCREMENT: never reused.
  -- One row per placed chunk; a thin volume's unwritten chunks have no row.
  CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    volume_id INTEGER NOT NULL REFERENCES volumes(id),
    chunk_index INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 1,
    generation INTEGER NOT NULL DEFAULT 0,
    bytes_written INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (volume_id, chunk_index)
  );

  CREATE TABLE replicas (
    id INTEGER PRIMARY KEY,
    chunk_id INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    sds_id INTEGER NOT NULL REFERENCES sds(id),
    pool_id INTEGER NOT NULL REFERENCES storage_pools(id),
    state TEXT NOT NULL DEFAULT 'CURRENT' CHECK (state IN ('CURRENT','STALE','REBUILDING')),
    -- Mutating requests and bytes this replica acknowledged (SDS tx acks).
    generation INTEGER NOT NULL DEFAULT 0,
    bytes_written INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (chunk_id, sds_id)
  );
  CREATE INDEX replicas_by_sds ON replicas(sds_id, pool_id);

  CREATE TABLE cluster_nodes (
    node_id TEXT PRIMARY KEY,
    roles TEXT NOT NULL,
    host TEXT NOT NULL,
    ports_json TEXT NOT NULL DEFAULT '{}',
    credential_sha256 TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'UP' CHECK (status IN ('UP','DOWN','OFFLINE')),
    last_heartbeat_at_ms INTEGER NOT NULL,
    registered_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    metadata_json TEXT NOT NULL DEFAULT '{}'
  );
  CREATE UNIQUE INDEX cluster_nodes_by_credential ON cluster_nodes(credential_sha256);

  CREATE TABLE join_tokens (
    id INTEGER PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    roles TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    uses_max INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  );

  CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    severity TEXT NOT NULL CHECK (severity IN ('info','warning','error')),
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    pd_id INTEGER, pool_id INTEGER, volume_id INTEGER, sds_id INTEGER, sdc_id INTEGER
  );

  CREATE TABLE io_tokens (
    token_id TEXT PRIMARY KEY,
    volume_id INTEGER NOT NULL,
    sdc_id INTEGER NOT NULL,
    operations INTEGER NOT NULL,
    chunk_first INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    issued_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
  );
  CREATE INDEX io_tokens_by_expiry ON io_tokens(expires_at_ms);
  `,
  /* v2: an SDS's Unix socket, for SDCs on the same host. */ `
  ALTER TABLE sds ADD COLUMN data_socket_path TEXT;
  `,
  /* v3: the epoch a replica was fenced at; the freshest stale replica can serve again. */ `
  ALTER TABLE replicas ADD COLUMN stale_epoch INTEGER;
  `,
  /* v4: per-pool switches for data movement, for maintenance windows (1 = on). */ `
  ALTER TABLE storage_pools ADD COLUMN rebuild_enabled INTEGER NOT NULL DEFAULT 1 CHECK (rebuild_enabled IN (0, 1));
  ALTER TABLE storage_pools ADD COLUMN rebalance_enabled INTEGER NOT NULL DEFAULT 1 CHECK (rebalance_enabled IN (0, 1));
  `,
  /* v5: trust (issue 10). An SDS's incarnation (a new one: its state was lost); why a replica was
     fenced alone (a failed IO, a lost device: never resynced in place first); a device's reported
     state; and the SDS orders still owed (epoch installs, chunk deletions), retried until done. */ `
  ALTER TABLE sds ADD COLUMN incarnation TEXT;
  -- An SDS an SDC could not reach (timeouts): no new replicas go there until then (ms since epoch).
  ALTER TABLE sds ADD COLUMN avoid_until_ms INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE replicas ADD COLUMN failed_reason TEXT;
  ALTER TABLE sds_devices ADD COLUMN state_reason TEXT;
  CREATE TABLE sds_orders (
    sds_id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('epoch','delete')),
    volume_id INTEGER NOT NULL,
    chunk_index INTEGER NOT NULL,
    pool_id INTEGER NOT NULL DEFAULT 0,
    -- epoch: the epoch to install; delete: the chunk's epoch now (kept as a tombstone), NULL: forget it whole.
    epoch INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sds_id, kind, volume_id, chunk_index)
  );
  CREATE INDEX replicas_by_chunk_state ON replicas(chunk_id, state);
  `,
  /* v6: metadata at scale (issue 11). Replica counts per SDS and pool kept by triggers, so
     placement and capacity read a row per SDS instead of counting every replica; a partial index
     of the replicas that are not CURRENT, so the rebuild planner finds what needs work without
     reading every chunk. */ `
  CREATE TABLE sds_pool_usage (
    sds_id INTEGER NOT NULL,
    pool_id INTEGER NOT NULL,
    replica_count INTEGER NOT NULL CHECK (replica_count >= 0),
    PRIMARY KEY (sds_id, pool_id)
  ) WITHOUT ROWID;
  INSERT INTO sds_pool_usage (sds_id, pool_id, replica_count) SELECT sds_id, pool_id, COUNT(*) FROM replicas GROUP BY sds_id, pool_id;
  CREATE TRIGGER replicas_usage_insert AFTER INSERT ON replicas BEGIN
    INSERT INTO sds_pool_usage (sds_id, pool_id, replica_count) VALUES (NEW.sds_id, NEW.pool_id, 1)
      ON CONFLICT (sds_id, pool_id) DO UPDATE SET replica_count = replica_count + 1;
  END;
  CREATE TRIGGER replicas_usage_delete AFTER DELETE ON replicas BEGIN
    UPDATE sds_pool_usage SET replica_count = replica_count - 1 WHERE sds_id = OLD.sds_id AND pool_id = OLD.pool_id;
  END;
  CREATE TRIGGER replicas_usage_move AFTER UPDATE OF sds_id, pool_id ON replicas BEGIN
    UPDATE sds_pool_usage SET replica_count = replica_count - 1 WHERE sds_id = OLD.sds_id AND pool_id = OLD.pool_id;
    INSERT INTO sds_pool_usage (sds_id, pool_id, replica_count) VALUES (NEW.sds_id, NEW.pool_id, 1)
      ON CONFLICT (sds_id, pool_id) DO UPDATE SET replica_count = replica_count + 1;
  END;
  CREATE INDEX replicas_not_current ON replicas(chunk_id) WHERE state != 'CURRENT';
  -- An SDS's replicas in one state (its stale ones when it returns, its current ones when down).
  CREATE INDEX replicas_by_sds_state ON replicas(sds_id, state);
  -- The rebuilder's work queue (rebuild-queue.ts): chunks whose replica set changed, SDS whose state did.
  CREATE TABLE rebuild_queue (chunk_id INTEGER PRIMARY KEY);
  CREATE TABLE rebuild_queue_sds (sds_id INTEGER PRIMARY KEY);
  CREATE TRIGGER replicas_queue_insert AFTER INSERT ON replicas WHEN NEW.state != 'CURRENT' BEGIN
    INSERT OR IGNORE INTO rebuild_queue (chunk_id) VALUES (NEW.chunk_id);
  END;
  CREATE TRIGGER replicas_queue_state AFTER UPDATE OF state ON replicas WHEN NEW.state != OLD.state BEGIN
    INSERT OR IGNORE INTO rebuild_queue (chunk_id) VALUES (NEW.chunk_id);
  END;
  CREATE TRIGGER replicas_queue_delete AFTER DELETE ON replicas BEGIN
    INSERT OR IGNORE INTO rebuild_queue (chunk_id) VALUES (OLD.chunk_id);
  END;
  CREATE TRIGGER sds_queue_state AFTER UPDATE OF state ON sds WHEN NEW.state != OLD.state BEGIN
    INSERT OR IGNORE INTO rebuild_queue_sds (sds_id) VALUES (NEW.id);
  END;
  -- Issued tokens are remembered in memory (tx-acks.ts): no database write per authorization.
  DROP TABLE io_tokens;
  -- Epochs only grow (DESIGN §6): an update that would lower one fails, whatever path made it.
  CREATE TRIGGER chunks_epoch_grows BEFORE UPDATE OF epoch ON chunks WHEN NEW.epoch < OLD.epoch BEGIN
    SELECT RAISE(ABORT, 'a chunk epoch never goes back');
  END;
  `,
  /* v7: an SDC's mappings and a pool's devices by index: an SDC's registration or loss looks up
     the SDS of the pools of its volumes without reading every mapping and every device. */ `
  CREATE INDEX volume_mappings_by_sdc ON volume_mappings(sdc_id);
  CREATE INDEX sds_devices_by_pool ON sds_devices(pool_id);
  -- A pool's provisioned bytes (capacity checks at every volume create) from the index alone.
  CREATE INDEX volumes_by_pool ON volumes(pool_id, provisioning, size_bytes);
  `,
  /* v8: each volume's placed chunks kept by triggers, so a pool's chunk health (chunk-health.ts)
     reads its unusual chunks and a row per volume instead of every chunk (7 s at 64 TiB). */ `
  CREATE TABLE volume_chunk_counts (
    volume_id INTEGER PRIMARY KEY,
    chunk_count INTEGER NOT NULL CHECK (chunk_count >= 0)
  );
  INSERT INTO volume_chunk_counts (volume_id, chunk_count) SELECT volume_id, COUNT(*) FROM chunks GROUP BY volume_id;
  CREATE TRIGGER chunks_count_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO volume_chunk_counts (volume_id, chunk_count) VALUES (NEW.volume_id, 1)
      ON CONFLICT (volume_id) DO UPDATE SET chunk_count = chunk_count + 1;
  END;
  CREATE TRIGGER chunks_count_delete AFTER DELETE ON chunks BEGIN
    UPDATE volume_chunk_counts SET chunk_count = chunk_count - 1 WHERE volume_id = OLD.volume_id;
  END;
  CREATE TRIGGER chunks_count_move AFTER UPDATE OF volume_id ON chunks BEGIN
    UPDATE volume_chunk_counts SET chunk_count = chunk_count - 1 WHERE volume_id = OLD.volume_id;
    INSERT INTO volume_chunk_counts (volume_id, chunk_count) VALUES (NEW.volume_id, 1)
      ON CONFLICT (volume_id) DO UPDATE SET chunk_count = chunk_count + 1;
  END;
  CREATE TRIGGER volumes_count_delete AFTER DELETE ON volumes BEGIN
    DELETE FROM volume_chunk_counts WHERE volume_id = OLD.id;
  END;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * synchronous=FULL: an epoch bump is on disk before any SDS is told of it, so a power cut can
 * never make the MDM hand out an epoch number again (epochs only grow, DESIGN §6).
 */
export function openDatabase(path: string): Db {
  return openSqlite(path, { synchronous: 'FULL', foreignKeys: true, migrations: MIGRATIONS });
}

/**
 * Runs `work` as a transaction whose commit is not fsync'd (synchronous=NORMAL for it, WAL
 * mode): for writes a power cut may lose without harm, such as heartbeat times (a restarted MDM
 * gives every node a full miss window anyway). Without it every heartbeat of every node is an
 * fsync on the MDM's event loop. The next FULL commit makes it durable along with its own.
 * Never for epochs, replica states or anything an SDS is told.
 */
export function withoutSync<T>(db: Db, work: () => T): T {
  if (db.inTransaction) return db.transaction(work)(); // part of a durable one: its rules
  db.pragma('synchronous = NORMAL');
  try {
    return db.transaction(work)();
  } finally {
    db.pragma('synchronous = FULL');
  }
}
