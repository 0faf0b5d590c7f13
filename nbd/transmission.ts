/**
 * The transmission phase: read requests, validate each before dispatch, run many concurrently against
 * the export, and write each reply as one uninterrupted run of bytes (replies may come in any order;
 * the handle ties them to requests). Reading stops while too much is in flight or queued for output.
 */
import type { Socket } from 'node:net';
import type { Logger } from '../src/common/logger.js';
import { SocketBatcher } from '../src/common/socket-batcher.js';
import {
  EXTENTS_PER_REPLY_MAX,
  IN_FLIGHT_BYTES_MAX,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAGS_KNOWN,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_SEND_FUA,
  NBD_REQUEST_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  OUTPUT_BUFFERED_BYTES_HIGH,
  REQUEST_HEADER_BYTES,
  WRITE_PAYLOAD_BYTES_DISCONNECT,
} from './constants.js';
import {
  decodeRequest,
  encodeBlockStatusReply,
  encodeOffsetDataHeader,
  encodeSimpleReply,
  encodeStructuredError,
  encodeStructuredNone,
  type BlockDescriptor,
  type Request,
} from './codec.js';
import { NbdConnectionClosed, NbdProtocolError, isNbdError, wireErrno, type NbdErrno } from './errors.js';
import type { NbdSession } from './session.js';
import type { SocketReader } from './socket-reader.js';
import type { NbdExtent } from './types.js';

const COMMAND_NAMES: Record<number, string> = {
  [NBD_CMD_READ]: 'READ',
  [NBD_CMD_WRITE]: 'WRITE',
  [NBD_CMD_DISC]: 'DISC',
  [NBD_CMD_FLUSH]: 'FLUSH',
  [NBD_CMD_TRIM]: 'TRIM',
  [NBD_CMD_CACHE]: 'CACHE',
  [NBD_CMD_WRITE_ZEROES]: 'WRITE_ZEROES',
  [NBD_CMD_BLOCK_STATUS]: 'BLOCK_STATUS',
};

export function commandName(type: number): string {
  return COMMAND_NAMES[type] ?? `command ${type}`;
}

/** Commands whose offset and length name a range of the export. */
const RANGE_COMMANDS = new Set([NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_CACHE, NBD_CMD_WRITE_ZEROES, NBD_CMD_BLOCK_STATUS]);
const WRITING_COMMANDS = new Set([NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES]);
const BASE_ALLOCATION_FLAGS = NBD_STATE_HOLE | NBD_STATE_ZERO;

interface Refusal {
  readonly errno: NbdErrno;
  readonly message: string;
}

/**
 * Why a request must be refused before it reaches the export, or undefined if it may run. Pure: the
 * spec's rules on command, flags, read-only, range, alignment and maximum size, in that order.
 */
