/**
 * Coalesces many small socket writes into one writev per event-loop turn. On loopback each
 * write is a syscall that also wakes the reader, and at queue depth 32 that cost dominated the
 * IO path; batching until setImmediate sends every reply (or request) produced in one turn
 * together. A frame's pieces are queued together, so frames never interleave.
 */
import type { Socket } from 'node:net';

/** Flush early past this many queued bytes, so a burst of large frames does not pile up. */
export const BATCH_BYTES_MAX = 1024 * 1024;

export class SocketBatcher {
  private pending: Buffer[] = [];
  /** Called once the buffer at the same index has been written (or the socket failed): lent memory goes back. */
  private releases: ((() => void) | undefined)[] = [];
  private pendingBytes = 0;
  private scheduled = false;

  constructor(private readonly socket: Socket) {}

  /**
   * Queues one frame (header, optional payload); it leaves with the rest of this turn's frames.
   * `release` is called once the payload has been handed to the kernel (or could not be).
   */
  write(header: Buffer, payload?: Buffer, release?: () => void): void {
    this.pending.push(header);
    this.releases.push(undefined);
    this.pendingBytes += header.length;
    if (payload !== undefined && payload.length > 0) {
      this.pending.push(payload);
      this.releases.push(release);
      this.pendingBytes += payload.length;
    } else {
      release?.();
    }
    if (this.pendingBytes >= BATCH_BYTES_MAX) {
      this.flush();
    } else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Bytes waiting here or in the socket: callers use it for backpressure. */
  get queuedBytes(): number {
    return this.pendingBytes + this.socket.writableLength;
  }

  flush(): void {
    this.scheduled = false;
    const buffers = this.pending;
    const releases = this.releases;
    this.pending = [];
    this.releases = [];
    this.pendingBytes = 0;
    if (buffers.length === 0) return;
    if (this.socket.destroyed) {
      for (const release of releases) release?.();
      return;
    }
    this.socket.cork();
    for (let i = 0; i < buffers.length; i += 1) {
      const release = releases[i];
      if (release === undefined) this.socket.write(buffers[i]!);
      else this.socket.write(buffers[i]!, () => release());
    }
    this.socket.uncork();
  }
}
