/**
 * The chunk store: devices (files or raw block devices) carved into slots of the pool's chunk
 * size; which chunk lives in which slot is in sds_local.db. IO goes through the native addon
 * with O_DIRECT, page-aligned; unaligned IO becomes an aligned read-modify-write under a range
 * lock. A slot is zeroed when it is given to a chunk, so a reused slot never shows old bytes.
 *
 * Write intents: before the first write to a chunk since it was last clean, a row goes into
 * write_intents (synchronously, durable). The cleaner clears rows of chunks that have been quiet
 * for a while, after an fdatasync. Rows found at start are chunks that may have had writes in
 * flight at a crash; the MDM resyncs them.
 *
 * Rebuilds: a chunk being rebuilt here carries a RebuildSession (which blocks are final); client
 * writes mark blocks final, the copy from the source fills only the others (copyIn).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../common/logger.js';
import type { SdsDb } from './sds-database.js';
import * as nativeIo from './native-io.js';
import { AlignedBufferPool, ALIGNMENT_BYTES, alignDown, alignUp } from './aligned-buffers.js';
import { RangeLock } from '../common/range-lock.js';
import { RebuildSession, type BlockPuller } from './rebuild-session.js';

/** A chunk's write intent is cleared after this long without writes (and an fdatasync): long
 * enough that the MDM still finds it when it learns an SDC died (3 missed heartbeats). */
export const INTENT_QUIET_MS = 15_000;
export const DEVICES_MAX = 64;
const REBUILD_DRAIN_TIMEOUT_MS = 4000;
/** A stopping SDS waits this long for running writes before it closes its devices. */
const CLOSE_DRAIN_MS = 5000;

export interface DeviceSpec {
  readonly mdmDeviceId: number;
  readonly path: string;
  readonly poolId: number;
  readonly capacityBytes: number;
  readonly slotBytes: number;
}

interface Device {
  readonly id: number;
  readonly spec: DeviceSpec;
  readonly fd: number;
  readonly direct: boolean;
  readonly blockDevice: boolean;
  readonly slotCount: number;
  readonly freeSlots: number[];
  /** Writes completed since the last fdatasync. */
  dirty: boolean;
}

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
  };
}

export class ChunkStoreError extends Error {
  constructor(
    message: string,
    readonly kind: 'NO_SPACE' | 'NO_DEVICE' | 'IO',
    readonly errno = 0,
  ) {
    super(message);
    this.name = 'ChunkStoreError';
  }
}

function noop(): void {}

export function chunkKey(volumeId: number, chunkIndex: number): string {
  return `${volumeId}:${chunkIndex}`;
}

export class ChunkStore {
  private readonly devices = new Map<number, Device>();
  private readonly chunks = new Map<string, ChunkEntry>();
  private readonly intents = new Set<string>();
  /** Intents (and written epochs) waiting for the next batched commit, and that commit. */
  private pendingIntents = new Map<string, { entry: ChunkEntry; epoch: number }>();
  private intentCommit: Promise<void> | undefined;
  /** Intents found at start: kept until the MDM says the chunk was resynced. */
  private readonly startupIntents = new Set<string>();
  private readonly buffers = new AlignedBufferPool();
  private readonly locks = new RangeLock();
  /** Data-plane IO (pread, pwrite, fdatasync, zeroRange): batched completions, io_uring or its own threads. */
  private readonly io = new nativeIo.IoQueue({ threads: nativeIo.ioQueueThreadsFromEnv(), backend: nativeIo.ioQueueBackendFromEnv() });
  private bufferedFallbackLogged = false;
  private cleaner: NodeJS.Timeout | undefined;
  /** Waiters for mutations older than an epoch to finish, per chunk key. */
  private readonly drainWaiters = new Map<string, { epoch: number; resolve: () => void }[]>();

  constructor(
    private readonly db: SdsDb,
    private readonly log: Logger,
  ) {
    this.log.info({ backend: this.io.backend, threads: this.io.threads, io_uring: this.io.ioUring }, 'device IO queue started');
  }

  // ------------------------------------------------------------ devices