export function validateRequest(request: Request, session: NbdSession): Refusal | undefined {
  const { type, flags, offsetBytes, lengthBytes } = request;
  const name = commandName(type);
  if (!Object.hasOwn(COMMAND_NAMES, type) || type === NBD_CMD_DISC) return { errno: 'EINVAL', message: `unknown command ${type}` };
  if (session.export.readOnly && WRITING_COMMANDS.has(type)) return { errno: 'EPERM', message: `${name} on a read-only export` };
  if ((flags & ~NBD_CMD_FLAGS_KNOWN) !== 0) return { errno: 'EINVAL', message: `unknown command flags 0x${flags.toString(16)}` };
  if ((flags & NBD_CMD_FLAG_FUA) !== 0 && (session.transmissionFlags & NBD_FLAG_SEND_FUA) === 0) {
    return { errno: 'EINVAL', message: 'FUA was not negotiated' };
  }
  if ((flags & (NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO)) !== 0 && type !== NBD_CMD_WRITE_ZEROES) {
    return { errno: 'EINVAL', message: `NO_HOLE and FAST_ZERO only apply to WRITE_ZEROES, not ${name}` };
  }
  if ((flags & NBD_CMD_FLAG_DF) !== 0 && (type !== NBD_CMD_READ || !session.structuredReplies)) {
    return { errno: 'EINVAL', message: 'DF only applies to READ with structured replies' };
  }
  if ((flags & NBD_CMD_FLAG_REQ_ONE) !== 0 && type !== NBD_CMD_BLOCK_STATUS) {
    return { errno: 'EINVAL', message: `REQ_ONE only applies to BLOCK_STATUS, not ${name}` };
  }
  if (type === NBD_CMD_FLUSH) {
    if (offsetBytes !== 0 || lengthBytes !== 0) return { errno: 'EINVAL', message: 'FLUSH needs offset and length 0' };
    return undefined;
  }
  if (type === NBD_CMD_BLOCK_STATUS) {
    if (!session.structuredReplies || session.baseAllocationContextId === undefined) {
      return { errno: 'EINVAL', message: 'BLOCK_STATUS without a negotiated base:allocation context' };
    }
    if (lengthBytes === 0) return { errno: 'EINVAL', message: 'BLOCK_STATUS of length 0 has no extent to report' };
  }
  if (RANGE_COMMANDS.has(type)) {
    if (offsetBytes > session.sizeBytes || lengthBytes > session.sizeBytes - offsetBytes) {
      // The spec asks for ENOSPC when a write runs past the end, EINVAL for everything else.
      const errno = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES ? 'ENOSPC' : 'EINVAL';
      return { errno, message: `${name} of ${lengthBytes} bytes at ${offsetBytes} runs past the export's ${session.sizeBytes} bytes` };
    }
    const { minimumBytes, maximumBytes } = session.blockSizes;
    if (minimumBytes > 1 && (offsetBytes % minimumBytes !== 0 || lengthBytes % minimumBytes !== 0)) {
      return { errno: 'EINVAL', message: `${name} is not aligned to the ${minimumBytes}-byte minimum block` };
    }
    const maximumApplies =
      type === NBD_CMD_READ || type === NBD_CMD_WRITE || type === NBD_CMD_CACHE || (type === NBD_CMD_WRITE_ZEROES && (flags & NBD_CMD_FLAG_FAST_ZERO) === 0);
    if (maximumApplies && lengthBytes > maximumBytes) {
      return { errno: 'EINVAL', message: `${name} of ${lengthBytes} bytes exceeds the ${maximumBytes}-byte maximum block` };
    }
  }
  return undefined;
}

/**
 * An export's extents as block descriptors for [offset, offset+length): clamped to the request, equal
 * neighbours merged, one descriptor for REQ_ONE, at most EXTENTS_PER_REPLY_MAX. Throws on a broken list.
 */
export function blockDescriptors(extents: readonly NbdExtent[], requestedBytes: number, requestOne: boolean): BlockDescriptor[] {
  if (!Array.isArray(extents) || extents.length === 0) throw new Error('blockStatus returned no extents');
  const descriptors: { lengthBytes: number; flags: number }[] = [];
  let coveredBytes = 0;
  for (const extent of extents) {
    if (!Number.isSafeInteger(extent?.lengthBytes) || extent.lengthBytes <= 0 || !Number.isInteger(extent.flags)) {
      throw new Error(`blockStatus returned an invalid extent ${JSON.stringify(extent)}`);
    }
    const lengthBytes = Math.min(extent.lengthBytes, requestedBytes - coveredBytes);
    const flags = extent.flags & BASE_ALLOCATION_FLAGS;
    const last = descriptors[descriptors.length - 1];
    if (last !== undefined && last.flags === flags) last.lengthBytes += lengthBytes;
    else descriptors.push({ lengthBytes, flags });
    coveredBytes += lengthBytes;
    if (requestOne || coveredBytes >= requestedBytes || descriptors.length >= EXTENTS_PER_REPLY_MAX) break;
  }
  return descriptors;
}

export interface TransmissionLimits {
  readonly requestsInFlightMax: number;
}

/** WRITE payloads from this size up are read into pooled buffers. */
const POOLED_PAYLOAD_BYTES_MIN = 64 * 1024;
const POOLED_BUFFERS_PER_CLASS_MAX = 64;

/** Power-of-two classes of reusable payload buffers, per connection. */
class PayloadPool {
  private readonly free = new Map<number, Buffer[]>();

  acquire(lengthBytes: number): Buffer {
    let size = POOLED_PAYLOAD_BYTES_MIN;
    while (size < lengthBytes) size *= 2;
    return this.free.get(size)?.pop() ?? Buffer.allocUnsafe(size);
  }

  release(buffer: Buffer): void {
    let list = this.free.get(buffer.length);
    if (list === undefined) {
      list = [];
      this.free.set(buffer.length, list);
    }
    if (list.length < POOLED_BUFFERS_PER_CLASS_MAX) list.push(buffer);
  }
}

