/**
 * Replicas that fail alone (DESIGN §6), fenced one chunk at a time in Fencing's chain:
 *
 * - reported by an SDC: a replica could not take a write or serve a read (device error, no
 *   space, a timeout, unreachable from that SDC). It becomes STALE at a new epoch, with its
 *   reason, and the write completes on the survivors; the rebuilder copies the chunk elsewhere.
 *   The last current replica is never fenced: then the client gets the error, and since no other
 *   replica took the write either, no replica differs from another.
 * - reported by an SDS: replicas on a device that is missing or foreign (lost), and replicas with
 *   a write intent from a crash (suspect: fenced for a copy where a peer is current, trusted
 *   where none is).
 * - an SDS that registers with a new incarnation (its data dir was lost): every replica it had
 *   is lost.
 *
 * A replica fenced with a reason (failed_reason) is never made current again without a copy,
 * and is copied to another SDS first where the placement rules find one.
 */
import { z } from 'zod';
import type { MdmContext } from './context.js';
import type { Fencing } from './fencing.js';
import type { EpochOrder } from './sds-orders.js';
import { recordEvent } from './events.js';
import { pushTo } from '../common/maps.js';

export const REPLICA_REPORTS_PER_CALL_MAX = 1024;
/** An SDS an SDC cannot reach takes no new replica for this long after the last such report. */
export const UNREACHABLE_AVOID_MS = 60_000;
export const SDS_REPORT_CHUNKS_MAX = 10_000;
export const FAILURE_REASONS = ['IO_ERROR', 'NO_SPACE', 'TIMEOUT', 'UNREACHABLE', 'BUSY', 'INTERNAL'] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

const u32 = z.number().int().min(0).max(0xffffffff);

export const replicaFailureSchema = z.strictObject({
  failures: z
    .array(
      z.strictObject({
        volume_id: u32,
        chunk_index: u32,
        sds_id: u32,
        /** The epoch of the plan the failed request was sent under. */
        epoch: u32,
        reason: z.enum(FAILURE_REASONS),
        op: z.enum(['read', 'write']),
        detail: z.string().max(300).default(''),
      }),
    )
    .min(1)
    .max(REPLICA_REPORTS_PER_CALL_MAX),
});

export const sdsChunkReportSchema = z.strictObject({
  chunks: z.array(z.strictObject({ volume_id: u32, chunk_index: u32 })).min(1).max(SDS_REPORT_CHUNKS_MAX),
  reason: z.string().max(200).default(''),
});

export interface FailureOutcome {
  volume_id: number;
  chunk_index: number;
  sds_id: number;
  /** The replica is out of the chunk's set now (or was already): re-plan and write to the others. */
  fenced: boolean;
  /** The chunk's epoch now. */
  epoch: number;
  why: string;
}

interface ChunkRef {
  id: number;
  volume_id: number;
  chunk_index: number;
  epoch: number;
  pool_id: number;
}

export class ReplicaFaults {
  constructor(
    private readonly context: MdmContext,
    private readonly fencing: Fencing,
  ) {}

  /** SDC reports: each failed replica fenced alone where a peer is current. */
  reportFailures(reporter: string, input: z.infer<typeof replicaFailureSchema>): Promise<FailureOutcome[]> {
    return this.fencing.serialize(async () => {
      const outcomes: FailureOutcome[] = [];
      const orders = new Map<number, EpochOrder[]>();
      const tombstones = new Map<number, EpochOrder[]>();
      const cancelled = new Map<number, { volume_id: number; chunk_index: number; epoch: number }[]>();
      this.context.db.transaction(() => {
        for (const failure of input.failures) outcomes.push(this.failOne(failure, reporter, orders, tombstones, cancelled));
        // Dropped rebuild targets forget the chunk through the order outbox: a failed SDS may not
        // answer, and the chain must not wait for it.
        for (const [sdsId, chunks] of cancelled) this.fencing.orders.queueDeletions(sdsId, chunks);
      })();
      await this.fencing.installEpochs(orders);
      if (cancelled.size > 0) void this.fencing.orders.retry();
      // The failed SDS takes the new epoch too where it still answers, so requests of the old
      // plan still queued there are refused. Best effort and outside the chain: it may be stuck.
      void Promise.all([...tombstones.entries()].map(([sdsId, list]) => this.fencing.control(sdsId, '/chunks/epoch', { chunks: list }).catch(() => undefined)));
      return outcomes;
    });
  }

