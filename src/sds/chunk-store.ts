/**
 * The chunk store: which chunk lives in which slot of which device (sds_local.db), and the IO on
 * them. IO goes through the native addon with O_DIRECT, page-aligned; unaligned IO becomes an
 * aligned read-modify-write under a range lock. A slot is zeroed (durably) before it is given to
 * a chunk, so a reused slot never shows old bytes, not even after a power cut.
 *
 * The concerns around it each have their module: devices, superblocks and sync generations
 * (device-set.ts), write intents and suspect chunks (write-intents.ts), rebuild sessions
 * (rebuild-session.ts), the fault-injection layer (device-faults.ts).
 *
 * A chunk whose device is missing or foreign is LOST here: it never serves, reads and writes fail
 * with ENODEV, and the SDS reports it so the MDM rebuilds it from a peer.
 */
import type { Logger } from '../common/logger.js';
import type { SdsDb } from './sds-database.js';
import * as nativeIo from './native-io.js';
import { AlignedBufferPool, ALIGNMENT_BYTES, alignDown, alignUp } from './aligned-buffers.js';
import { RangeLock } from '../common/range-lock.js';
import { RebuildSession, type BlockPuller } from './rebuild-session.js';
import type { DeviceIo } from './device-io.js';
import { DeviceSet, type Device, type DeviceSpec, type SdsIdentity } from './device-set.js';
import { FaultyDeviceIo, type PowerCutReport } from './device-faults.js';
import type { Faults } from './fault-config.js';
import { ChunkStoreError, ERRNO_ENODEV, ERRNO_EIO } from './store-errors.js';
import { chunkKey, INTENT_QUIET_MS, WriteIntents } from './write-intents.js';
import type { ChunkListing } from '../common/chunk-listing.js';

export { ChunkStoreError } from './store-errors.js';
export { DEVICES_MAX, type DeviceSpec, type SdsIdentity } from './device-set.js';
export { INTENT_QUIET_MS, chunkKey } from './write-intents.js';

const REBUILD_DRAIN_TIMEOUT_MS = 4000;
/**
 * A record without data (a tombstone, or an epoch installed on a replica never written) may go
 * once no token of an older epoch can still be valid: tokens live at most an hour (the MDM's
 * --token-ttl-ms limit), so twice that.
 */
export const TOMBSTONE_AGE_MS = 2 * 3_600_000;
/** A stopping SDS waits this long for running writes before it closes its devices. */
const CLOSE_DRAIN_MS = 5000;

interface ChunkEntry {
  readonly volumeId: number;
  readonly chunkIndex: number;
  readonly poolId: number;
  epoch: number;
  deviceId: number | null;
  slotIndex: number | null;
  writesInFlight: number;
  /** Mutations in flight by the epoch they were admitted at: fencing waits for the older ones. */
  writesByEpoch: Map<number, number>;
  lastWriteMs: number;
  /** The highest epoch a mutation was applied at (persisted). */
  writtenEpoch: number;
  /** Set while a slot is being given to this chunk, so concurrent first writes share it. */
  allocating: Promise<void> | undefined;
  /** Set while this replica is being rebuilt: reads are refused, copies fill invalid blocks. */
  rebuild: RebuildSession | undefined;
  /** Its device is missing or foreign: the replica here is gone and must never serve. */
  lost: boolean;
}

function newEntry(volumeId: number, chunkIndex: number, poolId: number, epoch: number): ChunkEntry {
  return {
    volumeId,
    chunkIndex,
    poolId,
    epoch,
    deviceId: null,
    slotIndex: null,
    writesInFlight: 0,
    writesByEpoch: new Map(),
    lastWriteMs: 0,
    writtenEpoch: 0,
    allocating: undefined,
    rebuild: undefined,
    lost: false,
  };
}

function noop(): void {}

export interface ChunkStoreOptions {
  /** The fault-injection switchboard (tests): device IO then goes through FaultyDeviceIo. */
  readonly faults?: Faults;
}

export type { ChunkListing } from '../common/chunk-listing.js';

export class ChunkStore {
  private readonly chunks = new Map<string, ChunkEntry>();
  private readonly intents: WriteIntents;
  private readonly devices: DeviceSet;
  private readonly buffers = new AlignedBufferPool();
  private readonly locks = new RangeLock();
  /** Data-plane IO (pread, pwrite, fdatasync, zeroRange): batched completions, io_uring or its own threads. */
  private readonly io: DeviceIo;
  private readonly faultyIo: FaultyDeviceIo | undefined;
  private identity: SdsIdentity | undefined;
  private cleaner: NodeJS.Timeout | undefined;
  /** Waiters for mutations older than an epoch to finish, per chunk key. */
  private readonly drainWaiters = new Map<string, { epoch: number; resolve: () => void }[]>();

