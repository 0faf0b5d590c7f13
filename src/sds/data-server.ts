/**
 * The SDS data port (9700+n): binary pipelined frames, or newline-delimited JSON frames for
 * debugging, told apart by a connection's first byte (docs/PROTOCOL.md §5). Requests are handled
 * concurrently and answered in completion order. Limits: connections, requests in flight per
 * connection, frame size, idle time. A malformed binary frame closes the connection (its framing
 * can no longer be trusted); a bad JSON frame gets an error line.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import type { Logger } from '../common/logger.js';
import {
  ByteQueue,
  HELLO_PAYLOAD_BYTES,
  decodeRequestHeader,
  encodeReplyHeader,
  encodeRequestHeader,
  FrameError,
  FRAME_PAYLOAD_BYTES_MAX,
  JSON_FRAME_BYTES_MAX,
  Opcode,
  REQUEST_HEADER_BYTES,
  REQUEST_MAC_OFFSET,
  REPLY_HEADER_BYTES,
  requestMacValid,
  Status,
  statusName,
  type RequestHeader,
  type StatusValue,
} from '../common/sds-protocol.js';
import { ChunkStore, ChunkStoreError } from './chunk-store.js';
import { ERRNO_ENOSPC } from './store-errors.js';
import type { DataOpcodeName, Faults } from './fault-config.js';
import { SocketBatcher } from '../common/socket-batcher.js';
import { adoptForDirectReads, type ReadSink } from '../common/direct-reads.js';
import { FrameAssembler } from '../common/frame-assembler.js';
import type { TokenChecker } from './token-checker.js';
import type { IoStats, IoKind } from './io-stats.js';
import type { TxAckBatcher } from './tx-acks.js';

export const DATA_CONNECTIONS_MAX = 1024;
export const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX = 256;
export const DATA_IDLE_TIMEOUT_MS = 10 * 60 * 1000;
/** Stop reading requests while this much reply data waits in the socket (a slow reader). */
export const REPLY_BYTES_BUFFERED_HIGH = 16 * 1024 * 1024;
/** Clients (HELLO ids) remembered at once; a client with no open connection is forgotten. */
export const CLIENT_SESSIONS_MAX = 4096;
/** How long a HELLO waits for the requests of the connections it replaces (below the SDC's request timeout). */
export const HELLO_DRAIN_TIMEOUT_MS = 5000;

export interface DataServerDeps {
  readonly store: ChunkStore;
  readonly checker: () => TokenChecker | undefined;
  readonly peerKey: () => Buffer | undefined;
  readonly stats: IoStats;
  readonly acks: TxAckBatcher;
  readonly log: Logger;
  /** Fault injection (tests): blackholed opcodes and stalled connections. */
  readonly faults?: Faults | undefined;
  /**
   * False until this SDS has registered once since it started: a replica fenced while it was
   * away learns so only then, so until then it serves no read (BUSY: the SDC reads a peer).
   */
  readonly readsAllowed?: () => boolean;
}

export interface Outcome {
  status: StatusValue;
  aux: number;
  payload?: Buffer;
  /** The payload is lent pooled memory: call once it is no longer used. */
  release?: () => void;
}

const OK: Outcome = { status: Status.OK, aux: 0 };

function outcome(status: StatusValue, aux = 0): Outcome {
  return { status, aux };
}

const KIND_OF: Record<number, IoKind> = {
  [Opcode.READ]: 'read',
  [Opcode.WRITE]: 'write',
  [Opcode.TRIM]: 'trim',
  [Opcode.WRITE_ZEROES]: 'write_zeroes',
  [Opcode.FLUSH]: 'flush',
};

