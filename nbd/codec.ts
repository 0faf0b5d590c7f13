/**
 * Byte layouts of the NBD protocol, both phases: pure encoders and decoders, no I/O. Decoders of
 * option payloads validate every length against the bytes actually present and say why they refuse.
 */
import assert from 'node:assert/strict';
import {
  BLOCK_DESCRIPTOR_BYTES,
  ERROR_MESSAGE_BYTES_MAX,
  EXPORT_NAME_REPLY_ZEROES_BYTES,
  GREETING_BYTES,
  HANDSHAKE_FLAGS,
  META_QUERIES_MAX,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_INIT_PASSWD,
  NBD_OPTS_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REP_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  OPTION_REPLY_HEADER_BYTES,
  REQUEST_HEADER_BYTES,
  SIMPLE_REPLY_HEADER_BYTES,
  STRING_BYTES_MAX,
  STRUCTURED_REPLY_HEADER_BYTES,
  UINT32_MAX,
} from './constants.js';

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** A protocol string: valid UTF-8, no NUL, at most 4096 bytes; undefined when it is not one. */
export function decodeString(bytes: Buffer): string | undefined {
  if (bytes.length > STRING_BYTES_MAX || bytes.includes(0)) return undefined;
  try {
    return utf8Strict.decode(bytes);
  } catch {
    return undefined;
  }
}

/** At most maxBytes of UTF-8, cut on a character boundary. */
export function truncateUtf8(text: string, maxBytes: number): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return bytes;
  let end = maxBytes;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end -= 1; // back off a continuation byte
  return bytes.subarray(0, end);
}

// ---- Handshake -------------------------------------------------------------------------------------

export function encodeGreeting(): Buffer {
  const buffer = Buffer.allocUnsafe(GREETING_BYTES);
  buffer.writeBigUInt64BE(NBD_INIT_PASSWD, 0);
  buffer.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  buffer.writeUInt16BE(HANDSHAKE_FLAGS, 16);
  return buffer;
}

export interface OptionHeader {
  readonly magic: bigint;
  readonly option: number;
  readonly lengthBytes: number;
}

export function decodeOptionHeader(bytes: Buffer): OptionHeader {
  return { magic: bytes.readBigUInt64BE(0), option: bytes.readUInt32BE(8), lengthBytes: bytes.readUInt32BE(12) };
}

export function encodeOptionReply(option: number, type: number, payload?: Buffer): Buffer {
  const payloadBytes = payload?.length ?? 0;
  const buffer = Buffer.allocUnsafe(OPTION_REPLY_HEADER_BYTES + payloadBytes);
  buffer.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  buffer.writeUInt32BE(option, 8);
  buffer.writeUInt32BE(type, 12);
  buffer.writeUInt32BE(payloadBytes, 16);
  if (payload !== undefined) payload.copy(buffer, OPTION_REPLY_HEADER_BYTES);
  return buffer;
}

/** An option error reply, with a short human message as its payload. */
export function encodeOptionError(option: number, type: number, message: string): Buffer {
  assert.ok(type >= 0x80000000, 'option error types have bit 31 set');
  return encodeOptionReply(option, type, truncateUtf8(message, ERROR_MESSAGE_BYTES_MAX));
}

/** The answer to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zeroes unless the client opted out. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, zeroes: boolean): Buffer {
  const buffer = Buffer.alloc(10 + (zeroes ? EXPORT_NAME_REPLY_ZEROES_BYTES : 0));
  buffer.writeBigUInt64BE(BigInt(sizeBytes), 0);
  buffer.writeUInt16BE(transmissionFlags, 8);
  return buffer;
}

/** NBD_REP_SERVER payload: name length, name, then the description as free human text. */
export function encodeServerPayload(name: string, description: string | undefined): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const descriptionBytes = description === undefined ? Buffer.alloc(0) : truncateUtf8(description, STRING_BYTES_MAX);
  const buffer = Buffer.allocUnsafe(4 + nameBytes.length + descriptionBytes.length);
  buffer.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(buffer, 4);
  descriptionBytes.copy(buffer, 4 + nameBytes.length);
  return buffer;
}

