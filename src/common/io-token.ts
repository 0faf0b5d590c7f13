/**
 * IO tokens: capability leases the MDM signs and the SDS verifies (DESIGN §4, docs/PROTOCOL.md §Token).
 *
 * A token is a byte string: a fixed 64-byte header, one record per chunk of its range, then a
 * 32-byte HMAC-SHA256 over everything before it, keyed by the cluster signing key that only the
 * MDM and SDS hold. The SDC carries it around opaque; decoding never trusts a length it has not
 * bounded first, so a hostile token costs at most TOKEN_BYTES_MAX of parsing.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const TOKEN_MAGIC = 0x50465431; // "PFT1"
export const TOKEN_VERSION = 1;
export const TOKEN_HEADER_BYTES = 64;
export const TOKEN_SIGNATURE_BYTES = 32;
export const TOKEN_ID_BYTES = 16;
export const TOKEN_CHUNKS_MAX = 1024;
export const TOKEN_TARGETS_PER_CHUNK_MAX = 4;
export const TOKEN_BYTES_MAX =
  TOKEN_HEADER_BYTES + TOKEN_CHUNKS_MAX * (5 + 4 * TOKEN_TARGETS_PER_CHUNK_MAX) + TOKEN_SIGNATURE_BYTES;
export const SESSION_KEY_BYTES = 32;
const SESSION_KEY_LABEL = Buffer.from('pflex-session-v1', 'ascii');

/** Operation bits of a token. TRIM also grants WRITE_ZEROES; FLUSH is granted with WRITE. */
export const TokenOp = {
  READ: 0x01,
  WRITE: 0x02,
  TRIM: 0x04,
  FLUSH: 0x08,
} as const;
export const TOKEN_OPS_ALL = TokenOp.READ | TokenOp.WRITE | TokenOp.TRIM | TokenOp.FLUSH;

export interface TokenChunk {
  /** Epoch of the chunk's replica set; an SDS refuses a token whose epoch is not its own. */
  readonly epoch: number;
  /** SDS ids allowed to serve this chunk under this token. Empty: never written, reads are zeros. */
  readonly targetSdsIds: readonly number[];
}

export interface TokenFields {
  readonly tokenId: Buffer;
  readonly operations: number;
  readonly volumeId: number;
  readonly sdcId: number;
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
  readonly chunkFirst: number;
  /** The volume's pool: an SDS stores the chunk on a device of this pool. */
  readonly poolId: number;
  /** The pool's chunk size, a power of two; IO must stay inside one chunk. */
  readonly chunkSizeBytes: number;
  readonly chunks: readonly TokenChunk[];
}

export const TOKEN_CHUNK_SIZE_LOG2_MIN = 12;
export const TOKEN_CHUNK_SIZE_LOG2_MAX = 30;

export class TokenFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenFormatError';
  }
}

function isU32(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 0xffffffff;
}