  constructor(
    private readonly db: SdsDb,
    private readonly log: Logger,
    options: ChunkStoreOptions = {},
  ) {
    const queue = new nativeIo.IoQueue({ threads: nativeIo.ioQueueThreadsFromEnv(), backend: nativeIo.ioQueueBackendFromEnv() });
    this.faultyIo = options.faults === undefined ? undefined : new FaultyDeviceIo(queue, options.faults, log);
    this.io = this.faultyIo ?? queue;
    this.devices = new DeviceSet(db, this.io, log, (fd, mdmDeviceId) => this.faultyIo?.registerFd(fd, mdmDeviceId));
    this.intents = new WriteIntents(db);
    this.log.info({ backend: this.io.backend, threads: this.io.threads, io_uring: queue.ioUring }, 'device IO queue started');
  }

  // ------------------------------------------------------------ identity and devices

  /** Who this SDS is, for the superblocks it writes and checks (known after its first registration). */
  setIdentity(identity: SdsIdentity): void {
    this.identity = identity;
  }

  /**
   * Attaches a device the MDM assigned (idempotent). A device this SDS formatted before but cannot
   * use now is reported (deviceReport) and its chunks are lost here; a new device that belongs to
   * someone else throws ChunkStoreError NO_DEVICE.
   */
  attachDevice(spec: DeviceSpec): void {
    this.devices.attach(spec, this.identity);
  }

  /** Attaches every device sds_local.db knows (at start, before the MDM is reached). */
  attachKnownDevices(): void {
    for (const spec of this.devices.knownSpecs()) this.devices.attach(spec, this.identity);
  }

  /** Loads chunk records and intents after the devices are attached. */
  loadChunks(): void {
    const rows = this.db.prepare('SELECT * FROM chunks').all() as {
      volume_id: number;
      chunk_index: number;
      pool_id: number;
      epoch: number;
      device_id: number | null;
      slot_index: number | null;
      written_epoch: number;
      rebuilding: number;
    }[];
    const lostDevices = this.devices.lostDeviceIds();
    for (const row of rows) {
      const entry = newEntry(row.volume_id, row.chunk_index, row.pool_id, row.epoch);
      entry.deviceId = row.device_id;
      entry.slotIndex = row.slot_index;
      entry.writtenEpoch = row.written_epoch;
      entry.lost = row.device_id !== null && (lostDevices.has(row.device_id) || this.devices.get(row.device_id) === undefined);
      // A rebuild cut short by a restart: never serve the partial copy; the MDM starts it again.
      if (row.rebuilding !== 0) entry.rebuild = new RebuildSession(this.devices.slotBytesOf(row.pool_id) ?? ALIGNMENT_BYTES, undefined);
      this.chunks.set(chunkKey(row.volume_id, row.chunk_index), entry);
    }
    this.intents.load();
    const lost = this.lostChunks().length;
    if (lost > 0) this.log.error({ chunks: lost }, 'chunks on missing or foreign devices are lost here; the MDM rebuilds them from their peers');
  }

  /** The MDM resynced these chunks, or trusts this replica: their crash-time intents stop mattering. */
  clearResynced(chunks: readonly { volume_id: number; chunk_index: number }[]): number {
    return this.intents.clearSuspects(chunks);
  }

  /** Chunks with write intents found at start: they may differ from their peers. */
  intentsAtStart(): { volume_id: number; chunk_index: number; since_ms: number }[] {
    return this.intents.atStart();
  }

  /** Chunks with crash-time intents the MDM has not decided on yet. */
  suspectChunks(): { volume_id: number; chunk_index: number }[] {
    return this.intents.suspectList();
  }

  /** Chunks whose device is missing or foreign. */
  lostChunks(): { volume_id: number; chunk_index: number; epoch: number }[] {
    const lost: { volume_id: number; chunk_index: number; epoch: number }[] = [];
    for (const entry of this.chunks.values()) if (entry.lost) lost.push({ volume_id: entry.volumeId, chunk_index: entry.chunkIndex, epoch: entry.epoch });
    return lost;
  }

  startIntentCleaner(): void {
    this.cleaner = setInterval(() => {
      this.intents.clean((key) => this.chunks.get(key), () => this.flush()).catch((error: unknown) => this.log.error({ err: error }, 'write-intent cleaner failed'));
    }, INTENT_QUIET_MS);
    this.cleaner.unref();
  }

  // ------------------------------------------------------------ chunk records

  /**
   * The chunk size of a chunk this SDS has a record of (its pool's slot size), or undefined for
   * a chunk it never heard of.
   */
  chunkSizeOf(volumeId: number, chunkIndex: number): number | undefined {
    const entry = this.chunks.get(chunkKey(volumeId, chunkIndex));
    if (entry === undefined) return undefined;
    return this.devices.slotBytesOf(entry.poolId);
  }

  /** True while this replica is being rebuilt: it must not serve reads. */
  isRebuilding(volumeId: number, chunkIndex: number): boolean {
    return this.chunks.get(chunkKey(volumeId, chunkIndex))?.rebuild !== undefined;
  }

