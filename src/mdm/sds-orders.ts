/**
 * Orders the MDM owes SDS (DESIGN §6): epoch installs and chunk deletions. Each is sent at once;
 * one that fails is kept in powerflex.db (sds_orders) and sent again every ORDER_RETRY_MS until
 * the SDS takes it, or it no longer matters (a newer epoch superseded it, the replica left the
 * SDS). So an epoch a survivor missed reaches it as soon as it answers again, and a deleted
 * volume's slots are freed even on an SDS that was away when it was deleted.
 */
import type { MdmContext } from './context.js';
import type { SdsControl } from './sds-control.js';
import { pushTo } from '../common/maps.js';
import { withoutSync } from './database.js';

export const ORDER_RETRY_MS = 1000;
export const EPOCHS_PER_CALL_MAX = 10_000;
export const DELETIONS_PER_CALL_MAX = 10_000;

export interface EpochOrder {
  volume_id: number;
  chunk_index: number;
  pool_id: number;
  epoch: number;
}

/**
 * A chunk an SDS must forget. With `epoch`, unless it holds the chunk at that epoch or newer (a
 * replica again meanwhile): its data goes and a record at `epoch` stays, so requests of older
 * epochs are refused, never answered with zeros.
 */
export interface ChunkDeletion {
  volume_id: number;
  chunk_index: number;
  epoch: number;
}

interface OrderRow {
  sds_id: number;
  kind: 'epoch' | 'delete';
  volume_id: number;
  chunk_index: number;
  pool_id: number;
  epoch: number | null;
  attempts: number;
}

export class SdsOrders {
  private timer: NodeJS.Timeout | undefined;
  private retrying = false;

