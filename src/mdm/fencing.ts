/**
 * Fencing an SDS that failed (DESIGN §6): its replicas become STALE, the epoch of every chunk it
 * held goes up by one, and the new epochs are installed on the surviving replicas before any
 * token carries them (an authorization of a chunk waits while its new epoch is installed:
 * heldIn). From then on the survivors refuse the old epoch, so a write still in flight to the
 * fenced SDS can never surface as current data.
 *
 * Triggers: the health monitor (missed heartbeats) and SDC error reports, which the MDM confirms
 * by probing the SDS's data port first.
 */
import type { MdmContext } from './context.js';
import { recordEvent } from './events.js';
import { probe, type SdsControl } from './sds-control.js';
import { pushTo } from '../common/maps.js';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { ChunkListing } from '../common/chunk-listing.js';
import type { ChunkDeletion, EpochOrder, SdsOrders } from './sds-orders.js';

export type { ChunkDeletion, EpochOrder } from './sds-orders.js';

/** Chunks one fence transaction changes at most. */
export const FENCE_PAGE_CHUNKS = 128;
/**
 * Event-loop time a fence takes before it gives the loop back (pages run back to back within
 * it). A fence yielded after every page, and a turn of a busy loop (renewals, heartbeats, copies
 * after a failure) lasted 300–500 ms, so a 37-page fence at 4 TiB took 14 s to finish while its
 * own CPU was under 1 s; every write to an affected chunk waits for the fence.
 */
export const FENCE_SLICE_MS = 40;

export class Fencing {
  /** The chain of epoch changes (fences, membership changes): one task at a time. */
  private inProgress: Promise<void> = Promise.resolve();
  /** Fences queued in the chain and not started yet, by SDS. */
  private readonly fencesWaiting = new Map<number, Promise<void>>();
  /** The recovery waiting its turn and the SDS it looks at ('all': every UP SDS). */
  private recoveryWaiting: { run: Promise<void>; scope: Set<number> | 'all' } | undefined;
  /** Chunks whose new epoch is being installed, by volume and index: until when (heldIn). */
  private readonly held = new Map<number, Map<number, Promise<void>>>();
  /** The chain task running now and the chunks it holds. */
  private task: { done: Promise<void>; holds: [number, number][] } | undefined;

  constructor(
    private readonly context: MdmContext,
    private readonly sdsControl: SdsControl,
    readonly orders: SdsOrders,
    /** Event-loop time of fence pages between yields (tests set 0: a yield after every page). */
    private readonly fenceSliceMs = FENCE_SLICE_MS,
  ) {}

  /**
   * What an authorization of these chunks must wait for first: the end of the chain task that
   * changed the epoch of one of them and has not finished installing it (or undefined: none
   * did). Synchronous, so the caller plans right after it answers undefined, in the same turn:
   *
   *     for (let wait = fencing.heldIn(v, a, n); wait !== undefined; wait = fencing.heldIn(v, a, n)) await wait;
   *
   * An authorization never waits for the chain as a whole: a fence of one SDS holds up only the
   * chunks it touched, and only while their new epochs are being installed.
   */
  heldIn(volumeId: number, chunkFirst: number, chunkCount: number): Promise<void> | undefined {
    const byIndex = this.held.get(volumeId);
    if (byIndex === undefined) return undefined;
    if (byIndex.size < chunkCount) {
      for (const [index, until] of byIndex) if (index >= chunkFirst && index < chunkFirst + chunkCount) return until;
      return undefined;
    }
    for (let index = chunkFirst; index < chunkFirst + chunkCount; index += 1) {
      const until = byIndex.get(index);
      if (until !== undefined) return until;
    }
    return undefined;
  }

  /** Chunks held (see heldIn), for status views and tests. */
  heldCount(): number {
    let count = 0;
    for (const byIndex of this.held.values()) count += byIndex.size;
    return count;
  }

  /**
   * One task of the chain: epoch changes it installs hold their chunks (heldIn) until it ends,
   * so a task that also tells a rebuild target to start (Rebuilder.begin) is whole before any
   * token names that target.
   */
  private async runTask<T>(task: () => Promise<T>): Promise<T> {
    let release!: () => void;
    const done = new Promise<void>((resolve) => (release = resolve));
    const holds: [number, number][] = [];
    this.task = { done, holds };
    try {
      return await task();
    } finally {
      this.task = undefined;
      for (const [volumeId, index] of holds) this.release(volumeId, index, done);
      release();
    }
  }