export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const buffer = Buffer.allocUnsafe(12);
  buffer.writeUInt16BE(NBD_INFO_EXPORT, 0);
  buffer.writeBigUInt64BE(BigInt(sizeBytes), 2);
  buffer.writeUInt16BE(transmissionFlags, 10);
  return buffer;
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION. */
export function encodeInfoString(infoType: number, text: string): Buffer {
  const textBytes = truncateUtf8(text, STRING_BYTES_MAX);
  const buffer = Buffer.allocUnsafe(2 + textBytes.length);
  buffer.writeUInt16BE(infoType, 0);
  textBytes.copy(buffer, 2);
  return buffer;
}

export function encodeInfoBlockSize(minimumBytes: number, preferredBytes: number, maximumBytes: number): Buffer {
  const buffer = Buffer.allocUnsafe(14);
  buffer.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  buffer.writeUInt32BE(minimumBytes, 2);
  buffer.writeUInt32BE(preferredBytes, 6);
  buffer.writeUInt32BE(maximumBytes, 10);
  return buffer;
}

export function encodeMetaContextPayload(contextId: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const buffer = Buffer.allocUnsafe(4 + nameBytes.length);
  buffer.writeUInt32BE(contextId, 0);
  nameBytes.copy(buffer, 4);
  return buffer;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; tooBig: boolean; reason: string };

function refuse<T>(reason: string, tooBig = false): Parsed<T> {
  return { ok: false, tooBig, reason };
}

export interface InfoRequest {
  readonly name: string;
  readonly infoTypes: readonly number[];
}

/** NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, count × u16 info types, nothing more. */
export function parseInfoRequest(payload: Buffer): Parsed<InfoRequest> {
  if (payload.length < 6) return refuse(`option data of ${payload.length} bytes is shorter than 6`);
  const nameBytes = payload.readUInt32BE(0);
  if (nameBytes > payload.length - 6) return refuse(`name length ${nameBytes} exceeds the option data`);
  const name = decodeString(payload.subarray(4, 4 + nameBytes));
  if (name === undefined) return refuse('export name is not a valid string');
  const count = payload.readUInt16BE(4 + nameBytes);
  const expectedBytes = 4 + nameBytes + 2 + 2 * count;
  if (expectedBytes !== payload.length) {
    return refuse(`${count} information requests need ${expectedBytes} bytes of option data, got ${payload.length}`);
  }
  const infoTypes: number[] = [];
  for (let index = 0; index < count; index += 1) infoTypes.push(payload.readUInt16BE(4 + nameBytes + 2 + 2 * index));
  return { ok: true, value: { name, infoTypes } };
}

export interface MetaContextRequest {
  readonly name: string;
  readonly queries: readonly string[];
}

/** NBD_OPT_LIST/SET_META_CONTEXT data: u32 name length, name, u32 count, count × (u32 length, query). */
export function parseMetaContextRequest(payload: Buffer): Parsed<MetaContextRequest> {
  if (payload.length < 8) return refuse(`option data of ${payload.length} bytes is shorter than 8`);
  const nameBytes = payload.readUInt32BE(0);
  if (nameBytes > payload.length - 8) return refuse(`name length ${nameBytes} exceeds the option data`);
  const name = decodeString(payload.subarray(4, 4 + nameBytes));
  if (name === undefined) return refuse('export name is not a valid string');
  let position = 4 + nameBytes;
  const count = payload.readUInt32BE(position);
  position += 4;
  if (count > META_QUERIES_MAX) return refuse(`${count} queries exceed the limit of ${META_QUERIES_MAX}`, true);
  const queries: string[] = [];
  for (let index = 0; index < count; index += 1) {
    if (position + 4 > payload.length) return refuse(`query ${index} length runs past the option data`);
    const queryBytes = payload.readUInt32BE(position);
    position += 4;
    if (queryBytes > payload.length - position) return refuse(`query ${index} runs past the option data`);
    const query = decodeString(payload.subarray(position, position + queryBytes));
    if (query === undefined) return refuse(`query ${index} is not a valid string`);
    queries.push(query);
    position += queryBytes;
  }
  if (position !== payload.length) return refuse(`${payload.length - position} bytes follow the last query`);
  return { ok: true, value: { name, queries } };
}

