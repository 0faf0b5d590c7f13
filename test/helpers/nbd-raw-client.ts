/**
 * A deliberately naive NBD client over a raw socket, for tests that must send what real clients never
 * would: wrong magics, bad lengths, unknown options and commands, requests out of order.
 */
import { connect, type Socket } from 'node:net';

export const NBDMAGIC = Buffer.from('NBDMAGIC');
export const IHAVEOPT = Buffer.from('IHAVEOPT');
export const REP_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 } as const;
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_UNKNOWN: 0x80000006,
  ERR_TOO_BIG: 0x80000009,
} as const;
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const CMD_FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;
export const ERRNO = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;
export const REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 0x8001 } as const;
export const CLIENT_FLAG = { FIXED_NEWSTYLE: 1, NO_ZEROES: 2 } as const;

export interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly payload: Buffer;
}

export type TransmissionReply =
  | { readonly kind: 'simple'; readonly error: number; readonly handle: bigint }
  | { readonly kind: 'chunk'; readonly flags: number; readonly type: number; readonly handle: bigint; readonly payload: Buffer };

export class RawNbdClient {
  private readonly chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private waiter: (() => void) | undefined;
  private ended = false;
  /** Resolves when the server ends or the socket closes. */
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.bufferedBytes += chunk.length;
      this.wake();
    });
    socket.on('error', () => undefined);
    // Resolves on the server's EOF too: with allowHalfOpen our side stays open until we end it.
    this.closed = new Promise((resolve) => {
      const ended = (): void => {
        this.ended = true;
        this.wake();
        resolve();
      };
      socket.on('end', ended);
      socket.on('close', ended);
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host, allowHalfOpen: true }, () => {
        socket.off('error', reject);
        resolve(new RawNbdClient(socket));
      });
      socket.once('error', reject);
    });
  }

  /** A connected client with the fixed-newstyle greeting read and client flags sent. */
  static async negotiate(port: number, clientFlags: number = CLIENT_FLAG.FIXED_NEWSTYLE | CLIENT_FLAG.NO_ZEROES): Promise<RawNbdClient> {
    const client = await RawNbdClient.connect(port);
    const greeting = await client.read(18);
    if (!greeting.subarray(0, 8).equals(NBDMAGIC) || !greeting.subarray(8, 16).equals(IHAVEOPT)) throw new Error('not an NBD newstyle server');
    client.write(u32(clientFlags));
    return client;
  }

  /** Exactly n bytes, or an error if the stream ends or nothing comes in time. */
  async read(lengthBytes: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.bufferedBytes < lengthBytes) {
      if (this.ended) throw new Error(`connection closed with ${this.bufferedBytes} of ${lengthBytes} bytes`);
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) throw new Error(`timed out waiting for ${lengthBytes} bytes (have ${this.bufferedBytes})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remainingMs);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    if (lengthBytes === 0) return Buffer.alloc(0);
    // Merge only as many chunks as the read needs, so draining a long stream stays linear.
    let merged = this.chunks[0]!;
    let used = 1;
    while (merged.length < lengthBytes) merged = Buffer.concat([merged, this.chunks[used++]!]);
    this.chunks.splice(0, used);
    if (merged.length > lengthBytes) this.chunks.unshift(merged.subarray(lengthBytes));
    this.bufferedBytes -= lengthBytes;
    return merged.subarray(0, lengthBytes);
  }

  /** Resolves true if the server closes the connection (with no more data than allowed) within the time. */
  async closesWithin(timeoutMs = 5000): Promise<boolean> {
    const timer = new Promise<false>((resolve) => setTimeout(() => resolve(false), timeoutMs));
    return Promise.race([this.closed.then(() => true as const), timer]);
  }

  /** True once the server has sent EOF or the socket closed. */
  get serverEnded(): boolean {
    return this.ended;
  }

  pendingBytes(): number {
    return this.bufferedBytes;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  // ---- Handshake ----

  sendOption(option: number, payload: Buffer = Buffer.alloc(0), lengthBytes = payload.length): void {
    this.write(Buffer.concat([IHAVEOPT, u32(option), u32(lengthBytes), payload]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = await this.read(20);
    const magic = header.readBigUInt64BE(0);
    if (magic !== REP_MAGIC) throw new Error(`bad option reply magic 0x${magic.toString(16)}`);
    const lengthBytes = header.readUInt32BE(16);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), payload: await this.read(lengthBytes) };
  }

  /** Replies up to and including the final one (ACK or an error). */
  async readOptionReplies(): Promise<OptionReply[]> {
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (reply.type === REP.ACK || reply.type >= 0x80000000) return replies;
    }
  }

  async option(option: number, payload?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, payload);
    return this.readOptionReplies();
  }

  /** STRUCTURED_REPLY (optional), SET_META_CONTEXT base:allocation (optional), GO; returns size and flags. */
  async go(name: string, options: { structured?: boolean; baseAllocation?: boolean } = {}): Promise<{ sizeBytes: number; transmissionFlags: number }> {
    if (options.structured === true) {
      const [reply] = await this.option(OPT.STRUCTURED_REPLY);
      if (reply?.type !== REP.ACK) throw new Error('structured replies refused');
    }
    if (options.baseAllocation === true) {
      const replies = await this.option(OPT.SET_META_CONTEXT, metaContextPayload(name, ['base:allocation']));
      if (replies[replies.length - 1]?.type !== REP.ACK) throw new Error('SET_META_CONTEXT failed');
    }
    const replies = await this.option(OPT.GO, infoPayload(name, [INFO.BLOCK_SIZE]));
    const final = replies[replies.length - 1]!;
    if (final.type !== REP.ACK) throw new Error(`GO failed with 0x${final.type.toString(16)}: ${final.payload.toString()}`);
    const exportInfo = replies.find((reply) => reply.type === REP.INFO && reply.payload.readUInt16BE(0) === INFO.EXPORT);
    if (exportInfo === undefined) throw new Error('GO without INFO_EXPORT');
    return { sizeBytes: Number(exportInfo.payload.readBigUInt64BE(2)), transmissionFlags: exportInfo.payload.readUInt16BE(10) };
  }

  // ---- Transmission ----

  sendRequest(request: { type: number; handle: bigint; offsetBytes?: number; lengthBytes?: number; flags?: number; magic?: number }, payload?: Buffer): void {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(request.magic ?? REQUEST_MAGIC, 0);
    header.writeUInt16BE(request.flags ?? 0, 4);
    header.writeUInt16BE(request.type, 6);
    header.writeBigUInt64BE(request.handle, 8);
    header.writeBigUInt64BE(BigInt(request.offsetBytes ?? 0), 16);
    header.writeUInt32BE(request.lengthBytes ?? payload?.length ?? 0, 24);
    this.write(payload === undefined ? header : Buffer.concat([header, payload]));
  }

  /** The next reply header (and a structured chunk's payload); a simple reply's data is left to read. */
  async readReply(timeoutMs?: number): Promise<TransmissionReply> {
    const magic = (await this.read(4, timeoutMs)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const rest = await this.read(12, timeoutMs);
      return { kind: 'simple', error: rest.readUInt32BE(0), handle: rest.readBigUInt64BE(4) };
    }
    if (magic === STRUCTURED_REPLY_MAGIC) {
      const rest = await this.read(16, timeoutMs);
      const lengthBytes = rest.readUInt32BE(12);
      return { kind: 'chunk', flags: rest.readUInt16BE(0), type: rest.readUInt16BE(2), handle: rest.readBigUInt64BE(4), payload: await this.read(lengthBytes, timeoutMs) };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  async readSimpleReply(dataBytesIfOk = 0): Promise<{ error: number; handle: bigint; data: Buffer }> {
    const reply = await this.readReply();
    if (reply.kind !== 'simple') throw new Error(`expected a simple reply, got chunk type ${reply.type}`);
    const data = reply.error === 0 && dataBytesIfOk > 0 ? await this.read(dataBytesIfOk) : Buffer.alloc(0);
    return { error: reply.error, handle: reply.handle, data };
  }
}

export function u16(value: number): Buffer {
  const buffer = Buffer.alloc(2);
  buffer.writeUInt16BE(value, 0);
  return buffer;
}

export function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value, 0);
  return buffer;
}

export function infoPayload(name: string, infoTypes: readonly number[]): Buffer {
  const nameBytes = Buffer.from(name);
  return Buffer.concat([u32(nameBytes.length), nameBytes, u16(infoTypes.length), ...infoTypes.map(u16)]);
}

export function metaContextPayload(name: string, queries: readonly string[]): Buffer {
  const nameBytes = Buffer.from(name);
  return Buffer.concat([u32(nameBytes.length), nameBytes, u32(queries.length), ...queries.flatMap((query) => [u32(Buffer.byteLength(query)), Buffer.from(query)])]);
}