/** Executes one request after its frame is parsed: token checks, bounds, then the chunk store. */
export async function executeRequest(
  deps: DataServerDeps,
  header: RequestHeader,
  headerBytes: Buffer,
  payload: Buffer | undefined,
  /** The payload sits in page-aligned memory (binary frames): the store writes it without a copy. */
  payloadAligned = false,
): Promise<Outcome> {
  switch (header.opcode) {
    case Opcode.PING:
      return OK;
    case Opcode.TOKEN: {
      const checker = deps.checker();
      if (checker === undefined || payload === undefined) return outcome(checker === undefined ? Status.SHUTTING_DOWN : Status.BAD_REQUEST);
      const result = checker.install(payload, header.tokenId);
      return result.ok ? OK : outcome(result.status);
    }
    case Opcode.PEER_READ: {
      const key = deps.peerKey();
      if (key === undefined) return outcome(Status.SHUTTING_DOWN);
      if (!requestMacValid(key, headerBytes)) return outcome(Status.BAD_MAC);
      if (header.lengthBytes === 0 || header.lengthBytes > FRAME_PAYLOAD_BYTES_MAX) return outcome(Status.BAD_REQUEST);
      const chunkBytes = deps.store.chunkSizeOf(header.volumeId, header.chunkIndex);
      // A rebuild must never copy zeros from a source that lacks the chunk (DESIGN §6).
      if (chunkBytes === undefined) return outcome(Status.CHUNK_UNKNOWN);
      if (header.offsetBytes + header.lengthBytes > chunkBytes) return outcome(Status.BAD_REQUEST);
      const mine = deps.store.epochOf(header.volumeId, header.chunkIndex);
      if (mine !== header.epoch) return outcome(Status.STALE_EPOCH, mine ?? 0);
      // A replica still being rebuilt has blocks that are not final, a suspect one (crash-time
      // write intent) may differ from its peers: neither is ever a source.
      if (deps.store.isRebuilding(header.volumeId, header.chunkIndex) || deps.store.isSuspect(header.volumeId, header.chunkIndex)) return outcome(Status.BUSY);
      if (deps.readsAllowed?.() === false) return outcome(Status.BUSY);
      try {
        return { ...OK, payload: await deps.store.readChunk(header.volumeId, header.chunkIndex, header.offsetBytes, header.lengthBytes) };
      } catch (error) {
        if (!(error instanceof ChunkStoreError)) throw error;
        return storeFailure(error);
      }
    }
    default:
      break;
  }
  const checker = deps.checker();
  if (checker === undefined) return outcome(Status.SHUTTING_DOWN);
  const check = checker.check(header, headerBytes, (volumeId, chunkIndex) => deps.store.epochOf(volumeId, chunkIndex));
  if (!check.ok) return outcome(check.status, check.aux ?? 0);
  const { fields } = check.token;
  const isFlush = header.opcode === Opcode.FLUSH;
  if (!isFlush) {
    const end = header.offsetBytes + header.lengthBytes;
    if (header.lengthBytes === 0 || end > fields.chunkSizeBytes) return outcome(Status.BAD_REQUEST);
    if (header.opcode === Opcode.READ && header.lengthBytes > FRAME_PAYLOAD_BYTES_MAX) return outcome(Status.BAD_REQUEST);
    if (header.opcode === Opcode.WRITE && payload?.length !== header.lengthBytes) return outcome(Status.BAD_REQUEST);
  }
  const startedAtMs = performance.now();
  const fua = (header.flags & 0x01) !== 0;
  let result: Outcome = OK;
  try {
    switch (header.opcode) {
      case Opcode.READ:
        // A write target only until its copy completes; a suspect replica until the MDM decides.
        if (deps.store.isRebuilding(header.volumeId, header.chunkIndex) || deps.store.isSuspect(header.volumeId, header.chunkIndex) || deps.readsAllowed?.() === false) {
          result = outcome(Status.BUSY);
          break;
        }
        {
          const lent = await deps.store.readLent(header.volumeId, header.chunkIndex, header.offsetBytes, header.lengthBytes);
          result = { status: Status.OK, aux: 0, payload: lent.bytes, release: lent.release };
        }
        break;
      case Opcode.WRITE:
        await deps.store.write(header.volumeId, header.chunkIndex, fields.poolId, check.epoch, header.offsetBytes, payload!, fua, payloadAligned);
        break;
      case Opcode.TRIM:
      case Opcode.WRITE_ZEROES:
        await deps.store.zero(header.volumeId, header.chunkIndex, check.epoch, header.offsetBytes, header.lengthBytes, fua);
        break;
      case Opcode.FLUSH:
        await deps.store.flush();
        break;
    }
  } catch (error) {
    if (!(error instanceof ChunkStoreError)) throw error;
    result = storeFailure(error);
  }
  const kind = KIND_OF[header.opcode]!;
  const latencyUs = (performance.now() - startedAtMs) * 1000;
  const bytes = isFlush ? 0 : header.lengthBytes;
  deps.stats.record(header.volumeId, kind, bytes, latencyUs, result.status === Status.OK);
  if (result.status === Status.OK && kind !== 'flush') {
    deps.acks.record(check.token.idHex, header.volumeId, header.chunkIndex, kind, bytes);
  }
  return result;
}

