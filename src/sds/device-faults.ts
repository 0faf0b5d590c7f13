/**
 * Fault injection at the SDS's device IO (tests only; see fault-config.ts): a DeviceIo that wraps
 * the real one and, as the live config says, fails chosen operations with EIO or ENOSPC, delays
 * them, and models a volatile write cache.
 *
 * The cache model: every write and zeroing first reads the bytes it replaces; the pair stays on an
 * "unsynced" list until an fdatasync that began after the write completed has completed too. A
 * power cut (powerCut) puts the old bytes back for every unsynced write, newest first (or, torn,
 * for a random half of its 4 KiB blocks) with synchronous writes, then the caller kills the
 * process: what is left on the device is what a disk with a volatile cache could hold after
 * losing power. Writes still in flight may land or not; either is allowed, as on a real disk.
 */
import { writeSync } from 'node:fs';
import type { Logger } from '../common/logger.js';
import type { DeviceIo } from './device-io.js';
import type { DeviceOp, Faults } from './fault-config.js';
import { allocAligned } from './native-io.js';

const BLOCK_BYTES = 4096;
/** Beyond this many unsynced bytes the oldest are treated as written back (a cache is finite). */
export const VOLATILE_CACHE_BYTES_MAX = 512 * 1024 * 1024;

const ERRNO: Record<'EIO' | 'ENOSPC', number> = { EIO: 5, ENOSPC: 28 };
const MESSAGES: Record<'EIO' | 'ENOSPC', string> = { EIO: 'Input/output error', ENOSPC: 'No space left on device' };
const SYSCALLS: Record<DeviceOp, string> = { read: 'pread', write: 'pwrite', sync: 'fdatasync', zero: 'fallocate' };

interface Unsynced {
  readonly fd: number;
  readonly offsetBytes: number;
  readonly old: Buffer;
  /** Completion order across the whole SDS: a sync covers the entries completed before it began. */
  readonly seq: number;
}

export interface PowerCutReport {
  writes_dropped: number;
  bytes_restored: number;
  blocks_kept: number;
}

function injected(errno: 'EIO' | 'ENOSPC', op: DeviceOp): Error {
  const syscall = SYSCALLS[op];
  return Object.assign(new Error(`${syscall}: ${MESSAGES[errno]} (${errno}, injected)`), { code: errno, errno: ERRNO[errno], syscall });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class FaultyDeviceIo implements DeviceIo {
  private readonly deviceOfFd = new Map<number, number>();
  private unsynced: Unsynced[] = [];
  private unsyncedBytes = 0;
  private completedSeq = 0;

  constructor(
    private readonly inner: DeviceIo,
    private readonly faults: Faults,
    private readonly log: Logger,
  ) {}

  get backend(): string {
    return `${this.inner.backend}+faults`;
  }

  get threads(): number {
    return this.inner.threads;
  }

  /** Names the device behind a descriptor, for rules that pick one device. */
  registerFd(fd: number, mdmDeviceId: number): void {
    this.deviceOfFd.set(fd, mdmDeviceId);
  }

  async read(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number> {
    await this.before('read', fd);
    return this.inner.read(fd, buffer, offsetBytes);
  }

  async write(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number> {
    await this.before('write', fd);
    const old = this.faults.volatileCache ? await this.capture(fd, offsetBytes, buffer.length) : undefined;
    const written = await this.inner.write(fd, buffer, offsetBytes);
    if (old !== undefined) this.remember(fd, offsetBytes, old);
    return written;
  }

  async zeroRange(fd: number, offsetBytes: number, lengthBytes: number): Promise<void> {
    await this.before('zero', fd);
    const old = this.faults.volatileCache ? await this.capture(fd, offsetBytes, lengthBytes) : undefined;
    await this.inner.zeroRange(fd, offsetBytes, lengthBytes);
    if (old !== undefined) this.remember(fd, offsetBytes, old);
  }

  async fdatasync(fd: number): Promise<void> {
    // What a sync covers is decided when it is asked for: writes completed later are not covered,
    // however long the (injected) latency before the device syncs.
    const coveredSeq = this.completedSeq;
    await this.before('sync', fd);
    await this.inner.fdatasync(fd);
    const kept: Unsynced[] = [];
    for (const entry of this.unsynced) {
      if (entry.fd === fd && entry.seq <= coveredSeq) this.unsyncedBytes -= entry.old.length;
      else kept.push(entry);
    }
    this.unsynced = kept;
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** Bytes written but not yet covered by a completed fdatasync (the cache model's contents). */
  get unsyncedWrites(): number {
    return this.unsynced.length;
  }

  /**
   * Drops every unsynced write (newest first), or with `torn` a random half of each one's 4 KiB
   * blocks, with synchronous writes of the old bytes. The caller kills the process right after.
   */
  powerCut(torn: boolean): PowerCutReport {
    const report: PowerCutReport = { writes_dropped: 0, bytes_restored: 0, blocks_kept: 0 };
    const random = this.faults.random;
    for (let i = this.unsynced.length - 1; i >= 0; i -= 1) {
      const entry = this.unsynced[i]!;
      report.writes_dropped += 1;
      for (let block = 0; block < entry.old.length; block += BLOCK_BYTES) {
        const length = Math.min(BLOCK_BYTES, entry.old.length - block);
        if (torn && random.next() < 0.5) {
          report.blocks_kept += 1;
          continue;
        }
        writeSync(entry.fd, entry.old, block, length, entry.offsetBytes + block);
        report.bytes_restored += length;
      }
    }
    this.unsynced = [];
    this.unsyncedBytes = 0;
    return report;
  }

  private async before(op: DeviceOp, fd: number): Promise<void> {
    const device = this.deviceOfFd.get(fd);
    const ms = this.faults.deviceLatencyMs(op, device);
    if (ms > 0) await delay(ms);
    const errno = this.faults.deviceError(op, device);
    if (errno !== undefined) {
      this.log.warn({ op, mdmDeviceId: device, errno }, 'fault injection: device operation failed on purpose');
      throw injected(errno, op);
    }
  }

  private async capture(fd: number, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const old = allocAligned(Math.ceil(lengthBytes / BLOCK_BYTES) * BLOCK_BYTES, BLOCK_BYTES).subarray(0, lengthBytes);
    await this.inner.read(fd, old, offsetBytes);
    return old;
  }

  private remember(fd: number, offsetBytes: number, old: Buffer): void {
    this.completedSeq += 1;
    this.unsynced.push({ fd, offsetBytes, old, seq: this.completedSeq });
    this.unsyncedBytes += old.length;
    while (this.unsyncedBytes > VOLATILE_CACHE_BYTES_MAX && this.unsynced.length > 0) {
      this.unsyncedBytes -= this.unsynced.shift()!.old.length;
    }
  }
}
