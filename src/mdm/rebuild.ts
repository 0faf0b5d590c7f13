/**
 * The rebuilder (DESIGN §6): brings every chunk back to its pool's copy count, resyncs SDS that
 * come back, moves replicas off SDS being removed, and rebalances onto new SDS.
 *
 * One job moves one chunk replica onto one target SDS:
 *   1. begin (in Fencing's chain, so authorize waits): the target becomes a REBUILDING replica at
 *      a new epoch; the new epoch is installed on the sources, which drain writes of the old one;
 *      the target becomes a rebuild target (/chunks/rebuild). From then on every write reaches it.
 *   2. copy (outside the chain, paced by the pool's rebuild rate): the target pulls the chunk
 *      from a source with PEER_READ and writes only blocks no client write made final.
 *   3. commit (in the chain): the replica is CURRENT; a move then drops the replica it replaces
 *      at another new epoch. On any failure the REBUILDING replica is dropped instead.
 *
 * A returning SDS's stale replica of a chunk nobody wrote since the fence (the sources' written
 * epoch is not above the replica's stale epoch, and the SDS found no write intent for it) serves
 * again without a copy; the others are copied. Jobs run many-to-many: several per pool, at most
 * a few per target SDS.
 */
import type { MdmContext } from './context.js';
import type { ChunkDeletion, EpochOrder, Fencing } from './fencing.js';
import { pushTo } from './fencing.js';
import { recordEvent } from './events.js';
import { faultDomainOf, placeRebuildTarget, spreadKeyOf, type ExistingReplica } from './placement.js';
import { placementCandidates } from './capacity.js';
import { copiesOf, type PoolRow } from './rows.js';
import { removeSds } from './topology.js';
import type { PoolRebuildStatus } from '../common/rebuild-status.js';
import type { ChunkListing } from '../common/chunk-listing.js';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { RebuildQueue, SWEEP_INTERVAL_MS } from './rebuild-queue.js';
import { ChainBatch } from './chain-batch.js';

const TICK_MS = 500;
/** Passes asked for by kicks (a job finished, an SDS is draining) come at most this often. */
const KICK_GAP_MS = 100;
/**
 * Jobs run many-to-many: up to JOBS_PER_TARGET_MAX per target SDS, so a pool of more SDS rebuilds
 * more chunks at once (and a failed SDS's data comes back sooner), up to JOBS_PER_POOL_MAX.
 */
export const JOBS_PER_POOL_MAX = 256;
const JOBS_PER_POOL_MIN = 4;
const JOBS_PER_TARGET_MAX = 2;
/** Chunks a planning pass reads per query; the event loop runs between batches. */
const PLAN_BATCH_CHUNKS = 1000;
/** Chunks owed a job read at least in one go when jobs can start (about twice the free slots, at least this). */
const OWED_BATCH_CHUNKS_MIN = 64;
/** Owed batches in a row that start no job before a pass leaves the rest to the next one. */
const OWED_BATCHES_WITHOUT_JOB_MAX = 4;
/** Rebuild jobs begun (or finished) together in one chain task at most (beginMany, finishMany). */
const BEGIN_BATCH_JOBS_MAX = 256;

/** A job whose copy ended: what it copied, or why it failed. */
interface Finished {
  readonly job: Job;
  readonly copied: { copied_bytes: number; written_bytes: number };
  readonly problem: string | undefined;
}
/** A chunk listing of an SDS is reused for this long. */
const LISTING_TTL_MS = 2000;
/** The copy of one chunk gets at least this long, plus its size at 5 MB/s. */
const COPY_TIMEOUT_MS_MIN = 30_000;
/** Rebalance when the most and least used SDS differ by more than this share of the average utilization. */
const REBALANCE_SPREAD_PERCENT = 10;
/** Chunks of the most used SDS a rebalance pass looks at for one it can move. */
const REBALANCE_CANDIDATES_MAX = 256;
/** `rebuild_rate_mbps` is in MB/s. */
const BYTES_PER_MB = 1_000_000;

/**
 * rebuild: a new replica for a chunk below its copy count. resync: the target holds a replica
 * already (stale after a return, or a suspect current one with no other SDS to replace it) and
 * is copied over. move (drain), rebalance and replace (a suspect current replica, after an SDS or
 * SDC crash): a new replica, then the one it replaces is dropped.
 */
type JobKind = 'rebuild' | 'resync' | 'move' | 'rebalance' | 'replace';

interface Job {
  readonly kind: JobKind;
  readonly chunkId: number;
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly poolId: number;
  readonly chunkBytes: number;
  readonly targetSdsId: number;
  /** The replica a move or rebalance replaces: dropped after the copy. */
  readonly fromSdsId: number | undefined;
  /** The chunk's epoch when the job was planned, then the job's own. */
  epoch: number;
  sourceSdsId: number;
}

interface PoolProgress {
  startedAtMs: number;
  bytesCopied: number;
  bytesSkipped: number;
  chunksDone: number;
  chunksClean: number;
  failures: number;
}

/** One replica of a chunk of the pool, as a planning pass reads it. */
interface ReplicaRow {
  chunk_id: number;
  volume_id: number;
  chunk_index: number;
  epoch: number;
  sds_id: number;
  state: string;
  stale_epoch: number | null;
  /** Why the replica was fenced alone (an IO failure, a lost device): never resynced in place first. */
  failed_reason: string | null;
  sds_state: string;
  fault_set_id: number | null;
}

/** A stale replica that looks unchanged since its fence: it may serve again without a copy. */
interface CleanReturn {
  need: ChunkNeed;
  sdsId: number;
  staleEpoch: number;
  sourceIds: number[];
}

interface ChunkNeed {
  chunk_id: number;
  volume_id: number;
  chunk_index: number;
  epoch: number;
  pool_id: number;
}

type SdsChunk = ChunkListing;
/** What each SDS said of some chunks: SDS id -> "volume:index" -> its listing. */
type ChunkFacts = Map<number, Map<string, SdsChunk>>;

/** The replicas of these chunks, by chunk, in chunk id order. */
function replicaRowsOf(db: MdmContext['db'], chunkIds: readonly number[]): Map<number, ReplicaRow[]> {
  const rows = db
    .prepare(
      `SELECT c.id AS chunk_id, c.volume_id, c.chunk_index, c.epoch, r.sds_id, r.state, r.stale_epoch, r.failed_reason,
              s.state AS sds_state, s.fault_set_id
       FROM chunks c JOIN replicas r ON r.chunk_id = c.id JOIN sds s ON s.id = r.sds_id
       WHERE c.id IN (SELECT value FROM json_each(?)) ORDER BY c.id`,
    )
    .all(JSON.stringify(chunkIds)) as ReplicaRow[];
  const byChunk = new Map<number, ReplicaRow[]>();
  for (const row of rows) pushTo(byChunk, row.chunk_id, row);
  return byChunk;
}

