/**
 * Transaction acknowledgements from SDS (`POST /io/tx/ack`), off the database's hot path
 * (issue 11): each batch is added up in memory per replica, and the sums are written in one
 * pass every TX_ACK_FLUSH_INTERVAL_MS (or sooner when TX_ACK_REPLICAS_MAX replicas are
 * waiting), in transactions of TX_ACK_FLUSH_PAGE_SUMS with the event loop running between
 * them. The counts (a replica's mutating requests and bytes, its chunk's most advanced
 * replica) are statistics for `pflex vol chunks`: an MDM that dies loses at most one interval of
 * them, never a decision, since no epoch, placement or fence depends on them.
 *
 * Also the issued-token registry: the token id of every authorization still valid, with its
 * volume, so an ack that names a token of another volume is ignored. In memory and bounded; a
 * restarted MDM knows none (the acks are still counted, as before).
 */
import type { MdmContext } from './context.js';
import { getRow } from './lookup.js';
import { withoutSync } from './database.js';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';

export const TX_ACK_FLUSH_INTERVAL_MS = 2000;
/** Replicas with sums waiting before a flush is forced. */
export const TX_ACK_REPLICAS_MAX = 100_000;
/** Replica sums written per transaction; the event loop runs between them. */
export const TX_ACK_FLUSH_PAGE_SUMS = 256;
/** Valid tokens remembered; past it the oldest are forgotten (their acks count as unknown tokens). */
export const ISSUED_TOKENS_MAX = 200_000;

interface Sum {
  sdsId: number;
  volumeId: number;
  chunkIndex: number;
  requests: number;
  bytes: number;
}

export interface TxAck {
  token_id: string;
  volume_id: number;
  chunk_index: number;
  operation: 'read' | 'write' | 'trim' | 'write_zeroes';
  requests: number;
  bytes: number;
}

export class TxAcks {
  private readonly sums = new Map<string, Sum>();
  /** Token id (hex) -> volume id and expiry, oldest first (a Map keeps insertion order). */
  private readonly issued = new Map<string, { volumeId: number; expiresAtMs: number }>();
  private timer: NodeJS.Timeout | undefined;
  private flushing = false;

  constructor(private readonly context: MdmContext) {}

  start(): void {
    this.timer = setInterval(() => this.flushPagedLogged(), TX_ACK_FLUSH_INTERVAL_MS);
    this.timer.unref();
  }

  /** Writes what is waiting; the MDM calls it once more when it stops. */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.flushLogged();
  }

  /** An authorization was issued: its token's acks belong to this volume. */
  tokenIssued(tokenIdHex: string, volumeId: number, expiresAtMs: number, nowMs = Date.now()): void {
    this.issued.set(tokenIdHex, { volumeId, expiresAtMs });
    // Forget the expired and, past the bound, the oldest: both are at the front.
    for (const [id, token] of this.issued) {
      if (token.expiresAtMs >= nowMs && this.issued.size <= ISSUED_TOKENS_MAX) break;
      this.issued.delete(id);
    }
  }

  /** Adds up a batch of an SDS's acks; acks naming a known token of another volume are ignored. */
  record(sdsName: string, acks: readonly TxAck[]): { accepted: number; ignored: number } {
    const sds = getRow<{ id: number }>(this.context.db, 'sds', sdsName);
    let accepted = 0;
    for (const ack of acks) {
      const token = this.issued.get(ack.token_id);
      if (token !== undefined && token.volumeId !== ack.volume_id) continue;
      accepted += 1;
      if (ack.operation === 'read') continue;
      const key = `${sds.id}:${ack.volume_id}:${ack.chunk_index}`;
      const sum = this.sums.get(key);
      if (sum === undefined) this.sums.set(key, { sdsId: sds.id, volumeId: ack.volume_id, chunkIndex: ack.chunk_index, requests: ack.requests, bytes: ack.bytes });
      else {
        sum.requests += ack.requests;
        sum.bytes += ack.bytes;
      }
    }
    if (this.sums.size >= TX_ACK_REPLICAS_MAX) this.flushLogged();
    return { accepted, ignored: acks.length - accepted };
  }

  /**
   * Writes every replica's sums, TX_ACK_FLUSH_PAGE_SUMS to a transaction (committed without an
   * fsync: these are statistics, see above); a replica its SDS no longer holds is skipped.
   * Synchronous: the MDM's stop uses it; the timer uses flushPaged, which yields between pages.
   */
  flush(): { applied: number; skipped: number } {
    const sums = this.take();
    let applied = 0;
    for (let start = 0; start < sums.length; start += TX_ACK_FLUSH_PAGE_SUMS) applied += this.applyPage(sums, start);
    return { applied, skipped: sums.length - applied };
  }

  /**
   * As flush, giving the event loop back between pages: 2 000 sums a flush were one 200 ms
   * transaction at 100 SDS (the 4 TiB bench), every 2 s, and heartbeats waited behind it.
   */
  async flushPaged(): Promise<{ applied: number; skipped: number }> {
    const sums = this.take();
    let applied = 0;
    for (let start = 0; start < sums.length; start += TX_ACK_FLUSH_PAGE_SUMS) {
      if (start > 0) await yieldToEventLoop();
      applied += this.applyPage(sums, start);
    }
    return { applied, skipped: sums.length - applied };
  }

  private take(): Sum[] {
    const sums = [...this.sums.values()];
    this.sums.clear();
    return sums;
  }

  private applyPage(sums: readonly Sum[], start: number): number {
    const { db } = this.context;
    const replicaOnSds = db.prepare(
      `SELECT r.id AS replica_id, c.id AS chunk_id FROM chunks c JOIN replicas r ON r.chunk_id = c.id
       WHERE c.volume_id = ? AND c.chunk_index = ? AND r.sds_id = ?`,
    );
    const bumpReplica = db.prepare('UPDATE replicas SET generation = generation + ?, bytes_written = bytes_written + ? WHERE id = ?');
    // The chunk's generation is its most advanced replica's.
    const bumpChunk = db.prepare(
      `UPDATE chunks SET generation = MAX(generation, (SELECT generation FROM replicas WHERE id = ?)),
         bytes_written = MAX(bytes_written, (SELECT bytes_written FROM replicas WHERE id = ?)) WHERE id = ?`,
    );
    let applied = 0;
    withoutSync(db, () => {
      for (const sum of sums.slice(start, start + TX_ACK_FLUSH_PAGE_SUMS)) {
        const row = replicaOnSds.get(sum.volumeId, sum.chunkIndex, sum.sdsId) as { replica_id: number; chunk_id: number } | undefined;
        if (row === undefined) continue;
        bumpReplica.run(sum.requests, sum.bytes, row.replica_id);
        bumpChunk.run(row.replica_id, row.replica_id, row.chunk_id);
        applied += 1;
      }
    });
    return applied;
  }

  private flushLogged(): void {
    try {
      this.flush();
    } catch (error) {
      this.context.log.error({ err: error }, 'writing transaction acknowledgements failed; those counts are lost');
    }
  }

  /** The timer's flush: paged; one at a time (a flush still running when the next is due is left to finish). */
  private flushPagedLogged(): void {
    if (this.flushing) return;
    this.flushing = true;
    this.flushPaged()
      .catch((error: unknown) => this.context.log.error({ err: error }, 'writing transaction acknowledgements failed; those counts are lost'))
      .finally(() => (this.flushing = false));
  }
}