function checkFields(fields: TokenFields): void {
  if (fields.tokenId.length !== TOKEN_ID_BYTES) throw new TokenFormatError('token id must be 16 bytes');
  if ((fields.operations & ~TOKEN_OPS_ALL) !== 0 || fields.operations === 0) {
    throw new TokenFormatError('operations must be a non-empty subset of READ|WRITE|TRIM|FLUSH');
  }
  for (const [name, value] of [
    ['volume id', fields.volumeId],
    ['sdc id', fields.sdcId],
    ['chunk first', fields.chunkFirst],
    ['pool id', fields.poolId],
  ] as const) {
    if (!isU32(value)) throw new TokenFormatError(`${name} must be a u32`);
  }
  if (!Number.isSafeInteger(fields.issuedAtMs) || !Number.isSafeInteger(fields.expiresAtMs) || fields.issuedAtMs < 0) {
    throw new TokenFormatError('timestamps must be non-negative integers');
  }
  const log2 = Math.log2(fields.chunkSizeBytes);
  if (!Number.isInteger(log2) || log2 < TOKEN_CHUNK_SIZE_LOG2_MIN || log2 > TOKEN_CHUNK_SIZE_LOG2_MAX) {
    throw new TokenFormatError('chunk size must be a power of two from 4 KiB to 1 GiB');
  }
  if (fields.expiresAtMs <= fields.issuedAtMs) throw new TokenFormatError('token expires before it is issued');
  if (fields.chunks.length === 0 || fields.chunks.length > TOKEN_CHUNKS_MAX) {
    throw new TokenFormatError(`a token covers 1..${TOKEN_CHUNKS_MAX} chunks`);
  }
  if (!isU32(fields.chunkFirst + fields.chunks.length - 1)) throw new TokenFormatError('chunk range overflows');
  for (const chunk of fields.chunks) {
    if (!isU32(chunk.epoch)) throw new TokenFormatError('epoch must be a u32');
    if (chunk.targetSdsIds.length > TOKEN_TARGETS_PER_CHUNK_MAX) {
      throw new TokenFormatError(`at most ${TOKEN_TARGETS_PER_CHUNK_MAX} targets per chunk`);
    }
    for (const id of chunk.targetSdsIds) if (!isU32(id) || id === 0) throw new TokenFormatError('bad sds id');
  }
}

/** The canonical bytes a signature covers: header and chunk records, in this exact order. */
export function encodeTokenBody(fields: TokenFields): Buffer {
  checkFields(fields);
  let length = TOKEN_HEADER_BYTES;
  for (const chunk of fields.chunks) length += 5 + 4 * chunk.targetSdsIds.length;
  const body = Buffer.alloc(length);
  body.writeUInt32BE(TOKEN_MAGIC, 0);
  body.writeUInt8(TOKEN_VERSION, 4);
  body.writeUInt8(fields.operations, 5);
  body.writeUInt16BE(0, 6);
  fields.tokenId.copy(body, 8);
  body.writeUInt32BE(fields.volumeId, 24);
  body.writeUInt32BE(fields.sdcId, 28);
  body.writeBigUInt64BE(BigInt(fields.issuedAtMs), 32);
  body.writeBigUInt64BE(BigInt(fields.expiresAtMs), 40);
  body.writeUInt32BE(fields.chunkFirst, 48);
  body.writeUInt32BE(fields.chunks.length, 52);
  body.writeUInt32BE(fields.poolId, 56);
  body.writeUInt8(Math.log2(fields.chunkSizeBytes), 60);
  body.fill(0, 61, 64);
  let offset = TOKEN_HEADER_BYTES;
  for (const chunk of fields.chunks) {
    body.writeUInt32BE(chunk.epoch, offset);
    body.writeUInt8(chunk.targetSdsIds.length, offset + 4);
    offset += 5;
    for (const id of chunk.targetSdsIds) {
      body.writeUInt32BE(id, offset);
      offset += 4;
    }
  }
  return body;
}

export function computeTokenSignature(body: Buffer, signingKey: Buffer): Buffer {
  return createHmac('sha256', signingKey).update(body).digest();
}

/** Encodes and signs: the result is what the MDM hands out and the SDS checks. */
export function signToken(fields: TokenFields, signingKey: Buffer): Buffer {
  const body = encodeTokenBody(fields);
  return Buffer.concat([body, computeTokenSignature(body, signingKey)]);
}

export interface DecodedToken {
  readonly fields: TokenFields;
  readonly body: Buffer;
  readonly signature: Buffer;
}