export class Rebuilder {
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private kickTimer: NodeJS.Timeout | undefined;
  private lastPassMs = 0;
  private stopped = false;
  private readonly active = new Map<number, Job>();
  /** Pool id -> the owed chunk a pass that stopped early read last: the next pass reads on from there. */
  private readonly owedResumeAfter = new Map<number, number>();
  private readonly progress = new Map<number, PoolProgress>();
  private readonly lastRun = new Map<number, NonNullable<PoolRebuildStatus['last']>>();
  private readonly pending = new Map<number, { chunks: number; kind: 'rebuilding' | 'rebalancing' | 'disabled' }>();
  private readonly paceNextMs = new Map<number, number>();
  /** Each SDS's chunks that need attention (write intents, rebuilds, lost devices), as last listed. */
  private readonly listings = new Map<number, { atMs: number; chunks: Map<string, SdsChunk> }>();
  private readonly queue: RebuildQueue;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly jobsDone: Promise<void>[] = [];
  /** Jobs waiting to begin, and those whose copy ended: each lot in one chain task (chain-batch.ts). */
  private readonly begins: ChainBatch<Job, boolean>;
  private readonly finishes: ChainBatch<Finished, undefined>;
  /** Chunks an SDC may have died writing: one replica is copied again from another. */
  private readonly resyncAfterSdc = new Set<number>();
  /** SDCs lost or restarted whose chunks are to be looked at, and the round doing it (resyncAfterSdcLoss). */
  private readonly sdcLossesPending = new Set<string>();
  private sdcLossRound: Promise<void> | undefined;
  /**
   * SDS that may hold crash-time write intents (`needs_resync`): every SDS when this MDM starts,
   * and each one that registers again. Their chunk lists are read until they show none.
   */
  private readonly mayNeedResync = new Set<number>();

  constructor(
    private readonly context: MdmContext,
    private readonly fencing: Fencing,
  ) {
    this.queue = new RebuildQueue(context.db);
    this.begins = new ChainBatch((task) => fencing.serialize(task), (jobs) => this.beginMany(jobs), BEGIN_BATCH_JOBS_MAX);
    this.finishes = new ChainBatch(
      (task) => fencing.serialize(task),
      async (finished) => {
        await this.finishMany(finished);
        return finished.map(() => undefined);
      },
      BEGIN_BATCH_JOBS_MAX,
    );
  }

  /** An SDS (re)registered: it may have restarted after a crash. */
  sdsRegistered(sdsId: number): void {
    this.mayNeedResync.add(sdsId);
    this.listings.delete(sdsId); // a listing from before a restart says nothing of what it holds now
    this.kick();
  }

  start(): void {
    for (const row of this.context.db.prepare('SELECT id FROM sds').all() as { id: number }[]) this.mayNeedResync.add(row.id);
    this.timer = setInterval(() => this.pass(), TICK_MS);
    this.timer.unref();
    // What this MDM's triggers did not see (it was not running): a sweep at start, then a slow one.
    this.sweep();
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweepTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    if (this.kickTimer !== undefined) clearTimeout(this.kickTimer);
    await Promise.allSettled(this.jobsDone);
  }

  /** Reads every chunk (in pages) for any that needs work and was not queued; then a pass. */
  private sweep(): void {
    this.queue
      .sweep(() => this.stopped)
      .then(() => this.kick())
      .catch((error: unknown) => this.context.log.error({ err: error }, 'rebuild sweep failed'));
  }

  /**
   * Looks for work soon instead of at the next tick. Kicks (one per finished job) are coalesced:
   * at most one pass per KICK_GAP_MS.
   */
  kick(): void {
    if (this.stopped || this.kickTimer !== undefined) return;
    const waitMs = Math.max(0, this.lastPassMs + KICK_GAP_MS - Date.now());
    this.kickTimer = setTimeout(() => {
      this.kickTimer = undefined;
      this.pass();
    }, waitMs);
    this.kickTimer.unref();
  }

  private pass(): void {
    if (this.stopped) return;
    if (this.ticking) {
      this.kick(); // a pass is running: look again after it
      return;
    }
    this.ticking = true;
    this.lastPassMs = Date.now();
    this.tick()
      .catch((error: unknown) => this.context.log.error({ err: error }, 'rebuild pass failed'))
      .finally(() => {
        this.ticking = false;
      });
  }

  /**
   * An SDC died or restarted: a write it had in flight may have reached some replicas and not
   * others. Every chunk of its volumes with a write intent on some SDS is resynced.
   */
  resyncAfterSdcLoss(sdcName: string): void {
    // Coalesced: SDCs that register or go down while a round runs share the next one, so a
    // hundred SDCs starting together cost a few listings per SDS, not one per SDC.
    this.sdcLossesPending.add(sdcName);
    if (this.sdcLossRound !== undefined) return;
    this.sdcLossRound = (async () => {
      while (this.sdcLossesPending.size > 0) {
        const names = [...this.sdcLossesPending];
        this.sdcLossesPending.clear();
        await this.resyncAfterSdcLossRound(names);
      }
    })()
      .catch((error: unknown) => this.context.log.error({ err: error }, 'could not collect the chunks an SDC was writing'))
      .finally(() => {
        this.sdcLossRound = undefined;
        if (this.sdcLossesPending.size > 0) this.resyncAfterSdcLoss([...this.sdcLossesPending][0]!);
      });
  }

  /** One round of resyncAfterSdcLoss for these SDCs: each live SDS of their pools listed once, fresh. */
  private async resyncAfterSdcLossRound(sdcNames: readonly string[]): Promise<void> {
    const { db, log } = this.context;
    // Every live SDS of the pools of their volumes (a few rows), not every replica of the
    // volumes: each lists only its chunks with write intents, and those are the ones that matter.
    // First the (few) pools of their volumes, then their devices: both by index.
    const holdersOf = db.prepare(
      `SELECT DISTINCT d.sds_id FROM sds_devices d JOIN sds s ON s.id = d.sds_id
       WHERE s.state != 'DOWN' AND d.pool_id IN (
         SELECT DISTINCT v.pool_id FROM sdc JOIN volume_mappings m ON m.sdc_id = sdc.id JOIN volumes v ON v.id = m.volume_id WHERE sdc.name = ?)`,
    );
    const volumesOf = db.prepare(`SELECT m.volume_id FROM volume_mappings m JOIN sdc ON sdc.id = m.sdc_id WHERE sdc.name = ?`);
    const holders = new Set<number>();
    /** Volume id -> the SDCs (of this round) it is mapped to. */
    const volumes = new Map<number, string[]>();
    for (const name of sdcNames) {
      for (const row of holdersOf.all(name) as { sds_id: number }[]) holders.add(row.sds_id);
      for (const row of volumesOf.all(name) as { volume_id: number }[]) pushTo(volumes, row.volume_id, name);
    }
    if (holders.size === 0) return;
    const chunkOf = db.prepare('SELECT c.id, v.pool_id FROM chunks c JOIN volumes v ON v.id = c.volume_id WHERE c.volume_id = ? AND c.chunk_index = ?');
    const queuedBySdc = new Map<string, number>();
    for (const sdsId of holders) {
      this.listings.delete(sdsId); // listed after these SDCs went: their writes in flight show
      const listing = await this.listing(sdsId);
      for (const chunk of listing?.values() ?? []) {
        const writers = volumes.get(chunk.volume_id);
        if (!chunk.dirty || writers === undefined) continue;
        const row = chunkOf.get(chunk.volume_id, chunk.chunk_index) as { id: number; pool_id: number } | undefined;
        if (row === undefined || this.resyncAfterSdc.has(row.id)) continue;
        this.resyncAfterSdc.add(row.id);
        this.queue.watch(row.pool_id, row.id);
        for (const name of writers) queuedBySdc.set(name, (queuedBySdc.get(name) ?? 0) + 1);
      }
    }
    if (queuedBySdc.size === 0) return;
    for (const [sdcName, queued] of queuedBySdc) {
      recordEvent(db, 'warning', 'RESYNC_AFTER_SDC', `SDC ${sdcName} left or restarted: ${queued} chunk(s) it was writing are resynced`);
      log.warn({ sdc: sdcName, chunks: queued }, 'resyncing chunks an SDC was writing');
    }
    this.kick();
  }

