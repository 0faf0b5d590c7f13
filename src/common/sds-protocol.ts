/**
 * The SDS data-port protocol (docs/PROTOCOL.md §5): binary, length-prefixed, pipelined. Each
 * request has an 80-byte header and an optional payload; each reply a 24-byte header and an
 * optional payload. Replies carry the request id and may come in any order.
 *
 * The same port also speaks newline-delimited JSON for debugging; a connection's first byte
 * decides (`{` for JSON, `P` for binary). Shared by the SDS (server) and the SDC (client).
 */
import { createHmac } from 'node:crypto';
import { MiB } from './units.js';

export const REQUEST_MAGIC = 0x50465251; // "PFRQ"
export const REPLY_MAGIC = 0x50465250; // "PFRP"
export const REQUEST_HEADER_BYTES = 80;
export { REQUEST_MAC_BYTES, REQUEST_MAC_OFFSET } from './request-mac.js';
export { computeRequestMac, macKeyOf, requestMacValid, signRequestHeader, type MacKey } from './request-mac.js';
import { REQUEST_MAC_OFFSET } from './request-mac.js';
export const REPLY_HEADER_BYTES = 24;
/** Largest payload of one request or reply. The SDC splits larger IO. */
export const FRAME_PAYLOAD_BYTES_MAX = 8 * MiB;
/** Largest JSON frame line (base64 of FRAME_PAYLOAD_BYTES_MAX fits). */
export const JSON_FRAME_BYTES_MAX = 12 * MiB;

export const Opcode = {
  READ: 0x01,
  WRITE: 0x02,
  FLUSH: 0x03,
  TRIM: 0x04,
  WRITE_ZEROES: 0x05,
  /** Payload: a signed IO token; the SDS verifies and caches it for later requests. */
  TOKEN: 0x10,
  /** A peer SDS reading a chunk range to rebuild a replica; MAC under the peer key. */
  PEER_READ: 0x20,
  /** No authentication, no effect: liveness and latency. */
  PING: 0x30,
  /**
   * The first frame of a client connection. Payload: a 16-byte client id and a u64 incarnation
   * that grows with each connection of that client. The SDS drops the client's older connections
   * (with whatever they still held unread) and answers once their running requests are done: a
   * request the client gave up on can never apply after its retry (PROTOCOL.md §5.6).
   */
  HELLO: 0x31,
} as const;
export const HELLO_PAYLOAD_BYTES = 24;
export type OpcodeValue = (typeof Opcode)[keyof typeof Opcode];
const OPCODE_VALUES = new Set<number>(Object.values(Opcode));

export const RequestFlag = {
  /** Durable before the reply (NBD FUA). */
  FUA: 0x01,
  /** WRITE_ZEROES: allocate, do not punch a hole. */
  NO_HOLE: 0x02,
} as const;

/** Reply status: 0 ok, 1-31 authorization refusals, 32+ errors. Stable: clients match on them. */
export const Status = {
  OK: 0,
  TOKEN_UNKNOWN: 1,
  TOKEN_MALFORMED: 2,
  TOKEN_BAD_SIGNATURE: 3,
  TOKEN_EXPIRED: 4,
  OP_NOT_GRANTED: 5,
  WRONG_VOLUME: 6,
  CHUNK_OUT_OF_RANGE: 7,
  NOT_A_TARGET: 8,
  STALE_EPOCH: 9,
  REPLAYED: 10,
  BAD_MAC: 11,
  /** PEER_READ of a chunk this SDS has no record of: never answered with zeros. */
  CHUNK_UNKNOWN: 12,
  BAD_REQUEST: 32,
  IO_ERROR: 33,
  NO_SPACE: 34,
  BUSY: 35,
  SHUTTING_DOWN: 36,
  INTERNAL: 37,
} as const;
export type StatusValue = (typeof Status)[keyof typeof Status];

export const STATUS_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Status).map(([name, value]) => [value, name]));

export function statusName(status: number): string {
  return STATUS_NAMES[status] ?? `STATUS_${status}`;
}

export interface RequestHeader {
  opcode: number;
  flags: number;
  requestId: bigint;
  tokenId: Buffer;
  seq: bigint;
  volumeId: number;
  chunkIndex: number;
  epoch: number;
  offsetBytes: number;
  lengthBytes: number;
  payloadBytes: number;
  mac: Buffer;
}

export interface ReplyHeader {
  status: number;
  requestId: bigint;
  payloadBytes: number;
  /** STALE_EPOCH: the SDS's epoch for the chunk; IO_ERROR: the errno; else 0. */
  aux: number;
}

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

const ZERO_TOKEN_ID = Buffer.alloc(16);

/** Writes a request header (without the MAC) into `target` at 0. */
export function encodeRequestHeader(header: Omit<RequestHeader, 'mac'>, target: Buffer = Buffer.allocUnsafe(REQUEST_HEADER_BYTES)): Buffer {
  return encodeRequestHeaderInto(target, header, header.requestId, header.payloadBytes);
}

/** The same, with the request id and payload size apart from the fields (no object built per request). */
export function encodeRequestHeaderInto(target: Buffer, fields: Omit<RequestHeader, 'mac' | 'requestId' | 'payloadBytes'>, requestId: bigint, payloadBytes: number): Buffer {
  target.writeUInt32BE(REQUEST_MAGIC, 0);
  target.writeUInt8(fields.opcode, 4);
  target.writeUInt8(fields.flags, 5);
  target.writeUInt16BE(0, 6);
  target.writeBigUInt64BE(requestId, 8);
  (fields.tokenId.length === 16 ? fields.tokenId : ZERO_TOKEN_ID).copy(target, 16);
  target.writeBigUInt64BE(fields.seq, 32);
  target.writeUInt32BE(fields.volumeId, 40);
  target.writeUInt32BE(fields.chunkIndex, 44);
  target.writeUInt32BE(fields.epoch, 48);
  target.writeUInt32BE(fields.offsetBytes, 52);
  target.writeUInt32BE(fields.lengthBytes, 56);
  target.writeUInt32BE(payloadBytes, 60);
  target.fill(0, REQUEST_MAC_OFFSET, REQUEST_HEADER_BYTES);
  return target;
}