  /** True for a chunk with a crash-time write intent the MDM has not decided on: no reads. */
  isSuspect(volumeId: number, chunkIndex: number): boolean {
    return this.intents.isSuspect(chunkKey(volumeId, chunkIndex));
  }

  isLost(volumeId: number, chunkIndex: number): boolean {
    return this.chunks.get(chunkKey(volumeId, chunkIndex))?.lost === true;
  }

  epochOf(volumeId: number, chunkIndex: number): number | undefined {
    return this.chunks.get(chunkKey(volumeId, chunkIndex))?.epoch;
  }

  /**
   * Records (or creates the record of) a chunk's epoch: the MDM's fencing, or a first token.
   * Epochs only grow: a lower epoch than the one held is refused (false) and changes nothing.
   */
  setEpoch(volumeId: number, chunkIndex: number, poolId: number, epoch: number): boolean {
    const key = chunkKey(volumeId, chunkIndex);
    const entry = this.chunks.get(key);
    if (entry === undefined) {
      this.db.prepare('INSERT INTO chunks (volume_id, chunk_index, pool_id, epoch) VALUES (?, ?, ?, ?)').run(volumeId, chunkIndex, poolId, epoch);
      this.chunks.set(key, newEntry(volumeId, chunkIndex, poolId, epoch));
      return true;
    }
    if (epoch < entry.epoch) return false;
    if (entry.epoch === epoch) return true;
    this.db
      .prepare(`UPDATE chunks SET epoch = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE volume_id = ? AND chunk_index = ? AND epoch < ?`)
      .run(epoch, volumeId, chunkIndex, epoch);
    entry.epoch = epoch;
    return true;
  }

  /**
   * setEpoch for many chunks in one transaction (one fsync); memory follows only once it is
   * committed, so a failed commit changes nothing. Returns the chunks refused as lower.
   */
  setEpochs(chunks: readonly { volume_id: number; chunk_index: number; pool_id: number; epoch: number }[]): { volume_id: number; chunk_index: number; epoch: number; held: number }[] {
    const refused: { volume_id: number; chunk_index: number; epoch: number; held: number }[] = [];
    const changes = new Map<string, { volumeId: number; chunkIndex: number; poolId: number; epoch: number; isNew: boolean }>();
    for (const chunk of chunks) {
      const key = chunkKey(chunk.volume_id, chunk.chunk_index);
      const held = changes.get(key)?.epoch ?? this.chunks.get(key)?.epoch;
      if (held !== undefined && chunk.epoch < held) {
        refused.push({ volume_id: chunk.volume_id, chunk_index: chunk.chunk_index, epoch: chunk.epoch, held });
        continue;
      }
      if (held === chunk.epoch) continue;
      changes.set(key, { volumeId: chunk.volume_id, chunkIndex: chunk.chunk_index, poolId: chunk.pool_id, epoch: chunk.epoch, isNew: !this.chunks.has(key) });
    }
    const insert = this.db.prepare('INSERT INTO chunks (volume_id, chunk_index, pool_id, epoch) VALUES (?, ?, ?, ?)');
    const update = this.db.prepare(`UPDATE chunks SET epoch = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE volume_id = ? AND chunk_index = ? AND epoch < ?`);
    this.db.transaction(() => {
      for (const change of changes.values()) {
        if (change.isNew) insert.run(change.volumeId, change.chunkIndex, change.poolId, change.epoch);
        else update.run(change.epoch, change.volumeId, change.chunkIndex, change.epoch);
      }
    })();
    for (const [key, change] of changes) {
      const entry = this.chunks.get(key);
      if (entry === undefined) this.chunks.set(key, newEntry(change.volumeId, change.chunkIndex, change.poolId, change.epoch));
      else entry.epoch = change.epoch;
    }
    return refused;
  }

