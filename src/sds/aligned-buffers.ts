/**
 * A pool of page-aligned buffers for O_DIRECT IO, in power-of-two size classes. Allocating and
 * freeing aligned memory per IO is slow and churns the GC's external memory; a small free list
 * per class keeps the hot path allocation-free.
 */
import { allocAligned } from './native-io.js';

export const ALIGNMENT_BYTES = 4096;
const CLASS_BYTES_MIN = 4096;
/** The largest class: a frame payload plus the two partial blocks of a read-modify-write. */
export const ALIGNED_BUFFER_BYTES_MAX = 16 * 1024 * 1024;
const FREE_BUFFERS_PER_CLASS_MAX = 64;
const FREE_BYTES_PER_CLASS_MAX = 64 * 1024 * 1024;

function classOf(sizeBytes: number): number {
  let size = CLASS_BYTES_MIN;
  while (size < sizeBytes) size *= 2;
  return size;
}

export class AlignedBufferPool {
  private readonly free = new Map<number, Buffer[]>();

  /** A zero-length-safe aligned buffer of at least `sizeBytes`; give it back with release(). */
  acquire(sizeBytes: number): Buffer {
    if (sizeBytes > ALIGNED_BUFFER_BYTES_MAX) throw new RangeError(`aligned buffer of ${sizeBytes} bytes over the limit`);
    const size = classOf(Math.max(sizeBytes, 1));
    const list = this.free.get(size);
    const reused = list?.pop();
    return reused ?? allocAligned(size, ALIGNMENT_BYTES);
  }

  release(buffer: Buffer): void {
    const size = buffer.length;
    if (size !== classOf(size)) return; // not one of ours (a subarray): let the GC have it
    let list = this.free.get(size);
    if (list === undefined) {
      list = [];
      this.free.set(size, list);
    }
    if (list.length < FREE_BUFFERS_PER_CLASS_MAX && (list.length + 1) * size <= FREE_BYTES_PER_CLASS_MAX) list.push(buffer);
  }
}

export function alignDown(value: number): number {
  return value - (value % ALIGNMENT_BYTES);
}

export function alignUp(value: number): number {
  return Math.ceil(value / ALIGNMENT_BYTES) * ALIGNMENT_BYTES;
}
