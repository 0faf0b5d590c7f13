/**
 * Exact-length reads from a socket with bounded buffering: partial frames wait for the rest, and the
 * socket is paused while enough is buffered (so a client cannot make us hold more than the high-water
 * mark plus the one frame we are waiting for).
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { DIRECT_READ_BYTES_MIN, type ReadSink } from '../src/common/direct-reads.js';
import { NbdConnectionClosed } from './errors.js';

interface PendingRead {
  readonly lengthBytes: number;
  resolve(bytes: Buffer): void;
  reject(error: Error): void;
  /** readInto: the bytes go straight into this buffer, `filled` of them so far. */
  readonly target?: Buffer;
  filled: number;
}

/**
 * A ReadSink (see src/common/direct-reads.ts): small reads are copied out of the shared staging
 * buffer, and a large WRITE payload is read by the kernel straight into its pooled buffer.
 */
export class SocketReader implements ReadSink {
  private socket: Socket | undefined;
  /** Owned copies of bytes read and not yet taken. */
  private readonly chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private pending: PendingRead | undefined;
  private endError: Error | undefined;
  private stopped = false;
  private paused = false;
  /**
   * After a large payload the next staging read is small: a full one would also take up to 64 KiB
   * of the next payload, copied into fresh memory and again into the payload buffer.
   */
  private afterLargePayload = false;

  constructor(private readonly bufferedBytesHigh: number) {}

  /** Starts reading from `socket`, which must feed this reader (adoptForDirectReads). */
  attach(socket: Socket): void {
    this.socket = socket;
    socket.on('end', () => this.finish(new NbdConnectionClosed('client closed its side')));
    socket.on('close', () => this.finish(new NbdConnectionClosed('connection closed')));
  }

  /** The bytes if they are already here, without a microtask; undefined otherwise. */
  tryRead(lengthBytes: number): Buffer | undefined {
    assert.ok(this.pending === undefined, 'one read at a time');
    if (this.bufferedBytes < lengthBytes) return undefined;
    return this.take(lengthBytes);
  }

  /** Exactly lengthBytes; rejects with NbdConnectionClosed if the stream ends first. */
  read(lengthBytes: number): Promise<Buffer> {
    assert.ok(this.pending === undefined, 'one read at a time');
    assert.ok(Number.isSafeInteger(lengthBytes) && lengthBytes >= 0, 'read length is a byte count');
    if (this.bufferedBytes >= lengthBytes) return Promise.resolve(this.take(lengthBytes));
    if (this.endError !== undefined) return Promise.reject(this.endError);
    return new Promise<Buffer>((resolve, reject) => {
      this.pending = { lengthBytes, resolve, reject, filled: 0 };
      this.updateFlow();
    });
  }

  /** Exactly target.length bytes into target (a pooled buffer), for large WRITE payloads. */
  readInto(target: Buffer): Promise<Buffer> {
    assert.ok(this.pending === undefined, 'one read at a time');
    const have = Math.min(this.bufferedBytes, target.length);
    this.copyOut(have, target);
    if (have === target.length) return Promise.resolve(target);
    if (this.endError !== undefined) return Promise.reject(this.endError);
    return new Promise<Buffer>((resolve, reject) => {
      this.pending = { lengthBytes: target.length, resolve, reject, target, filled: have };
      this.updateFlow();
    });
  }

  /** Whether a read could still be satisfied by more data (false after EOF with nothing pending). */
  get ended(): boolean {
    return this.endError !== undefined;
  }

  /**
   * Never read again (after NBD_CMD_DISC or on shutdown). Buffered and later bytes are dropped but the
   * socket keeps draining, so closing it later sends FIN rather than a reset that could eat our replies.
   */
  stop(): void {
    this.stopped = true;
    this.chunks.length = 0;
    this.bufferedBytes = 0;
    this.updateFlow();
    this.finish(new NbdConnectionClosed('reading stopped'));
  }