  status(): PoolRebuildStatus[] {
    const pools = this.context.db.prepare('SELECT * FROM storage_pools ORDER BY id').all() as PoolRow[];
    const now = Date.now();
    return pools.map((pool) => {
      const progress = this.progress.get(pool.id);
      const pending = this.pending.get(pool.id);
      const activeCount = [...this.active.values()].filter((job) => job.poolId === pool.id).length;
      const remainingChunks = (pending?.chunks ?? 0) + activeCount;
      const bytesRemaining = remainingChunks * pool.chunk_size_bytes;
      const elapsedS = progress === undefined ? 0 : Math.max(0.001, (now - progress.startedAtMs) / 1000);
      const rate = progress === undefined ? 0 : Math.round(progress.bytesCopied / elapsedS);
      const done = progress === undefined ? 0 : progress.chunksDone * pool.chunk_size_bytes;
      const state = remainingChunks === 0 && progress === undefined ? 'idle' : (pending?.kind ?? 'rebuilding');
      return {
        pool_id: pool.id,
        pool: pool.name,
        state,
        chunks_pending: pending?.chunks ?? 0,
        chunks_active: activeCount,
        chunks_done: progress?.chunksDone ?? 0,
        chunks_resynced_without_copy: progress?.chunksClean ?? 0,
        bytes_remaining: bytesRemaining,
        bytes_copied: progress?.bytesCopied ?? 0,
        percent: done + bytesRemaining === 0 ? 100 : Math.floor((done / (done + bytesRemaining)) * 1000) / 10,
        rate_bytes_per_s: rate,
        rate_limit_bytes_per_s: pool.rebuild_rate_mbps * BYTES_PER_MB,
        eta_s: bytesRemaining === 0 ? 0 : rate > 0 ? Math.ceil(bytesRemaining / rate) : null,
        started_at: progress === undefined ? null : new Date(progress.startedAtMs).toISOString(),
        last: this.lastRun.get(pool.id) ?? null,
      };
    });
  }

  // ------------------------------------------------------------ planning

  private async tick(): Promise<void> {
    const { db } = this.context;
    this.queue.drain();
    await this.watchSuspects();
    const pools = db.prepare('SELECT * FROM storage_pools ORDER BY id').all() as PoolRow[];
    for (const pool of pools) {
      if (this.stopped) return;
      const jobs = await this.planPool(pool);
      for (const job of jobs) this.launch(job);
      this.finishPoolIfDone(pool);
    }
    this.completeDrains();
  }