  /** An SDS's replicas on a missing or foreign device: out of their sets; returns their epochs now. */
  replicasLost(sdsId: number, input: z.infer<typeof sdsChunkReportSchema>): Promise<{ tombstones: { volume_id: number; chunk_index: number; epoch: number }[] }> {
    return this.fencing.serialize(async () => {
      const orders = new Map<number, EpochOrder[]>();
      const tombstones: { volume_id: number; chunk_index: number; epoch: number }[] = [];
      let lost = 0;
      this.context.db.transaction(() => {
        for (const chunk of input.chunks) {
          const ref = this.chunkRef(chunk.volume_id, chunk.chunk_index);
          if (ref === undefined) {
            tombstones.push({ ...chunk, epoch: 0 });
            continue;
          }
          if (this.loseReplica(ref, sdsId, `lost: ${input.reason || 'device missing or foreign'}`, orders) !== undefined) lost += 1;
          tombstones.push({ volume_id: ref.volume_id, chunk_index: ref.chunk_index, epoch: this.epochNow(ref.id) });
        }
      })();
      await this.fencing.installEpochs(orders);
      if (lost > 0) {
        const name = this.sdsName(sdsId);
        recordEvent(this.context.db, 'error', 'REPLICAS_LOST', `SDS ${name}: ${lost} replica(s) lost (${input.reason || 'device missing or foreign'}); they are rebuilt from their peers`, { sdsId });
        this.context.log.error({ sds: name, replicas: lost, reason: input.reason }, 'replicas lost on an SDS');
      }
      return { tombstones };
    });
  }

  /**
   * An SDS's chunks with crash-time write intents: where a peer replica is current, this one is
   * fenced and copied again (it may have missed or half-done writes); where none is, it is the
   * best there is and is trusted.
   */
  replicasSuspect(sdsId: number, input: z.infer<typeof sdsChunkReportSchema>): Promise<{ trusted: { volume_id: number; chunk_index: number }[]; fenced: number }> {
    return this.fencing.serialize(async () => {
      const { db } = this.context;
      const orders = new Map<number, EpochOrder[]>();
      const trusted: { volume_id: number; chunk_index: number }[] = [];
      let fenced = 0;
      db.transaction(() => {
        for (const chunk of input.chunks) {
          const ref = this.chunkRef(chunk.volume_id, chunk.chunk_index);
          const mine = ref === undefined ? undefined : this.replicaState(ref.id, sdsId);
          if (ref === undefined || mine === undefined) {
            trusted.push(chunk); // no replica of ours at the MDM: nothing to protect (garbage, collected later)
            continue;
          }
          if (mine !== 'CURRENT') continue; // stale or being rebuilt: a copy comes anyway
          if (this.livePeers(ref.id, sdsId) === 0) {
            // The best there is now. Any other current replica (on an SDS that is DOWN) may hold
            // what this one lost: from here on it differs, and is copied over, never returned as
            // it is (stale_epoch NULL never compares clean).
            const others = db
              .prepare(`UPDATE replicas SET state = 'STALE', stale_epoch = NULL WHERE chunk_id = ? AND sds_id != ? AND state = 'CURRENT'`)
              .run(ref.id, sdsId).changes;
            if (others > 0) this.bump(ref, orders);
            trusted.push(chunk);
            continue;
          }
          db.prepare(`UPDATE replicas SET state = 'STALE', stale_epoch = ? WHERE chunk_id = ? AND sds_id = ?`).run(ref.epoch, ref.id, sdsId);
          this.bump(ref, orders);
          fenced += 1;
        }
      })();
      await this.fencing.installEpochs(orders);
      if (fenced > 0) {
        recordEvent(db, 'warning', 'REPLICAS_SUSPECT', `SDS ${this.sdsName(sdsId)} restarted after a crash: ${fenced} replica(s) with writes in flight fenced for a resync`, { sdsId });
      }
      return { trusted, fenced };
    });
  }