/** A chunk store failure as a reply: no space (a full SDS, or ENOSPC from the device), else an IO error with its errno. */
function storeFailure(error: ChunkStoreError): Outcome {
  if (error.kind === 'NO_SPACE' || error.errno === ERRNO_ENOSPC) return outcome(Status.NO_SPACE, ERRNO_ENOSPC);
  return outcome(Status.IO_ERROR, error.errno);
}

const OPCODE_NAMES: Record<number, DataOpcodeName> = {
  [Opcode.READ]: 'read',
  [Opcode.WRITE]: 'write',
  [Opcode.FLUSH]: 'flush',
  [Opcode.TRIM]: 'trim',
  [Opcode.WRITE_ZEROES]: 'write_zeroes',
  [Opcode.TOKEN]: 'token',
  [Opcode.PEER_READ]: 'peer_read',
  [Opcode.PING]: 'ping',
  [Opcode.HELLO]: 'hello',
};

/**
 * The clients that said HELLO: each one's incarnation and connections, retired ones included
 * until their last request is done. A HELLO of a newer incarnation retires the older connections
 * of its client, and is answered once none of their requests is running.
 */
class ClientSessions {
  private readonly clients = new Map<string, { incarnation: bigint; connections: Set<DataConnection> }>();

  /** Registers `connection` for a client; the connections it replaces, or undefined when its incarnation is old. */
  join(clientId: string, incarnation: bigint, connection: DataConnection): DataConnection[] | undefined {
    let client = this.clients.get(clientId);
    if (client !== undefined && incarnation <= client.incarnation) return undefined;
    if (client === undefined) {
      if (this.clients.size >= CLIENT_SESSIONS_MAX) this.forgetIdle();
      client = { incarnation, connections: new Set() };
      this.clients.set(clientId, client);
    }
    const replaced = [...client.connections].filter((other) => other !== connection);
    client.incarnation = incarnation;
    client.connections.add(connection);
    return replaced;
  }

  leave(clientId: string, connection: DataConnection): void {
    const client = this.clients.get(clientId);
    if (client === undefined) return;
    client.connections.delete(connection);
    if (client.connections.size === 0) this.clients.delete(clientId);
  }

  private forgetIdle(): void {
    for (const [id, client] of this.clients) if (client.connections.size === 0) this.clients.delete(id);
  }
}