  private async planPool(pool: PoolRow): Promise<Job[]> {
    const { db } = this.context;
    const copies = copiesOf(pool.protection_policy);
    const activeInPool = [...this.active.values()].filter((job) => job.poolId === pool.id).length;
    const perTarget = new Map<number, number>();
    for (const job of this.active.values()) perTarget.set(job.targetSdsId, (perTarget.get(job.targetSdsId) ?? 0) + 1);
    const jobs: Job[] = [];
    let pendingCount = 0;
    // With rebuild switched off the pool's needs are still counted (status shows them), but no job starts.
    const candidates = placementCandidates(db, pool, { useSpare: true });
    const candidateById = new Map(candidates.map((candidate) => [candidate.sdsId, candidate]));
    const jobsMax = Math.min(JOBS_PER_POOL_MAX, Math.max(JOBS_PER_POOL_MIN, candidates.length * JOBS_PER_TARGET_MAX));
    // Returning replicas that may need no copy: decided together, after the pass, from the SDS's own word.
    const backs: { need: ChunkNeed; back: ReplicaRow; sourceIds: number[]; source: number }[] = [];
    const freeSlots = (): number => jobsMax - activeInPool - jobs.length - backs.length;
    const targetFree = (sdsId: number): boolean => (perTarget.get(sdsId) ?? 0) < JOBS_PER_TARGET_MAX;
    /**
     * Candidates that can take one more job. With none, nothing can start whatever the slots say
     * (jobsMax counts every candidate, and some never take a job: full, or in the chunks' fault
     * sets): the 64 TiB bench read all 75k owed chunks every pass, 64 at a time with the loop run
     * between, 23 s a pass, and started jobs once a pass (4 chunks/s).
     */
    let targetsFree = candidates.filter((candidate) => targetFree(candidate.sdsId)).length;
    const busier = (sdsId: number): void => {
      const wasFree = targetFree(sdsId);
      perTarget.set(sdsId, (perTarget.get(sdsId) ?? 0) + 1);
      if (wasFree && !targetFree(sdsId) && candidateById.has(sdsId)) targetsFree -= 1;
    };
    // No candidate at all (every SDS full): a failed replica may still be resynced in place.
    const room = (): boolean => pool.rebuild_enabled === 1 && freeSlots() > 0 && (targetsFree > 0 || candidates.length === 0);
    const take = (job: Job): void => {
      jobs.push(job);
      busier(job.targetSdsId);
    };

    // Only the chunks the queue holds: those that changed, and those still owed a job.
    const watched = this.queue.chunksOf(pool.id);
    const redundantStale: { chunk_id: number; sds_id: number; volume_id: number; chunk_index: number; epoch: number }[] = [];
    const cleanReturns: CleanReturn[] = [];

    /** Reads these chunks' replicas afresh and plans each: a job, an action, or owed one. */
    const planBatch = async (batch: readonly number[]): Promise<void> => {
      const byChunk = replicaRowsOf(db, batch);
      // A chunk that is gone (its volume deleted) or has no replica left: nothing to plan.
      for (const chunkId of batch) if (!byChunk.has(chunkId)) this.queue.settle(pool.id, chunkId);
      for (const [chunkId, replicas] of byChunk) {
        // Settled unless it is still owed something below: the triggers queue it again when it changes.
        this.queue.settle(pool.id, chunkId);
        if (this.active.has(chunkId)) continue; // its job's end watches it again
        const first = replicas[0]!;
        const need: ChunkNeed = { chunk_id: chunkId, volume_id: first.volume_id, chunk_index: first.chunk_index, epoch: first.epoch, pool_id: pool.id };
        const up = (row: ReplicaRow): boolean => row.sds_state !== 'DOWN';
        const current = replicas.filter((row) => row.state === 'CURRENT' && up(row));
        const keep = current.filter((row) => row.sds_state !== 'REMOVING');
        const rebuilding = replicas.filter((row) => row.state === 'REBUILDING' && up(row));
        if (rebuilding.length > 0) {
          // No job of this MDM owns it (say, the MDM restarted mid-copy): drop it, copy again.
          for (const row of rebuilding) await this.fencing.serialize(() => this.leaveSet({ chunkId, volumeId: row.volume_id, chunkIndex: row.chunk_index, poolId: pool.id }, row.sds_id, 'REBUILDING'));
          continue;
        }
        const staleBack = replicas.filter((row) => row.state === 'STALE' && row.sds_state === 'UP');
        if (current.length === 0) continue; // lost: honest loss until a replica's SDS returns
        const missing = copies - keep.length;

        if (missing <= 0) {
          for (const row of staleBack) redundantStale.push({ chunk_id: chunkId, sds_id: row.sds_id, volume_id: row.volume_id, chunk_index: row.chunk_index, epoch: row.epoch });
          // Replicas on an SDS being removed go once enough others are current.
          const leaving = current.filter((row) => row.sds_state === 'REMOVING');
          if (leaving.length > 0 && keep.length >= copies) {
            await this.dropReplica(need, leaving[0]!.sds_id, 'drained');
          }
          // A current replica that may differ from its peers: a chunk an SDC died writing, or one
          // with a crash-time write intent on its SDS. A copy from a peer replaces it.
          let suspect: ReplicaRow | undefined;
          if (current.length >= 2 && this.resyncAfterSdc.has(chunkId)) suspect = current[current.length - 1];
          else if (current.length >= 2) {
            for (const row of current) {
              if (!this.mayNeedResync.has(row.sds_id)) continue;
              if ((await this.listing(row.sds_id))?.get(`${row.volume_id}:${row.chunk_index}`)?.needs_resync === true) suspect = row;
            }
          }
          if (suspect !== undefined) {
            pendingCount += 1;
            this.queue.owe(pool.id, chunkId);
            if (!room()) continue;
            const source = current.find((row) => row.sds_id !== suspect.sds_id)!.sds_id;
            const job = this.replacement(need, pool, replicas, candidates, targetFree, suspect.sds_id, source);
            if (job === undefined) continue;
            this.queue.settle(pool.id, chunkId);
            this.resyncAfterSdc.delete(chunkId);
            take(job);
          }
          continue;
        }

        pendingCount += 1;
        this.queue.owe(pool.id, chunkId); // owed a job: read again when one can start, or when it changes
        if (!room()) continue;
        const source = this.leastBusySource(current.map((row) => row.sds_id));
        // A returning SDS's stale replica first: maybe nothing changed and no copy is needed. Not
        // one fenced for a failure of its own (device error, no space, lost device): the chunk
        // goes to another SDS first, and back in place only where no other SDS can take it.
        const back = staleBack.find((row) => row.failed_reason === null && targetFree(row.sds_id));
        if (back !== undefined) {
          backs.push({ need, back, sourceIds: current.map((row) => row.sds_id), source });
          busier(back.sds_id);
          continue;
        }
        const existing: ExistingReplica[] = replicas
          .filter((row) => row.sds_state !== 'DOWN' || row.state === 'STALE')
          .map((row) => ({ sdsId: row.sds_id, faultSetId: row.fault_set_id }));
        const placeable = candidates.filter((candidate) => targetFree(candidate.sdsId));
        const placed = placeRebuildTarget(placeable, candidates, pool.chunk_size_bytes, existing, spreadKeyOf(need.volume_id, need.chunk_index));
        if ('wait' in placed) continue; // a target in another fault domain frees up soon: next pass
        if (!placed.ok) {
          const failedBack = staleBack.find((row) => targetFree(row.sds_id));
          if (failedBack !== undefined) take(this.job('resync', need, pool, failedBack.sds_id, source, undefined));
          continue; // else no room anywhere: stays degraded, retried next pass
        }
        const target = placed.sdsIds[0]!;
        candidateById.get(target)!.usedBytes += pool.chunk_size_bytes;
        const leaving = current.find((row) => row.sds_state === 'REMOVING');
        take(this.job(leaving === undefined ? 'rebuild' : 'move', need, pool, target, source, leaving?.sds_id));
        this.queue.settle(pool.id, chunkId);
      }
    };

    // First the chunks that changed since the last pass (every one read and judged: "every
    // affected chunk planned"), then, while jobs can start, those already known to be owed one,
    // in id order. An owed chunk is read again only when it can get a job or when it changes
    // (the triggers queue it): a pass during a 19k-chunk rebuild read all of them each time
    // (40 ms a pass at 16 TiB) to start a few dozen jobs.
    // None of them watched (watch() takes a chunk out). From where the last pass that stopped
    // early left off, round to the start: chunks no free target can take never keep the ones
    // after them waiting.
    const owedSorted = this.queue.owedOf(pool.id);
    const resumeAfter = this.owedResumeAfter.get(pool.id);
    const resumeAt = resumeAfter === undefined ? 0 : owedSorted.findIndex((chunkId) => chunkId > resumeAfter);
    const owedBefore = resumeAt <= 0 ? owedSorted : [...owedSorted.slice(resumeAt), ...owedSorted.slice(0, resumeAt)];
    for (let offset = 0; offset < watched.length; offset += PLAN_BATCH_CHUNKS) {
      if (offset > 0) await yieldToEventLoop();
      await planBatch(watched.slice(offset, offset + PLAN_BATCH_CHUNKS));
    }
    let owedUnread = 0;
    let batchesWithoutJob = 0;
    for (let next = 0; next < owedBefore.length; ) {
      // Batches that started nothing: the free targets cannot take these chunks (their fault
      // sets); the rest waits for the next pass, when more targets are free.
      if (!room() || batchesWithoutJob >= OWED_BATCHES_WITHOUT_JOB_MAX) {
        if (next > 0) this.owedResumeAfter.set(pool.id, owedBefore[next - 1]!);
        for (; next < owedBefore.length; next += 1) if (this.queue.isOwed(pool.id, owedBefore[next]!)) owedUnread += 1;
        break;
      }
      // About twice what can start now: some give no job this pass (a target that frees soon).
      const batchMax = Math.min(PLAN_BATCH_CHUNKS, Math.max(OWED_BATCH_CHUNKS_MIN, 2 * freeSlots()));
      const batch: number[] = [];
      for (; next < owedBefore.length && batch.length < batchMax; next += 1) {
        if (this.queue.isOwed(pool.id, owedBefore[next]!)) batch.push(owedBefore[next]!);
      }
      await yieldToEventLoop();
      const startedBefore = jobs.length + backs.length;
      await planBatch(batch);
      batchesWithoutJob = jobs.length + backs.length > startedBefore ? 0 : batchesWithoutJob + 1;
      if (next >= owedBefore.length) this.owedResumeAfter.delete(pool.id); // read round whole
    }
    pendingCount += owedUnread;

    // Returning replicas: clean ones serve again without a copy, the others are copied over.
    if (backs.length > 0) {
      const facts = await this.chunkFacts(backs.flatMap(({ need, back, sourceIds }) => [back.sds_id, ...sourceIds].map((sdsId) => ({ sdsId, need }))));
      for (const { need, back, sourceIds, source } of backs) {
        if (this.unchangedSinceFence(back.sds_id, back.stale_epoch, sourceIds, need, facts)) {
          cleanReturns.push({ need, sdsId: back.sds_id, staleEpoch: back.stale_epoch!, sourceIds });
          perTarget.set(back.sds_id, (perTarget.get(back.sds_id) ?? 1) - 1);
          this.queue.watch(pool.id, need.chunk_id); // until it is current again (or copied)
        } else {
          jobs.push(this.job('resync', need, pool, back.sds_id, source, undefined));
          this.queue.settle(pool.id, need.chunk_id);
        }
      }
    }

    if (redundantStale.length > 0) await this.fencing.serialize(() => this.dropStale(redundantStale));
    if (cleanReturns.length > 0) {
      await this.fencing.serialize(() => this.returnClean(pool, cleanReturns));
      pendingCount -= cleanReturns.length;
    }
    if (pendingCount === 0 && this.active.size === 0 && pool.rebalance_enabled === 1) {
      const move = this.planRebalance(pool, candidates);
      if (move !== undefined) {
        take(move);
        this.pending.set(pool.id, { chunks: 1, kind: 'rebalancing' });
        return jobs;
      }
    }
    this.pending.set(pool.id, { chunks: Math.max(0, pendingCount - jobs.length), kind: pool.rebuild_enabled === 1 ? 'rebuilding' : 'disabled' });
    return jobs;
  }

