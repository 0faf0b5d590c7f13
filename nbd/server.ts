/**
 * The NBD listener: accepts sockets up to connectionsMax, gives each its own NbdConnection, and on
 * close() stops accepting and lets every connection finish its in-flight requests (bounded) first.
 */
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { adoptForDirectReads } from '../src/common/direct-reads.js';
import {
  CONNECTIONS_MAX_DEFAULT,
  HANDSHAKE_TIMEOUT_MS_DEFAULT,
  INPUT_BUFFERED_BYTES_HIGH,
  REQUESTS_IN_FLIGHT_MAX_DEFAULT,
  SHUTDOWN_GRACE_MS,
} from './constants.js';
import { NbdConnection } from './connection.js';
import { SocketReader } from './socket-reader.js';
import type { NbdServer, NbdServerOptions } from './types.js';

function positiveInteger(value: number | undefined, fallback: number, what: string): number {
  const result = value ?? fallback;
  assert.ok(Number.isSafeInteger(result) && result > 0, `${what} must be a positive integer, got ${String(value)}`);
  return result;
}

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  assert.ok(Number.isInteger(options.port) && options.port >= 0 && options.port <= 65535, `port must be 0..65535, got ${options.port}`);
  const connectionsMax = positiveInteger(options.connectionsMax, CONNECTIONS_MAX_DEFAULT, 'connectionsMax');
  const requestsInFlightMax = positiveInteger(options.requestsInFlightMax, REQUESTS_IN_FLIGHT_MAX_DEFAULT, 'requestsInFlightMax');
  const handshakeTimeoutMs = positiveInteger(options.handshakeTimeoutMs, HANDSHAKE_TIMEOUT_MS_DEFAULT, 'handshakeTimeoutMs');
  const log = options.log;
  const connections = new Set<NbdConnection>();
  let nextConnectionId = 1;
  let closing: Promise<void> | undefined;

  // allowHalfOpen: a client that shuts its write side after its last request still gets every reply.
  // Paused at accept: the socket's handle moves to one that reads into our buffers (direct-reads.ts).
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (accepted: Socket) => {
    if (closing !== undefined) {
      accepted.destroy();
      return;
    }
    // Counted here: an adopted socket leaves the server's own count.
    if (connections.size >= connectionsMax) {
      log.warn({ remote: accepted.remoteAddress, connectionsMax }, 'nbd connection refused: too many connections');
      accepted.destroy();
      return;
    }
    const reader = new SocketReader(INPUT_BUFFERED_BYTES_HIGH);
    const socket = adoptForDirectReads(accepted, reader, { allowHalfOpen: true });
    reader.attach(socket);
    const connectionId = nextConnectionId++;
    const connectionLog = log.child({ nbdConnection: connectionId, remote: `${socket.remoteAddress}:${socket.remotePort}` });
    const connection = new NbdConnection(socket, reader, connectionLog, { provider: options.provider, requestsInFlightMax, handshakeTimeoutMs });
    connections.add(connection);
    connectionLog.debug({ connections: connections.size }, 'nbd client connected');
    void connection.closed.then(() => {
      connections.delete(connection);
      connectionLog.debug({ connections: connections.size }, 'nbd client disconnected');
    });
    void connection.serve();
  });
  server.on('error', (error) => log.error({ err: error }, 'nbd listener error'));

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object', 'a TCP listener has an address');
  log.info({ host: options.host, port: address.port }, 'nbd server listening');

  return {
    port: address.port,
    connections: () => connections.size,
    close(): Promise<void> {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await Promise.all([...connections].map((connection) => connection.shutdown(SHUTDOWN_GRACE_MS)));
        await stopped;
        log.info('nbd server closed');
      })();
      return closing;
    },
  };
}
