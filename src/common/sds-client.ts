/**
 * A pipelined client of the SDS data port: one TCP connection, many requests in flight, replies
 * matched by request id in whatever order they come. Used by the SDC for all its IO and by an
 * SDS pulling a chunk from a peer. Knows nothing about tokens beyond signing the header it is given.
 */
import { connect, type Socket } from 'node:net';
import { SocketBatcher } from './socket-batcher.js';
import { onreadFor, type ReadSink } from './direct-reads.js';
import { FrameAssembler } from './frame-assembler.js';
import { randomBytes } from 'node:crypto';
import {
  decodeReplyHeader,
  encodeRequestHeaderInto,
  HELLO_PAYLOAD_BYTES,
  Opcode,
  Status,
  statusName,
  REQUEST_HEADER_BYTES,
  REPLY_HEADER_BYTES,
  signRequestHeader,
  type MacKey,
  type ReplyHeader,
  type RequestHeader,
} from './sds-protocol.js';

export const CONNECT_TIMEOUT_MS = 5000;
export const REQUEST_TIMEOUT_MS_DEFAULT = 30_000;

export interface SdsReply {
  status: number;
  aux: number;
  payload: Buffer | undefined;
}

export class SdsConnectionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SdsConnectionError';
  }
}

interface Pending {
  resolve: (reply: SdsReply) => void;
  reject: (error: Error) => void;
  deadlineMs: number;
}

/** How often a connection checks its oldest request against the timeout (one timer, not one per request). */
const DEADLINE_CHECK_MS_MAX = 250;

export type RequestFields = Omit<RequestHeader, 'mac' | 'requestId' | 'payloadBytes'>;