  /**
   * A job that replaces a suspect current replica: a new replica elsewhere (placement rules)
   * copied from a peer, then the suspect one dropped, so the chunk never has fewer readable
   * replicas than before. Where no other SDS can take it, the suspect replica is copied over in
   * place (it serves no reads meanwhile).
   */
  private replacement(
    need: ChunkNeed,
    pool: PoolRow,
    replicas: ReplicaRow[],
    candidates: ReturnType<typeof placementCandidates>,
    targetFree: (sdsId: number) => boolean,
    suspectSdsId: number,
    sourceSdsId: number,
  ): Job | undefined {
    const existing: ExistingReplica[] = replicas
      .filter((row) => row.sds_id !== suspectSdsId && (row.sds_state !== 'DOWN' || row.state === 'STALE'))
      .map((row) => ({ sdsId: row.sds_id, faultSetId: row.fault_set_id }));
    const holders = new Set(replicas.map((row) => row.sds_id));
    const placeable = candidates.filter((candidate) => targetFree(candidate.sdsId) && !holders.has(candidate.sdsId));
    const placed = placeRebuildTarget(placeable, candidates.filter((candidate) => !holders.has(candidate.sdsId)), pool.chunk_size_bytes, existing, spreadKeyOf(need.volume_id, need.chunk_index));
    if ('wait' in placed) return undefined;
    if (placed.ok) {
      const target = placed.sdsIds[0]!;
      const candidate = candidates.find((c) => c.sdsId === target);
      if (candidate !== undefined) candidate.usedBytes += pool.chunk_size_bytes;
      return this.job('replace', need, pool, target, sourceSdsId, suspectSdsId);
    }
    return targetFree(suspectSdsId) ? this.job('resync', need, pool, suspectSdsId, sourceSdsId, undefined) : undefined;
  }

  private job(kind: JobKind, need: ChunkNeed, pool: PoolRow, targetSdsId: number, sourceSdsId: number, fromSdsId: number | undefined): Job {
    return {
      kind,
      chunkId: need.chunk_id,
      volumeId: need.volume_id,
      chunkIndex: need.chunk_index,
      poolId: pool.id,
      chunkBytes: pool.chunk_size_bytes,
      targetSdsId,
      fromSdsId,
      epoch: need.epoch,
      sourceSdsId,
    };
  }

  private leastBusySource(sdsIds: number[]): number {
    const load = new Map<number, number>();
    for (const job of this.active.values()) load.set(job.sourceSdsId, (load.get(job.sourceSdsId) ?? 0) + 1);
    return [...sdsIds].sort((a, b) => (load.get(a) ?? 0) - (load.get(b) ?? 0) || a - b)[0]!;
  }

  /**
   * One move from the most to the least used SDS of the pool, when their utilizations differ by
   * more than REBALANCE_SPREAD_PERCENT of the average and by two chunks or more, and the move
   * keeps replicas in distinct fault domains.
   */
  private planRebalance(pool: PoolRow, candidates: ReturnType<typeof placementCandidates>): Job | undefined {
    if (candidates.length < 2) return undefined;
    const utilization = (candidate: (typeof candidates)[number]): number => (candidate.usedBytes / candidate.capacityBytes) * 100;
    const sorted = [...candidates].sort((a, b) => utilization(a) - utilization(b));
    const least = sorted[0]!;
    const most = sorted[sorted.length - 1]!;
    const average = candidates.reduce((sum, candidate) => sum + utilization(candidate), 0) / candidates.length;
    const spread = utilization(most) - utilization(least);
    // Relative to how full the pool is, and worth at least two chunks: no moves for rounding noise.
    if (spread <= (average * REBALANCE_SPREAD_PERCENT) / 100) return undefined;
    if ((spread / 100) * Math.min(most.capacityBytes, least.capacityBytes) < 2 * pool.chunk_size_bytes) return undefined;
    const leastDomain = faultDomainOf(least.sdsId, least.faultSetId);
    // Chunks on the most used SDS, whole and not on the least used one: a page of them, not all.
    const { db } = this.context;
    const movable = db
      .prepare(
        `SELECT r.chunk_id FROM replicas r WHERE r.sds_id = ? AND r.pool_id = ? AND r.state = 'CURRENT'
           AND NOT EXISTS (SELECT 1 FROM replicas o WHERE o.chunk_id = r.chunk_id AND o.sds_id = ?)
         ORDER BY r.chunk_id LIMIT ?`,
      )
      .all(most.sdsId, pool.id, least.sdsId, REBALANCE_CANDIDATES_MAX) as { chunk_id: number }[];
    for (const replicas of replicaRowsOf(db, movable.map((row) => row.chunk_id)).values()) {
      if (replicas.some((row) => row.state !== 'CURRENT' || row.sds_state !== 'UP')) continue;
      if (!replicas.some((row) => row.sds_id === most.sdsId)) continue;
      if (replicas.some((row) => row.sds_id === least.sdsId)) continue;
      const otherDomains = replicas.filter((row) => row.sds_id !== most.sdsId).map((row) => faultDomainOf(row.sds_id, row.fault_set_id));
      if (otherDomains.includes(leastDomain)) continue;
      const first = replicas[0]!;
      const source = replicas.find((row) => row.sds_id !== most.sdsId)?.sds_id ?? most.sdsId;
      return this.job('rebalance', { chunk_id: first.chunk_id, volume_id: first.volume_id, chunk_index: first.chunk_index, epoch: first.epoch, pool_id: pool.id }, pool, least.sdsId, source, most.sdsId);
    }
    return undefined;
  }

  /**
   * True when no source took a write after the replica was fenced and the returning SDS has no
   * write intent for it, as `facts` (what each SDS said of the chunk) show.
   */
  private unchangedSinceFence(sdsId: number, staleEpoch: number | null, sourceIds: number[], need: ChunkNeed, facts: ChunkFacts): boolean {
    if (staleEpoch === null) return false;
    const key = `${need.volume_id}:${need.chunk_index}`;
    const mine = facts.get(sdsId)?.get(key);
    // The returning replica took no write after its fence (it refuses newer epochs' writes anyway).
    if (mine === undefined || mine.needs_resync || mine.rebuilding || mine.lost || mine.written_epoch > staleEpoch) return false;
    for (const sourceId of sourceIds) {
      const theirs = facts.get(sourceId)?.get(key);
      if (theirs === undefined || theirs.written_epoch > staleEpoch) return false;
      // The sources hold data the returning replica does not: it never got (or lost) it.
      if (theirs.stored && !mine.stored) return false;
    }
    return true;
  }

  /**
   * What each SDS says now of the chunks asked of it (one /chunks/query per SDS). An SDS that does
   * not answer is left out: nothing it holds is taken for unchanged.
   */
  private async chunkFacts(asks: readonly { sdsId: number; need: ChunkNeed }[]): Promise<ChunkFacts> {
    const bySds = new Map<number, { volume_id: number; chunk_index: number }[]>();
    for (const { sdsId, need } of asks) pushTo(bySds, sdsId, { volume_id: need.volume_id, chunk_index: need.chunk_index });
    const facts: ChunkFacts = new Map();
    await Promise.all(
      [...bySds].map(async ([sdsId, chunks]) => {
        try {
          const known = await this.fencing.queryChunks(sdsId, chunks);
          facts.set(sdsId, new Map(known.map((chunk) => [`${chunk.volume_id}:${chunk.chunk_index}`, chunk])));
        } catch (error) {
          this.context.log.debug({ sdsId, err: (error as Error).message }, 'cannot ask an SDS about its chunks');
        }
      }),
    );
    return facts;
  }

  /**
   * An SDS's chunks that need attention (write intents, rebuilds, lost devices), from a cache of
   * LISTING_TTL_MS unless `fresh`.
   */
  private async listing(sdsId: number, fresh = false): Promise<Map<string, SdsChunk> | undefined> {
    const cached = this.listings.get(sdsId);
    if (!fresh && cached !== undefined && Date.now() - cached.atMs < LISTING_TTL_MS) return cached.chunks;
    try {
      const listed = await this.fencing.listChunksNeedingAttention(sdsId);
      const chunks = new Map(listed.map((chunk) => [`${chunk.volume_id}:${chunk.chunk_index}`, chunk]));
      this.listings.set(sdsId, { atMs: Date.now(), chunks });
      if (!listed.some((chunk) => chunk.needs_resync)) this.mayNeedResync.delete(sdsId);
      return chunks;
    } catch (error) {
      this.context.log.debug({ sdsId, err: (error as Error).message }, 'cannot list the chunks of an SDS');
      return undefined;
    }
  }

