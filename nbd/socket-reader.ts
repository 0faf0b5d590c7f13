/**
 * Exact-length reads from a socket with bounded buffering: partial frames wait for the rest, and the
 * socket is paused while enough is buffered (so a client cannot make us hold more than the high-water
 * mark plus the one frame we are waiting for).
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { NbdConnectionClosed } from './errors.js';

interface PendingRead {
  readonly lengthBytes: number;
  resolve(bytes: Buffer): void;
  reject(error: Error): void;
  /** Only wait until lengthBytes are buffered; the caller takes them itself (readInto). */
  readonly peek?: boolean;
}

const EMPTY = Buffer.alloc(0);

export class SocketReader {
  private readonly chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private pending: PendingRead | undefined;
  private endError: Error | undefined;
  private stopped = false;
  private paused = false;

  constructor(
    private readonly socket: Socket,
    private readonly bufferedBytesHigh: number,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
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
      this.pending = { lengthBytes, resolve, reject };
      this.updateFlow();
    });
  }

  /** Exactly target.length bytes copied into target (a pooled buffer), for large WRITE payloads. */
  async readInto(target: Buffer): Promise<Buffer> {
    assert.ok(this.pending === undefined, 'one read at a time');
    if (this.bufferedBytes < target.length) {
      if (this.endError !== undefined) throw this.endError;
      // Wait until enough is buffered without taking it, then copy once into the target.
      await new Promise<void>((resolve, reject) => {
        this.pending = { lengthBytes: target.length, resolve: () => resolve(), reject, peek: true };
        this.updateFlow();
      });
    }
    return this.take(target.length, target);
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

  private onData(chunk: Buffer): void {
    if (this.stopped) return;
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
    const pending = this.pending;
    if (pending !== undefined && this.bufferedBytes >= pending.lengthBytes) {
      this.pending = undefined;
      pending.resolve(pending.peek === true ? EMPTY : this.take(pending.lengthBytes));
      return;
    }
    this.updateFlow();
  }

  private finish(error: Error): void {
    if (this.endError === undefined) this.endError = error;
    const pending = this.pending;
    if (pending !== undefined) {
      this.pending = undefined;
      pending.reject(this.endError);
    }
  }

  private take(lengthBytes: number, target?: Buffer): Buffer {
    assert.ok(lengthBytes <= this.bufferedBytes);
    let result: Buffer;
    const first = this.chunks[0];
    if (lengthBytes === 0) {
      result = Buffer.alloc(0);
    } else if (target === undefined && first !== undefined && first.length >= lengthBytes) {
      // The common case: the whole frame is inside one chunk, so hand out a view, not a copy.
      result = first.subarray(0, lengthBytes);
      if (first.length === lengthBytes) this.chunks.shift();
      else this.chunks[0] = first.subarray(lengthBytes);
    } else {
      result = target ?? Buffer.allocUnsafe(lengthBytes);
      let filled = 0;
      while (filled < lengthBytes) {
        const chunk = this.chunks[0]!;
        const used = Math.min(chunk.length, lengthBytes - filled);
        chunk.copy(result, filled, 0, used);
        filled += used;
        if (used === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(used);
      }
    }
    this.bufferedBytes -= lengthBytes;
    this.updateFlow();
    return result;
  }

  /** Pause when enough is buffered for the waiting read and past the high-water mark; resume otherwise. */
  private updateFlow(): void {
    if (this.socket.destroyed) return;
    const neededBytes = this.pending?.lengthBytes ?? 0;
    const shouldPause = !this.stopped && this.bufferedBytes >= this.bufferedBytesHigh && this.bufferedBytes >= neededBytes;
    if (shouldPause && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!shouldPause && this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }
}