export class SdsDataClient implements ReadSink {
  private socket: Socket | undefined;
  private batcher: SocketBatcher | undefined;
  private connecting: Promise<void> | undefined;
  private readonly pending = new Map<bigint, Pending>();
  /** Replies: the header, then the payload straight into the buffer handed to the caller. */
  private readonly replies = new FrameAssembler(REPLY_HEADER_BYTES, {
    onHeader: (headerBytes) => this.startReply(headerBytes),
    onFrame: (_headerBytes, payload) => this.finishReply(payload),
  });
  private replyHeader: ReplyHeader | undefined;
  private nextRequestId = 1n;
  private closedError: Error | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  /** With `hello`: this client's id, and how many connections it has made (each a new incarnation). */
  private readonly clientId: Buffer | undefined;
  private incarnation = 0n;
  /** The socket being connected now (before it becomes `socket`). */
  private connectingSocket: Socket | undefined;

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly requestTimeoutMs = REQUEST_TIMEOUT_MS_DEFAULT,
    /** Connect to this Unix socket instead of host:port (an SDS on the same host). */
    readonly socketPath?: string,
    /**
     * Start every connection with HELLO (PROTOCOL.md §5.6): the SDS then drops this client's
     * older connections, and what they still held, before the new one serves. Every client that
     * retries mutating requests on a new connection needs it (the SDC does).
     */
    hello = false,
  ) {
    this.clientId = hello ? randomBytes(16) : undefined;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** How many connections this client has opened (HELLO clients): a new one means the old one broke. */
  get generation(): number {
    return Number(this.incarnation);
  }

  get connected(): boolean {
    return this.socket !== undefined && this.closedError === undefined;
  }

  connect(): Promise<void> {
    if (this.connecting !== undefined) return this.connecting;
    if (this.socket !== undefined) return Promise.resolve();
    this.connecting = new Promise<void>((resolve, reject) => {
      const onread = onreadFor(this);
      const socket = this.socketPath !== undefined ? connect({ path: this.socketPath, onread }) : connect({ host: this.host, port: this.port, noDelay: true, onread });
      const timer = setTimeout(() => socket.destroy(new SdsConnectionError(`connect to ${this.host}:${this.port} timed out`)), CONNECT_TIMEOUT_MS);
      socket.once('connect', () => {
        clearTimeout(timer); // a HELLO's answer is bounded by the request timeout, like any request
        this.socket = socket;
        this.batcher = new SocketBatcher(socket);
        this.closedError = undefined;
        this.deadlineTimer ??= setInterval(() => this.checkDeadlines(), Math.min(DEADLINE_CHECK_MS_MAX, this.requestTimeoutMs));
        this.deadlineTimer.unref();
        if (this.clientId === undefined) {
          resolve();
          return;
        }
        // HELLO first; nothing else is sent on this connection before the SDS answers it.
        this.incarnation += 1n;
        const payload = Buffer.allocUnsafe(HELLO_PAYLOAD_BYTES);
        this.clientId.copy(payload, 0);
        payload.writeBigUInt64BE(this.incarnation, 16);
        this.send({ opcode: Opcode.HELLO, flags: 0, tokenId: Buffer.alloc(16), seq: 0n, volumeId: 0, chunkIndex: 0, epoch: 0, offsetBytes: 0, lengthBytes: 0 }, payload, undefined).then(
          (reply) => {
            if (reply.status === Status.OK) resolve();
            else socket.destroy(new SdsConnectionError(`${this.host}:${this.port}: HELLO refused (${statusName(reply.status)})`));
          },
          () => undefined, // the connection failed: its 'error' or 'close' rejects
        );
      });
      // Events of a socket this client already gave up on (timed out, replaced by a newer
      // connection) must not touch the newer one: its requests and its reply parser.
      const current = (): boolean => this.socket === socket || (this.socket === undefined && this.connectingSocket === socket);
      this.connectingSocket = socket;
      socket.on('error', (error) => {
        clearTimeout(timer);
        if (current()) this.failAll(new SdsConnectionError(`${this.host}:${this.port}: ${error.message}`));
        reject(new SdsConnectionError(`${this.host}:${this.port}: ${error.message}`));
      });
      socket.on('close', () => {
        clearTimeout(timer);
        if (current()) this.failAll(new SdsConnectionError(`${this.host}:${this.port}: connection closed`));
        reject(new SdsConnectionError(`${this.host}:${this.port}: connection closed`));
      });
    }).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** Sends one request; `macKey` signs the header (session key, or the peer key for PEER_READ). */
  async request(fields: RequestFields, payload: Buffer | undefined, macKey: MacKey | Buffer | undefined): Promise<SdsReply> {
    if (this.socket === undefined || this.connecting !== undefined) await this.connect();
    return this.send(fields, payload, macKey);
  }

  private send(fields: RequestFields, payload: Buffer | undefined, macKey: MacKey | Buffer | undefined): Promise<SdsReply> {
    const batcher = this.batcher!;
    const requestId = this.nextRequestId;
    this.nextRequestId += 1n;
    const header = encodeRequestHeaderInto(Buffer.allocUnsafe(REQUEST_HEADER_BYTES), fields, requestId, payload?.length ?? 0);
    if (macKey !== undefined) signRequestHeader(macKey, header);
    return new Promise<SdsReply>((resolve, reject) => {
      this.pending.set(requestId, { resolve, reject, deadlineMs: Date.now() + this.requestTimeoutMs });
      batcher.write(header, payload);
    });
  }

  /**
   * A pipelined connection that stops answering is suspect: drop it, and with it any bytes still
   * queued, so nothing of a request we gave up on can reach the SDS later. Requests are kept in
   * the order sent, all with the same timeout: the first one is the oldest.
   */
  private checkDeadlines(): void {
    for (const pending of this.pending.values()) {
      if (pending.deadlineMs > Date.now()) return;
      const error = new SdsConnectionError(`${this.host}:${this.port}: no reply within ${this.requestTimeoutMs} ms`);
      this.socket?.destroy();
      this.failAll(error);
      return;
    }
  }

  close(): void {
    this.socket?.destroy();
    this.socket = undefined;
    this.failAll(new SdsConnectionError('client closed'));
  }

  // ------------------------------------------------------------ ReadSink

  onStaged(bytes: Buffer): boolean {
    if (this.socket !== undefined) this.replies.consume(bytes);
    return true;
  }

  directTarget(): Buffer | undefined {
    return this.replies.directTarget();
  }

  onDirect(count: number): boolean {
    this.replies.onDirect(count);
    return true;
  }

  /** A whole reply header is in: the buffer for its payload (null: malformed, the connection is dropped). */
  private startReply(headerBytes: Buffer): Buffer | undefined | null {
    try {
      this.replyHeader = decodeReplyHeader(headerBytes);
    } catch (error) {
      this.socket?.destroy();
      this.failAll(new SdsConnectionError(`${this.host}:${this.port}: ${(error as Error).message}`));
      return null;
    }
    return this.replyHeader.payloadBytes === 0 ? undefined : Buffer.allocUnsafe(this.replyHeader.payloadBytes);
  }

  private finishReply(payload: Buffer | undefined): void {
    const header = this.replyHeader!;
    this.replyHeader = undefined;
    const pending = this.pending.get(header.requestId);
    if (pending === undefined) return; // timed out already
    this.pending.delete(header.requestId);
    pending.resolve({ status: header.status, aux: header.aux, payload });
  }

  private failAll(error: Error): void {
    this.closedError = error;
    this.socket = undefined;
    this.replies.reset();
    this.replyHeader = undefined;
    if (this.deadlineTimer !== undefined) clearInterval(this.deadlineTimer);
    this.deadlineTimer = undefined;
    for (const [id, pending] of this.pending) {
      pending.reject(error);
      this.pending.delete(id);
    }
  }
}