  /**
   * SDS that may hold crash-time write intents: the chunks they list as needing a resync are
   * watched, so the pass that looks at them replaces the suspect replica.
   */
  private async watchSuspects(): Promise<void> {
    const { db } = this.context;
    const chunkOf = db.prepare('SELECT c.id, v.pool_id FROM chunks c JOIN volumes v ON v.id = c.volume_id WHERE c.volume_id = ? AND c.chunk_index = ?');
    const up = db.prepare(`SELECT 1 FROM sds WHERE id = ? AND state = 'UP'`);
    for (const sdsId of [...this.mayNeedResync]) {
      if (up.get(sdsId) === undefined) continue;
      for (const chunk of (await this.listing(sdsId))?.values() ?? []) {
        if (!chunk.needs_resync) continue;
        const row = chunkOf.get(chunk.volume_id, chunk.chunk_index) as { id: number; pool_id: number } | undefined;
        if (row !== undefined) this.queue.watch(row.pool_id, row.id);
      }
    }
  }

  // ------------------------------------------------------------ membership changes

  /**
   * In the chain: stale replicas of chunks that are whole again elsewhere are forgotten here and
   * on their SDS, before any later job may make that SDS a replica of the chunk again.
   */
  private async dropStale(rows: { chunk_id: number; sds_id: number; volume_id: number; chunk_index: number; epoch: number }[]): Promise<void> {
    const { db } = this.context;
    const bySds = new Map<number, ChunkDeletion[]>();
    db.transaction(() => {
      const drop = db.prepare(`DELETE FROM replicas WHERE chunk_id = ? AND sds_id = ? AND state = 'STALE'`);
      for (const row of rows) {
        // One above the chunk's epoch: the SDS was told that epoch for its stale replica (registration,
        // a fence), and a deletion at an epoch it holds would be taken for "a replica again" and kept.
        if (drop.run(row.chunk_id, row.sds_id).changes > 0) pushTo(bySds, row.sds_id, { volume_id: row.volume_id, chunk_index: row.chunk_index, epoch: row.epoch + 1 });
      }
    })();
    for (const sdsId of bySds.keys()) this.listings.delete(sdsId);
    await this.fencing.deleteChunks(bySds);
  }

  /**
   * In the chain: stale replicas nobody wrote since their fence serve again, without a copy. The
   * cached listings that proposed them may be old, and writes to the sources go on meanwhile, so
   * the decision is made again after the sources were moved to a new epoch (which drains every
   * write of the old one), from fresh listings: a source written after the fence means a copy
   * (the next pass resyncs). The returning replica takes the new epoch before it is current, and
   * no token carries that epoch before this step ends.
   */
  private async returnClean(pool: PoolRow, returns: CleanReturn[]): Promise<void> {
    const { db } = this.context;
    const sourceOrders = new Map<number, EpochOrder[]>();
    const bumped: (CleanReturn & { epoch: number })[] = [];
    db.transaction(() => {
      const still = db.prepare(`SELECT 1 FROM replicas r JOIN chunks c ON c.id = r.chunk_id WHERE r.chunk_id = ? AND r.sds_id = ? AND r.state = 'STALE' AND c.epoch = ?`);
      for (const candidate of returns) {
        if (still.get(candidate.need.chunk_id, candidate.sdsId, candidate.need.epoch) === undefined) continue;
        const epoch = this.bumpEpoch({ chunkId: candidate.need.chunk_id, volumeId: candidate.need.volume_id, chunkIndex: candidate.need.chunk_index, poolId: pool.id }, sourceOrders);
        bumped.push({ ...candidate, epoch });
      }
    })();
    if (bumped.length === 0) return;
    const failedSources = await this.fencing.installEpochs(sourceOrders);
    // Asked again now that the sources drained every write of the old epoch.
    const facts = await this.chunkFacts(bumped.flatMap((candidate) => [candidate.sdsId, ...candidate.sourceIds].map((sdsId) => ({ sdsId, need: candidate.need }))));
    const returning = new Map<number, EpochOrder[]>();
    const clean: (CleanReturn & { epoch: number })[] = [];
    for (const candidate of bumped) {
      if (candidate.sourceIds.some((id) => failedSources.has(id))) continue;
      if (!this.unchangedSinceFence(candidate.sdsId, candidate.staleEpoch, candidate.sourceIds, candidate.need, facts)) continue;
      clean.push(candidate);
      pushTo(returning, candidate.sdsId, { volume_id: candidate.need.volume_id, chunk_index: candidate.need.chunk_index, pool_id: pool.id, epoch: candidate.epoch });
    }
    const failedReturns = await this.fencing.installEpochs(returning);
    let count = 0;
    db.transaction(() => {
      const current = db.prepare(`UPDATE replicas SET state = 'CURRENT', stale_epoch = NULL WHERE chunk_id = ? AND sds_id = ? AND state = 'STALE'`);
      const epochNow = db.prepare('SELECT epoch FROM chunks WHERE id = ?');
      for (const candidate of clean) {
        if (failedReturns.has(candidate.sdsId)) continue;
        if ((epochNow.get(candidate.need.chunk_id) as { epoch: number } | undefined)?.epoch !== candidate.epoch) continue;
        count += current.run(candidate.need.chunk_id, candidate.sdsId).changes;
      }
    })();
    for (const sdsId of [...returning.keys(), ...sourceOrders.keys()]) this.listings.delete(sdsId);
    if (count === 0) return;
    this.progressOf(pool.id).chunksClean += count;
    recordEvent(db, 'info', 'RESYNC_WITHOUT_COPY', `${count} chunk(s) of pool ${pool.name} were not written while their SDS was away: current again without a copy`, {
      poolId: pool.id,
    });
  }

  /** A replica leaves its chunk's set (drained): new epoch on the others, then the SDS forgets it. */
  private async dropReplica(need: ChunkNeed, sdsId: number, why: string): Promise<void> {
    await this.fencing.serialize(async () => {
      if (await this.leaveSet({ chunkId: need.chunk_id, volumeId: need.volume_id, chunkIndex: need.chunk_index, poolId: need.pool_id }, sdsId, 'any')) {
        this.context.log.debug({ chunk: `${need.volume_id}:${need.chunk_index}`, sdsId, why }, 'replica dropped');
      }
    });
  }

  /**
   * In the chain: a replica (of `state`, or any) leaves its chunk's set. Its row goes, the
   * chunk's epoch goes up on the replicas that stay, and its SDS forgets the chunk (best effort).
   * False when there was no such replica.
   */
  private async leaveSet(
    chunk: { chunkId: number; volumeId: number; chunkIndex: number; poolId: number },
    sdsId: number,
    state: 'REBUILDING' | 'any',
  ): Promise<boolean> {
    const { db } = this.context;
    const orders = new Map<number, EpochOrder[]>();
    let newEpoch = 0;
    const left = db.transaction(() => {
      const gone = db.prepare(`DELETE FROM replicas WHERE chunk_id = ? AND sds_id = ? AND (? = 'any' OR state = ?)`).run(chunk.chunkId, sdsId, state, state).changes;
      if (gone === 0) return false;
      newEpoch = this.bumpEpoch(chunk, orders);
      return true;
    })();
    if (!left) return false;
    await this.fencing.installEpochs(orders);
    await this.fencing.deleteChunks(new Map([[sdsId, [{ volume_id: chunk.volumeId, chunk_index: chunk.chunkIndex, epoch: newEpoch }]]]));
    this.listings.delete(sdsId);
    return true;
  }