  /**
   * In the caller's transaction (registration, in the chain): an SDS came back with a new
   * incarnation, so every replica it held is lost. Returns the epoch orders for the survivors.
   */
  incarnationLost(sdsId: number): Map<number, EpochOrder[]> {
    const orders = new Map<number, EpochOrder[]>();
    const rows = this.context.db
      .prepare(`SELECT c.id, c.volume_id, c.chunk_index, c.epoch, r.pool_id FROM replicas r JOIN chunks c ON c.id = r.chunk_id WHERE r.sds_id = ?`)
      .all(sdsId) as ChunkRef[];
    let lost = 0;
    for (const row of rows) if (this.loseReplica(row, sdsId, 'lost: the SDS came back without its state (new incarnation)', orders) === 'CURRENT') lost += 1;
    if (rows.length > 0) {
      recordEvent(this.context.db, 'error', 'SDS_STATE_LOST', `SDS ${this.sdsName(sdsId)} registered with a new incarnation: its ${rows.length} replica(s) are lost and rebuilt from their peers`, { sdsId });
      this.context.log.error({ sds: this.sdsName(sdsId), replicas: rows.length, lost }, 'SDS state lost: its replicas are rebuilt');
    }
    return orders;
  }

  // ------------------------------------------------------------ in the transaction

  private failOne(
    failure: z.infer<typeof replicaFailureSchema>['failures'][number],
    reporter: string,
    orders: Map<number, EpochOrder[]>,
    tombstones: Map<number, EpochOrder[]>,
    cancelled: Map<number, { volume_id: number; chunk_index: number; epoch: number }[]>,
  ): FailureOutcome {
    const { db, log } = this.context;
    const base = { volume_id: failure.volume_id, chunk_index: failure.chunk_index, sds_id: failure.sds_id };
    const ref = this.chunkRef(failure.volume_id, failure.chunk_index);
    if (ref === undefined) return { ...base, fenced: false, epoch: 0, why: 'no such chunk' };
    const state = this.replicaState(ref.id, failure.sds_id);
    // A write of `failure.epoch` that failed here may have reached the peers: a replica fenced at
    // that epoch or later must never return without a copy (stale_epoch below it).
    if (state === 'STALE') {
      db.prepare('UPDATE replicas SET stale_epoch = ? WHERE chunk_id = ? AND sds_id = ? AND stale_epoch >= ?').run(failure.epoch - 1, ref.id, failure.sds_id, failure.epoch);
    }
    if (ref.epoch > failure.epoch) return { ...base, fenced: true, epoch: ref.epoch, why: 'the chunk moved to a newer epoch: re-plan' };
    if (state === undefined || state === 'STALE') return { ...base, fenced: true, epoch: ref.epoch, why: 'not a replica of the chunk' };
    const why = `${failure.op} ${failure.reason}${failure.detail === '' ? '' : `: ${failure.detail}`} (reported by ${reporter})`;
    if (state === 'REBUILDING') {
      db.prepare('DELETE FROM replicas WHERE chunk_id = ? AND sds_id = ?').run(ref.id, failure.sds_id);
      const epoch = this.bump(ref, orders);
      pushTo(cancelled, failure.sds_id, { volume_id: ref.volume_id, chunk_index: ref.chunk_index, epoch });
      return { ...base, fenced: true, epoch, why: `rebuild target dropped: ${why}` };
    }
    if (this.livePeers(ref.id, failure.sds_id) === 0) {
      // The last current replica: nobody could take a write it misses. Rebuild targets of the
      // chunk go (they may have taken a write this replica did not), and the client gets the error.
      const targets = db.prepare(`SELECT sds_id FROM replicas WHERE chunk_id = ? AND state = 'REBUILDING'`).all(ref.id) as { sds_id: number }[];
      if (targets.length === 0) return { ...base, fenced: false, epoch: ref.epoch, why: 'the last current replica is never fenced' };
      db.prepare(`DELETE FROM replicas WHERE chunk_id = ? AND state = 'REBUILDING'`).run(ref.id);
      const epoch = this.bump(ref, orders);
      for (const target of targets) pushTo(cancelled, target.sds_id, { volume_id: ref.volume_id, chunk_index: ref.chunk_index, epoch });
      return { ...base, fenced: false, epoch, why: 'the last current replica is never fenced; its rebuild targets were dropped' };
    }
    // stale_epoch one below: the failed write (of this epoch) may have reached the peers.
    db.prepare(`UPDATE replicas SET state = 'STALE', stale_epoch = ?, failed_reason = ? WHERE chunk_id = ? AND sds_id = ?`).run(ref.epoch - 1, why.slice(0, 400), ref.id, failure.sds_id);
    const epoch = this.bump(ref, orders);
    if (failure.reason === 'TIMEOUT' || failure.reason === 'UNREACHABLE') {
      // The rebuilder and thin placement would put replicas right back where the SDC cannot reach.
      db.prepare('UPDATE sds SET avoid_until_ms = ? WHERE id = ?').run(Date.now() + UNREACHABLE_AVOID_MS, failure.sds_id);
    }
    pushTo(tombstones, failure.sds_id, { volume_id: ref.volume_id, chunk_index: ref.chunk_index, pool_id: ref.pool_id, epoch });
    const name = this.sdsName(failure.sds_id);
    recordEvent(db, 'warning', 'REPLICA_FENCED', `replica of chunk ${ref.volume_id}:${ref.chunk_index} on SDS ${name} fenced at epoch ${epoch}: ${why}`.slice(0, 500), {
      sdsId: failure.sds_id,
      volumeId: ref.volume_id,
    });
    log.warn({ chunk: `${ref.volume_id}:${ref.chunk_index}`, sds: name, epoch, why }, 'replica fenced');
    return { ...base, fenced: true, epoch, why };
  }