  /** Opens (creating a sparse file if needed) every device the MDM assigned; idempotent. */
  attachDevice(spec: DeviceSpec): void {
    if ([...this.devices.values()].some((device) => device.spec.mdmDeviceId === spec.mdmDeviceId)) return;
    if (this.devices.size >= DEVICES_MAX) throw new ChunkStoreError(`at most ${DEVICES_MAX} devices`, 'NO_DEVICE');
    const slotCount = Math.floor(spec.capacityBytes / spec.slotBytes);
    if (slotCount < 1) throw new ChunkStoreError(`device ${spec.path} is smaller than one chunk`, 'NO_DEVICE');
    if (!existsSync(spec.path)) mkdirSync(dirname(spec.path), { recursive: true, mode: 0o700 });
    const { fd, direct } = nativeIo.open(spec.path, { create: true, direct: true });
    const blockDevice = nativeIo.isBlockDevice(fd);
    if (blockDevice) {
      const size = nativeIo.sizeBytes(fd);
      if (size < spec.capacityBytes) {
        nativeIo.close(fd);
        throw new ChunkStoreError(`block device ${spec.path} has ${size} bytes, less than the ${spec.capacityBytes} assigned`, 'NO_DEVICE');
      }
    } else if (nativeIo.sizeBytes(fd) < spec.capacityBytes) {
      nativeIo.truncate(fd, spec.capacityBytes); // sparse: space is used as chunks are written
    }
    if (!direct && !this.bufferedFallbackLogged) {
      this.bufferedFallbackLogged = true;
      this.log.warn({ path: spec.path }, 'the file system refuses O_DIRECT (tmpfs?): using buffered IO with fdatasync');
    }
    let row = this.db.prepare('SELECT id FROM devices WHERE mdm_device_id = ?').get(spec.mdmDeviceId) as { id: number } | undefined;
    if (row === undefined) {
      const result = this.db
        .prepare('INSERT INTO devices (mdm_device_id, path, pool_id, capacity_bytes, slot_bytes, slot_count) VALUES (?, ?, ?, ?, ?, ?)')
        .run(spec.mdmDeviceId, spec.path, spec.poolId, spec.capacityBytes, spec.slotBytes, slotCount);
      row = { id: Number(result.lastInsertRowid) };
    }
    const used = new Set(
      (this.db.prepare('SELECT slot_index FROM chunks WHERE device_id = ?').all(row.id) as { slot_index: number }[]).map((r) => r.slot_index),
    );
    const freeSlots: number[] = [];
    for (let slot = slotCount - 1; slot >= 0; slot -= 1) if (!used.has(slot)) freeSlots.push(slot);
    this.devices.set(row.id, { id: row.id, spec, fd, direct, blockDevice, slotCount, freeSlots, dirty: false });
    this.log.info({ path: spec.path, direct, blockDevice, slotCount, slotBytes: spec.slotBytes }, 'device attached');
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
    for (const row of rows) {
      const entry = newEntry(row.volume_id, row.chunk_index, row.pool_id, row.epoch);
      entry.deviceId = row.device_id;
      entry.slotIndex = row.slot_index;
      entry.writtenEpoch = row.written_epoch;
      // A rebuild cut short by a restart: never serve the partial copy; the MDM starts it again.
      if (row.rebuilding !== 0) entry.rebuild = new RebuildSession(this.slotBytesOf(row.pool_id) ?? ALIGNMENT_BYTES, undefined);
      this.chunks.set(chunkKey(row.volume_id, row.chunk_index), entry);
    }
    for (const row of this.db.prepare('SELECT volume_id, chunk_index FROM write_intents').all() as { volume_id: number; chunk_index: number }[]) {
      this.intents.add(chunkKey(row.volume_id, row.chunk_index));
      this.startupIntents.add(chunkKey(row.volume_id, row.chunk_index));
    }
  }

  /** The MDM resynced these chunks from their peers: their crash-time intents may go. */
  clearResynced(chunks: readonly { volume_id: number; chunk_index: number }[]): number {
    let cleared = 0;
    for (const chunk of chunks) {
      const key = chunkKey(chunk.volume_id, chunk.chunk_index);
      if (this.startupIntents.delete(key)) cleared += 1;
    }
    return cleared;
  }

  /** Chunks with write intents found at start: they may differ from their peers. */
  intentsAtStart(): { volume_id: number; chunk_index: number; since_ms: number }[] {
    return this.db.prepare('SELECT * FROM write_intents ORDER BY volume_id, chunk_index').all() as {
      volume_id: number;
      chunk_index: number;
      since_ms: number;
    }[];
  }

