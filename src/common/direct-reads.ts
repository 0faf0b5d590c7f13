/**
 * Socket reads into memory the reader owns (Node's `onread` socket option) instead of a fresh
 * buffer per read. Each 'data' event is a new ArrayBuffer; at hundreds of MB/s that external
 * memory made V8 run a full mark-compact several times a second in every SDS (about half of its
 * CPU on 1 MiB writes). Here small frames land in one staging buffer shared by the process, which
 * the sink copies out of before its callback returns, and the rest of a large payload is read by
 * the kernel straight into the buffer it will live in.
 */
import { Socket } from 'node:net';

/** What a socket's bytes are handed to. */
export interface ReadSink {
  /**
   * Bytes read into the shared staging buffer, valid only during this call: consume them or copy
   * what you keep. Return false to stop reading until the socket is resumed.
   */
  onStaged(bytes: Buffer): boolean;
  /** Where the next read should land instead (never empty), or undefined for the staging buffer. */
  directTarget(): Buffer | undefined;
  /** `count` bytes were read into the start of the last directTarget(). Return false to pause. */
  onDirect(count: number): boolean;
  /**
   * True to make the next staging read small: after a large payload, the next read then holds the
   * next header and only a little of what follows, so little is copied before reads go in place.
   */
  smallStagingRead?(): boolean;
}

/** Payload remainders from this size up are read in place; smaller ones share reads with the frames after them. */
export const DIRECT_READ_BYTES_MIN = 16 * 1024;
const STAGING_BYTES = 64 * 1024;
/**
 * One per process: libuv fills it and calls back synchronously for one socket at a time, and each
 * sink is done with it when its callback returns.
 */
const staging = Buffer.allocUnsafe(STAGING_BYTES);
/** The same memory, for a small staging read: what it leaves over fits Node's small-buffer pool. */
const stagingSmall = staging.subarray(0, 4096);

/** The `onread` option of a socket that feeds `sink`. */
export function onreadFor(sink: ReadSink): { buffer: () => Buffer; callback: (count: number, buffer: Uint8Array) => boolean } {
  return {
    buffer: () => sink.directTarget() ?? (sink.smallStagingRead?.() === true ? stagingSmall : staging),
    callback: (count, buffer) => (buffer === staging || buffer === stagingSmall ? sink.onStaged(staging.subarray(0, count)) : sink.onDirect(count)),
  };
}

/**
 * An accepted socket (from a server created with `pauseOnConnect: true`) rewrapped so its reads
 * go to `sink`. Node offers `onread` only to sockets it creates from options, so the accepted
 * socket's handle moves to a new Socket: the old one is destroyed without its handle, which also
 * takes it out of the server's connection count (the caller enforces its own limit). Where the
 * handle cannot move (another runtime), the same socket is returned, feeding `sink` from 'data'
 * events.
 */
export function adoptForDirectReads(accepted: Socket, sink: ReadSink, options: { allowHalfOpen?: boolean } = {}): Socket {
  const internal = accepted as unknown as { _handle?: { useUserBuffer?: unknown } | null };
  const handle = internal._handle;
  if (handle === null || handle === undefined || typeof handle.useUserBuffer !== 'function') {
    accepted.on('data', (chunk: Buffer) => {
      if (!sink.onStaged(chunk)) accepted.pause();
    });
    accepted.resume();
    return accepted;
  }
  internal._handle = null;
  accepted.destroy();
  const options_ = { handle, readable: true, writable: true, allowHalfOpen: options.allowHalfOpen ?? false, onread: onreadFor(sink) };
  return new Socket(options_ as ConstructorParameters<typeof Socket>[0]);
}