class DataConnection implements ReadSink {
  private readonly socket: Socket;
  /** JSON frames not yet parsed (copies: the staging buffer is reused). */
  private readonly queue = new ByteQueue();
  /** Binary bytes read while paused, parsed first on resume (copies). */
  private saved: Buffer[] = [];
  private mode: 'unknown' | 'binary' | 'json' = 'unknown';
  private inFlight = 0;
  private closed = false;
  private readingPaused = false;
  private readonly batcher: SocketBatcher;
  /** Binary frames: the header, then the payload straight into the buffer it is used from. */
  private readonly frames: FrameAssembler;
  /** The frame whose payload is being read: its decoded header and, for a WRITE, its aligned buffer. */
  private header: RequestHeader | undefined;
  private alignedBuffer: Buffer | undefined;
  /** The client's id and incarnation once it said HELLO. */
  private clientId: string | undefined;
  incarnation = -1n;
  /** Requests of this connection executing now (HELLO not counted). */
  private running = 0;
  /** Reading paused by a fault-injected stall until this time. */
  private stalledUntilMs = 0;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    accepted: Socket,
    private readonly deps: DataServerDeps,
    private readonly sessions: ClientSessions,
    onClose: (socket: Socket) => void,
  ) {
    this.frames = new FrameAssembler(
      REQUEST_HEADER_BYTES,
      {
        onHeader: (headerBytes) => this.startFrame(headerBytes),
        onFrame: (headerBytes, payload) => this.finishFrame(headerBytes, payload),
        mayStartFrame: () => this.inFlight < REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
      },
      true,
    );
    const socket = adoptForDirectReads(accepted, this);
    this.socket = socket;
    this.batcher = new SocketBatcher(socket);
    socket.setNoDelay(true);
    socket.setTimeout(DATA_IDLE_TIMEOUT_MS, () => socket.destroy());
    socket.on('drain', () => this.resumeIfPossible());
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.queue.clear();
      this.saved = [];
      this.releasePayload();
      this.leaveIfDone();
      onClose(socket);
    });
  }

  /** A closed connection leaves its client's record once its last request is done. */
  private leaveIfDone(): void {
    if (this.closed && this.running === 0 && this.clientId !== undefined) this.sessions.leave(this.clientId, this);
  }

  /**
   * A newer connection of the same client replaced this one: nothing more of it is read or
   * executed (bytes still queued here or in the kernel are dropped with the socket).
   */
  retire(): void {
    this.closed = true;
    this.saved = [];
    this.queue.clear();
    this.socket.destroy();
  }

  /** Resolves once no request of this connection is running (its own HELLO aside). */
  idle(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Fault injection: stop reading this connection for `ms`, as a stuck SDS would. */
  stall(ms: number): void {
    if (this.closed) return;
    this.stalledUntilMs = Date.now() + ms;
    this.readingPaused = true;
    this.socket.pause();
    setTimeout(() => {
      this.stalledUntilMs = 0;
      this.resumeIfPossible();
    }, ms).unref();
  }

  get socketOf(): Socket {
    return this.socket;
  }

  // ------------------------------------------------------------ ReadSink

  onStaged(bytes: Buffer): boolean {
    if (this.closed) return false;
    if (this.mode === 'unknown') {
      const first = bytes[0]!;
      if (first === 0x7b /* { */) this.mode = 'json';
      else if (first === 0x50 /* P */) this.mode = 'binary';
      else {
        this.fail(`first byte 0x${first.toString(16)} is neither "{" nor a binary frame`);
        return false;
      }
    }
    if (this.mode === 'json') {
      this.queue.push(Buffer.from(bytes));
      this.pumpJson();
    } else if (this.saved.length > 0 || this.readingPaused) {
      this.saved.push(Buffer.from(bytes));
    } else {
      const used = this.consumeBinary(bytes);
      if (used < bytes.length) this.saved.push(Buffer.from(bytes.subarray(used)));
    }
    this.pauseIfBusy();
    return !this.readingPaused;
  }

  directTarget(): Buffer | undefined {
    if (this.saved.length > 0 || this.closed || this.mode !== 'binary') return undefined;
    return this.frames.directTarget();
  }

  onDirect(count: number): boolean {
    this.frames.onDirect(count);
    this.pauseIfBusy();
    return !this.readingPaused;
  }

  // ------------------------------------------------------------ binary frames

  /** Parses frames out of `bytes`; returns how many bytes it used (it stops at the in-flight limit). */
  private consumeBinary(bytes: Buffer): number {
    return this.closed ? 0 : this.frames.consume(bytes);
  }

  /** A whole header is in: decode it and make room for its payload (null: malformed, the connection is closed). */
  private startFrame(headerBytes: Buffer): Buffer | undefined | null {
    let header: RequestHeader;
    try {
      header = decodeRequestHeader(headerBytes);
    } catch (error) {
      this.fail((error as Error).message);
      return null;
    }
    this.header = header;
    if (header.payloadBytes === 0) return undefined;
    if (header.opcode === Opcode.WRITE) {
      // Page-aligned memory: the O_DIRECT write needs no other copy.
      this.alignedBuffer = this.deps.store.acquireAligned(header.payloadBytes);
      return this.alignedBuffer.subarray(0, header.payloadBytes);
    }
    return Buffer.allocUnsafe(header.payloadBytes);
  }

  private finishFrame(headerBytes: Buffer, payload: Buffer | undefined): void {
    const header = this.header!;
    const alignedBuffer = this.alignedBuffer;
    this.header = undefined;
    this.alignedBuffer = undefined;
    this.dispatchBinary(header, headerBytes, payload, alignedBuffer);
  }

  private releasePayload(): void {
    this.frames.reset();
    if (this.alignedBuffer !== undefined) this.deps.store.releaseAligned(this.alignedBuffer);
    this.alignedBuffer = undefined;
    this.header = undefined;
  }

  // ------------------------------------------------------------ flow control

  private fail(reason: string): void {
    this.deps.log.warn({ remote: this.socket.remoteAddress, reason }, 'closing data connection: malformed input');
    this.closed = true;
    this.socket.destroy();
  }

  private pauseIfBusy(): void {
    const busy = this.inFlight >= REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX || this.socket.writableLength >= REPLY_BYTES_BUFFERED_HIGH || this.stalledUntilMs > Date.now();
    if (busy && !this.readingPaused) {
      this.readingPaused = true;
      this.socket.pause();
    }
  }

  private resumeIfPossible(): void {
    // Resume once below the in-flight limit and the socket is not backed up: waiting for an empty
    // queue would wait for a 'drain' that never comes when the socket was never full.
    if (!this.readingPaused || this.closed) return;
    if (this.inFlight >= REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX || this.socket.writableLength >= REPLY_BYTES_BUFFERED_HIGH) return;
    if (this.stalledUntilMs > Date.now()) return;
    this.readingPaused = false;
    if (this.mode === 'json') this.pumpJson();
    else {
      // What arrived while paused goes first; reading resumes only once it is all parsed.
      while (this.saved.length > 0 && !this.closed) {
        const chunk = this.saved[0]!;
        const used = this.consumeBinary(chunk);
        if (used < chunk.length) {
          this.saved[0] = chunk.subarray(used);
          break;
        }
        this.saved.shift();
      }
    }
    this.pauseIfBusy();
    if (!this.readingPaused && this.saved.length === 0) this.socket.resume();
    else this.readingPaused = true;
  }

  private dispatchBinary(header: RequestHeader, headerBytes: Buffer, payload: Buffer | undefined, alignedBuffer: Buffer | undefined): void {
    // A retired connection's frames never execute, not even those parsed in the same read.
    if (this.closed) {
      if (alignedBuffer !== undefined) this.deps.store.releaseAligned(alignedBuffer);
      return;
    }
    if (this.deps.faults !== undefined && this.deps.faults.blackholes(OPCODE_NAMES[header.opcode] ?? 'ping')) {
      // Fault injection: read, never executed, never answered (an SDS cut off from this client).
      if (alignedBuffer !== undefined) this.deps.store.releaseAligned(alignedBuffer);
      return;
    }
    this.inFlight += 1;
    const isHello = header.opcode === Opcode.HELLO;
    if (!isHello) this.running += 1;
    const run = isHello ? this.hello(payload) : executeRequest(this.deps, header, headerBytes, payload, alignedBuffer !== undefined);
    run
      .catch((error: unknown) => {
        this.deps.log.error({ err: error }, 'data request failed unexpectedly');
        return outcome(Status.INTERNAL);
      })
      .then((result) => {
        this.inFlight -= 1;
        if (!isHello) {
          this.running -= 1;
          if (this.running === 0) {
            for (const waiter of this.idleWaiters.splice(0)) waiter();
            this.leaveIfDone();
          }
        }
        if (alignedBuffer !== undefined) this.deps.store.releaseAligned(alignedBuffer);
        if (!this.closed) {
          const payloadBytes = result.payload?.length ?? 0;
          const replyHeader = encodeReplyHeader({ status: result.status, requestId: header.requestId, payloadBytes, aux: result.aux }, Buffer.allocUnsafe(REPLY_HEADER_BYTES));
          this.batcher.write(replyHeader, result.payload, result.release);
        } else {
          result.release?.();
        }
        this.resumeIfPossible();
      });
  }

  /**
   * HELLO: this connection is the client's newest. Its older connections are retired at once and
   * the answer waits until their running requests are done, so the client's retries (sent only
   * after this answer) can never be overtaken by a request it gave up on.
   */
  private async hello(payload: Buffer | undefined): Promise<Outcome> {
    if (payload?.length !== HELLO_PAYLOAD_BYTES || this.clientId !== undefined) return outcome(Status.BAD_REQUEST);
    const clientId = payload.subarray(0, 16).toString('hex');
    const incarnation = payload.readBigUInt64BE(16);
    const replaced = this.sessions.join(clientId, incarnation, this);
    if (replaced === undefined) return outcome(Status.BAD_REQUEST);
    this.clientId = clientId;
    this.incarnation = incarnation;
    for (const connection of replaced) connection.retire();
    const drained = await Promise.race([
      Promise.all(replaced.map((connection) => connection.idle())).then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), HELLO_DRAIN_TIMEOUT_MS).unref()),
    ]);
    if (replaced.length > 0) this.deps.log.info({ client: clientId, incarnation: Number(incarnation), replaced: replaced.length, drained }, 'client reconnected: older connections retired');
    return drained ? OK : outcome(Status.BUSY);
  }

  // ------------------------------------------------------------ JSON frames

  private pumpJson(): void {
    while (!this.closed && this.inFlight < REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX && this.nextJson()) {
      // each turn parses one frame
    }
  }

  private nextJson(): boolean {
    const newline = this.queue.indexOf(0x0a, JSON_FRAME_BYTES_MAX + 1);
    if (newline === -1) {
      if (this.queue.length > JSON_FRAME_BYTES_MAX) {
        this.writeJson({ ok: false, error: { code: 'FRAME_TOO_LARGE', message: `JSON frames are limited to ${JSON_FRAME_BYTES_MAX} bytes` } });
        this.socket.end();
        this.closed = true;
      }
      return false;
    }
    const line = this.queue.take(newline + 1).toString('utf8').trim();
    if (line.length === 0) return true;
    this.inFlight += 1;
    handleJsonFrame(this.deps, line)
      .catch((error: unknown) => {
        this.deps.log.error({ err: error }, 'JSON frame failed unexpectedly');
        return { ok: false, error: { code: 'INTERNAL', message: 'internal error' } };
      })
      .then((reply) => {
        this.inFlight -= 1;
        if (!this.closed) this.writeJson(reply);
        if (this.readingPaused) this.resumeIfPossible();
        else this.pumpJson();
      });
    return true;
  }

  private writeJson(value: unknown): void {
    this.socket.write(`${JSON.stringify(value)}\n`);
  }
}