/** Parses and bounds-checks a request header. Throws FrameError: the connection is then closed. */
export function decodeRequestHeader(bytes: Buffer): RequestHeader {
  if (bytes.length < REQUEST_HEADER_BYTES) throw new FrameError('short request header');
  if (bytes.readUInt32BE(0) !== REQUEST_MAGIC) throw new FrameError('bad request magic');
  const opcode = bytes.readUInt8(4);
  if (!OPCODE_VALUES.has(opcode)) throw new FrameError(`unknown opcode ${opcode}`);
  const payloadBytes = bytes.readUInt32BE(60);
  if (payloadBytes > FRAME_PAYLOAD_BYTES_MAX) throw new FrameError(`payload of ${payloadBytes} bytes over the limit`);
  return {
    opcode,
    flags: bytes.readUInt8(5),
    requestId: bytes.readBigUInt64BE(8),
    tokenId: bytes.subarray(16, 32),
    seq: bytes.readBigUInt64BE(32),
    volumeId: bytes.readUInt32BE(40),
    chunkIndex: bytes.readUInt32BE(44),
    epoch: bytes.readUInt32BE(48),
    offsetBytes: bytes.readUInt32BE(52),
    lengthBytes: bytes.readUInt32BE(56),
    payloadBytes,
    mac: bytes.subarray(REQUEST_MAC_OFFSET, REQUEST_HEADER_BYTES),
  };
}

export function encodeReplyHeader(reply: ReplyHeader, target: Buffer = Buffer.allocUnsafe(REPLY_HEADER_BYTES)): Buffer {
  target.writeUInt32BE(REPLY_MAGIC, 0);
  target.writeUInt8(reply.status, 4);
  target.writeUInt8(0, 5);
  target.writeUInt16BE(0, 6);
  target.writeBigUInt64BE(reply.requestId, 8);
  target.writeUInt32BE(reply.payloadBytes, 16);
  target.writeUInt32BE(reply.aux >>> 0, 20);
  return target;
}

export function decodeReplyHeader(bytes: Buffer): ReplyHeader {
  if (bytes.length < REPLY_HEADER_BYTES) throw new FrameError('short reply header');
  if (bytes.readUInt32BE(0) !== REPLY_MAGIC) throw new FrameError('bad reply magic');
  const payloadBytes = bytes.readUInt32BE(16);
  if (payloadBytes > FRAME_PAYLOAD_BYTES_MAX) throw new FrameError(`reply payload of ${payloadBytes} bytes over the limit`);
  return { status: bytes.readUInt8(4), requestId: bytes.readBigUInt64BE(8), payloadBytes, aux: bytes.readUInt32BE(20) };
}

/** Keys derived from the signing key for SDS-to-SDS and MDM-to-SDS authentication. */
export function derivePeerKey(signingKey: Buffer): Buffer {
  return createHmac('sha256', signingKey).update('pflex-peer-v1').digest();
}

export function deriveControlCredential(signingKey: Buffer): string {
  return createHmac('sha256', signingKey).update('pflex-control-v1').digest('base64url');
}

/**
 * Accumulates socket chunks and hands out exact byte counts without copying more than needed.
 * Both ends of the data protocol use it.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private headOffset = 0;
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Copies the next `count` bytes into `target` at `targetOffset` and consumes them. */
  takeInto(count: number, target: Buffer, targetOffset = 0): void {
    if (count > this.length) throw new RangeError('not enough bytes queued');
    let copied = 0;
    while (copied < count) {
      const head = this.chunks[0]!;
      const available = head.length - this.headOffset;
      const step = Math.min(available, count - copied);
      head.copy(target, targetOffset + copied, this.headOffset, this.headOffset + step);
      copied += step;
      this.headOffset += step;
      if (this.headOffset === head.length) {
        this.chunks.shift();
        this.headOffset = 0;
      }
    }
    this.length -= count;
  }

  /** The next `count` bytes as one Buffer (a view when they sit in one chunk). */
  take(count: number): Buffer {
    const head = this.chunks[0];
    if (head !== undefined && head.length - this.headOffset >= count) {
      const view = head.subarray(this.headOffset, this.headOffset + count);
      this.headOffset += count;
      this.length -= count;
      if (this.headOffset === head.length) {
        this.chunks.shift();
        this.headOffset = 0;
      }
      return view;
    }
    const out = Buffer.allocUnsafe(count);
    this.takeInto(count, out);
    return out;
  }

  /** Index of `byte` within the next `limit` bytes, or -1. */
  indexOf(byte: number, limit: number): number {
    let seen = 0;
    for (let i = 0; i < this.chunks.length && seen < limit; i += 1) {
      const chunk = this.chunks[i]!;
      const start = i === 0 ? this.headOffset : 0;
      const end = Math.min(chunk.length, start + (limit - seen));
      const found = chunk.indexOf(byte, start);
      if (found !== -1 && found < end) return seen + (found - start);
      seen += end - start;
    }
    return -1;
  }

  clear(): void {
    this.chunks = [];
    this.headOffset = 0;
    this.length = 0;
  }
}