export class Transmission {
  private inFlightRequests = 0;
  private inFlightBytes = 0;
  private stopping = false;
  private wakeReader: (() => void) | undefined;
  private idleWaiters: (() => void)[] = [];
  private readonly payloadPool = new PayloadPool();
  /** Replies leave in one writev per event-loop turn: at queue depth 32, per-reply writes dominated. */
  private readonly batcher: SocketBatcher;

  constructor(
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    private readonly session: NbdSession,
    private readonly log: Logger,
    private readonly limits: TransmissionLimits,
  ) {
    this.batcher = new SocketBatcher(socket);
    socket.on('drain', () => this.wake());
    socket.on('close', () => this.wake());
  }

  /**
   * Serves requests until NBD_CMD_DISC, end of stream, or stop(); then waits for in-flight requests.
   * Throws NbdProtocolError when the client breaks the protocol (the caller hangs up).
   */
  async run(): Promise<void> {
    try {
      await this.readRequests();
    } finally {
      await this.idle();
      this.batcher.flush();
    }
  }

  /** Server shutdown: take no more requests; run() returns once in-flight ones are answered. */
  stop(): void {
    this.stopping = true;
    this.reader.stop();
    this.wake();
  }

  private async readRequests(): Promise<void> {
    const { maximumBytes } = this.session.blockSizes;
    const payloadBytesDisconnect = Math.max(WRITE_PAYLOAD_BYTES_DISCONNECT, maximumBytes);
    for (;;) {
      while (!this.stopping && !this.socket.destroyed && !this.hasCapacity()) await this.capacity();
      if (this.stopping || this.socket.destroyed) return;
      let request: Request;
      let payload: Buffer | undefined;
      let pooled: Buffer | undefined;
      try {
        request = decodeRequest(this.reader.tryRead(REQUEST_HEADER_BYTES) ?? (await this.reader.read(REQUEST_HEADER_BYTES)));
        if (request.magic !== NBD_REQUEST_MAGIC) throw new NbdProtocolError(`bad request magic 0x${request.magic.toString(16)}`);
        if (request.type === NBD_CMD_WRITE) {
          // The payload must be consumed even if the request is refused, or the stream loses sync.
          if (request.lengthBytes > payloadBytesDisconnect) {
            throw new NbdProtocolError(`WRITE payload of ${request.lengthBytes} bytes exceeds ${payloadBytesDisconnect}`);
          }
          if (request.lengthBytes >= POOLED_PAYLOAD_BYTES_MIN) {
            // Large payloads land in reused memory: a fresh 1 MiB buffer per write kept V8's GC busy.
            pooled = this.payloadPool.acquire(request.lengthBytes);
            payload = await this.reader.readInto(pooled.subarray(0, request.lengthBytes));
          } else {
            payload = this.reader.tryRead(request.lengthBytes) ?? (await this.reader.read(request.lengthBytes));
          }
        }
      } catch (error) {
        if (error instanceof NbdConnectionClosed) return; // EOF or stop(): finish what is in flight
        throw error;
      }
      if (request.type === NBD_CMD_DISC) {
        // No reply; the spec wants outstanding requests handled before the close.
        this.log.debug('nbd client sent DISC');
        this.reader.stop();
        return;
      }
      this.dispatch(request, payload, pooled);
    }
  }