/**
 * The JSON form of a request (seed §3 shapes): the binary header is rebuilt from the fields, so
 * the MAC, the token checks and the IO path are exactly those of binary frames.
 */
async function handleJsonFrame(deps: DataServerDeps, line: string): Promise<Record<string, unknown>> {
  let frame: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(line);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('a frame is a JSON object');
    frame = parsed as Record<string, unknown>;
  } catch (error) {
    return { ok: false, error: { code: 'BAD_FRAME', message: `not a JSON object: ${(error as Error).message}`.slice(0, 200) } };
  }
  const id = typeof frame.id === 'string' || typeof frame.id === 'number' ? frame.id : null;
  const fail = (code: string, message: string, extra: Record<string, unknown> = {}) => ({ ok: false, id, error: { code, message, ...extra } });
  const opcodes: Record<string, number> = {
    read: Opcode.READ,
    write: Opcode.WRITE,
    flush: Opcode.FLUSH,
    trim: Opcode.TRIM,
    write_zeroes: Opcode.WRITE_ZEROES,
    token: Opcode.TOKEN,
    ping: Opcode.PING,
  };
  const action = frame.action;
  if (typeof action !== 'string' || !Object.hasOwn(opcodes, action)) {
    return fail('BAD_FRAME', `action must be one of ${Object.keys(opcodes).join(', ')}`);
  }
  const u32 = (name: string, required = true): number => {
    const value = frame[name];
    if (value === undefined && !required) return 0;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new FrameError(`${name} must be an integer 0..2^32-1`);
    return value;
  };
  try {
    const opcode = opcodes[action]!;
    let payload: Buffer | undefined;
    if (opcode === Opcode.TOKEN) {
      if (typeof frame.token !== 'string') throw new FrameError('token must be base64');
      payload = Buffer.from(frame.token, 'base64');
    }
    if (opcode === Opcode.WRITE) {
      if (typeof frame.data_b64 !== 'string') throw new FrameError('data_b64 must be base64');
      if (frame.data_b64.length > Math.ceil((FRAME_PAYLOAD_BYTES_MAX * 4) / 3) + 4) throw new FrameError('data_b64 too large');
      payload = Buffer.from(frame.data_b64, 'base64');
    }
    const tokenIdHex = frame.token_id ?? (payload !== undefined && opcode === Opcode.TOKEN ? payload.subarray(8, 24).toString('hex') : undefined);
    if (opcode !== Opcode.PING && (typeof tokenIdHex !== 'string' || !/^[0-9a-f]{32}$/.test(tokenIdHex))) {
      throw new FrameError('token_id must be 32 hex digits');
    }
    const seqValue = frame.seq ?? 0;
    if (typeof seqValue !== 'number' || !Number.isSafeInteger(seqValue) || seqValue < 0) throw new FrameError('seq must be a non-negative integer');
    const lengthBytes = opcode === Opcode.WRITE ? payload!.length : u32('length_bytes', opcode === Opcode.READ || opcode === Opcode.TRIM || opcode === Opcode.WRITE_ZEROES);
    const headerBytes = encodeRequestHeader({
      opcode,
      flags: frame.fua === true ? 0x01 : 0,
      requestId: 0n,
      tokenId: typeof tokenIdHex === 'string' ? Buffer.from(tokenIdHex, 'hex') : Buffer.alloc(16),
      seq: BigInt(seqValue),
      volumeId: u32('volume_id', opcode !== Opcode.PING && opcode !== Opcode.TOKEN),
      chunkIndex: u32('chunk_index', false),
      epoch: u32('epoch', false),
      offsetBytes: u32('offset_bytes', false),
      lengthBytes,
      payloadBytes: payload?.length ?? 0,
    });
    if (typeof frame.mac === 'string' && /^[0-9a-f]{32}$/.test(frame.mac)) Buffer.from(frame.mac, 'hex').copy(headerBytes, REQUEST_MAC_OFFSET);
    const header = decodeRequestHeader(headerBytes);
    const result = await executeRequest(deps, header, headerBytes, payload);
    try {
      return jsonReply(result, opcode, id, lengthBytes, fail);
    } finally {
      result.release?.();
    }
  } catch (error) {
    if (error instanceof FrameError) return fail('BAD_FRAME', error.message);
    throw error;
  }
}