  private hold(volumeId: number, index: number, until: Promise<void>): void {
    let byIndex = this.held.get(volumeId);
    if (byIndex === undefined) {
      byIndex = new Map();
      this.held.set(volumeId, byIndex);
    }
    byIndex.set(index, until);
  }

  private release(volumeId: number, index: number, until: Promise<void>): void {
    const byIndex = this.held.get(volumeId);
    if (byIndex?.get(index) !== until) return; // held again since, by a later task
    byIndex.delete(index);
    if (byIndex.size === 0) this.held.delete(volumeId);
  }

  /**
   * Runs a change of chunk membership (rebuild targets added or dropped) in the same chain as
   * fences: one epoch change at a time; authorizations of the chunks it changes wait for it.
   */
  serialize<T>(task: () => Promise<T>): Promise<T> {
    const run = this.inProgress.then(() => this.runTask(task));
    this.inProgress = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * Fences an SDS. Idempotent: a fenced SDS has no CURRENT replica left to fence. A fence of an
   * SDS already waiting its turn is that one: a burst of reports (every SDC that had IO to a dead
   * SDS reports it) costs one fence, not one per report.
   */
  fence(sdsId: number, reason: string): Promise<void> {
    const waiting = this.fencesWaiting.get(sdsId);
    if (waiting !== undefined) return waiting;
    const run = this.inProgress
      .then(() => {
        this.fencesWaiting.delete(sdsId);
        return this.runTask(() => this.fenceNow(sdsId, reason));
      })
      .catch((error: unknown) => {
        this.context.log.error({ err: error, sdsId }, 'fencing failed');
      });
    this.fencesWaiting.set(sdsId, run);
    this.inProgress = run;
    return run;
  }

  /**
   * Honest loss, then return (DESIGN §6): a chunk with no current replica fails IO with EIO. When
   * the SDS holding its freshest stale replica (fenced at the highest epoch, so it saw every write
   * that was acknowledged) is UP again, that replica serves again at a new epoch.
   */
  recoverLost(sdsIds?: readonly number[]): Promise<void> {
    // Only an SDS that returned can serve a lost chunk again: `sdsIds` are those (the query then
    // reads their stale replicas only; at 4 TiB, every UP SDS's were 226 ms a call, each time
    // one returned). Without them, every UP SDS (the health monitor's periodic look).
    // One waiting its turn covers every later call, its scope widened: it reads the state when it runs.
    const waiting = this.recoveryWaiting;
    if (waiting !== undefined) {
      if (sdsIds === undefined) waiting.scope = 'all';
      else if (waiting.scope !== 'all') for (const sdsId of sdsIds) waiting.scope.add(sdsId);
      return waiting.run;
    }
    const entry: { run: Promise<void>; scope: Set<number> | 'all' } = { run: Promise.resolve(), scope: sdsIds === undefined ? 'all' : new Set(sdsIds) };
    entry.run = this.inProgress
      .then(() => {
        this.recoveryWaiting = undefined;
        return this.runTask(() => this.recoverLostNow(entry.scope));
      })
      .catch((error: unknown) => {
        this.context.log.error({ err: error }, 'recovering lost chunks failed');
      });
    this.recoveryWaiting = entry;
    this.inProgress = entry.run;
    return entry.run;
  }

  private async recoverLostNow(scope: Set<number> | 'all'): Promise<void> {
    const { db, log } = this.context;
    if (scope !== 'all' && scope.size === 0) return;
    const candidates = db
      .prepare(
        `SELECT c.id AS chunk_id, c.volume_id, c.chunk_index, c.epoch, r.sds_id, r.pool_id, r.stale_epoch
         FROM sds s CROSS JOIN replicas r ON r.sds_id = s.id AND r.state = 'STALE' JOIN chunks c ON c.id = r.chunk_id
         WHERE s.state = 'UP' AND r.failed_reason IS NULL ${scope === 'all' ? '' : 'AND s.id IN (SELECT value FROM json_each(?))'}
           AND NOT EXISTS (SELECT 1 FROM replicas x WHERE x.chunk_id = c.id AND x.state = 'CURRENT')
           AND r.stale_epoch = (SELECT MAX(y.stale_epoch) FROM replicas y WHERE y.chunk_id = c.id AND y.failed_reason IS NULL)
         ORDER BY c.id, r.sds_id`,
      )
      .all(...(scope === 'all' ? [] : [JSON.stringify([...scope])])) as { chunk_id: number; volume_id: number; chunk_index: number; epoch: number; sds_id: number; pool_id: number; stale_epoch: number }[];
    if (candidates.length === 0) return;
    const seen = new Set<number>();
    const bySds = new Map<number, EpochOrder[]>();
    db.transaction(() => {
      for (const row of candidates) {
        if (seen.has(row.chunk_id)) continue; // one replica per chunk is enough to serve again
        seen.add(row.chunk_id);
        db.prepare(`UPDATE replicas SET state = 'CURRENT', stale_epoch = NULL WHERE chunk_id = ? AND sds_id = ?`).run(row.chunk_id, row.sds_id);
        db.prepare(`UPDATE chunks SET epoch = epoch + 1 WHERE id = ?`).run(row.chunk_id);
        let list = bySds.get(row.sds_id);
        if (list === undefined) {
          list = [];
          bySds.set(row.sds_id, list);
        }
        list.push({ volume_id: row.volume_id, chunk_index: row.chunk_index, pool_id: row.pool_id, epoch: row.epoch + 1 });
      }
    })();
    await this.installEpochs(bySds);
    recordEvent(db, 'warning', 'CHUNKS_RECOVERED', `${seen.size} chunk(s) that had lost every replica are served again by a returning SDS`);
    log.warn({ chunks: seen.size }, 'lost chunks recovered from a returning SDS');
  }

  /**
   * An SDC could not reach an SDS. Probe it (PING on its data port); if it does not answer,
   * mark it DOWN and fence it now instead of waiting for missed heartbeats.
   */
  async reportUnreachable(sdsId: number, reporter: string, problem: string): Promise<{ fenced: boolean }> {
    const { db, log } = this.context;
    const sds = db.prepare(`SELECT id, name, host, data_port, state FROM sds WHERE id = ?`).get(sdsId) as
      | { id: number; name: string; host: string; data_port: number; state: string }
      | undefined;
    if (sds === undefined) return { fenced: false };
    if (sds.state === 'DOWN') {
      await this.fence(sds.id, 'already down');
      return { fenced: true };
    }
    if (await probe(sds.host, sds.data_port)) return { fenced: false };
    // Every SDC with IO to a dead SDS reports it at once, each probe answering after the first
    // report marked it DOWN: one SDS_DOWN, not one per report (95 events for one SDS at 64 TiB).
    const now = db.prepare(`SELECT state FROM sds WHERE id = ?`).get(sds.id) as { state: string } | undefined;
    if (now === undefined) return { fenced: false };
    if (now.state === 'DOWN') {
      await this.fence(sds.id, 'already down');
      return { fenced: true };
    }
    log.warn({ sds: sds.name, reporter, problem }, 'SDS unreachable from an SDC and does not answer a probe: DOWN');
    db.prepare(`UPDATE sds SET state = 'DOWN' WHERE id = ? AND state != 'REMOVING'`).run(sds.id);
    db.prepare(`UPDATE cluster_nodes SET status = 'DOWN' WHERE node_id = ?`).run(sds.name);
    recordEvent(db, 'error', 'SDS_DOWN', `SDS ${sds.name} unreachable (reported by ${reporter}: ${problem.slice(0, 120)}) and not answering`, {
      sdsId: sds.id,
    });
    await this.fence(sds.id, `reported by ${reporter}`);
    return { fenced: true };
  }

  private async fenceNow(sdsId: number, reason: string): Promise<void> {
    const { db, log } = this.context;
    const name = (db.prepare('SELECT name FROM sds WHERE id = ?').get(sdsId) as { name: string } | undefined)?.name ?? `#${sdsId}`;
    // Replicas an SDC fenced because this SDS did not answer were not failures of their own:
    // the whole SDS is down, and they come back like its other stale replicas (resync in place).
    db.prepare(`UPDATE replicas SET failed_reason = NULL WHERE sds_id = ? AND state = 'STALE' AND (failed_reason LIKE '% UNREACHABLE%' OR failed_reason LIKE '% TIMEOUT%')`).run(sdsId);
    // In pages of FENCE_PAGE_CHUNKS, each one transaction (stale replicas, cancelled rebuilds and
    // new epochs together) whose new epochs are held in the turn it commits, so no authorization
    // plans with one before it is installed; the loop runs after each FENCE_SLICE_MS of pages (a
    // 4 746-chunk fence was one 1 s transaction at 4 TiB, and heartbeats waited behind it). A
    // chunk not yet reached is as before the fence began: its old epoch still stands on every
    // replica. The orders are sent once at the end, one call per survivor. The chunks are listed
    // once (a page query with ORDER BY … LIMIT sorted every replica of the SDS again: 12 ms a page
    // at 4 TiB): no chain task runs meanwhile and nothing places a replica on a DOWN SDS, so the
    // list stays whole; each page reads its chunks' state afresh.
    const chunkIds = (
      db.prepare(`SELECT chunk_id FROM replicas WHERE sds_id = ? AND state IN ('CURRENT','REBUILDING') ORDER BY chunk_id`).all(sdsId) as { chunk_id: number }[]
    ).map((row) => row.chunk_id);
    const bySurvivor = new Map<number, EpochOrder[]>();
    let fenced = 0;
    let sliceStartMs = performance.now();
    for (let start = 0; start < chunkIds.length; start += FENCE_PAGE_CHUNKS) {
      if (start > 0 && performance.now() - sliceStartMs >= this.fenceSliceMs) {
        await yieldToEventLoop();
        sliceStartMs = performance.now();
      }
      const page = this.fencePage(sdsId, chunkIds.slice(start, start + FENCE_PAGE_CHUNKS));
      fenced += page.fenced;
      this.holdEpochs(page.bySurvivor);
      for (const [survivor, list] of page.bySurvivor) for (const order of list) pushTo(bySurvivor, survivor, order);
      await this.deleteChunks(page.cancelled);
    }
    await this.orders.sendEpochs(bySurvivor);
    if (fenced === 0) return;
    recordEvent(db, 'warning', 'SDS_FENCED', `SDS ${name} fenced (${reason}): ${fenced} chunk(s) now at a new epoch on their survivors`, { sdsId });
    log.warn({ sds: name, chunks: fenced, reason }, 'SDS fenced');
  }

  /**
   * One page of a fence: the SDS's current and rebuilding replicas of these chunks, read and
   * changed in one transaction.
   */
  private fencePage(sdsId: number, chunkIds: readonly number[]): { fenced: number; bySurvivor: Map<number, EpochOrder[]>; cancelled: Map<number, ChunkDeletion[]> } {
    const { db } = this.context;
    return db.transaction(() => {
      const chunks = db
        .prepare(
          // From the page's ids (CROSS JOIN keeps that order): never a scan of the SDS's replicas.
          `SELECT c.id, c.volume_id, c.chunk_index, c.epoch, r.pool_id, r.state
           FROM json_each(?) ids CROSS JOIN chunks c ON c.id = ids.value CROSS JOIN replicas r ON r.chunk_id = c.id AND r.sds_id = ?
           WHERE r.state IN ('CURRENT','REBUILDING')`,
        )
        .all(JSON.stringify(chunkIds), sdsId) as { id: number; volume_id: number; chunk_index: number; epoch: number; pool_id: number; state: string }[];
      const bySurvivor = new Map<number, EpochOrder[]>();
      const cancelled = new Map<number, ChunkDeletion[]>();
      const stale = db.prepare(`UPDATE replicas SET state = 'STALE', stale_epoch = ? WHERE chunk_id = ? AND sds_id = ?`);
      const drop = db.prepare(`DELETE FROM replicas WHERE chunk_id = ? AND sds_id = ?`);
      const bump = db.prepare(`UPDATE chunks SET epoch = epoch + 1 WHERE id = ?`);
      // The chunk's other replicas and their SDS's state, one read: whether any can take the
      // writes this one misses, and who is told the new epoch.
      const others = db.prepare(
        `SELECT r.sds_id, r.state, s.state AS sds_state FROM replicas r JOIN sds s ON s.id = r.sds_id
         WHERE r.chunk_id = ? AND r.sds_id != ? AND r.state IN ('CURRENT','REBUILDING')`,
      );
      let fenced = 0;
      for (const chunk of chunks) {
        const peers = others.all(chunk.id, sdsId) as { sds_id: number; state: string; sds_state: string }[];
        if (chunk.state === 'CURRENT' && !peers.some((peer) => peer.state === 'CURRENT' && peer.sds_state !== 'DOWN')) {
          // The last current replica: nobody can take a write it misses, so there is nothing to
          // fence. It stays current (the chunk is unavailable meanwhile) and serves again when
          // its SDS returns; rebuilds that copied from it are cancelled.
          for (const peer of peers) {
            if (peer.state !== 'REBUILDING') continue;
            drop.run(chunk.id, peer.sds_id);
            pushTo(cancelled, peer.sds_id, { volume_id: chunk.volume_id, chunk_index: chunk.chunk_index, epoch: chunk.epoch + 1 });
          }
          continue;
        }
        fenced += 1;
        // A replica still being rebuilt holds no data anyone can vouch for: it goes.
        if (chunk.state === 'REBUILDING') drop.run(chunk.id, sdsId);
        else stale.run(chunk.epoch, chunk.id, sdsId);
        bump.run(chunk.id);
        for (const other of peers) {
          if (other.state === 'REBUILDING') {
            // Its copy ran at the old epoch: cancel it; the rebuilder starts it again.
            drop.run(chunk.id, other.sds_id);
            pushTo(cancelled, other.sds_id, { volume_id: chunk.volume_id, chunk_index: chunk.chunk_index, epoch: chunk.epoch + 1 });
            continue;
          }
          pushTo(bySurvivor, other.sds_id, { volume_id: chunk.volume_id, chunk_index: chunk.chunk_index, pool_id: chunk.pool_id, epoch: chunk.epoch + 1 });
        }
      }
      // Owed in the same commit as the epochs they install (sent at the end of the fence).
      this.orders.oweEpochs(bySurvivor);
      return { fenced, bySurvivor, cancelled };
    })();
  }

  /**
   * Tells SDS to forget chunks (cancelled rebuilds, moved or stale replicas). Each deletion names
   * the chunk's new epoch: an SDS holding the chunk at that epoch or a newer one (a replica again
   * meanwhile) keeps it; otherwise its data goes and a record at that epoch stays. Delivered
   * by the order outbox (sds-orders.ts), now or when the SDS answers again.
   */
  deleteChunks(bySds: Map<number, ChunkDeletion[]>): Promise<void> {
    // Recorded now and delivered by the order outbox, never awaited here: an SDS that does not
    // answer must not hold up the chain of epoch changes (authorize waits for it).
    for (const [sdsId, chunks] of bySds) this.orders.queueDeletions(sdsId, chunks);
    if (bySds.size > 0) void this.orders.retry();
    return Promise.resolve();
  }

  /** The chunks of an SDS that need the MDM's attention (write intents, rebuilds, lost devices). */
  listChunksNeedingAttention(sdsId: number): Promise<ChunkListing[]> {
    return this.sdsControl.listChunksNeedingAttention(sdsId);
  }

  /** What an SDS knows of these chunks. */
  queryChunks(sdsId: number, chunks: readonly { volume_id: number; chunk_index: number }[]): Promise<ChunkListing[]> {
    return this.sdsControl.queryChunks(sdsId, chunks);
  }

  /** Sends an order to an SDS's control plane (POST with a JSON body, unless `method` says GET). */
  control(sdsId: number, path: string, body: unknown, timeoutMs?: number, method: 'GET' | 'POST' = 'POST'): Promise<unknown> {
    return this.sdsControl.call(sdsId, path, body, timeoutMs, method);
  }

  /**
   * Installs epochs on SDS through their control planes, each SDS waiting for writes of older
   * epochs to drain. Returns the SDS where that failed now: they refuse the new epoch's tokens
   * until it reaches them, and the order is retried until it does (or they are fenced).
   */
  installEpochs(bySds: Map<number, EpochOrder[]>): Promise<Set<number>> {
    // Held from now (the caller's turn, right after its epoch bump committed): in a chain task
    // until it ends, otherwise until this install ends.
    const installing = this.orders.installEpochs(bySds);
    this.holdEpochs(bySds, installing.then(() => undefined, () => undefined));
    return installing;
  }

  /**
   * Holds the chunks of epoch orders (heldIn): in a chain task until it ends, otherwise until
   * `installed` settles. Call in the turn their epoch bump committed.
   */
  private holdEpochs(bySds: Map<number, EpochOrder[]>, installed?: Promise<void>): void {
    const task = this.task;
    const until = task?.done ?? installed;
    if (until === undefined) throw new Error('holdEpochs outside a chain task needs the install to wait for');
    const holds: [number, number][] = [];
    for (const list of bySds.values()) {
      for (const order of list) {
        this.hold(order.volume_id, order.chunk_index, until);
        holds.push([order.volume_id, order.chunk_index]);
      }
    }
    if (task !== undefined) for (const hold of holds) task.holds.push(hold);
    else void until.then(() => holds.forEach(([volumeId, index]) => this.release(volumeId, index, until)));
  }
}

export { pushTo } from '../common/maps.js';
