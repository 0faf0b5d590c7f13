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
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../common/logger.js';
import type { SdsDb } from './sds-database.js';
import * as nativeIo from './native-io.js';
import { AlignedBufferPool, ALIGNMENT_BYTES, alignDown, alignUp } from './aligned-buffers.js';
import { RangeLock } from '../common/range-lock.js';

/** A chunk's write intent is cleared after this long without writes (and an fdatasync). */
export const INTENT_QUIET_MS = 5000;
export const DEVICES_MAX = 64;

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
  lastWriteMs: number;
  /** Set while a slot is being given to this chunk, so concurrent first writes share it. */
  allocating: Promise<void> | undefined;
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

export function chunkKey(volumeId: number, chunkIndex: number): string {
  return `${volumeId}:${chunkIndex}`;
}

export class ChunkStore {
  private readonly devices = new Map<number, Device>();
  private readonly chunks = new Map<string, ChunkEntry>();
  private readonly intents = new Set<string>();
  /** Intents waiting for the next batched commit, and that commit. */
  private pendingIntents = new Map<string, ChunkEntry>();
  private intentCommit: Promise<void> | undefined;
  /** Intents found at start: kept until the MDM says the chunk was resynced. */
  private readonly startupIntents = new Set<string>();
  private readonly buffers = new AlignedBufferPool();
  private readonly locks = new RangeLock();
  /** Data-plane IO (pread, pwrite, fdatasync, zeroRange): batched completions, io_uring or its own threads. */
  private readonly io = new nativeIo.IoQueue({ threads: nativeIo.ioQueueThreadsFromEnv(), backend: nativeIo.ioQueueBackendFromEnv() });
  private bufferedFallbackLogged = false;
  private cleaner: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: SdsDb,
    private readonly log: Logger,
  ) {
    this.log.info({ backend: this.io.backend, threads: this.io.threads }, 'device IO queue started');
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
    }[];
    for (const row of rows) {
      this.chunks.set(chunkKey(row.volume_id, row.chunk_index), {
        volumeId: row.volume_id,
        chunkIndex: row.chunk_index,
        poolId: row.pool_id,
        epoch: row.epoch,
        deviceId: row.device_id,
        slotIndex: row.slot_index,
        writesInFlight: 0,
        lastWriteMs: 0,
        allocating: undefined,
      });
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
    for (const device of this.devices.values()) if (device.spec.poolId === entry.poolId) return device.spec.slotBytes;
    return undefined;
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
      this.chunks.set(key, {
        volumeId,
        chunkIndex,
        poolId,
        epoch,
        deviceId: null,
        slotIndex: null,
        writesInFlight: 0,
        lastWriteMs: 0,
        allocating: undefined,
      });
      return;
    }
    if (entry.epoch === epoch) return;
    this.db
      .prepare(`UPDATE chunks SET epoch = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE volume_id = ? AND chunk_index = ?`)
      .run(epoch, volumeId, chunkIndex);
    entry.epoch = epoch;
  }

  /** Gives a known chunk its slot now (thick volumes), instead of at its first write. */
  async prepareSlot(volumeId: number, chunkIndex: number): Promise<void> {
    const entry = this.chunks.get(chunkKey(volumeId, chunkIndex));
    if (entry === undefined) throw new ChunkStoreError(`chunk ${volumeId}:${chunkIndex} is unknown here`, 'NO_DEVICE');
    await this.ensureSlot(entry);
  }

  /** Forgets a chunk and frees its slot (zeroed again before reuse). */
  deleteChunk(volumeId: number, chunkIndex: number): boolean {
    const key = chunkKey(volumeId, chunkIndex);
    const entry = this.chunks.get(key);
    if (entry === undefined) return false;
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM chunks WHERE volume_id = ? AND chunk_index = ?').run(volumeId, chunkIndex);
      this.db.prepare('DELETE FROM write_intents WHERE volume_id = ? AND chunk_index = ?').run(volumeId, chunkIndex);
    })();
    this.chunks.delete(key);
    this.intents.delete(key);
    this.startupIntents.delete(key);
    if (entry.deviceId !== null && entry.slotIndex !== null) this.devices.get(entry.deviceId)?.freeSlots.push(entry.slotIndex);
    return true;
  }

  listChunks(): { volume_id: number; chunk_index: number; pool_id: number; epoch: number; stored: boolean; dirty: boolean; needs_resync: boolean }[] {
    return [...this.chunks.values()].map((entry) => ({
      volume_id: entry.volumeId,
      chunk_index: entry.chunkIndex,
      pool_id: entry.poolId,
      epoch: entry.epoch,
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
    const entry = this.chunks.get(chunkKey(volumeId, chunkIndex));
    if (entry === undefined || entry.slotIndex === null || entry.deviceId === null) return Buffer.alloc(lengthBytes);
    const device = this.devices.get(entry.deviceId)!;
    const base = entry.slotIndex * device.spec.slotBytes;
    const start = alignDown(offsetBytes);
    const end = alignUp(offsetBytes + lengthBytes);
    const buffer = this.buffers.acquire(end - start);
    try {
      await this.preadFully(device, buffer.subarray(0, end - start), base + start);
      // The reply owns its bytes: the aligned buffer goes back to the pool now.
      return Buffer.from(buffer.subarray(offsetBytes - start, offsetBytes - start + lengthBytes));
    } finally {
      this.buffers.release(buffer);
    }
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
  async zero(volumeId: number, chunkIndex: number, offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    const key = chunkKey(volumeId, chunkIndex);
    const entry = this.chunks.get(key);
    if (entry === undefined || entry.slotIndex === null || entry.deviceId === null) return;
    const device = this.devices.get(entry.deviceId)!;
    const base = entry.slotIndex * device.spec.slotBytes;
    const innerStart = alignUp(offsetBytes);
    const innerEnd = alignDown(offsetBytes + lengthBytes);
    await this.beginWrite(entry);
    try {
      if (innerEnd > innerStart) {
        const release = await this.locks.acquire(key, innerStart, innerEnd);
        try {
          await this.io.zeroRange(device.fd, base + innerStart, innerEnd - innerStart);
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
        await this.rmw(device, key, base, start, end - start, (region, regionOffset) => region.fill(0, start - regionOffset, end - regionOffset));
      }
      device.dirty = true;
      if (fua) await this.syncDevice(device);
    } finally {
      this.endWrite(entry);
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
    await this.flush().catch(() => undefined);
    // Every IO submitted so far completes before its descriptor is closed.
    await this.io.close();
    for (const device of this.devices.values()) nativeIo.close(device.fd);
    this.devices.clear();
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
    await this.ensureSlot(entry);
    const device = this.devices.get(entry.deviceId!)!;
    const base = entry.slotIndex! * device.spec.slotBytes;
    await this.beginWrite(entry);
    try {
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
        } finally {
          if (buffer !== undefined) this.buffers.release(buffer);
          release();
        }
      } else {
        await this.rmw(device, key, base, offsetBytes, lengthBytes, patch);
      }
      device.dirty = true;
      if (fua) await this.syncDevice(device);
    } finally {
      this.endWrite(entry);
    }
  }

  /** Reads the aligned blocks around [offset, offset+length), patches them, writes them back. */
  private async rmw(
    device: Device,
    key: string,
    base: number,
    offsetBytes: number,
    lengthBytes: number,
    patch: (region: Buffer, regionOffset: number) => void,
  ): Promise<void> {
    const start = alignDown(offsetBytes);
    const end = alignUp(offsetBytes + lengthBytes);
    const release = await this.locks.acquire(key, start, end);
    const buffer = this.buffers.acquire(end - start);
    try {
      const region = buffer.subarray(0, end - start);
      await this.preadFully(device, region, base + start);
      patch(region, start);
      await this.pwriteFully(device, region, base + start);
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

  /**
   * Counts a write in and makes sure the chunk's write intent is durable first. New intents of one
   * event-loop turn are committed together: one transaction, one fsync, however many chunks.
   */
  private async beginWrite(entry: ChunkEntry): Promise<void> {
    entry.writesInFlight += 1;
    const key = chunkKey(entry.volumeId, entry.chunkIndex);
    if (this.intents.has(key)) return;
    this.pendingIntents.set(key, entry);
    this.intentCommit ??= new Promise<void>((resolve, reject) => {
      setImmediate(() => {
        const batch = this.pendingIntents;
        this.pendingIntents = new Map();
        this.intentCommit = undefined;
        try {
          const insert = this.db.prepare('INSERT OR IGNORE INTO write_intents (volume_id, chunk_index, since_ms) VALUES (?, ?, ?)');
          const now = Date.now();
          this.db.transaction(() => {
            for (const pending of batch.values()) insert.run(pending.volumeId, pending.chunkIndex, now);
          })();
          for (const pendingKey of batch.keys()) this.intents.add(pendingKey);
          resolve();
        } catch (error) {
          reject(error);
        }
      });
    });
    try {
      await this.intentCommit;
    } catch (error) {
      entry.writesInFlight -= 1;
      throw error;
    }
  }

  private endWrite(entry: ChunkEntry): void {
    entry.writesInFlight -= 1;
    entry.lastWriteMs = Date.now();
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