function jsonReply(
  result: Outcome,
  opcode: number,
  id: string | number | null,
  lengthBytes: number,
  fail: (code: string, message: string, extra?: Record<string, unknown>) => Record<string, unknown>,
): Record<string, unknown> {
  if (result.status !== Status.OK) {
    return fail(statusName(result.status), `request refused: ${statusName(result.status)}`, result.status === Status.STALE_EPOCH ? { epoch: result.aux } : {});
  }
  const reply: Record<string, unknown> = { ok: true, id };
  if (opcode === Opcode.READ) {
    reply.bytes_read = result.payload!.length;
    reply.data_b64 = result.payload!.toString('base64');
  }
  if (opcode === Opcode.WRITE) reply.bytes_written = lengthBytes;
  return reply;
}

export interface DataServer {
  readonly server: Server;
  readonly port: number;
  readonly socketPath: string | undefined;
  close(): Promise<void>;
}

export async function startDataServer(deps: DataServerDeps, host: string, port: number, socketPath?: string): Promise<DataServer> {
  const sockets = new Set<Socket>();
  const connections = new Set<DataConnection>();
  const sessions = new ClientSessions();
  deps.faults?.onStall((ms) => {
    for (const connection of connections) connection.stall(ms);
  });
  const onConnection = (accepted: Socket): void => {
    // Counted here: an adopted socket leaves the server's own count (see adoptForDirectReads).
    if (sockets.size >= DATA_CONNECTIONS_MAX) {
      deps.log.warn({ connectionsMax: DATA_CONNECTIONS_MAX }, 'data connection refused: too many connections');
      accepted.destroy();
      return;
    }
    const connection = new DataConnection(accepted, deps, sessions, (socket) => {
      sockets.delete(socket);
      connections.delete(connection);
    });
    sockets.add(connection.socketOf);
    connections.add(connection);
  };
  const listenOn = (server: Server, address: { port: number; host: string } | { path: string }): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if ('path' in address) server.listen(address.path, done);
      else server.listen(address.port, address.host, done);
    });
  // Paused: the accepted socket's handle moves to a socket that reads into our buffers.
  const server = createServer({ noDelay: true, pauseOnConnect: true }, onConnection);
  await listenOn(server, { port, host });
  // The same protocol on a Unix socket: SDCs on this host skip the TCP stack (DESIGN §10).
  let local: Server | undefined;
  if (socketPath !== undefined) {
    rmSync(socketPath, { force: true });
    local = createServer({ pauseOnConnect: true }, onConnection);
    await listenOn(local, { path: socketPath });
  }
  const address = server.address();
  const close = (target: Server | undefined): Promise<void> =>
    new Promise<void>((resolve) => (target === undefined ? resolve() : target.close(() => resolve())));
  return {
    server,
    port: typeof address === 'object' && address !== null ? address.port : port,
    socketPath,
    async close() {
      for (const socket of sockets) socket.destroy();
      await Promise.all([close(server), close(local)]);
      if (socketPath !== undefined) rmSync(socketPath, { force: true });
    },
  };
}