  private dispatch(request: Request, payload: Buffer | undefined, pooled?: Buffer): void {
    const refusal = validateRequest(request, this.session);
    if (refusal !== undefined) {
      const { offsetBytes, lengthBytes, flags } = request;
      this.log.debug({ command: commandName(request.type), offsetBytes, lengthBytes, flags, errno: refusal.errno }, `nbd request refused: ${refusal.message}`);
      this.replyError(request, refusal.errno, refusal.message);
      return;
    }
    if (request.lengthBytes === 0 && request.type !== NBD_CMD_FLUSH) {
      // The spec leaves zero-length requests unspecified; succeeding without touching the export is the kindest answer.
      if (request.type === NBD_CMD_READ && this.session.structuredReplies) this.send(encodeStructuredNone(request.handle));
      else this.send(encodeSimpleReply(0, request.handle));
      return;
    }
    const costBytes = request.type === NBD_CMD_READ || request.type === NBD_CMD_WRITE ? request.lengthBytes : 0;
    this.inFlightRequests += 1;
    this.inFlightBytes += costBytes;
    void this.execute(request, payload).finally(() => {
      // The export is done with the payload (its write resolved or failed): the memory can be reused.
      if (pooled !== undefined) this.payloadPool.release(pooled);
      this.inFlightRequests -= 1;
      this.inFlightBytes -= costBytes;
      this.wake();
      if (this.inFlightRequests === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
    });
  }

  private async execute(request: Request, payload: Buffer | undefined): Promise<void> {
    const nbdExport = this.session.export;
    const { type, flags, offsetBytes, lengthBytes, handle } = request;
    const fua = (flags & NBD_CMD_FLAG_FUA) !== 0;
    try {
      switch (type) {
        case NBD_CMD_READ: {
          const data = await nbdExport.read(offsetBytes, lengthBytes);
          if (!Buffer.isBuffer(data) || data.length !== lengthBytes) {
            throw new Error(`read returned ${Buffer.isBuffer(data) ? `${data.length} bytes` : typeof data}, expected ${lengthBytes} bytes`);
          }
          this.sendRead(request, data);
          return;
        }
        case NBD_CMD_WRITE:
          await nbdExport.write(offsetBytes, payload!, fua);
          break;
        case NBD_CMD_FLUSH:
          await nbdExport.flush();
          break;
        case NBD_CMD_TRIM:
          await nbdExport.trim(offsetBytes, lengthBytes, fua);
          break;
        case NBD_CMD_CACHE:
          if (nbdExport.cache !== undefined) await nbdExport.cache(offsetBytes, lengthBytes);
          break;
        case NBD_CMD_WRITE_ZEROES:
          await nbdExport.writeZeroes(offsetBytes, lengthBytes, {
            fua,
            noHole: (flags & NBD_CMD_FLAG_NO_HOLE) !== 0,
            fastZero: (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
          });
          break;
        case NBD_CMD_BLOCK_STATUS: {
          // Without blockStatus, "allocated, contents unknown" (flags 0) is always a truthful answer.
          const extents = nbdExport.blockStatus === undefined ? [{ lengthBytes, flags: 0 }] : await nbdExport.blockStatus(offsetBytes, lengthBytes);
          const descriptors = blockDescriptors(extents, lengthBytes, (flags & NBD_CMD_FLAG_REQ_ONE) !== 0);
          this.send(encodeBlockStatusReply(handle, this.session.baseAllocationContextId!, descriptors));
          return;
        }
        default:
          throw new Error(`unreachable: command ${type} passed validation`);
      }
      this.send(encodeSimpleReply(0, handle));
    } catch (error) {
      if (isNbdError(error)) {
        this.log.debug({ command: commandName(type), offsetBytes, lengthBytes, errno: error.errno }, `nbd request failed: ${error.message}`);
        this.replyError(request, error.errno, error.message);
      } else {
        this.log.error({ err: error, command: commandName(type), offsetBytes, lengthBytes }, 'nbd export failed; answering EIO');
        this.replyError(request, 'EIO', 'input/output error');
      }
    }
  }

  private sendRead(request: Request, data: Buffer): void {
    if (!this.writable()) return;
    // Header and data are queued together: they leave as one run, never split by another reply.
    const header = this.session.structuredReplies ? encodeOffsetDataHeader(request.handle, request.offsetBytes, data.length) : encodeSimpleReply(0, request.handle);
    this.batcher.write(header, data);
  }

  private replyError(request: Request, errno: NbdErrno, message: string): void {
    const wire = wireErrno(errno, {
      fastZero: (request.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
      dontFragment: (request.flags & NBD_CMD_FLAG_DF) !== 0,
    });
    // With structured replies an error chunk can carry the message; a simple READ error never carries data.
    if (this.session.structuredReplies) this.send(encodeStructuredError(request.handle, wire, message));
    else this.send(encodeSimpleReply(wire, request.handle));
  }

  private send(bytes: Buffer): void {
    if (this.writable()) this.batcher.write(bytes);
  }

  private writable(): boolean {
    // A client that hung up mid-request gets nothing; the work still finishes and is released.
    return !this.socket.destroyed && this.socket.writable;
  }

  private hasCapacity(): boolean {
    return (
      this.inFlightRequests < this.limits.requestsInFlightMax &&
      this.inFlightBytes < IN_FLIGHT_BYTES_MAX &&
      this.batcher.queuedBytes < OUTPUT_BUFFERED_BYTES_HIGH
    );
  }

  private capacity(): Promise<void> {
    return new Promise((resolve) => {
      this.wakeReader = resolve;
    });
  }

  private wake(): void {
    const resolve = this.wakeReader;
    this.wakeReader = undefined;
    resolve?.();
  }

  private idle(): Promise<void> {
    if (this.inFlightRequests === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
