/**
 * The SDS's devices (DESIGN §3, §6, §7): files or raw block devices, each with a superblock
 * (device-superblock.ts) and carved into slots of its pool's chunk size after the header; which
 * slots are used is the chunks table of sds_local.db.
 *
 * Identity: a device this SDS formatted before (it has a row) is opened as it is, never created;
 * missing, blank, foreign or of another incarnation of this SDS, it is reported as a problem and
 * its chunks are lost here (the MDM rebuilds them elsewhere). A device new to this SDS is
 * formatted when it is blank (or a file that does not exist yet, made sparse) and refused when it
 * holds another device's superblock.
 *
 * Durability: each device counts completed writes (writeGen) and the count its last completed
 * fdatasync covered (syncedGen). A FLUSH or FUA waits for a sync that began after the writes it
 * covers; one sync runs per device at a time and every waiter it covers shares it.
 */
import { existsSync, fdatasyncSync, mkdirSync, readSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../common/logger.js';
import type { SdsDb } from './sds-database.js';
import type { DeviceIo } from './device-io.js';
import * as nativeIo from './native-io.js';
import { decodeSuperblock, DEVICE_HEADER_BYTES, encodeSuperblock, newUuidHex, SUPERBLOCK_BYTES, type Superblock } from './device-superblock.js';
import { ChunkStoreError, ERRNO_EIO } from './store-errors.js';

export const DEVICES_MAX = 64;

export interface DeviceSpec {
  readonly mdmDeviceId: number;
  readonly path: string;
  readonly poolId: number;
  readonly capacityBytes: number;
  readonly slotBytes: number;
}

/** Who this SDS is: what it writes into a superblock and checks when it reads one. */
export interface SdsIdentity {
  readonly clusterId: string;
  readonly sdsId: number;
  readonly incarnation: string;
}

export interface Device {
  /** The row id in sds_local.db (chunks refer to it). */
  readonly id: number;
  readonly spec: DeviceSpec;
  readonly fd: number;
  readonly direct: boolean;
  readonly blockDevice: boolean;
  /** Bytes before slot 0: the superblock's header, or 0 for a device of a pflex before superblocks. */
  readonly headerBytes: number;
  readonly uuid: string | null;
  readonly slotCount: number;
  readonly freeSlots: number[];
  /** Writes completed on this device. */
  writeGen: number;
  /** The writeGen that the last completed fdatasync covered. */
  syncedGen: number;
  syncing: { readonly gen: number; readonly done: Promise<void> } | undefined;
  ioErrors: number;
  /**
   * An fdatasync failed: the kernel may have dropped dirty pages it could not write and reports
   * that only once, so a later sync that succeeds proves nothing. Every later sync fails too.
   */
  syncFailed: string | undefined;
}

export type DeviceProblemState = 'missing' | 'foreign' | 'unreadable';

export interface DeviceProblem {
  readonly mdm_device_id: number;
  /** The row id, for a device this SDS formatted before (its chunks are lost here). */
  readonly local_id: number | undefined;
  readonly path: string;
  readonly state: DeviceProblemState;
  readonly reason: string;
}

interface DeviceRow {
  id: number;
  mdm_device_id: number;
  path: string;
  pool_id: number;
  capacity_bytes: number;
  slot_bytes: number;
  uuid: string | null;
  header_bytes: number;
}

export class DeviceSet {
  private readonly devices = new Map<number, Device>();
  private readonly problems = new Map<number, DeviceProblem>();
  private legacyLogged = false;
  private bufferedFallbackLogged = false;

  constructor(
    private readonly db: SdsDb,
    private readonly io: DeviceIo,
    private readonly log: Logger,
    /** Told of every descriptor opened, with its MDM device id (the fault layer's device rules). */
    private readonly onOpen: (fd: number, mdmDeviceId: number) => void = () => undefined,
  ) {}

  get(id: number): Device | undefined {
    return this.devices.get(id);
  }

  all(): IterableIterator<Device> {
    return this.devices.values();
  }

  get size(): number {
    return this.devices.size;
  }

  problemList(): DeviceProblem[] {
    return [...this.problems.values()];
  }

  /** Row ids of devices this SDS formatted before and cannot use now: their chunks are lost here. */
  lostDeviceIds(): Set<number> {
    const ids = new Set<number>();
    for (const problem of this.problems.values()) if (problem.local_id !== undefined) ids.add(problem.local_id);
    return ids;
  }

  /** The devices this SDS formatted before, as sds_local.db knows them (attached at start). */
  knownSpecs(): DeviceSpec[] {
    return (this.db.prepare('SELECT * FROM devices ORDER BY id').all() as DeviceRow[]).map(specOfRow);
  }

  /**
   * Attaches a device (idempotent). A known device that is missing or not itself is recorded as a
   * problem and not attached (undefined); a new one is formatted if it is blank, refused
   * (ChunkStoreError NO_DEVICE) if it belongs to someone else.
   */
  attach(spec: DeviceSpec, identity: SdsIdentity | undefined): Device | undefined {
    for (const device of this.devices.values()) if (device.spec.mdmDeviceId === spec.mdmDeviceId) return device;
    if (this.devices.size >= DEVICES_MAX) throw new ChunkStoreError(`at most ${DEVICES_MAX} devices`, 'NO_DEVICE');
    const row = this.db.prepare('SELECT * FROM devices WHERE mdm_device_id = ?').get(spec.mdmDeviceId) as DeviceRow | undefined;
    return row === undefined ? this.attachNew(spec, identity) : this.attachKnown(row, identity);
  }

  /** Bytes from the start of the device to slot `slot`. */
  slotOffset(device: Device, slot: number): number {
    return device.headerBytes + slot * device.spec.slotBytes;
  }

  slotBytesOf(poolId: number): number | undefined {
    for (const device of this.devices.values()) if (device.spec.poolId === poolId) return device.spec.slotBytes;
    return undefined;
  }

  /** The device of the pool with the most free slots. */
  pick(poolId: number): Device {
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

  /** A write (or zeroing) completed on the device: returns the generation a sync must cover. */
  noteWrite(device: Device): number {
    device.writeGen += 1;
    return device.writeGen;
  }

  /** Resolves once a completed fdatasync covers generation `gen` of the device. */
  async syncTo(device: Device, gen: number): Promise<void> {
    while (device.syncedGen < gen) {
      if (device.syncFailed !== undefined) throw new ChunkStoreError(`${device.spec.path}: an earlier fdatasync failed (${device.syncFailed}); nothing written since the last good one is durable`, 'IO', ERRNO_EIO);
      const running = device.syncing;
      if (running !== undefined) {
        // A sync that began after `gen` completed covers it; an older one does not: wait it out.
        if (running.gen >= gen) await running.done;
        else await running.done.catch(() => undefined);
        continue;
      }
      const startGen = device.writeGen;
      const done = this.io.fdatasync(device.fd).then(
        () => {
          if (device.syncedGen < startGen) device.syncedGen = startGen;
        },
        (error: unknown) => {
          const failure = this.ioError('fdatasync', device, error);
          device.syncFailed = failure.message;
          throw failure;
        },
      );
      device.syncing = { gen: startGen, done };
      try {
        await done;
      } finally {
        if (device.syncing?.done === done) device.syncing = undefined;
      }
    }
  }

  /** Every write completed so far, on every device, durable. */
  async syncAll(): Promise<void> {
    await Promise.all([...this.devices.values()].map((device) => this.syncTo(device, device.writeGen)));
  }

  ioError(what: string, device: Device, error: unknown): ChunkStoreError {
    const cause = error as { message?: string; errno?: number };
    device.ioErrors += 1;
    this.log.error({ device: device.spec.path, op: what, err: cause.message ?? String(error) }, 'device IO failed');
    return new ChunkStoreError(`${what} on ${device.spec.path}: ${cause.message ?? String(error)}`, 'IO', Math.abs(cause.errno ?? ERRNO_EIO));
  }

  report(): {
    mdm_device_id: number;
    path: string;
    pool_id: number;
    state: 'ok' | DeviceProblemState;
    reason?: string;
    uuid: string | null;
    direct: boolean;
    block_device: boolean;
    slot_bytes: number;
    slots: number;
    slots_free: number;
    io_errors: number;
    sync_failed?: string;
  }[] {
    const ok = [...this.devices.values()].map((device) => ({
      mdm_device_id: device.spec.mdmDeviceId,
      path: device.spec.path,
      pool_id: device.spec.poolId,
      state: 'ok' as const,
      uuid: device.uuid,
      direct: device.direct,
      block_device: device.blockDevice,
      slot_bytes: device.spec.slotBytes,
      slots: device.slotCount,
      slots_free: device.freeSlots.length,
      io_errors: device.ioErrors,
      ...(device.syncFailed !== undefined ? { sync_failed: device.syncFailed } : {}),
    }));
    const failed = [...this.problems.values()].map((problem) => ({
      mdm_device_id: problem.mdm_device_id,
      path: problem.path,
      pool_id: 0,
      state: problem.state,
      reason: problem.reason,
      uuid: null,
      direct: false,
      block_device: false,
      slot_bytes: 0,
      slots: 0,
      slots_free: 0,
      io_errors: 0,
    }));
    return [...ok, ...failed];
  }

  /** Closes every descriptor (the caller has let IO finish). */
  closeAll(): void {
    for (const device of this.devices.values()) nativeIo.close(device.fd);
    this.devices.clear();
  }

  // ------------------------------------------------------------ attaching

  private attachKnown(row: DeviceRow, identity: SdsIdentity | undefined): Device | undefined {
    const spec = specOfRow(row);
    if (!existsSync(row.path)) {
      return this.problem(row, 'missing', `${row.path} is gone; a device this SDS formatted is never recreated: its chunks here are lost and are rebuilt from their peers`);
    }
    let opened: nativeIo.OpenedFile;
    try {
      opened = nativeIo.open(row.path, { direct: true });
    } catch (error) {
      return this.problem(row, 'unreadable', `cannot open ${row.path}: ${(error as Error).message}`);
    }
    if (row.header_bytes > 0) {
      const check = this.checkOwnSuperblock(opened.fd, row, identity);
      if (check !== undefined) {
        nativeIo.close(opened.fd);
        return this.problem(row, check.state, check.reason);
      }
    } else if (!this.legacyLogged) {
      this.legacyLogged = true;
      this.log.warn({ path: row.path }, 'device made by a pflex before device superblocks: its identity cannot be checked');
    }
    const size = nativeIo.sizeBytes(opened.fd);
    if (size < row.header_bytes + spec.capacityBytes) {
      nativeIo.close(opened.fd);
      return this.problem(row, 'foreign', `${row.path} has ${size} bytes, less than the ${row.header_bytes + spec.capacityBytes} it was formatted with`);
    }
    return this.register(row.id, spec, opened, row.header_bytes, row.uuid);
  }

  private attachNew(spec: DeviceSpec, identity: SdsIdentity | undefined): Device {
    if (identity === undefined) throw new ChunkStoreError(`device ${spec.path} cannot be formatted before this SDS has registered`, 'NO_DEVICE');
    const slotCount = Math.floor(spec.capacityBytes / spec.slotBytes);
    if (slotCount < 1) throw new ChunkStoreError(`device ${spec.path} is smaller than one chunk`, 'NO_DEVICE');
    if (!existsSync(spec.path)) mkdirSync(dirname(spec.path), { recursive: true, mode: 0o700 });
    const opened = nativeIo.open(spec.path, { create: true, direct: true });
    const needBytes = DEVICE_HEADER_BYTES + spec.capacityBytes;
    const refuse = (reason: string): never => {
      nativeIo.close(opened.fd);
      this.problems.set(spec.mdmDeviceId, { mdm_device_id: spec.mdmDeviceId, local_id: undefined, path: spec.path, state: 'foreign', reason });
      throw new ChunkStoreError(reason, 'NO_DEVICE');
    };
    if (nativeIo.isBlockDevice(opened.fd)) {
      const size = nativeIo.sizeBytes(opened.fd);
      if (size < needBytes) refuse(`block device ${spec.path} has ${size} bytes, less than the ${spec.capacityBytes} assigned plus the ${DEVICE_HEADER_BYTES}-byte header`);
    } else if (nativeIo.sizeBytes(opened.fd) < needBytes) {
      nativeIo.truncate(opened.fd, needBytes); // sparse: space is used as chunks are written
    }
    const found = decodeSuperblock(readHeader(opened.fd));
    let uuid: string;
    if (found.kind === 'blank') {
      uuid = this.format(opened.fd, spec, identity);
    } else if (found.kind === 'invalid') {
      return refuse(`${spec.path} holds other data (${found.reason}); pflex formats only blank devices: wipe its first MiB to give it to this SDS`);
    } else {
      const block = found.block;
      if (block.clusterId !== identity.clusterId || block.sdsId !== identity.sdsId) {
        return refuse(`${spec.path} belongs to another pflex SDS (cluster ${block.clusterId}, SDS #${block.sdsId}, device #${block.mdmDeviceId}); wipe its first MiB to reuse it`);
      }
      if (block.sdsIncarnation === identity.incarnation && block.mdmDeviceId === spec.mdmDeviceId) {
        uuid = block.deviceUuid; // formatted just before a crash, before its row was written
      } else {
        // This SDS's own device from an earlier incarnation (its data dir was lost): the MDM has
        // declared every replica of that incarnation lost before handing the device out again.
        this.log.warn({ path: spec.path, previousIncarnation: block.sdsIncarnation }, 'device of an earlier incarnation of this SDS: formatting it again');
        uuid = this.format(opened.fd, spec, identity);
      }
    }
    const result = this.db
      .prepare('INSERT INTO devices (mdm_device_id, path, pool_id, capacity_bytes, slot_bytes, slot_count, uuid, header_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(spec.mdmDeviceId, spec.path, spec.poolId, spec.capacityBytes, spec.slotBytes, slotCount, uuid, DEVICE_HEADER_BYTES);
    this.problems.delete(spec.mdmDeviceId);
    this.log.info({ path: spec.path, uuid }, 'device formatted');
    return this.register(Number(result.lastInsertRowid), spec, opened, DEVICE_HEADER_BYTES, uuid);
  }

  /** Writes a new superblock, durably, and returns the device's new uuid. */
  private format(fd: number, spec: DeviceSpec, identity: SdsIdentity): string {
    const uuid = newUuidHex();
    const block: Superblock = {
      clusterId: identity.clusterId,
      sdsId: identity.sdsId,
      mdmDeviceId: spec.mdmDeviceId,
      deviceUuid: uuid,
      sdsIncarnation: identity.incarnation,
      slotBytes: spec.slotBytes,
      capacityBytes: spec.capacityBytes,
      formattedAtMs: Date.now(),
    };
    const buffer = nativeIo.allocAligned(SUPERBLOCK_BYTES, SUPERBLOCK_BYTES);
    encodeSuperblock(block, buffer);
    writeSync(fd, buffer, 0, SUPERBLOCK_BYTES, 0);
    fdatasyncSync(fd);
    return uuid;
  }

  private checkOwnSuperblock(fd: number, row: DeviceRow, identity: SdsIdentity | undefined): { state: DeviceProblemState; reason: string } | undefined {
    let found;
    try {
      found = decodeSuperblock(readHeader(fd));
    } catch (error) {
      return { state: 'unreadable', reason: `cannot read the superblock of ${row.path}: ${(error as Error).message}` };
    }
    if (found.kind === 'blank') return { state: 'foreign', reason: `${row.path} has no superblock any more (replaced or wiped): its chunks here are lost` };
    if (found.kind === 'invalid') return { state: 'foreign', reason: `${row.path}: ${found.reason}: its chunks here are lost` };
    const block = found.block;
    const mismatch =
      block.deviceUuid !== row.uuid
        ? `device uuid ${block.deviceUuid}, not ${row.uuid}`
        : block.mdmDeviceId !== row.mdm_device_id
          ? `MDM device #${block.mdmDeviceId}, not #${row.mdm_device_id}`
          : identity !== undefined && block.sdsIncarnation !== identity.incarnation
            ? `SDS incarnation ${block.sdsIncarnation}, not ${identity.incarnation}`
            : identity !== undefined && (block.sdsId !== identity.sdsId || block.clusterId !== identity.clusterId)
              ? `SDS #${block.sdsId} of cluster ${block.clusterId}`
              : undefined;
    return mismatch === undefined ? undefined : { state: 'foreign', reason: `${row.path} is another device (${mismatch}): its chunks here are lost` };
  }

  private problem(row: DeviceRow, state: DeviceProblemState, reason: string): undefined {
    if (!this.problems.has(row.mdm_device_id)) this.log.error({ path: row.path, state, reason }, 'device unusable');
    this.problems.set(row.mdm_device_id, { mdm_device_id: row.mdm_device_id, local_id: row.id, path: row.path, state, reason });
    return undefined;
  }

  private register(id: number, spec: DeviceSpec, opened: nativeIo.OpenedFile, headerBytes: number, uuid: string | null): Device {
    const slotCount = Math.floor(spec.capacityBytes / spec.slotBytes);
    const used = new Set((this.db.prepare('SELECT slot_index FROM chunks WHERE device_id = ?').all(id) as { slot_index: number }[]).map((r) => r.slot_index));
    const freeSlots: number[] = [];
    for (let slot = slotCount - 1; slot >= 0; slot -= 1) if (!used.has(slot)) freeSlots.push(slot);
    const blockDevice = nativeIo.isBlockDevice(opened.fd);
    if (!opened.direct && !this.bufferedFallbackLogged) {
      this.bufferedFallbackLogged = true;
      this.log.warn({ path: spec.path }, 'the file system refuses O_DIRECT (tmpfs?): using buffered IO with fdatasync');
    }
    const device: Device = {
      id,
      spec,
      fd: opened.fd,
      direct: opened.direct,
      blockDevice,
      headerBytes,
      uuid,
      slotCount,
      freeSlots,
      writeGen: 0,
      syncedGen: 0,
      syncing: undefined,
      ioErrors: 0,
      syncFailed: undefined,
    };
    this.devices.set(id, device);
    this.problems.delete(spec.mdmDeviceId);
    this.onOpen(opened.fd, spec.mdmDeviceId);
    this.log.info({ path: spec.path, direct: opened.direct, blockDevice, slotCount, slotBytes: spec.slotBytes, headerBytes }, 'device attached');
    return device;
  }
}

function specOfRow(row: DeviceRow): DeviceSpec {
  return { mdmDeviceId: row.mdm_device_id, path: row.path, poolId: row.pool_id, capacityBytes: row.capacity_bytes, slotBytes: row.slot_bytes };
}

function readHeader(fd: number): Buffer {
  const buffer = nativeIo.allocAligned(SUPERBLOCK_BYTES, SUPERBLOCK_BYTES);
  const read = readSync(fd, buffer, 0, SUPERBLOCK_BYTES, 0);
  if (read < SUPERBLOCK_BYTES) buffer.fill(0, read);
  return buffer;
}
