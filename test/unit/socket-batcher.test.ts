/**
 * SocketBatcher (src/common/socket-batcher.ts): frames of one turn leave together and in order,
 * and a lent payload's release runs exactly once: after its bytes were handed to the socket, or at
 * once when the socket is already gone or the frame has no payload.
 */
import t from 'tap';
import { connect, createServer, type Socket } from 'node:net';
import { SocketBatcher } from '../../src/common/socket-batcher.js';

t.test('frames arrive in order; each release runs once, after the write', async (t) => {
  const received: Buffer[] = [];
  let serverSide: Socket | undefined;
  const server = createServer((socket) => {
    serverSide = socket;
    socket.on('data', (chunk) => received.push(chunk));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const client = connect({ port, host: '127.0.0.1' });
  await new Promise<void>((resolve) => client.once('connect', resolve));
  const batcher = new SocketBatcher(client);
  const releases: number[] = [];
  const expected: Buffer[] = [];
  for (let i = 0; i < 50; i += 1) {
    const header = Buffer.from(`h${i}:`);
    const payload = Buffer.alloc(i * 1000 + 1, i);
    expected.push(header, payload);
    batcher.write(header, payload, () => releases.push(i));
  }
  let emptyReleased = 0;
  batcher.write(Buffer.from('end'), undefined, () => (emptyReleased += 1));
  expected.push(Buffer.from('end'));
  t.equal(emptyReleased, 1, 'a frame without payload releases at once');
  const total = expected.reduce((sum, b) => sum + b.length, 0);
  const deadline = Date.now() + 5000;
  while (received.reduce((sum, b) => sum + b.length, 0) < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  t.ok(Buffer.concat(received).equals(Buffer.concat(expected)), 'the peer got every frame, in order');
  t.same(releases, Array.from({ length: 50 }, (_, i) => i), 'each payload released once, in order');

  client.destroy();
  serverSide?.destroy();
  let lateReleased = 0;
  batcher.write(Buffer.from('x'), Buffer.alloc(10), () => (lateReleased += 1));
  batcher.flush();
  t.equal(lateReleased, 1, 'a frame queued on a destroyed socket is released at flush');
});
