/**
 * The rebuilder's work queue (issue 11): the chunks that may need a job, so a planning pass reads
 * what changed and what is still owed, never every chunk of the cluster.
 *
 * Triggers in powerflex.db (schema v6) queue a chunk whenever one of its replicas is added in a
 * state other than CURRENT, changes state or goes away, and an SDS whenever its state changes
 * (DOWN, back UP, REMOVING): every chunk it holds is looked at again. A sweep at start and every
 * SWEEP_INTERVAL_MS reads every chunk in pages, yielding between them, and watches any that is
 * short of replicas or has one that is not CURRENT or not on an UP SDS: nothing a path forgot
 * to queue stays unseen for long.
 */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Db } from './database.js';
import { copiesOf, type ProtectionPolicy } from './rows.js';
import { addTo } from '../common/maps.js';

/** Chunks read per page of a sweep; each page is one short query, the event loop runs between them. */
export const SWEEP_PAGE_CHUNKS = 5000;
export const SWEEP_INTERVAL_MS = 10 * 60_000;
/**
 * Replica rows of SDS whose state changed read in one drain (one planning pass); the rest in the
 * next passes. All 100 SDS of the 64 TiB bench changing state at once were 7.5M rows read in one
 * 26 s transaction (docs/SCALE.md, sixth round).
 */
export const DRAIN_SDS_REPLICAS_MAX = 100_000;

export class RebuildQueue {
  /** Pool id -> chunks to look at in its next planning pass. */
  private readonly watched = new Map<number, Set<number>>();
  /**
   * Pool id -> chunks looked at and owed a job that could not start yet (all jobs busy): read
   * again when one can, or watched again when they change. Never also in `watched`.
   */
  private readonly owed = new Map<number, Set<number>>();
  private sweeping: Promise<void> | undefined;
  /** SDS whose chunks are being read (drainSds), from the state they were queued in: where the next page starts. */
  private readonly sdsCursors = new Map<number, { state: string | null; poolId: number; replicaId: number }>();

  constructor(
    private readonly db: Db,
    /** Replica rows of changed SDS read per drain (tests set a few). */
    private readonly drainSdsReplicasMax = DRAIN_SDS_REPLICAS_MAX,
  ) {}

  watch(poolId: number, chunkId: number): void {
    this.owed.get(poolId)?.delete(chunkId);
    addTo(this.watched, poolId, chunkId);
  }

  /** Looked at: owed a job that cannot start yet (see `owed`). */
  owe(poolId: number, chunkId: number): void {
    this.watched.get(poolId)?.delete(chunkId);
    addTo(this.owed, poolId, chunkId);
  }

  isOwed(poolId: number, chunkId: number): boolean {
    return this.owed.get(poolId)?.has(chunkId) ?? false;
  }

  /** Nothing to do for this chunk until something changes it (a trigger queues it again). */
  settle(poolId: number, chunkId: number): void {
    this.watched.get(poolId)?.delete(chunkId);
    this.owed.get(poolId)?.delete(chunkId);
  }

  /** The chunks of a pool to look at, in id order. */
  chunksOf(poolId: number): number[] {
    return [...(this.watched.get(poolId) ?? [])].sort((a, b) => a - b);
  }

  /** The chunks of a pool owed a job, in id order. */
  owedOf(poolId: number): number[] {
    return [...(this.owed.get(poolId) ?? [])].sort((a, b) => a - b);
  }

  /** Chunks watched or owed. */
  size(poolId: number): number {
    return (this.watched.get(poolId)?.size ?? 0) + (this.owed.get(poolId)?.size ?? 0);
  }