  /**
   * Resolves when no mutation admitted at an epoch below `epoch` is still in flight on the chunk:
   * after a fence, nothing written under the old epoch can land after the caller's next step.
   */
  async drainWritesBefore(volumeId: number, chunkIndex: number, epoch: number, timeoutMs: number): Promise<boolean> {
    const key = chunkKey(volumeId, chunkIndex);
    const entry = this.chunks.get(key);
    if (entry === undefined || !hasWritesBefore(entry, epoch)) return true;
    let list = this.drainWaiters.get(key);
    if (list === undefined) {
      list = [];
      this.drainWaiters.set(key, list);
    }
    const waiters = list;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        const index = waiters.findIndex((waiter) => waiter.resolve === done);
        if (index >= 0) waiters.splice(index, 1);
        resolve(false);
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      waiters.push({ epoch, resolve: done });
    });
  }

  /**
   * Makes this SDS a rebuild target for a chunk at `epoch`: a slot (a stale one is reused: every
   * block is overwritten by the copy or a client write before the replica serves), every block
   * invalid, partial writes pulling their blocks through `pull`. Persisted, so a restart never
   * serves a half-copied chunk.
   */
  async beginRebuild(volumeId: number, chunkIndex: number, poolId: number, epoch: number, pull: BlockPuller, onEnd: () => void): Promise<void> {
    const chunkBytes = this.devices.slotBytesOf(poolId);
    if (chunkBytes === undefined) throw new ChunkStoreError(`no device of pool ${poolId} on this SDS`, 'NO_DEVICE');
    const key = chunkKey(volumeId, chunkIndex);
    const known = this.chunks.get(key);
    // A replica on a lost device starts again from nothing: forget the old record first.
    if (known?.lost === true) this.deleteChunk(volumeId, chunkIndex, known.epoch);
    if (!this.setEpoch(volumeId, chunkIndex, poolId, epoch)) {
      throw new ChunkStoreError(`chunk ${key} is at epoch ${this.epochOf(volumeId, chunkIndex)} here, newer than the rebuild's ${epoch}`, 'IO', ERRNO_EIO);
    }
    // A write admitted under an older epoch (this replica was stale) must not land after the
    // session starts: it would make blocks final with bytes nobody vouches for.
    if (!(await this.drainWritesBefore(volumeId, chunkIndex, epoch, REBUILD_DRAIN_TIMEOUT_MS))) {
      throw new ChunkStoreError(`chunk ${key} still has writes of an older epoch in flight`, 'IO');
    }
    // A deletion (or a newer epoch) that came during the drain wins: no session on it.
    const entry = this.chunks.get(key);
    if (entry === undefined || entry.epoch !== epoch) throw new ChunkStoreError(`chunk ${key} changed while its rebuild began`, 'IO', ERRNO_EIO);
    entry.rebuild?.end();
    entry.rebuild = new RebuildSession(chunkBytes, pull, onEnd);
    this.db.prepare('UPDATE chunks SET rebuilding = 1 WHERE volume_id = ? AND chunk_index = ?').run(volumeId, chunkIndex);
    await this.ensureSlot(entry);
  }

  /**
   * Stores a copied piece of a chunk being rebuilt: only the blocks no client write has made
   * final, under the range lock so a client write cannot interleave. Returns the bytes written.
   */
  async copyIn(volumeId: number, chunkIndex: number, offsetBytes: number, data: Buffer): Promise<number> {
    const key = chunkKey(volumeId, chunkIndex);
    const entry = this.chunks.get(key);
    const session = entry?.rebuild;
    if (entry === undefined || session === undefined) throw new ChunkStoreError(`chunk ${key} is not being rebuilt here`, 'NO_DEVICE');
    if (offsetBytes % ALIGNMENT_BYTES !== 0) throw new ChunkStoreError(`copy offset ${offsetBytes} is not block-aligned`, 'IO');
    await this.ensureSlot(entry);
    const device = this.deviceOf(entry);
    const base = this.devices.slotOffset(device, entry.slotIndex!);
    const end = offsetBytes + data.length;
    this.track(entry, entry.epoch);
    let written = 0;
    try {
      await this.intents.ensure(entry, entry.epoch);
      const release = await this.locks.acquire(key, alignDown(offsetBytes), alignUp(end));
      try {
        if (entry.rebuild !== session) throw new ChunkStoreError(`the rebuild of chunk ${key} was cancelled`, 'IO');
        for (const [runStart, runEnd] of session.invalidRuns(offsetBytes, alignUp(end))) {
          const length = Math.min(runEnd, end) - runStart;
          const buffer = this.buffers.acquire(alignUp(length));
          try {
            const region = buffer.subarray(0, alignUp(length));
            data.copy(region, 0, runStart - offsetBytes, runStart - offsetBytes + length);
            region.fill(0, length);
            await this.pwriteFully(device, region, base + runStart);
          } finally {
            this.buffers.release(buffer);
          }
          session.markValid(runStart, runStart + alignUp(length));
          written += length;
        }
        this.devices.noteWrite(device);
      } finally {
        release();
      }
    } finally {
      this.untrack(entry, entry.epoch);
    }
    return written;
  }

  /** Ends a complete rebuild: durable, then the replica may serve. Returns false if blocks are missing. */
  async finishRebuild(volumeId: number, chunkIndex: number): Promise<boolean> {
    const entry = this.chunks.get(chunkKey(volumeId, chunkIndex));
    const session = entry?.rebuild;
    if (entry === undefined || session === undefined || !session.complete) return false;
    await this.flush();
    if (entry.rebuild !== session) return false;
    this.db.prepare('UPDATE chunks SET rebuilding = 0 WHERE volume_id = ? AND chunk_index = ?').run(volumeId, chunkIndex);
    entry.rebuild = undefined;
    session.end();
    return true;
  }

  /** Gives a known chunk its slot now (thick volumes), instead of at its first write. */
  async prepareSlot(volumeId: number, chunkIndex: number): Promise<void> {
    const entry = this.chunks.get(chunkKey(volumeId, chunkIndex));
    if (entry === undefined) throw new ChunkStoreError(`chunk ${volumeId}:${chunkIndex} is unknown here`, 'NO_DEVICE');
    await this.ensureSlot(entry);
  }

  /**
   * Frees a chunk's slot (zeroed again before reuse) and forgets it, durably; with
   * `tombstoneEpoch`, a record without data stays at that epoch, so a request of an older epoch
   * (an SDC with an old plan) is refused instead of reading zeros or recreating the chunk.
   */
  deleteChunk(volumeId: number, chunkIndex: number, tombstoneEpoch?: number): boolean {
    const key = chunkKey(volumeId, chunkIndex);
    const entry = this.chunks.get(key);
    if (entry === undefined) return false;
    this.db.transaction(() => {
      if (tombstoneEpoch !== undefined) {
        this.db
          .prepare(`UPDATE chunks SET epoch = MAX(epoch, ?), device_id = NULL, slot_index = NULL, rebuilding = 0, written_epoch = 0, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE volume_id = ? AND chunk_index = ?`)
          .run(tombstoneEpoch, volumeId, chunkIndex);
      } else {
        this.db.prepare('DELETE FROM chunks WHERE volume_id = ? AND chunk_index = ?').run(volumeId, chunkIndex);
      }
      this.db.prepare('DELETE FROM write_intents WHERE volume_id = ? AND chunk_index = ?').run(volumeId, chunkIndex);
    })();
    this.chunks.delete(key);
    if (tombstoneEpoch !== undefined) this.chunks.set(key, newEntry(volumeId, chunkIndex, entry.poolId, Math.max(entry.epoch, tombstoneEpoch)));
    entry.rebuild?.end();
    entry.rebuild = undefined;
    this.intents.forget(key);
    if (entry.deviceId !== null && entry.slotIndex !== null && !entry.lost) {
      const device = this.devices.get(entry.deviceId);
      const slot = entry.slotIndex;
      // A write still in flight to this slot must land before another chunk may have it.
      if (entry.writesInFlight === 0) device?.freeSlots.push(slot);
      else void this.whenIdle(entry).then(() => device?.freeSlots.push(slot));
    }
    return true;
  }

  /**
   * Forgets records without data older than `olderThanMs` (tombstones of deleted volumes and
   * moved replicas): nothing in flight, no slot, no rebuild, no write intent. Returns how many.
   */
  sweepTombstones(nowMs = Date.now(), olderThanMs = TOMBSTONE_AGE_MS): number {
    const cutoff = new Date(nowMs - olderThanMs).toISOString();
    const rows = this.db
      .prepare('SELECT volume_id, chunk_index FROM chunks WHERE slot_index IS NULL AND rebuilding = 0 AND updated_at < ?')
      .all(cutoff) as { volume_id: number; chunk_index: number }[];
    const gone: { volume_id: number; chunk_index: number }[] = [];
    for (const row of rows) {
      const key = chunkKey(row.volume_id, row.chunk_index);
      const entry = this.chunks.get(key);
      if (entry !== undefined && (entry.writesInFlight > 0 || entry.allocating !== undefined || entry.lost || this.intents.has(key))) continue;
      gone.push(row);
    }
    const remove = this.db.prepare('DELETE FROM chunks WHERE volume_id = ? AND chunk_index = ? AND slot_index IS NULL');
    this.db.transaction(() => {
      for (const row of gone) remove.run(row.volume_id, row.chunk_index);
    })();
    for (const row of gone) this.chunks.delete(chunkKey(row.volume_id, row.chunk_index));
    return gone.length;
  }

  /** Every chunk record this SDS has of a volume (a deleted volume's chunks are all forgotten). */
  chunksOfVolume(volumeId: number): number[] {
    const indexes: number[] = [];
    for (const entry of this.chunks.values()) if (entry.volumeId === volumeId) indexes.push(entry.chunkIndex);
    return indexes;
  }

  private writesRunning(): boolean {
    for (const entry of this.chunks.values()) if (entry.writesInFlight > 0) return true;
    return false;
  }

  /** Resolves once no mutation of the entry is in flight. */
  private async whenIdle(entry: ChunkEntry): Promise<void> {
    while (entry.writesInFlight > 0) await new Promise((resolve) => setTimeout(resolve, 5));
  }

  listChunks(): ChunkListing[] {
    return [...this.chunks.values()].map((entry) => this.listingOf(entry));
  }

  /**
   * Only the chunks the MDM must look at: a write intent (dirty, or suspect after a crash), a
   * rebuild in progress, or a lost device. Its size follows what is going on, not what is stored.
   */
  listChunksNeedingAttention(): ChunkListing[] {
    const listed: ChunkListing[] = [];
    for (const [key, entry] of this.chunks) {
      if (this.intents.has(key) || entry.rebuild !== undefined || entry.lost) listed.push(this.listingOf(entry));
    }
    return listed;
  }

  /** What this SDS knows of one chunk; undefined when it knows nothing of it. */
  chunkListing(volumeId: number, chunkIndex: number): ChunkListing | undefined {
    const entry = this.chunks.get(chunkKey(volumeId, chunkIndex));
    return entry === undefined ? undefined : this.listingOf(entry);
  }

  private listingOf(entry: ChunkEntry): ChunkListing {
    const key = chunkKey(entry.volumeId, entry.chunkIndex);
    return {
      volume_id: entry.volumeId,
      chunk_index: entry.chunkIndex,
      pool_id: entry.poolId,
      epoch: entry.epoch,
      written_epoch: entry.writtenEpoch,
      rebuilding: entry.rebuild !== undefined,
      stored: entry.slotIndex !== null && !entry.lost,
      dirty: this.intents.has(key),
      needs_resync: this.intents.isSuspect(key),
      lost: entry.lost,
    };
  }

  deviceReport(): ReturnType<DeviceSet['report']> {
    return this.devices.report();
  }

  // ------------------------------------------------------------ IO

  /** Reads [offset, offset+length) of a chunk; a chunk never written here reads as zeros. */
  async read(volumeId: number, chunkIndex: number, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const lent = await this.readLent(volumeId, chunkIndex, offsetBytes, lengthBytes);
    const bytes = Buffer.from(lent.bytes); // the caller owns its copy; the pooled buffer goes back now
    lent.release();
    return bytes;
  }

  /**
   * The bytes as a view of a pooled aligned buffer, no copy: call release() once they are no
   * longer used (after the reply left). A copy per read was a fresh ArrayBuffer per IO for V8 to collect.
   */
  async readLent(volumeId: number, chunkIndex: number, offsetBytes: number, lengthBytes: number): Promise<{ bytes: Buffer; release: () => void }> {
    const entry = this.chunks.get(chunkKey(volumeId, chunkIndex));
    if (entry?.lost === true) throw lostError(entry);
    if (entry === undefined || entry.slotIndex === null || entry.deviceId === null) return { bytes: Buffer.alloc(lengthBytes), release: noop };
    const device = this.deviceOf(entry);
    const base = this.devices.slotOffset(device, entry.slotIndex);
    const start = alignDown(offsetBytes);
    const end = alignUp(offsetBytes + lengthBytes);
    const buffer = this.buffers.acquire(end - start);
    try {
      await this.preadFully(device, buffer.subarray(0, end - start), base + start);
    } catch (error) {
      this.buffers.release(buffer);
      throw error;
    }
    return { bytes: buffer.subarray(offsetBytes - start, offsetBytes - start + lengthBytes), release: () => this.buffers.release(buffer) };
  }

  /**
   * Writes `data` at `offsetBytes` of a chunk, giving the chunk a slot on first write. `fua`:
   * durable (a sync that began after the write completed) before it resolves. The caller has
   * checked the epoch.
   */
  async write(
    volumeId: number,
    chunkIndex: number,
    poolId: number,
    epoch: number,
    offsetBytes: number,
    data: Buffer,
    fua: boolean,
    /** `data` sits in memory from acquireAligned(): an aligned write then needs no copy. */
    dataAligned = false,
  ): Promise<void> {
    await this.mutate(
      volumeId,
      chunkIndex,
      poolId,
      epoch,
      offsetBytes,
      data.length,
      fua,
      (region, regionOffset) => {
        data.copy(region, offsetBytes - regionOffset);
      },
      dataAligned ? data : undefined,
    );
  }

  /** Page-aligned memory for a payload the caller will hand to write(…, dataAligned). */
  acquireAligned(sizeBytes: number): Buffer {
    return this.buffers.acquire(sizeBytes);
  }

  releaseAligned(buffer: Buffer): void {
    this.buffers.release(buffer);
  }

  /** Zeroes a range (TRIM and WRITE_ZEROES). Unwritten chunks are zeros already. */
  async zero(volumeId: number, chunkIndex: number, epoch: number, offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    const key = chunkKey(volumeId, chunkIndex);
    const entry = this.chunks.get(key);
    if (entry?.lost === true) throw lostError(entry);
    if (entry === undefined || entry.slotIndex === null || entry.deviceId === null) return;
    const device = this.deviceOf(entry);
    const base = this.devices.slotOffset(device, entry.slotIndex);
    const innerStart = alignUp(offsetBytes);
    const innerEnd = alignDown(offsetBytes + lengthBytes);
    this.track(entry, epoch);
    try {
      await this.intents.ensure(entry, epoch);
      if (innerEnd > innerStart) {
        const release = await this.locks.acquire(key, innerStart, innerEnd);
        try {
          await this.zeroFully(device, base + innerStart, innerEnd - innerStart);
          entry.rebuild?.markValid(innerStart, innerEnd);
        } finally {
          release();
        }
      }
      // Partial blocks at either edge: zero them by read-modify-write.
      const edges: [number, number][] = [];
      if (innerEnd <= innerStart) edges.push([offsetBytes, offsetBytes + lengthBytes]);
      else {
        if (offsetBytes < innerStart) edges.push([offsetBytes, innerStart]);
        if (offsetBytes + lengthBytes > innerEnd) edges.push([innerEnd, offsetBytes + lengthBytes]);
      }
      for (const [start, end] of edges) {
        await this.rmw(device, entry, base, start, end - start, (region, regionOffset) => region.fill(0, start - regionOffset, end - regionOffset));
      }
      const gen = this.devices.noteWrite(device);
      if (fua) await this.devices.syncTo(device, gen);
    } finally {
      this.untrack(entry, epoch);
    }
  }

  /**
   * Makes every write completed before the call durable on every device: each device's next
   * sync that began after them (one already running that began earlier does not count).
   */
  async flush(): Promise<void> {
    await this.devices.syncAll();
  }

  /** Whole-chunk read for copying a replica to a peer. */
  async readChunk(volumeId: number, chunkIndex: number, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.read(volumeId, chunkIndex, offsetBytes, lengthBytes);
  }

  /**
   * Fault injection: what a power cut leaves (every write not covered by a completed sync is
   * dropped, or torn at 4 KiB). The caller kills the process right after. Undefined without faults.
   */
  powerCut(torn: boolean): PowerCutReport | undefined {
    return this.faultyIo?.powerCut(torn);
  }

  async close(): Promise<void> {
    if (this.cleaner !== undefined) clearInterval(this.cleaner);
    // Writes still running finish first (bounded), so the flush covers them.
    const idleBy = Date.now() + CLOSE_DRAIN_MS;
    while (this.writesRunning() && Date.now() < idleBy) await new Promise((resolve) => setTimeout(resolve, 5));
    const idle = !this.writesRunning();
    const durable = await this.flush().then(
      () => true,
      () => false,
    );
    // Every IO submitted so far completes before its descriptor is closed.
    await this.io.close();
    this.devices.closeAll();
    // A clean stop: nothing in flight, everything durable, so no chunk needs a resync for this
    // stop (those found at start still do). A returning SDS then comes back without copies.
    if (idle && durable) this.intents.clearAfterCleanStop();
  }

  // ------------------------------------------------------------ internals

  private deviceOf(entry: ChunkEntry): Device {
    const device = entry.deviceId === null ? undefined : this.devices.get(entry.deviceId);
    if (device === undefined) throw lostError(entry);
    return device;
  }

  private async mutate(
    volumeId: number,
    chunkIndex: number,
    poolId: number,
    epoch: number,
    offsetBytes: number,
    lengthBytes: number,
    fua: boolean,
    patch: (region: Buffer, regionOffset: number) => void,
    alignedData?: Buffer,
  ): Promise<void> {
    const key = chunkKey(volumeId, chunkIndex);
    let entry = this.chunks.get(key);
    if (entry === undefined) {
      this.setEpoch(volumeId, chunkIndex, poolId, epoch);
      entry = this.chunks.get(key)!;
    }
    if (entry.lost) throw lostError(entry);
    // Counted before anything can yield, so a fence's drain sees it.
    this.track(entry, epoch);
    try {
      await this.ensureSlot(entry);
      const device = this.deviceOf(entry);
      const base = this.devices.slotOffset(device, entry.slotIndex!);
      await this.intents.ensure(entry, epoch);
      const aligned = offsetBytes % ALIGNMENT_BYTES === 0 && lengthBytes % ALIGNMENT_BYTES === 0;
      if (aligned) {
        const release = await this.locks.acquire(key, offsetBytes, offsetBytes + lengthBytes);
        const buffer = alignedData === undefined ? this.buffers.acquire(lengthBytes) : undefined;
        try {
          let region: Buffer;
          if (buffer === undefined) region = alignedData!;
          else {
            region = buffer.subarray(0, lengthBytes);
            patch(region, offsetBytes);
          }
          await this.pwriteFully(device, region, base + offsetBytes);
          entry.rebuild?.markValid(offsetBytes, offsetBytes + lengthBytes);
        } finally {
          if (buffer !== undefined) this.buffers.release(buffer);
          release();
        }
      } else {
        await this.rmw(device, entry, base, offsetBytes, lengthBytes, patch);
      }
      const gen = this.devices.noteWrite(device);
      if (fua) await this.devices.syncTo(device, gen);
    } finally {
      this.untrack(entry, epoch);
    }
  }

  /**
   * Reads the aligned blocks around [offset, offset+length), patches them, writes them back. On a
   * replica being rebuilt, blocks not final yet come from the source instead of this slot.
   */
  private async rmw(
    device: Device,
    entry: ChunkEntry,
    base: number,
    offsetBytes: number,
    lengthBytes: number,
    patch: (region: Buffer, regionOffset: number) => void,
  ): Promise<void> {
    const start = alignDown(offsetBytes);
    const end = alignUp(offsetBytes + lengthBytes);
    const release = await this.locks.acquire(chunkKey(entry.volumeId, entry.chunkIndex), start, end);
    const buffer = this.buffers.acquire(end - start);
    try {
      const region = buffer.subarray(0, end - start);
      await this.preadFully(device, region, base + start);
      const session = entry.rebuild;
      if (session !== undefined) {
        for (const [runStart, runEnd] of session.invalidRuns(start, end)) {
          if (session.pull === undefined) throw new ChunkStoreError('partial write to a replica whose rebuild has no source', 'IO', ERRNO_EIO);
          const pulled = await session.pull(runStart, runEnd - runStart);
          pulled.copy(region, runStart - start);
        }
      }
      patch(region, start);
      await this.pwriteFully(device, region, base + start);
      entry.rebuild?.markValid(start, end);
    } finally {
      this.buffers.release(buffer);
      release();
    }
  }

  private async ensureSlot(entry: ChunkEntry): Promise<void> {
    if (entry.slotIndex !== null) return;
    if (entry.allocating !== undefined) return entry.allocating;
    entry.allocating = (async () => {
      const device = this.devices.pick(entry.poolId);
      const slotIndex = device.freeSlots.pop()!;
      try {
        // Zero before the mapping exists, durably: a reused slot never shows a previous chunk's
        // bytes, not even when power goes right after the mapping is committed.
        await this.zeroFully(device, this.devices.slotOffset(device, slotIndex), device.spec.slotBytes);
        await this.devices.syncTo(device, this.devices.noteWrite(device));
        // Forgotten meanwhile (deleted or tombstoned): the slot must not go to its record.
        if (this.chunks.get(chunkKey(entry.volumeId, entry.chunkIndex)) !== entry) {
          throw new ChunkStoreError(`chunk ${entry.volumeId}:${entry.chunkIndex} was deleted while it got a slot`, 'IO', ERRNO_EIO);
        }
        this.db
          .prepare('UPDATE chunks SET device_id = ?, slot_index = ? WHERE volume_id = ? AND chunk_index = ?')
          .run(device.id, slotIndex, entry.volumeId, entry.chunkIndex);
      } catch (error) {
        device.freeSlots.push(slotIndex);
        throw error;
      }
      entry.deviceId = device.id;
      entry.slotIndex = slotIndex;
    })();
    try {
      await entry.allocating;
    } finally {
      entry.allocating = undefined;
    }
  }

  /** Counts a mutation in, by the epoch it was admitted at. */
  private track(entry: ChunkEntry, epoch: number): void {
    entry.writesInFlight += 1;
    entry.writesByEpoch.set(epoch, (entry.writesByEpoch.get(epoch) ?? 0) + 1);
  }

  private untrack(entry: ChunkEntry, epoch: number): void {
    entry.writesInFlight -= 1;
    entry.lastWriteMs = Date.now();
    const left = (entry.writesByEpoch.get(epoch) ?? 1) - 1;
    if (left > 0) entry.writesByEpoch.set(epoch, left);
    else entry.writesByEpoch.delete(epoch);
    const key = chunkKey(entry.volumeId, entry.chunkIndex);
    const waiters = this.drainWaiters.get(key);
    if (waiters === undefined) return;
    const still = waiters.filter((waiter) => hasWritesBefore(entry, waiter.epoch));
    for (const waiter of waiters) if (!still.includes(waiter)) waiter.resolve();
    if (still.length === 0) this.drainWaiters.delete(key);
    else this.drainWaiters.set(key, still);
  }

  private async preadFully(device: Device, buffer: Buffer, positionBytes: number): Promise<void> {
    try {
      await this.io.read(device.fd, buffer, positionBytes);
    } catch (error) {
      throw this.devices.ioError('pread', device, error);
    }
  }

  private async pwriteFully(device: Device, buffer: Buffer, positionBytes: number): Promise<void> {
    try {
      const written = await this.io.write(device.fd, buffer, positionBytes);
      if (written !== buffer.length) throw Object.assign(new Error('short write'), { errno: ERRNO_EIO, code: 'EIO' });
    } catch (error) {
      throw this.devices.ioError('pwrite', device, error);
    }
  }

  private async zeroFully(device: Device, positionBytes: number, lengthBytes: number): Promise<void> {
    try {
      await this.io.zeroRange(device.fd, positionBytes, lengthBytes);
    } catch (error) {
      throw this.devices.ioError('zero', device, error);
    }
  }
}

function lostError(entry: ChunkEntry): ChunkStoreError {
  return new ChunkStoreError(`chunk ${entry.volumeId}:${entry.chunkIndex} is lost here: its device is missing or foreign`, 'LOST', ERRNO_ENODEV);
}

function hasWritesBefore(entry: ChunkEntry, epoch: number): boolean {
  for (const writeEpoch of entry.writesByEpoch.keys()) if (writeEpoch < epoch) return true;
  return false;
}
