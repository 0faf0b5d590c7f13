/**
 * WAL checkpoints mostly off the owning thread (issue 11). SQLite's automatic checkpoint runs
 * inside the commit that finds the WAL past wal_autocheckpoint (1 000 pages): that commit copies
 * every page written since the last one into the database file and syncs it, 40–90 ms on the
 * MDM's event loop at 16 TiB, and those commits were the p99 of renewals and heartbeats (measured
 * on a 1M-row table with 5-row commits: p99 40 ms, 0.3 ms without them).
 *
 * A worker thread with its own connection runs a PASSIVE checkpoint every CHECKPOINT_INTERVAL_MS:
 * it copies the pages and syncs the file while the owner's commits go on. The owner keeps its
 * automatic checkpoint, which now finds only the frames of the last interval to copy: it is what
 * lets the WAL start over (only a connection's next write can restart it, and only when every
 * frame is copied, which steady writes from the owner never leave the worker to see), so the WAL
 * stays bounded whatever the worker does. If the worker cannot run, the owner checkpoints alone,
 * as before.
 *
 * Durability is the commit's, as before: a FULL commit syncs the WAL before it returns; a
 * checkpoint only moves committed pages.
 */
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';

/** Time between two checkpoints of the worker. */
export const CHECKPOINT_INTERVAL_MS = 250;
/**
 * The owner's automatic checkpoint, in pages (SQLite's default is 1 000): past it the WAL starts
 * over at the owner's next commit. Far above what the writes of one interval add (about 400 pages
 * a second in a busy MDM), so the worker has copied all but the last interval's when it comes.
 */
export const AUTOCHECKPOINT_PAGES = 8192;
/** The WAL file is cut back to this after a checkpoint resets it (a burst leaves no giant file). */
export const WAL_KEPT_BYTES_MAX = 64 * 1024 * 1024;

export interface CheckpointStats {
  checkpoints: number;
  failures: number;
  /** WAL frames at the last checkpoint, and how many of them it copied. */
  walFrames: number;
  checkpointedFrames: number;
  lastMs: number;
  /** false once the worker is gone (the owner's automatic checkpoints do it all). */
  running: boolean;
}

export interface BackgroundCheckpointer {
  readonly stats: CheckpointStats;
  /** Stops the worker (its connection closes in its own thread). */
  stop(): void;
}

export function checkpointInBackground(db: Database.Database, path: string, intervalMs = CHECKPOINT_INTERVAL_MS): BackgroundCheckpointer {
  if (!Number.isInteger(intervalMs) || intervalMs < 10) throw new Error(`checkpoint interval must be an integer >= 10 ms, got ${intervalMs}`);
  const stats: CheckpointStats = { checkpoints: 0, failures: 0, walFrames: 0, checkpointedFrames: 0, lastMs: 0, running: true };
  db.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
  db.pragma(`journal_size_limit = ${WAL_KEPT_BYTES_MAX}`);
  const worker = new Worker(new URL('./sqlite-checkpoint-worker.js', import.meta.url), { workerData: { path, intervalMs } });
  let stopped = false;
  const gone = (): void => {
    stats.running = false;
  };
  worker.on('message', (message: { kind: string; walFrames?: number; checkpointedFrames?: number; ms?: number }) => {
    if (message.kind === 'checkpoint') {
      stats.checkpoints += 1;
      stats.walFrames = message.walFrames ?? 0;
      stats.checkpointedFrames = message.checkpointedFrames ?? 0;
      stats.lastMs = message.ms ?? 0;
    } else {
      stats.failures += 1;
    }
  });
  worker.on('error', gone);
  worker.on('exit', gone);
  // After the listeners: a 'message' listener refs the worker's port again, and a process that
  // is done (a CLI error, a daemon that failed to start) must not wait for its checkpointer.
  worker.unref();
  return {
    stats,
    stop() {
      if (stopped) return;
      stopped = true;
      worker.postMessage('stop');
    },
  };
}