  /**
   * Inside a transaction: the chunk's epoch goes up by one, and every SDS that must take it
   * (current replicas and rebuild targets, on SDS not DOWN) gets an order in `orders`.
   * Returns the new epoch.
   */
  private bumpEpoch(chunk: { chunkId: number; volumeId: number; chunkIndex: number; poolId: number }, orders: Map<number, EpochOrder[]>): number {
    const { db } = this.context;
    const { epoch } = db.prepare('UPDATE chunks SET epoch = epoch + 1 WHERE id = ? RETURNING epoch').get(chunk.chunkId) as { epoch: number };
    const holders = db
      .prepare(`SELECT r.sds_id FROM replicas r JOIN sds s ON s.id = r.sds_id WHERE r.chunk_id = ? AND r.state IN ('CURRENT','REBUILDING') AND s.state != 'DOWN'`)
      .all(chunk.chunkId) as { sds_id: number }[];
    for (const holder of holders) pushTo(orders, holder.sds_id, { volume_id: chunk.volumeId, chunk_index: chunk.chunkIndex, pool_id: chunk.poolId, epoch });
    return epoch;
  }

  // ------------------------------------------------------------ jobs

  private launch(job: Job): void {
    this.active.set(job.chunkId, job);
    this.progressOf(job.poolId); // starts the pool's run (and its event) with its first job
    const done = this.run(job)
      .catch((error: unknown) => this.context.log.error({ err: error, chunk: `${job.volumeId}:${job.chunkIndex}` }, 'rebuild job failed'))
      .finally(() => {
        this.active.delete(job.chunkId);
        this.queue.watch(job.poolId, job.chunkId); // done, failed or never begun: looked at again
        this.jobsDone.splice(this.jobsDone.indexOf(done), 1);
        this.kick();
      });
    this.jobsDone.push(done);
  }

  private async run(job: Job): Promise<void> {
    const begun = await this.begins.add(job);
    if (!begun) {
      this.progressOf(job.poolId).failures += 1;
      return;
    }
    await this.pace(job);
    let problem: string | undefined;
    let copied = { copied_bytes: 0, written_bytes: 0 };
    try {
      const source = this.context.db.prepare('SELECT host, data_port FROM sds WHERE id = ?').get(job.sourceSdsId) as { host: string; data_port: number };
      copied = (await this.fencing.control(
        job.targetSdsId,
        '/chunks/copy',
        {
          volume_id: job.volumeId,
          chunk_index: job.chunkIndex,
          pool_id: job.poolId,
          epoch: job.epoch,
          chunk_size_bytes: job.chunkBytes,
          source: { host: source.host, data_port: source.data_port },
        },
        COPY_TIMEOUT_MS_MIN + Math.ceil(job.chunkBytes / 5000),
      )) as typeof copied;
    } catch (error) {
      problem = (error as Error).message;
    }
    await this.finishes.add({ job, copied, problem });
  }

  /** Waits for the pool's rebuild rate: chunks start no faster than rebuild_rate_mbps allows. */
  private async pace(job: Job): Promise<void> {
    const pool = this.context.db.prepare('SELECT rebuild_rate_mbps FROM storage_pools WHERE id = ?').get(job.poolId) as { rebuild_rate_mbps: number } | undefined;
    if (pool === undefined) return;
    const now = Date.now();
    const startMs = Math.max(now, this.paceNextMs.get(job.poolId) ?? 0);
    this.paceNextMs.set(job.poolId, startMs + (job.chunkBytes / (pool.rebuild_rate_mbps * BYTES_PER_MB)) * 1000);
    if (startMs > now) await new Promise((resolve) => setTimeout(resolve, startMs - now));
  }

  /**
   * Step 1, in the chain, for every job waiting to begin (this.begins): each target joins its
   * chunk's set as REBUILDING at a new epoch (one transaction), then one epoch call per SDS and
   * one rebuild call per target. Each begin was a chain task of its own with two network calls
   * inside, so a pool rebuilt at one begin per round trip whatever its SDS count: 98 chunks/s at
   * 10, 50 and 100 SDS in the bench sweep, 8.5 chunks/s at 4 TiB when the round trips grew.
   */
  private async beginMany(jobs: readonly Job[]): Promise<boolean[]> {
    const { db } = this.context;
    const sourcesOf = db.transaction(() => jobs.map((job) => this.beginRows(job)))();
    const orders = new Map<number, EpochOrder[]>();
    jobs.forEach((job, i) => {
      for (const sdsId of sourcesOf[i] ?? []) pushTo(orders, sdsId, { volume_id: job.volumeId, chunk_index: job.chunkIndex, pool_id: job.poolId, epoch: job.epoch });
    });
    const failed = orders.size > 0 ? await this.fencing.installEpochs(orders) : new Set<number>();
    const problems = new Map<number, string>(); // index -> why the job does not begin
    jobs.forEach((job, i) => {
      const down = (sourcesOf[i] ?? []).filter((sdsId) => failed.has(sdsId));
      if (sourcesOf[i] !== undefined && down.length > 0) problems.set(i, `sources ${down.join(',')} did not take epoch ${job.epoch}`);
    });
    // One /chunks/rebuild per target for its jobs that are still on.
    const byTarget = new Map<number, number[]>();
    jobs.forEach((job, i) => {
      if (sourcesOf[i] !== undefined && !problems.has(i)) pushTo(byTarget, job.targetSdsId, i);
    });
    const sourceAddress = db.prepare('SELECT host, data_port FROM sds WHERE id = ?');
    await Promise.all(
      [...byTarget].map(async ([targetSdsId, indexes]) => {
        const chunks = indexes.map((i) => {
          const job = jobs[i]!;
          const source = sourceAddress.get(job.sourceSdsId) as { host: string; data_port: number };
          return { volume_id: job.volumeId, chunk_index: job.chunkIndex, pool_id: job.poolId, epoch: job.epoch, source };
        });
        try {
          await this.fencing.control(targetSdsId, '/chunks/rebuild', { chunks });
        } catch (error) {
          for (const i of indexes) problems.set(i, (error as Error).message);
        }
      }),
    );
    const outcomes: boolean[] = [];
    for (const [i, job] of jobs.entries()) {
      if (sourcesOf[i] === undefined) {
        outcomes.push(false); // changed since planned: next pass
        continue;
      }
      const problem = problems.get(i);
      if (problem !== undefined) {
        await this.abort(job, problem);
        outcomes.push(false);
        continue;
      }
      this.listings.delete(job.targetSdsId);
      this.context.log.debug({ kind: job.kind, chunk: `${job.volumeId}:${job.chunkIndex}`, epoch: job.epoch, target: job.targetSdsId, source: job.sourceSdsId, from: job.fromSdsId }, 'rebuild job begun');
      outcomes.push(true);
    }
    return outcomes;
  }