/** Parses a signed token's bytes without verifying the signature. Throws TokenFormatError. */
export function decodeToken(bytes: Buffer): DecodedToken {
  if (bytes.length > TOKEN_BYTES_MAX) throw new TokenFormatError(`token longer than ${TOKEN_BYTES_MAX} bytes`);
  if (bytes.length < TOKEN_HEADER_BYTES + TOKEN_SIGNATURE_BYTES) throw new TokenFormatError('token too short');
  if (bytes.readUInt32BE(0) !== TOKEN_MAGIC) throw new TokenFormatError('bad token magic');
  if (bytes.readUInt8(4) !== TOKEN_VERSION) throw new TokenFormatError(`unsupported token version ${bytes[4]}`);
  if (bytes.readUInt16BE(6) !== 0) throw new TokenFormatError('reserved bytes must be zero');
  if (bytes[61] !== 0 || bytes[62] !== 0 || bytes[63] !== 0) throw new TokenFormatError('reserved bytes must be zero');
  const chunkSizeLog2 = bytes.readUInt8(60);
  if (chunkSizeLog2 < TOKEN_CHUNK_SIZE_LOG2_MIN || chunkSizeLog2 > TOKEN_CHUNK_SIZE_LOG2_MAX) {
    throw new TokenFormatError('bad chunk size');
  }
  const chunkCount = bytes.readUInt32BE(52);
  if (chunkCount === 0 || chunkCount > TOKEN_CHUNKS_MAX) throw new TokenFormatError('bad chunk count');
  const bodyEnd = bytes.length - TOKEN_SIGNATURE_BYTES;
  const chunks: TokenChunk[] = [];
  let offset = TOKEN_HEADER_BYTES;
  for (let i = 0; i < chunkCount; i += 1) {
    if (offset + 5 > bodyEnd) throw new TokenFormatError('token truncated in chunk records');
    const epoch = bytes.readUInt32BE(offset);
    const targetCount = bytes.readUInt8(offset + 4);
    offset += 5;
    if (targetCount > TOKEN_TARGETS_PER_CHUNK_MAX) throw new TokenFormatError('too many targets');
    if (offset + 4 * targetCount > bodyEnd) throw new TokenFormatError('token truncated in targets');
    const targetSdsIds: number[] = [];
    for (let t = 0; t < targetCount; t += 1) {
      targetSdsIds.push(bytes.readUInt32BE(offset));
      offset += 4;
    }
    chunks.push({ epoch, targetSdsIds });
  }
  if (offset !== bodyEnd) throw new TokenFormatError('trailing bytes after chunk records');
  const fields: TokenFields = {
    tokenId: Buffer.from(bytes.subarray(8, 24)),
    operations: bytes.readUInt8(5),
    volumeId: bytes.readUInt32BE(24),
    sdcId: bytes.readUInt32BE(28),
    issuedAtMs: Number(bytes.readBigUInt64BE(32)),
    expiresAtMs: Number(bytes.readBigUInt64BE(40)),
    chunkFirst: bytes.readUInt32BE(48),
    poolId: bytes.readUInt32BE(56),
    chunkSizeBytes: 2 ** chunkSizeLog2,
    chunks,
  };
  checkFields(fields);
  return { fields, body: bytes.subarray(0, bodyEnd), signature: bytes.subarray(bodyEnd) };
}

/** True when the signature is the signing key's HMAC of the body (constant-time compare). */
export function verifyTokenSignature(decoded: DecodedToken, signingKey: Buffer): boolean {
  const expected = computeTokenSignature(decoded.body, signingKey);
  return expected.length === decoded.signature.length && timingSafeEqual(expected, decoded.signature);
}

/**
 * The per-token session key: HMAC-SHA256(signing key, "pflex-session-v1" ‖ token id). The MDM
 * gives it to the SDC that asked for the token; the SDS re-derives it, so it never travels to the SDS.
 */
export function deriveSessionKey(signingKey: Buffer, tokenId: Buffer): Buffer {
  if (tokenId.length !== TOKEN_ID_BYTES) throw new TokenFormatError('token id must be 16 bytes');
  return createHmac('sha256', signingKey).update(SESSION_KEY_LABEL).update(tokenId).digest();
}

export function operationsToNames(operations: number): string[] {
  const names: string[] = [];
  for (const [name, bit] of Object.entries(TokenOp)) if ((operations & bit) !== 0) names.push(name.toLowerCase());
  return names;
}