  startIntentCleaner(): void {
    this.cleaner = setInterval(() => {
      this.cleanIntents().catch((error: unknown) => this.log.error({ err: error }, 'write-intent cleaner failed'));
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
    return this.slotBytesOf(entry.poolId);
  }

  private slotBytesOf(poolId: number): number | undefined {
    for (const device of this.devices.values()) if (device.spec.poolId === poolId) return device.spec.slotBytes;
    return undefined;
  }

  /** True while this replica is being rebuilt: it must not serve reads. */
  isRebuilding(volumeId: number, chunkIndex: number): boolean {
    return this.chunks.get(chunkKey(volumeId, chunkIndex))?.rebuild !== undefined;
  }

  epochOf(volumeId: number, chunkIndex: number): number | undefined {
    return this.chunks.get(chunkKey(volumeId, chunkIndex))?.epoch;
  }

  /** Records (or creates the record of) a chunk's epoch: the MDM's fencing, or a first token. */
  setEpoch(volumeId: number, chunkIndex: number, poolId: number, epoch: number): void {
    const key = chunkKey(volumeId, chunkIndex);
    const entry = this.chunks.get(key);
    if (entry === undefined) {
      this.db.prepare('INSERT INTO chunks (volume_id, chunk_index, pool_id, epoch) VALUES (?, ?, ?, ?)').run(volumeId, chunkIndex, poolId, epoch);
      this.chunks.set(key, newEntry(volumeId, chunkIndex, poolId, epoch));
      return;
    }
    if (entry.epoch === epoch) return;
    this.db
      .prepare(`UPDATE chunks SET epoch = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE volume_id = ? AND chunk_index = ?`)
      .run(epoch, volumeId, chunkIndex);
    entry.epoch = epoch;
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
    const chunkBytes = this.slotBytesOf(poolId);
    if (chunkBytes === undefined) throw new ChunkStoreError(`no device of pool ${poolId} on this SDS`, 'NO_DEVICE');
    this.setEpoch(volumeId, chunkIndex, poolId, epoch);
    // A write admitted under an older epoch (this replica was stale) must not land after the
    // session starts: it would make blocks final with bytes nobody vouches for.
    if (!(await this.drainWritesBefore(volumeId, chunkIndex, epoch, REBUILD_DRAIN_TIMEOUT_MS))) {
      throw new ChunkStoreError(`chunk ${volumeId}:${chunkIndex} still has writes of an older epoch in flight`, 'IO');
    }
    const entry = this.chunks.get(chunkKey(volumeId, chunkIndex))!;
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
    const device = this.devices.get(entry.deviceId!)!;
    const base = entry.slotIndex! * device.spec.slotBytes;
    const end = offsetBytes + data.length;
    this.track(entry, entry.epoch);
    let written = 0;
    try {
      await this.commitIntent(entry, entry.epoch);
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
        device.dirty = true;
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
   * Frees a chunk's slot (zeroed again before reuse) and forgets it; with `tombstoneEpoch`, a
   * record without data stays at that epoch, so a request of an older epoch (an SDC with an old
   * plan) is refused instead of reading zeros or recreating the chunk.
   */
  deleteChunk(volumeId: number, chunkIndex: number, tombstoneEpoch?: number): boolean {
    const key = chunkKey(volumeId, chunkIndex);
    const entry = this.chunks.get(key);
    if (entry === undefined) return false;
    this.db.transaction(() => {
      if (tombstoneEpoch !== undefined) {
        this.db
          .prepare(`UPDATE chunks SET epoch = MAX(epoch, ?), device_id = NULL, slot_index = NULL, rebuilding = 0, written_epoch = 0 WHERE volume_id = ? AND chunk_index = ?`)
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
    this.intents.delete(key);
    this.startupIntents.delete(key);
    if (entry.deviceId !== null && entry.slotIndex !== null) {
      const device = this.devices.get(entry.deviceId);
      const slot = entry.slotIndex;
      // A write still in flight to this slot must land before another chunk may have it.
      if (entry.writesInFlight === 0) device?.freeSlots.push(slot);
      else void this.whenIdle(entry).then(() => device?.freeSlots.push(slot));
    }
    return true;
  }

  private writesRunning(): boolean {
    for (const entry of this.chunks.values()) if (entry.writesInFlight > 0) return true;
    return false;
  }

  /** Resolves once no mutation of the entry is in flight. */
  private async whenIdle(entry: ChunkEntry): Promise<void> {
    while (entry.writesInFlight > 0) await new Promise((resolve) => setTimeout(resolve, 5));
  }

  listChunks(): {
    volume_id: number;
    chunk_index: number;
    pool_id: number;
    epoch: number;
    written_epoch: number;
    rebuilding: boolean;
    stored: boolean;
    dirty: boolean;
    needs_resync: boolean;
  }[] {
    return [...this.chunks.values()].map((entry) => ({
      volume_id: entry.volumeId,
      chunk_index: entry.chunkIndex,
      pool_id: entry.poolId,
      epoch: entry.epoch,
      written_epoch: entry.writtenEpoch,
      rebuilding: entry.rebuild !== undefined,
      stored: entry.slotIndex !== null,
      dirty: this.intents.has(chunkKey(entry.volumeId, entry.chunkIndex)),
      needs_resync: this.startupIntents.has(chunkKey(entry.volumeId, entry.chunkIndex)),
    }));
  }

  deviceReport(): { mdm_device_id: number; path: string; pool_id: number; direct: boolean; block_device: boolean; slot_bytes: number; slots: number; slots_free: number }[] {
    return [...this.devices.values()].map((device) => ({
      mdm_device_id: device.spec.mdmDeviceId,
      path: device.spec.path,
      pool_id: device.spec.poolId,
      direct: device.direct,
      block_device: device.blockDevice,
      slot_bytes: device.spec.slotBytes,
      slots: device.slotCount,
      slots_free: device.freeSlots.length,
    }));
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
    if (entry === undefined || entry.slotIndex === null || entry.deviceId === null) return { bytes: Buffer.alloc(lengthBytes), release: noop };
    const device = this.devices.get(entry.deviceId)!;
    const base = entry.slotIndex * device.spec.slotBytes;
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
   * durable (fdatasync) before it resolves. The caller has checked the epoch.
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
    if (entry === undefined || entry.slotIndex === null || entry.deviceId === null) return;
    const device = this.devices.get(entry.deviceId)!;
    const base = entry.slotIndex * device.spec.slotBytes;
    const innerStart = alignUp(offsetBytes);
    const innerEnd = alignDown(offsetBytes + lengthBytes);
    this.track(entry, epoch);
    try {
      await this.commitIntent(entry, epoch);
      if (innerEnd > innerStart) {
        const release = await this.locks.acquire(key, innerStart, innerEnd);
        try {
          await this.io.zeroRange(device.fd, base + innerStart, innerEnd - innerStart);
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
      device.dirty = true;
      if (fua) await this.syncDevice(device);
    } finally {
      this.untrack(entry, epoch);
    }
  }

  /** Makes every completed write durable on every device. */
  async flush(): Promise<void> {
    await Promise.all([...this.devices.values()].map((device) => (device.dirty ? this.syncDevice(device) : Promise.resolve())));
  }

  /** Whole-chunk read for copying a replica to a peer. */
  async readChunk(volumeId: number, chunkIndex: number, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.read(volumeId, chunkIndex, offsetBytes, lengthBytes);
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
    for (const device of this.devices.values()) nativeIo.close(device.fd);
    this.devices.clear();
    // A clean stop: nothing in flight, everything durable, so no chunk needs a resync for this
    // stop (those found at start still do). A returning SDS then comes back without copies.
    if (idle && durable && this.db.open) {
      const remove = this.db.prepare('DELETE FROM write_intents WHERE volume_id = ? AND chunk_index = ?');
      this.db.transaction(() => {
        for (const key of this.intents) {
          if (this.startupIntents.has(key)) continue;
          const [volumeId, chunkIndex] = key.split(':').map(Number);
          remove.run(volumeId, chunkIndex);
        }
      })();
    }
  }

  // ------------------------------------------------------------ internals

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
    // Counted before anything can yield, so a fence's drain sees it.
    this.track(entry, epoch);
    try {
      await this.ensureSlot(entry);
      const device = this.devices.get(entry.deviceId!)!;
      const base = entry.slotIndex! * device.spec.slotBytes;
      await this.commitIntent(entry, epoch);
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
      device.dirty = true;
      if (fua) await this.syncDevice(device);
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
          if (session.pull === undefined) throw new ChunkStoreError('partial write to a replica whose rebuild has no source', 'IO', 5);
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
      const device = this.pickDevice(entry.poolId);
      const slotIndex = device.freeSlots.pop()!;
      try {
        // Zero before the mapping exists: a reused slot never shows a previous chunk's bytes.
        await this.io.zeroRange(device.fd, slotIndex * device.spec.slotBytes, device.spec.slotBytes);
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

  /** The device of the pool with the most free slots. */
  private pickDevice(poolId: number): Device {
    let best: Device | undefined;
    for (const device of this.devices.values()) {
      if (device.spec.poolId !== poolId || device.freeSlots.length === 0) continue;
      if (best === undefined || device.freeSlots.length > best.freeSlots.length) best = device;
    }
    if (best === undefined) {
      const hasPool = [...this.devices.values()].some((device) => device.spec.poolId === poolId);
      throw new ChunkStoreError(hasPool ? `no free chunk slot for pool ${poolId}` : `no device of pool ${poolId} on this SDS`, hasPool ? 'NO_SPACE' : 'NO_DEVICE');
    }
    return best;
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

  /**
   * Makes sure the chunk's write intent (and the epoch it is written at) is durable before the
   * data write. New intents of one event-loop turn are committed together: one transaction, one
   * fsync, however many chunks.
   */
  private async commitIntent(entry: ChunkEntry, epoch: number): Promise<void> {
    const key = chunkKey(entry.volumeId, entry.chunkIndex);
    if (this.intents.has(key) && entry.writtenEpoch >= epoch) return;
    const pending = this.pendingIntents.get(key);
    if (pending === undefined || pending.epoch < epoch) this.pendingIntents.set(key, { entry, epoch });
    this.intentCommit ??= new Promise<void>((resolve, reject) => {
      setImmediate(() => {
        const batch = this.pendingIntents;
        this.pendingIntents = new Map();
        this.intentCommit = undefined;
        try {
          const insert = this.db.prepare('INSERT OR IGNORE INTO write_intents (volume_id, chunk_index, since_ms) VALUES (?, ?, ?)');
          const written = this.db.prepare('UPDATE chunks SET written_epoch = ? WHERE volume_id = ? AND chunk_index = ? AND written_epoch < ?');
          const now = Date.now();
          this.db.transaction(() => {
            for (const item of batch.values()) {
              insert.run(item.entry.volumeId, item.entry.chunkIndex, now);
              written.run(item.epoch, item.entry.volumeId, item.entry.chunkIndex, item.epoch);
            }
          })();
          for (const [pendingKey, item] of batch) {
            this.intents.add(pendingKey);
            if (item.entry.writtenEpoch < item.epoch) item.entry.writtenEpoch = item.epoch;
          }
          resolve();
        } catch (error) {
          reject(error);
        }
      });
    });
    await this.intentCommit;
  }

  /** Clears intents of chunks quiet for INTENT_QUIET_MS, after making their writes durable. */
  private async cleanIntents(): Promise<void> {
    const quietBefore = Date.now() - INTENT_QUIET_MS;
    const quiet: ChunkEntry[] = [];
    for (const key of this.intents) {
      const entry = this.chunks.get(key);
      if (entry === undefined) {
        this.intents.delete(key);
        continue;
      }
      if (this.startupIntents.has(key)) continue;
      if (entry.writesInFlight === 0 && entry.lastWriteMs < quietBefore) quiet.push(entry);
    }
    if (quiet.length === 0) return;
    await this.flush();
    const remove = this.db.prepare('DELETE FROM write_intents WHERE volume_id = ? AND chunk_index = ?');
    this.db.transaction(() => {
      for (const entry of quiet) {
        // A write that began during the flush keeps its intent.
        if (entry.writesInFlight !== 0 || entry.lastWriteMs >= quietBefore) continue;
        remove.run(entry.volumeId, entry.chunkIndex);
        this.intents.delete(chunkKey(entry.volumeId, entry.chunkIndex));
      }
    })();
  }

  private async syncDevice(device: Device): Promise<void> {
    device.dirty = false;
    try {
      await this.io.fdatasync(device.fd);
    } catch (error) {
      device.dirty = true;
      throw this.ioError('fdatasync', device, error);
    }
  }

  private async preadFully(device: Device, buffer: Buffer, positionBytes: number): Promise<void> {
    try {
      await this.io.read(device.fd, buffer, positionBytes);
    } catch (error) {
      throw this.ioError('pread', device, error);
    }
  }

  private async pwriteFully(device: Device, buffer: Buffer, positionBytes: number): Promise<void> {
    try {
      const written = await this.io.write(device.fd, buffer, positionBytes);
      if (written !== buffer.length) throw Object.assign(new Error('short write'), { errno: 5, code: 'EIO' });
    } catch (error) {
      throw this.ioError('pwrite', device, error);
    }
  }

  private ioError(what: string, device: Device, error: unknown): ChunkStoreError {
    const cause = error as { message?: string; errno?: number };
    this.log.error({ device: device.spec.path, op: what, err: error }, 'device IO failed');
    return new ChunkStoreError(`${what} on ${device.spec.path}: ${cause.message ?? String(error)}`, 'IO', Math.abs(cause.errno ?? 5));
  }
}

function hasWritesBefore(entry: ChunkEntry, epoch: number): boolean {
  for (const writeEpoch of entry.writesByEpoch.keys()) if (writeEpoch < epoch) return true;
  return false;
}