  /**
   * Inside beginMany's transaction: the target joins as REBUILDING and the epoch goes up, unless
   * the chunk changed since it was planned. Returns the sources that must take the new epoch.
   */
  private beginRows(job: Job): number[] | undefined {
    const { db } = this.context;
    const chunk = db.prepare('SELECT epoch FROM chunks WHERE id = ?').get(job.chunkId) as { epoch: number } | undefined;
    if (chunk === undefined || chunk.epoch !== job.epoch) return undefined; // changed since planned: next pass
    const mine = db.prepare('SELECT state FROM replicas WHERE chunk_id = ? AND sds_id = ?').get(job.chunkId, job.targetSdsId) as { state: string } | undefined;
    if (job.kind === 'resync' ? mine === undefined : mine !== undefined) return undefined;
    const sources = (
      db
        .prepare(`SELECT r.sds_id FROM replicas r JOIN sds s ON s.id = r.sds_id WHERE r.chunk_id = ? AND r.sds_id != ? AND r.state = 'CURRENT' AND s.state != 'DOWN'`)
        .all(job.chunkId, job.targetSdsId) as { sds_id: number }[]
    ).map((row) => row.sds_id);
    if (sources.length === 0) return undefined;
    if (!sources.includes(job.sourceSdsId)) job.sourceSdsId = sources[0]!;
    if (mine === undefined) {
      db.prepare(`INSERT INTO replicas (chunk_id, sds_id, pool_id, state) VALUES (?, ?, ?, 'REBUILDING')`).run(job.chunkId, job.targetSdsId, job.poolId);
    } else {
      db.prepare(`UPDATE replicas SET state = 'REBUILDING', stale_epoch = NULL, failed_reason = NULL WHERE chunk_id = ? AND sds_id = ?`).run(job.chunkId, job.targetSdsId);
    }
    db.prepare('UPDATE chunks SET epoch = epoch + 1 WHERE id = ?').run(job.chunkId);
    job.epoch = chunk.epoch + 1;
    return sources;
  }

  /**
   * Step 3, in the chain, for every job whose copy ended (this.finishes): the copied replicas are
   * current, in one transaction (a move then drops the old one); failed copies are aborted.
   */
  private async finishMany(finished: readonly Finished[]): Promise<void> {
    const { db } = this.context;
    const done = finished.filter((entry) => entry.problem === undefined);
    const committed = db.transaction(() => done.map(({ job }) => this.commitRows(job)))();
    for (const [i, { job, copied }] of done.entries()) await this.afterCommit(job, copied, committed[i]!);
    for (const { job, problem } of finished) if (problem !== undefined) await this.abort(job, problem);
  }

  /** Inside finishMany's transaction: the REBUILDING replica becomes current, unless a fence cancelled it. */
  private commitRows(job: Job): boolean {
    const { db } = this.context;
    const row = db
      .prepare(`SELECT r.state FROM replicas r JOIN chunks c ON c.id = r.chunk_id WHERE r.chunk_id = ? AND r.sds_id = ? AND c.epoch = ?`)
      .get(job.chunkId, job.targetSdsId, job.epoch) as { state: string } | undefined;
    if (row?.state !== 'REBUILDING') return false; // cancelled meanwhile (a fence): nothing to commit
    db.prepare(
      `UPDATE replicas SET state = 'CURRENT', stale_epoch = NULL,
         generation = (SELECT MAX(generation) FROM replicas WHERE chunk_id = ? AND state = 'CURRENT'),
         bytes_written = (SELECT MAX(bytes_written) FROM replicas WHERE chunk_id = ? AND state = 'CURRENT')
       WHERE chunk_id = ? AND sds_id = ?`,
    ).run(job.chunkId, job.chunkId, job.chunkId, job.targetSdsId);
    return true;
  }

  private async afterCommit(job: Job, copied: { copied_bytes: number; written_bytes: number }, committed: boolean): Promise<void> {
    this.context.log.debug({ kind: job.kind, chunk: `${job.volumeId}:${job.chunkIndex}`, epoch: job.epoch, target: job.targetSdsId, committed, copied }, 'rebuild job copied');
    if (!committed) return;
    const progress = this.progressOf(job.poolId);
    progress.chunksDone += 1;
    progress.bytesCopied += copied.copied_bytes;
    progress.bytesSkipped += copied.copied_bytes - copied.written_bytes;
    if (job.kind === 'resync') {
      // Whatever the target wrote before its crash is overwritten now: its write intent may go.
      await this.fencing.control(job.targetSdsId, '/chunks/resynced', { chunks: [{ volume_id: job.volumeId, chunk_index: job.chunkIndex }] }).catch(() => undefined);
    }
    this.listings.delete(job.targetSdsId);
    // Still in the chain: a move drops the replaced replica now.
    if (job.fromSdsId !== undefined) await this.leaveSet(job, job.fromSdsId, 'any');
  }

  /** The job failed: the REBUILDING replica goes, at a new epoch for the others. */
  private async abort(job: Job, problem: string): Promise<void> {
    this.progressOf(job.poolId).failures += 1;
    this.context.log.warn({ chunk: `${job.volumeId}:${job.chunkIndex}`, target: job.targetSdsId, problem }, 'rebuild of a chunk replica failed; it is retried');
    await this.leaveSet(job, job.targetSdsId, 'REBUILDING');
  }

  // ------------------------------------------------------------ progress and drains

  private progressOf(poolId: number): PoolProgress {
    let progress = this.progress.get(poolId);
    if (progress === undefined) {
      progress = { startedAtMs: Date.now(), bytesCopied: 0, bytesSkipped: 0, chunksDone: 0, chunksClean: 0, failures: 0 };
      this.progress.set(poolId, progress);
      const pool = this.context.db.prepare('SELECT name FROM storage_pools WHERE id = ?').get(poolId) as { name: string } | undefined;
      const pending = this.pending.get(poolId);
      recordEvent(
        this.context.db,
        'warning',
        pending?.kind === 'rebalancing' ? 'REBALANCE_STARTED' : 'REBUILD_STARTED',
        `pool ${pool?.name ?? poolId}: ${pending?.kind === 'rebalancing' ? 'rebalancing' : 'rebuilding'} started (${pending?.chunks ?? 0} chunk(s) pending)`,
        { poolId },
      );
    }
    return progress;
  }

  private finishPoolIfDone(pool: PoolRow): void {
    const progress = this.progress.get(pool.id);
    if (progress === undefined) return;
    if ((this.pending.get(pool.id)?.chunks ?? 0) > 0) return;
    if ([...this.active.values()].some((job) => job.poolId === pool.id)) return;
    this.progress.delete(pool.id);
    const seconds = Math.max(0.001, (Date.now() - progress.startedAtMs) / 1000);
    const rate = Math.round(progress.bytesCopied / seconds);
    this.lastRun.set(pool.id, {
      finished_at: new Date().toISOString(),
      chunks: progress.chunksDone + progress.chunksClean,
      bytes: progress.bytesCopied,
      seconds: Math.round(seconds * 10) / 10,
      rate_bytes_per_s: rate,
    });
    recordEvent(
      this.context.db,
      'info',
      'REBUILD_COMPLETED',
      `pool ${pool.name}: ${progress.chunksDone} chunk(s) copied (${(progress.bytesCopied / BYTES_PER_MB).toFixed(1)} MB in ${seconds.toFixed(1)} s, ` +
        `${(rate / BYTES_PER_MB).toFixed(1)} MB/s; ${(progress.bytesSkipped / BYTES_PER_MB).toFixed(1)} MB of it clients had written meanwhile, kept), ` +
        `${progress.chunksClean} current again without a copy, ${progress.failures} retried`,
      { poolId: pool.id },
    );
    this.context.log.info({ pool: pool.name, chunks: progress.chunksDone, bytes: progress.bytesCopied, seconds, rateBytesPerS: rate }, 'rebuild completed');
  }

  /** SDS being removed that hold no replica any more are removed. */
  private completeDrains(): void {
    const { db } = this.context;
    const drained = db
      .prepare(`SELECT s.id, s.name FROM sds s WHERE s.state = 'REMOVING' AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.sds_id = s.id)`)
      .all() as { id: number; name: string }[];
    for (const sds of drained) {
      removeSds(db, sds.id);
      this.listings.delete(sds.id);
      this.context.log.info({ sds: sds.name }, 'SDS drained and removed');
    }
  }
}