  /** Moves what the triggers queued into the watch sets; one transaction, so nothing is lost between. */
  drain(): void {
    const { db } = this;
    // Most passes find nothing queued: two reads, no write transaction (whose commit would sync).
    const queued = db.prepare('SELECT EXISTS (SELECT 1 FROM rebuild_queue) OR EXISTS (SELECT 1 FROM rebuild_queue_sds) AS queued').get() as { queued: number };
    if (queued.queued === 0) return;
    db.transaction(() => {
      const chunks = db
        // CROSS JOIN: from the queue out. Left to choose, SQLite read every chunk of every
        // volume and looked each up in the queue (121 ms a pass at 16 TiB during a rebuild).
        .prepare(`SELECT q.chunk_id, v.pool_id FROM rebuild_queue q CROSS JOIN chunks c ON c.id = q.chunk_id CROSS JOIN volumes v ON v.id = c.volume_id`)
        .all() as { chunk_id: number; pool_id: number }[];
      for (const row of chunks) this.watch(row.pool_id, row.chunk_id);
      db.prepare('DELETE FROM rebuild_queue').run();
      this.drainSds();
    })();
  }

  /**
   * Watches the chunks of the SDS whose state changed, at most DRAIN_SDS_REPLICAS_MAX replica
   * rows a pass: an SDS stays queued (and its place is kept) until all of its rows were read.
   * One that changes state again meanwhile is read again from its start.
   */
  private drainSds(): void {
    const { db } = this;
    const queued = db.prepare('SELECT q.sds_id, s.state FROM rebuild_queue_sds q LEFT JOIN sds s ON s.id = q.sds_id ORDER BY q.sds_id').all() as { sds_id: number; state: string | null }[];
    // From the (sds_id, pool_id) index, whose rows end with the replica id: a page is a range.
    const held = db.prepare('SELECT id, chunk_id, pool_id FROM replicas WHERE sds_id = ? AND (pool_id, id) > (?, ?) ORDER BY pool_id, id LIMIT ?');
    const done = db.prepare('DELETE FROM rebuild_queue_sds WHERE sds_id = ?');
    let budget = this.drainSdsReplicasMax;
    for (const { sds_id: sdsId, state } of queued) {
      if (budget === 0) break;
      let cursor = this.sdsCursors.get(sdsId);
      if (cursor === undefined || cursor.state !== state) cursor = { state, poolId: -1, replicaId: -1 };
      const rows = held.all(sdsId, cursor.poolId, cursor.replicaId, budget) as { id: number; chunk_id: number; pool_id: number }[];
      for (const row of rows) this.watch(row.pool_id, row.chunk_id);
      if (rows.length < budget) {
        done.run(sdsId);
        this.sdsCursors.delete(sdsId);
      } else {
        const last = rows[rows.length - 1]!;
        this.sdsCursors.set(sdsId, { state, poolId: last.pool_id, replicaId: last.id });
      }
      budget -= rows.length;
    }
  }

  /**
   * Reads every chunk, a page at a time, and watches those short of replicas or with a replica
   * not CURRENT or not on an UP (or NEW) SDS. One sweep at a time; `stopped` ends it early.
   */
  sweep(stopped: () => boolean): Promise<void> {
    if (this.sweeping !== undefined) return this.sweeping;
    this.sweeping = this.sweepPages(stopped).finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  private async sweepPages(stopped: () => boolean): Promise<void> {
    const page = this.db.prepare(
      `SELECT c.id AS chunk_id, v.pool_id, p.protection_policy, COUNT(r.chunk_id) AS replicas,
              COALESCE(SUM(r.state != 'CURRENT' OR s.state NOT IN ('UP','NEW')), 0) AS unusual
       FROM chunks c JOIN volumes v ON v.id = c.volume_id JOIN storage_pools p ON p.id = v.pool_id
       LEFT JOIN replicas r ON r.chunk_id = c.id LEFT JOIN sds s ON s.id = r.sds_id
       WHERE c.id > ? GROUP BY c.id ORDER BY c.id LIMIT ?`,
    );
    let afterId = 0;
    for (;;) {
      if (stopped()) return;
      const rows = page.all(afterId, SWEEP_PAGE_CHUNKS) as { chunk_id: number; pool_id: number; protection_policy: ProtectionPolicy; replicas: number; unusual: number }[];
      for (const row of rows) {
        if (row.unusual > 0 || row.replicas < copiesOf(row.protection_policy)) this.watch(row.pool_id, row.chunk_id);
      }
      if (rows.length < SWEEP_PAGE_CHUNKS) return;
      afterId = rows[rows.length - 1]!.chunk_id;
      await yieldToEventLoop();
    }
  }
}