  constructor(
    private readonly context: MdmContext,
    private readonly control: SdsControl,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.retry(), ORDER_RETRY_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  /** Orders still owed, per SDS (for status views and tests). */
  pending(): { sds_id: number; kind: string; count: number }[] {
    return this.context.db.prepare('SELECT sds_id, kind, COUNT(*) AS count FROM sds_orders GROUP BY sds_id, kind ORDER BY sds_id, kind').all() as {
      sds_id: number;
      kind: string;
      count: number;
    }[];
  }

  /**
   * Installs epochs on SDS, each SDS waiting for writes of older epochs to drain. Returns the SDS
   * where that failed now (loudly logged): their orders are kept and retried until they answer.
   */
  async installEpochs(bySds: Map<number, EpochOrder[]>): Promise<Set<number>> {
    // Owed before sent (in the caller's turn, right after its epoch bump committed): an MDM that
    // dies now finds them at restart and sends them then.
    this.oweEpochs(bySds);
    return this.sendEpochs(bySds);
  }

  /** Records epoch orders as owed (in the caller's transaction when it has one), without sending them. */
  oweEpochs(bySds: Map<number, EpochOrder[]>): void {
    for (const [sdsId, list] of bySds) this.keep(sdsId, 'epoch', list, false);
  }

  /** Sends owed epoch orders (oweEpochs); returns the SDS that did not take them (retried later). */
  async sendEpochs(bySds: Map<number, EpochOrder[]>): Promise<Set<number>> {
    const failed = new Set<number>();
    await Promise.all(
      [...bySds.entries()].map(async ([sdsId, list]) => {
        for (let start = 0; start < list.length; start += EPOCHS_PER_CALL_MAX) {
          const page = list.slice(start, start + EPOCHS_PER_CALL_MAX);
          try {
            await this.control.call(sdsId, '/chunks/epoch', { chunks: page });
            this.settle(sdsId, 'epoch', page);
          } catch (error) {
            failed.add(sdsId);
            this.keep(sdsId, 'epoch', page, true);
            this.context.log.error({ sdsId, chunks: page.length, err: (error as Error).message }, 'could not install new epochs on an SDS; retrying until it takes them');
          }
        }
      }),
    );
    return failed;
  }

  /** Tells SDS to forget chunks; what does not get through now is kept and sent again. */
  async deleteChunks(bySds: Map<number, { volume_id: number; chunk_index: number; epoch: number | null }[]>): Promise<void> {
    await Promise.all(
      [...bySds.entries()].map(async ([sdsId, chunks]) => {
        for (let start = 0; start < chunks.length; start += DELETIONS_PER_CALL_MAX) {
          const page = chunks.slice(start, start + DELETIONS_PER_CALL_MAX);
          try {
            await this.control.call(sdsId, '/chunks/delete', { chunks: page.map(deletionBody) });
            this.settle(sdsId, 'delete', page);
          } catch (error) {
            this.keep(sdsId, 'delete', page.map((chunk) => ({ ...chunk, pool_id: 0 })), true);
            this.context.log.warn({ sdsId, chunks: page.length, err: (error as Error).message }, 'could not delete chunks on an SDS; retrying until it takes them');
          }
        }
      }),
    );
  }

  /** Records deletions to send (in the caller's transaction); the retry loop delivers them. */
  queueDeletions(sdsId: number, chunks: readonly { volume_id: number; chunk_index: number; epoch: number | null }[]): void {
    this.keep(sdsId, 'delete', chunks.map((chunk) => ({ ...chunk, pool_id: 0 })), false);
  }

  /** One pass over the owed orders of every SDS that is not DOWN. */
  async retry(): Promise<void> {
    if (this.retrying) return;
    this.retrying = true;
    try {
      const { db } = this.context;
      this.dropMoot();
      const rows = db
        .prepare(`SELECT o.* FROM sds_orders o JOIN sds s ON s.id = o.sds_id WHERE s.state != 'DOWN' ORDER BY o.sds_id, o.kind, o.volume_id, o.chunk_index LIMIT ?`)
        .all(EPOCHS_PER_CALL_MAX) as OrderRow[];
      if (rows.length === 0) return;
      const epochs = new Map<number, EpochOrder[]>();
      const deletions = new Map<number, { volume_id: number; chunk_index: number; epoch: number | null }[]>();
      for (const row of rows) {
        if (row.kind === 'epoch') pushTo(epochs, row.sds_id, { volume_id: row.volume_id, chunk_index: row.chunk_index, pool_id: row.pool_id, epoch: row.epoch ?? 0 });
        else pushTo(deletions, row.sds_id, { volume_id: row.volume_id, chunk_index: row.chunk_index, epoch: row.epoch });
      }
      await this.installEpochs(epochs);
      await this.deleteChunks(deletions);
    } catch (error) {
      this.context.log.error({ err: error }, 'retrying SDS orders failed');
    } finally {
      this.retrying = false;
    }
  }

  /**
   * Epoch orders that no longer matter: the chunk is gone or moved past that epoch (the newer
   * change sent its own), or the replica is no longer current or rebuilding on that SDS.
   */
  private dropMoot(): void {
    this.context.db
      .prepare(
        `DELETE FROM sds_orders WHERE kind = 'epoch' AND NOT EXISTS (
           SELECT 1 FROM chunks c JOIN replicas r ON r.chunk_id = c.id
           WHERE c.volume_id = sds_orders.volume_id AND c.chunk_index = sds_orders.chunk_index AND c.epoch = sds_orders.epoch
             AND r.sds_id = sds_orders.sds_id AND r.state IN ('CURRENT','REBUILDING'))`,
      )
      .run();
  }

  /** Records orders as owed (`failedAttempt`: one more attempt failed). */
  private keep(sdsId: number, kind: 'epoch' | 'delete', chunks: readonly { volume_id: number; chunk_index: number; pool_id: number; epoch: number | null }[], failedAttempt: boolean): void {
    const { db } = this.context;
    const upsert = db.prepare(
      `INSERT INTO sds_orders (sds_id, kind, volume_id, chunk_index, pool_id, epoch, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (sds_id, kind, volume_id, chunk_index) DO UPDATE SET
         epoch = CASE WHEN excluded.epoch IS NULL OR sds_orders.epoch IS NULL THEN NULL ELSE MAX(sds_orders.epoch, excluded.epoch) END,
         pool_id = excluded.pool_id, attempts = sds_orders.attempts + ?`,
    );
    const now = Date.now();
    db.transaction(() => {
      for (const chunk of chunks) upsert.run(sdsId, kind, chunk.volume_id, chunk.chunk_index, chunk.pool_id, chunk.epoch, now, failedAttempt ? 1 : 0);
    })();
  }

  /**
   * Orders the SDS took: they are no longer owed (a newer epoch order stays). Settled epoch
   * orders commit without an fsync: one a power cut loses is sent again, and an SDS installs an
   * epoch only when it is newer than its own, so the repeat changes nothing (every rebuild step
   * settled an fsync'd transaction per SDS: 1 009 of them in a 1 TiB failure). A deletion's
   * settlement stays durable: a chunk of the same volume and index placed there again later must
   * never meet an old epoch-less deletion.
   */
  private settle(sdsId: number, kind: 'epoch' | 'delete', chunks: readonly { volume_id: number; chunk_index: number; epoch: number | null }[]): void {
    const { db } = this.context;
    const remove = db.prepare(
      `DELETE FROM sds_orders WHERE sds_id = ? AND kind = ? AND volume_id = ? AND chunk_index = ? AND (epoch IS ? OR epoch <= ?)`,
    );
    const work = (): void => {
      for (const chunk of chunks) remove.run(sdsId, kind, chunk.volume_id, chunk.chunk_index, chunk.epoch, chunk.epoch ?? 0);
    };
    if (kind === 'epoch') withoutSync(db, work);
    else db.transaction(work)();
  }
}

function deletionBody(chunk: { volume_id: number; chunk_index: number; epoch: number | null }): { volume_id: number; chunk_index: number; epoch?: number } {
  return chunk.epoch === null ? { volume_id: chunk.volume_id, chunk_index: chunk.chunk_index } : { volume_id: chunk.volume_id, chunk_index: chunk.chunk_index, epoch: chunk.epoch };
}