  /**
   * The replica of `ref` on `sdsId` is gone: STALE with a reason (or dropped, if it was a
   * target). Returns the state it had, undefined when the SDS held no replica of the chunk.
   */
  private loseReplica(ref: ChunkRef, sdsId: number, why: string, orders: Map<number, EpochOrder[]>): string | undefined {
    const { db } = this.context;
    const state = this.replicaState(ref.id, sdsId);
    if (state === undefined) return undefined;
    if (state === 'REBUILDING') {
      db.prepare('DELETE FROM replicas WHERE chunk_id = ? AND sds_id = ?').run(ref.id, sdsId);
      this.bump(ref, orders);
    } else if (state === 'STALE') {
      db.prepare('UPDATE replicas SET failed_reason = ? WHERE chunk_id = ? AND sds_id = ?').run(why, ref.id, sdsId);
    } else {
      db.prepare(`UPDATE replicas SET state = 'STALE', stale_epoch = ?, failed_reason = ? WHERE chunk_id = ? AND sds_id = ?`).run(this.epochNow(ref.id), why, ref.id, sdsId);
      this.bump(ref, orders);
    }
    return state;
  }

  /** The chunk's epoch + 1, with orders for every holder that must take it (current and rebuilding, not DOWN). */
  private bump(ref: ChunkRef, orders: Map<number, EpochOrder[]>): number {
    const { db } = this.context;
    const { epoch } = db.prepare('UPDATE chunks SET epoch = epoch + 1 WHERE id = ? RETURNING epoch').get(ref.id) as { epoch: number };
    const holders = db
      .prepare(`SELECT r.sds_id, r.pool_id FROM replicas r JOIN sds s ON s.id = r.sds_id WHERE r.chunk_id = ? AND r.state IN ('CURRENT','REBUILDING') AND s.state != 'DOWN'`)
      .all(ref.id) as { sds_id: number; pool_id: number }[];
    for (const holder of holders) pushTo(orders, holder.sds_id, { volume_id: ref.volume_id, chunk_index: ref.chunk_index, pool_id: holder.pool_id, epoch });
    return epoch;
  }

  private chunkRef(volumeId: number, chunkIndex: number): ChunkRef | undefined {
    return this.context.db
      .prepare(`SELECT c.id, c.volume_id, c.chunk_index, c.epoch, v.pool_id FROM chunks c JOIN volumes v ON v.id = c.volume_id WHERE c.volume_id = ? AND c.chunk_index = ?`)
      .get(volumeId, chunkIndex) as ChunkRef | undefined;
  }

  private epochNow(chunkId: number): number {
    return (this.context.db.prepare('SELECT epoch FROM chunks WHERE id = ?').get(chunkId) as { epoch: number }).epoch;
  }

  private replicaState(chunkId: number, sdsId: number): string | undefined {
    return (this.context.db.prepare('SELECT state FROM replicas WHERE chunk_id = ? AND sds_id = ?').get(chunkId, sdsId) as { state: string } | undefined)?.state;
  }

  /** Current replicas of the chunk on other SDS that are not DOWN. */
  private livePeers(chunkId: number, sdsId: number): number {
    return (
      this.context.db
        .prepare(`SELECT COUNT(*) AS n FROM replicas r JOIN sds s ON s.id = r.sds_id WHERE r.chunk_id = ? AND r.sds_id != ? AND r.state = 'CURRENT' AND s.state != 'DOWN'`)
        .get(chunkId, sdsId) as { n: number }
    ).n;
  }

  private sdsName(sdsId: number): string {
    return (this.context.db.prepare('SELECT name FROM sds WHERE id = ?').get(sdsId) as { name: string } | undefined)?.name ?? `#${sdsId}`;
  }
}
