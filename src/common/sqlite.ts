/**
 * Opening a component's SQLite database (better-sqlite3): WAL mode, a busy timeout, and versioned
 * migrations applied in one transaction each. Each role passes its own migrations; a database
 * newer than the code is refused rather than guessed at.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { checkpointInBackground, type CheckpointStats } from './sqlite-checkpoint.js';

export type SqliteDb = Database.Database;

export interface SqliteOptions {
  /** FULL where a commit must be on disk before what it describes (write intents); else NORMAL. */
  readonly synchronous: 'NORMAL' | 'FULL';
  readonly foreignKeys: boolean;
  /** Each entry is one schema version; never edit a released entry, append a new one. */
  readonly migrations: readonly string[];
  /**
   * 'background' (the default for a file): WAL checkpoints in a worker thread, never inside one
   * of this connection's commits (sqlite-checkpoint.ts). 'inline': SQLite's automatic ones.
   */
  readonly checkpoint?: 'background' | 'inline';
}

const checkpointers = new WeakMap<SqliteDb, CheckpointStats>();

/** How the background checkpointer of a database has done (undefined: it checkpoints inline). */
export function checkpointStatsOf(db: SqliteDb): Readonly<CheckpointStats> | undefined {
  return checkpointers.get(db);
}

export function openSqlite(path: string, options: SqliteOptions): SqliteDb {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${options.synchronous}`);
  db.pragma(`foreign_keys = ${options.foreignKeys ? 'ON' : 'OFF'}`);
  db.pragma('busy_timeout = 5000');
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
  )`);
  const current = (db.prepare('SELECT MAX(version) AS version FROM schema_migrations').get() as { version: number | null }).version ?? 0;
  const latest = options.migrations.length;
  if (current > latest) {
    db.close();
    throw new Error(`${basename(path)} has schema v${current}, newer than this pflex (v${latest}); upgrade pflex`);
  }
  for (let version = current + 1; version <= latest; version += 1) {
    db.transaction(() => {
      db.exec(options.migrations[version - 1]!);
      db.prepare('INSERT INTO schema_migrations (version) VALUES (?)').run(version);
    })();
  }
  cacheStatements(db);
  if (path !== ':memory:' && (options.checkpoint ?? 'background') === 'background') {
    const checkpointer = checkpointInBackground(db, path);
    checkpointers.set(db, checkpointer.stats);
    const close = db.close.bind(db);
    (db as { close: unknown }).close = () => {
      checkpointer.stop();
      // Folded into the file at close, as SQLite does when its last connection closes (the
      // worker's still is open): a closed database is one file again.
      try {
        db.pragma('wal_checkpoint(TRUNCATE)');
      } catch {
        // busy: the worker's last checkpoint; the WAL stays and is read at the next open
      }
      return close();
    };
  }
  return db;
}

/** Distinct SQL texts whose compiled statements are kept; past it new texts are compiled each time. */
export const STATEMENTS_CACHED_MAX = 2048;

/**
 * `db.prepare(sql)` answers the statement compiled for that text before (issue 11: compiling
 * was half the cost of a small authorization, 0.1–0.3 ms, on every call). A statement still being
 * iterated is busy: a new one is compiled for the nested use. After the migrations, since a
 * schema change invalidates what was compiled. Nothing in pflex calls pluck(), raw() or
 * expand(), which would change a shared statement for every caller.
 */
function cacheStatements(db: SqliteDb): void {
  const compile = db.prepare.bind(db);
  const cache = new Map<string, Database.Statement>();
  const prepare = (source: string): Database.Statement => {
    const cached = cache.get(source);
    if (cached !== undefined && !cached.busy) return cached;
    const statement = compile(source);
    if (cached === undefined && cache.size < STATEMENTS_CACHED_MAX) cache.set(source, statement);
    return statement;
  };
  (db as { prepare: unknown }).prepare = prepare;
}
