/**
 * One client socket from accept to close: bounded handshake, then transmission; any protocol
 * violation or failure ends only this connection, never the process.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import type { Logger } from '../src/common/logger.js';
import { KEEPALIVE_INITIAL_DELAY_MS, SHUTDOWN_GRACE_MS } from './constants.js';
import { NbdConnectionClosed, NbdProtocolError } from './errors.js';
import { Handshake } from './handshake.js';
import type { SocketReader } from './socket-reader.js';
import { Transmission } from './transmission.js';
import type { NbdExportProvider } from './types.js';

export interface ConnectionOptions {
  readonly provider: NbdExportProvider;
  readonly requestsInFlightMax: number;
  readonly handshakeTimeoutMs: number;
}

/** After we end our side, how long queued replies may take to leave before we drop the socket. */
const LINGER_AFTER_END_MS = 5_000;

export class NbdConnection {
  private phase: 'handshake' | 'transmission' | 'done' = 'handshake';
  private transmission: Transmission | undefined;
  /** Resolves when the socket has closed, whatever the reason. */
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: Socket,
    /** Fed by the socket (see startNbdServer). */
    private readonly reader: SocketReader,
    private readonly log: Logger,
    private readonly options: ConnectionOptions,
  ) {
    assert.ok(Number.isSafeInteger(options.requestsInFlightMax) && options.requestsInFlightMax > 0);
    assert.ok(Number.isSafeInteger(options.handshakeTimeoutMs) && options.handshakeTimeoutMs > 0);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', (error: Error) => this.log.debug({ err: error }, 'nbd socket error'));
  }

  async serve(): Promise<void> {
    const socket = this.socket;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_INITIAL_DELAY_MS);
    const reader = this.reader;
    const handshakeTimer = setTimeout(() => {
      this.log.warn({ timeoutMs: this.options.handshakeTimeoutMs }, 'nbd handshake timed out');
      socket.destroy();
    }, this.options.handshakeTimeoutMs);
    try {
      const outcome = await new Handshake(socket, reader, this.options.provider, this.log).run();
      clearTimeout(handshakeTimer);
      if (outcome.kind === 'aborted') {
        this.log.debug('nbd client aborted the handshake');
        this.finish();
        return;
      }
      const { session } = outcome;
      this.log.info(
        {
          export: session.export.name,
          sizeBytes: session.sizeBytes,
          transmissionFlags: `0x${session.transmissionFlags.toString(16)}`,
          structuredReplies: session.structuredReplies,
          baseAllocation: session.baseAllocationContextId !== undefined,
        },
        'nbd transmission started',
      );
      this.phase = 'transmission';
      this.transmission = new Transmission(socket, reader, session, this.log, { requestsInFlightMax: this.options.requestsInFlightMax });
      await this.transmission.run();
      this.finish();
    } catch (error) {
      clearTimeout(handshakeTimer);
      if (error instanceof NbdConnectionClosed) this.log.debug({ phase: this.phase }, `nbd connection ended: ${error.message}`);
      else if (error instanceof NbdProtocolError) this.log.warn({ phase: this.phase }, `nbd protocol violation, disconnecting: ${error.message}`);
      else this.log.error({ err: error, phase: this.phase }, 'nbd connection failed');
      this.phase = 'done';
      socket.destroy();
    }
  }

  /** Server shutdown: a handshake is cut; transmission answers what is in flight first (bounded). */
  async shutdown(graceMs = SHUTDOWN_GRACE_MS): Promise<void> {
    if (this.socket.destroyed) return;
    if (this.phase === 'transmission' && this.transmission !== undefined) this.transmission.stop();
    else this.socket.destroy();
    const timer = setTimeout(() => this.socket.destroy(), graceMs);
    await this.closed;
    clearTimeout(timer);
  }

  /**
   * Orderly close: end our side, and once every queued reply has left (the 'finish' event) close the
   * socket without waiting for the client's FIN. A client that stops reading gets LINGER_AFTER_END_MS.
   */
  private finish(): void {
    this.phase = 'done';
    if (this.socket.destroyed) return;
    this.socket.once('finish', () => this.socket.destroy());
    this.socket.end();
    setTimeout(() => this.socket.destroy(), LINGER_AFTER_END_MS).unref();
  }
}
