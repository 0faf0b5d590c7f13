/**
 * The SDS data client drops a connection whose oldest request is not answered in time (one check
 * timer per connection, not one per request): every request on it fails with SdsConnectionError,
 * and the socket is closed so nothing queued can reach the SDS later.
 */
import t from 'tap';
import { createServer, type Socket } from 'node:net';
import { SdsDataClient, SdsConnectionError } from '../../src/common/sds-client.js';
import { Opcode } from '../../src/common/sds-protocol.js';

t.test('unanswered requests time out together and the connection is dropped', async (t) => {
  const sockets: Socket[] = [];
  let closedByClient = false;
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('data', () => undefined); // swallow requests, never answer
    socket.on('close', () => (closedByClient = true));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  const port = (server.address() as { port: number }).port;
  const timeoutMs = 400;
  const client = new SdsDataClient('127.0.0.1', port, timeoutMs);
  const fields = { opcode: Opcode.PING, flags: 0, tokenId: Buffer.alloc(16), seq: 0n, volumeId: 0, chunkIndex: 0, epoch: 0, offsetBytes: 0, lengthBytes: 0 };
  const startedMs = Date.now();
  const results = await Promise.allSettled([client.request(fields, undefined, undefined), client.request(fields, undefined, undefined)]);
  const elapsedMs = Date.now() - startedMs;
  for (const result of results) {
    t.equal(result.status, 'rejected');
    if (result.status === 'rejected') {
      t.ok(result.reason instanceof SdsConnectionError, 'an SdsConnectionError');
      t.match((result.reason as Error).message, /no reply within 400 ms/);
    }
  }
  t.ok(elapsedMs >= timeoutMs, `not before the timeout (${elapsedMs} ms)`);
  t.ok(elapsedMs < timeoutMs + 1000, `soon after it (${elapsedMs} ms)`);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.ok(closedByClient, 'the client closed the connection');
  client.close();
});