  // ------------------------------------------------------------ ReadSink

  onStaged(bytes: Buffer): boolean {
    this.afterLargePayload = false;
    if (this.stopped) return true;
    let offset = 0;
    const pending = this.pending;
    if (pending?.target !== undefined) {
      offset = Math.min(bytes.length, pending.lengthBytes - pending.filled);
      bytes.copy(pending.target, pending.filled, 0, offset);
      pending.filled += offset;
      if (pending.filled === pending.lengthBytes) this.settle();
    }
    if (offset < bytes.length) {
      this.chunks.push(Buffer.from(bytes.subarray(offset))); // a copy: the staging buffer is reused
      this.bufferedBytes += bytes.length - offset;
      const waiting = this.pending;
      if (waiting !== undefined && waiting.target === undefined && this.bufferedBytes >= waiting.lengthBytes) this.settle();
    }
    this.updateFlow();
    return !this.paused;
  }

  directTarget(): Buffer | undefined {
    const pending = this.pending;
    if (pending?.target === undefined || this.stopped) return undefined;
    return pending.lengthBytes - pending.filled >= DIRECT_READ_BYTES_MIN ? pending.target.subarray(pending.filled) : undefined;
  }

  smallStagingRead(): boolean {
    return this.afterLargePayload;
  }

  onDirect(count: number): boolean {
    const pending = this.pending!;
    pending.filled += count;
    if (pending.filled === pending.lengthBytes) this.settle();
    return !this.paused;
  }

  // ------------------------------------------------------------ internals

  private settle(): void {
    const pending = this.pending!;
    this.pending = undefined;
    if (pending.target !== undefined && pending.lengthBytes >= DIRECT_READ_BYTES_MIN) this.afterLargePayload = true;
    pending.resolve(pending.target ?? this.take(pending.lengthBytes));
  }

  private finish(error: Error): void {
    if (this.endError === undefined) this.endError = error;
    const pending = this.pending;
    if (pending !== undefined) {
      this.pending = undefined;
      pending.reject(this.endError);
    }
  }

  private take(lengthBytes: number): Buffer {
    assert.ok(lengthBytes <= this.bufferedBytes);
    const first = this.chunks[0];
    if (lengthBytes === 0) return Buffer.alloc(0);
    if (first !== undefined && first.length >= lengthBytes) {
      // The common case: the whole frame is inside one chunk, so hand out a view, not a copy.
      const result = first.subarray(0, lengthBytes);
      if (first.length === lengthBytes) this.chunks.shift();
      else this.chunks[0] = first.subarray(lengthBytes);
      this.bufferedBytes -= lengthBytes;
      this.updateFlow();
      return result;
    }
    const result = Buffer.allocUnsafe(lengthBytes);
    this.copyOut(lengthBytes, result);
    return result;
  }

  /** Moves the first `lengthBytes` buffered bytes into `target`. */
  private copyOut(lengthBytes: number, target: Buffer): void {
    let filled = 0;
    while (filled < lengthBytes) {
      const chunk = this.chunks[0]!;
      const used = Math.min(chunk.length, lengthBytes - filled);
      chunk.copy(target, filled, 0, used);
      filled += used;
      if (used === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(used);
    }
    this.bufferedBytes -= lengthBytes;
    this.updateFlow();
  }

  /** Pause when enough is buffered for the waiting read and past the high-water mark; resume otherwise. */
  private updateFlow(): void {
    const socket = this.socket;
    if (socket === undefined || socket.destroyed) return;
    const neededBytes = this.pending?.target === undefined ? (this.pending?.lengthBytes ?? 0) : 0;
    const shouldPause = !this.stopped && this.bufferedBytes >= this.bufferedBytesHigh && this.bufferedBytes >= neededBytes;
    if (shouldPause && !this.paused) {
      this.paused = true;
      socket.pause();
    } else if (!shouldPause && this.paused) {
      this.paused = false;
      socket.resume();
    }
  }
}
