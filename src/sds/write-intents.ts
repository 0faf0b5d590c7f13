/**
 * Write intents (DESIGN §6): before the first write to a chunk since it was last clean, a row goes
 * into write_intents (synchronous=FULL: durable before the data write it covers), together with
 * the highest epoch the chunk was written at. New intents of one event-loop turn share one
 * transaction. A cleaner removes the rows of chunks quiet for INTENT_QUIET_MS, after a sync that
 * covers their writes.
 *
 * Rows found at start are chunks that may have had writes in flight at a crash: "suspect". Their
 * replica here may differ from its peers, so it serves no reads until the MDM has decided (it
 * trusts this replica when no peer is current, else fences it and copies it again).
 */
import type { SdsDb } from './sds-database.js';

/** A chunk's write intent is cleared after this long without writes (and a sync): long enough
 * that the MDM still finds it when it learns an SDC died (3 missed heartbeats). */
export const INTENT_QUIET_MS = 15_000;

/** What the intents need to know of a chunk record. */
export interface IntentChunk {
  readonly volumeId: number;
  readonly chunkIndex: number;
  writesInFlight: number;
  lastWriteMs: number;
  writtenEpoch: number;
}

export function chunkKey(volumeId: number, chunkIndex: number): string {
  return `${volumeId}:${chunkIndex}`;
}

export class WriteIntents {
  private readonly intents = new Set<string>();
  /** Intents (and written epochs) waiting for the next batched commit, and that commit. */
  private pending = new Map<string, { chunk: IntentChunk; epoch: number }>();
  private commit: Promise<void> | undefined;
  /** Intents found at start: kept until the MDM says what to do with the chunk. */
  private readonly suspects = new Set<string>();

  constructor(private readonly db: SdsDb) {}

  /** Loads the rows left by the last run: each one is a suspect chunk. */
  load(): void {
    for (const row of this.db.prepare('SELECT volume_id, chunk_index FROM write_intents').all() as { volume_id: number; chunk_index: number }[]) {
      const key = chunkKey(row.volume_id, row.chunk_index);
      this.intents.add(key);
      this.suspects.add(key);
    }
  }

  has(key: string): boolean {
    return this.intents.has(key);
  }

  isSuspect(key: string): boolean {
    return this.suspects.has(key);
  }

  get suspectCount(): number {
    return this.suspects.size;
  }

  /** The suspect chunks (for the registration report). */
  suspectList(): { volume_id: number; chunk_index: number }[] {
    return [...this.suspects].map((key) => {
      const [volumeId, chunkIndex] = key.split(':').map(Number);
      return { volume_id: volumeId!, chunk_index: chunkIndex! };
    });
  }

  /** The MDM resynced these chunks (or trusts this replica): no longer suspect. */
  clearSuspects(chunks: readonly { volume_id: number; chunk_index: number }[]): number {
    let cleared = 0;
    for (const chunk of chunks) if (this.suspects.delete(chunkKey(chunk.volume_id, chunk.chunk_index))) cleared += 1;
    return cleared;
  }

  /** Rows of chunks that had writes in flight at the last stop. */
  atStart(): { volume_id: number; chunk_index: number; since_ms: number }[] {
    return this.db.prepare('SELECT * FROM write_intents ORDER BY volume_id, chunk_index').all() as { volume_id: number; chunk_index: number; since_ms: number }[];
  }

  /**
   * Makes sure the chunk's write intent (and the epoch it is written at) is durable before the
   * data write. New intents of one event-loop turn are committed together: one transaction, one
   * fsync, however many chunks.
   */
  async ensure(chunk: IntentChunk, epoch: number): Promise<void> {
    const key = chunkKey(chunk.volumeId, chunk.chunkIndex);
    if (this.intents.has(key) && chunk.writtenEpoch >= epoch) return;
    const waiting = this.pending.get(key);
    if (waiting === undefined || waiting.epoch < epoch) this.pending.set(key, { chunk, epoch });
    this.commit ??= new Promise<void>((resolve, reject) => {
      setImmediate(() => {
        const batch = this.pending;
        this.pending = new Map();
        this.commit = undefined;
        try {
          const insert = this.db.prepare('INSERT OR IGNORE INTO write_intents (volume_id, chunk_index, since_ms) VALUES (?, ?, ?)');
          const written = this.db.prepare('UPDATE chunks SET written_epoch = ? WHERE volume_id = ? AND chunk_index = ? AND written_epoch < ?');
          const now = Date.now();
          this.db.transaction(() => {
            for (const item of batch.values()) {
              insert.run(item.chunk.volumeId, item.chunk.chunkIndex, now);
              written.run(item.epoch, item.chunk.volumeId, item.chunk.chunkIndex, item.epoch);
            }
          })();
          for (const [pendingKey, item] of batch) {
            this.intents.add(pendingKey);
            if (item.chunk.writtenEpoch < item.epoch) item.chunk.writtenEpoch = item.epoch;
          }
          resolve();
        } catch (error) {
          reject(error);
        }
      });
    });
    await this.commit;
  }

  /**
   * Clears the intents of chunks quiet for INTENT_QUIET_MS, after `sync` made their writes
   * durable. `chunkOf` finds a chunk record (undefined: forgotten, its intent goes too).
   */
  async clean(chunkOf: (key: string) => IntentChunk | undefined, sync: () => Promise<void>, nowMs = Date.now()): Promise<void> {
    const quietBefore = nowMs - INTENT_QUIET_MS;
    const quiet: IntentChunk[] = [];
    for (const key of this.intents) {
      const chunk = chunkOf(key);
      if (chunk === undefined) {
        this.intents.delete(key);
        continue;
      }
      if (this.suspects.has(key)) continue;
      if (chunk.writesInFlight === 0 && chunk.lastWriteMs < quietBefore) quiet.push(chunk);
    }
    if (quiet.length === 0) return;
    await sync();
    const remove = this.db.prepare('DELETE FROM write_intents WHERE volume_id = ? AND chunk_index = ?');
    this.db.transaction(() => {
      for (const chunk of quiet) {
        // A write that began during the sync keeps its intent.
        if (chunk.writesInFlight !== 0 || chunk.lastWriteMs >= quietBefore) continue;
        remove.run(chunk.volumeId, chunk.chunkIndex);
        this.intents.delete(chunkKey(chunk.volumeId, chunk.chunkIndex));
      }
    })();
  }

  /** A clean stop (nothing in flight, everything durable): every intent of this run goes. */
  clearAfterCleanStop(): void {
    if (!this.db.open) return;
    const remove = this.db.prepare('DELETE FROM write_intents WHERE volume_id = ? AND chunk_index = ?');
    this.db.transaction(() => {
      for (const key of this.intents) {
        if (this.suspects.has(key)) continue;
        const [volumeId, chunkIndex] = key.split(':').map(Number);
        remove.run(volumeId, chunkIndex);
      }
    })();
  }

  /** The chunk is forgotten here (its row is deleted by the caller's transaction). */
  forget(key: string): void {
    this.intents.delete(key);
    this.suspects.delete(key);
  }
}