// ---- Transmission ------------------------------------------------------------------------------------

export interface Request {
  readonly magic: number;
  readonly flags: number;
  readonly type: number;
  /** Opaque to the server; echoed in every reply. */
  readonly handle: bigint;
  /** Exact below 2^53; beyond, still larger than any export, so validation refuses it. */
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

export function decodeRequest(bytes: Buffer): Request {
  assert.equal(bytes.length, REQUEST_HEADER_BYTES);
  return {
    magic: bytes.readUInt32BE(0),
    flags: bytes.readUInt16BE(4),
    type: bytes.readUInt16BE(6),
    handle: bytes.readBigUInt64BE(8),
    offsetBytes: bytes.readUInt32BE(16) * 2 ** 32 + bytes.readUInt32BE(20),
    lengthBytes: bytes.readUInt32BE(24),
  };
}

export function encodeSimpleReply(errno: number, handle: bigint): Buffer {
  const buffer = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
  buffer.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  buffer.writeUInt32BE(errno, 4);
  buffer.writeBigUInt64BE(handle, 8);
  return buffer;
}

function writeStructuredHeader(buffer: Buffer, flags: number, type: number, handle: bigint, payloadBytes: number): void {
  assert.ok(payloadBytes <= UINT32_MAX, 'structured reply payload fits 32 bits');
  buffer.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  buffer.writeUInt16BE(flags, 4);
  buffer.writeUInt16BE(type, 6);
  buffer.writeBigUInt64BE(handle, 8);
  buffer.writeUInt32BE(payloadBytes, 16);
}

/** Header and offset of a final OFFSET_DATA chunk; the data itself is written after it, uncopied. */
export function encodeOffsetDataHeader(handle: bigint, offsetBytes: number, dataBytes: number): Buffer {
  assert.ok(dataBytes > 0, 'OFFSET_DATA carries at least one byte');
  const buffer = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 8);
  writeStructuredHeader(buffer, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, handle, 8 + dataBytes);
  buffer.writeBigUInt64BE(BigInt(offsetBytes), STRUCTURED_REPLY_HEADER_BYTES);
  return buffer;
}

export function encodeStructuredNone(handle: bigint): Buffer {
  const buffer = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
  writeStructuredHeader(buffer, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handle, 0);
  return buffer;
}

/** A final NBD_REPLY_TYPE_ERROR chunk: errno, message length, message. */
export function encodeStructuredError(handle: bigint, errno: number, message: string): Buffer {
  assert.ok(errno !== 0, 'an error chunk carries a nonzero error');
  const messageBytes = truncateUtf8(message, ERROR_MESSAGE_BYTES_MAX);
  const buffer = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 6 + messageBytes.length);
  writeStructuredHeader(buffer, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, handle, 6 + messageBytes.length);
  buffer.writeUInt32BE(errno, STRUCTURED_REPLY_HEADER_BYTES);
  buffer.writeUInt16BE(messageBytes.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  messageBytes.copy(buffer, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return buffer;
}

export interface BlockDescriptor {
  readonly lengthBytes: number;
  readonly flags: number;
}

/** A final NBD_REPLY_TYPE_BLOCK_STATUS chunk for one context. */
export function encodeBlockStatusReply(handle: bigint, contextId: number, descriptors: readonly BlockDescriptor[]): Buffer {
  assert.ok(descriptors.length > 0, 'block status carries at least one descriptor');
  const payloadBytes = 4 + descriptors.length * BLOCK_DESCRIPTOR_BYTES;
  const buffer = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
  writeStructuredHeader(buffer, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, handle, payloadBytes);
  buffer.writeUInt32BE(contextId, STRUCTURED_REPLY_HEADER_BYTES);
  let position = STRUCTURED_REPLY_HEADER_BYTES + 4;
  for (const descriptor of descriptors) {
    assert.ok(descriptor.lengthBytes > 0 && descriptor.lengthBytes <= UINT32_MAX, 'descriptor length is a nonzero u32');
    buffer.writeUInt32BE(descriptor.lengthBytes, position);
    buffer.writeUInt32BE(descriptor.flags, position + 4);
    position += BLOCK_DESCRIPTOR_BYTES;
  }
  return buffer;
}
