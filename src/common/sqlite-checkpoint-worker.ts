/**
 * The WAL checkpointer's thread (sqlite-checkpoint.ts): its own connection to the database, a
 * PASSIVE checkpoint every interval, each result posted back. PASSIVE never waits for a reader
 * or a writer, so the owning thread's transactions go on while it copies pages and syncs.
 */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';

interface Config {
  readonly path: string;
  readonly intervalMs: number;
}

const { path, intervalMs } = workerData as Config;
const db = new Database(path, { fileMustExist: true });
db.pragma('busy_timeout = 0');

/**
 * A checkpoint that found new frames runs again at once, up to REPEATS_MAX times: the owner's
 * commits go on while it copies, and each repeat copies what was written during the one before,
 * fewer each time, so the owner's own checkpoint (the one that lets the WAL start over) finds
 * almost nothing left to copy.
 */
const REPEATS_MAX = 8;

let timer: NodeJS.Timeout | undefined;
let stopped = false;
let lastFrames = -1;

function checkpoint(repeat: number): void {
  timer = undefined;
  if (stopped) return;
  const startedMs = performance.now();
  let again = false;
  try {
    const [result] = db.pragma('wal_checkpoint(PASSIVE)') as { log: number; checkpointed: number }[];
    const walFrames = result?.log ?? 0;
    const checkpointedFrames = result?.checkpointed ?? 0;
    parentPort?.postMessage({ kind: 'checkpoint', walFrames, checkpointedFrames, ms: performance.now() - startedMs });
    again = walFrames !== lastFrames && walFrames > 0 && repeat < REPEATS_MAX;
    lastFrames = walFrames;
  } catch (error) {
    // SQLITE_BUSY: another checkpoint ran (the owner closing its connection); the next one catches up.
    parentPort?.postMessage({ kind: 'error', message: error instanceof Error ? error.message : String(error) });
  }
  timer = again ? setTimeout(checkpoint, 1, repeat + 1) : setTimeout(checkpoint, intervalMs, 0);
}

timer = setTimeout(checkpoint, intervalMs, 0);
parentPort?.on('message', (message: unknown) => {
  if (message !== 'stop') return;
  stopped = true;
  if (timer !== undefined) clearTimeout(timer);
  db.close();
  parentPort?.close();
});
