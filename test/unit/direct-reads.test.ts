/**
 * Direct socket reads (src/common/direct-reads.ts), with frames assembled by FrameAssembler (as the
 * SDS data port and the SDS client do), on real loopback sockets: an accepted socket is
 * adopted (its handle moves to a socket that reads into our memory), frames of every size arrive
 * intact, large payloads are read in place, pausing from the sink stops reads without losing a
 * byte, and a socket whose handle cannot move still feeds the sink from 'data' events.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { connect, createServer, Socket, type Server } from 'node:net';
import { adoptForDirectReads, type ReadSink } from '../../src/common/direct-reads.js';
import { FrameAssembler } from '../../src/common/frame-assembler.js';

const HEADER_BYTES = 8;
const MAGIC = 0x46524d31;

/** A sink for frames of [magic u32][payload length u32][payload], assembled like the SDS's. */
class FrameSink implements ReadSink {
  readonly frames: Buffer[] = [];
  stagedBytes = 0;
  directBytes = 0;
  pauseAfterFrames = Infinity;
  paused = false;
  error: string | undefined;
  private saved: Buffer[] = [];
  private readonly assembler = new FrameAssembler(HEADER_BYTES, {
    onHeader: (header) => {
      if (header.readUInt32BE(0) !== MAGIC) {
        this.error = 'bad magic';
        return null;
      }
      const length = header.readUInt32BE(4);
      return length === 0 ? undefined : Buffer.alloc(length);
    },
    onFrame: (_header, payload) => {
      this.frames.push(payload ?? Buffer.alloc(0));
      if (this.frames.length >= this.pauseAfterFrames) this.paused = true;
    },
    mayStartFrame: () => !this.paused,
  });

  onStaged(bytes: Buffer): boolean {
    this.stagedBytes += bytes.length;
    if (this.paused || this.saved.length > 0) {
      this.saved.push(Buffer.from(bytes));
      return !this.paused;
    }
    const used = this.assembler.consume(bytes);
    if (used < bytes.length && this.error === undefined) this.saved.push(Buffer.from(bytes.subarray(used)));
    return !this.paused;
  }

  directTarget(): Buffer | undefined {
    return this.saved.length > 0 ? undefined : this.assembler.directTarget();
  }

  onDirect(count: number): boolean {
    this.directBytes += count;
    this.assembler.onDirect(count);
    return !this.paused;
  }

  /** Parses what was saved while paused; true when all of it was. */
  drainSaved(): boolean {
    while (this.saved.length > 0 && !this.paused) {
      const chunk = this.saved[0]!;
      const used = this.assembler.consume(chunk);
      if (used < chunk.length) {
        this.saved[0] = chunk.subarray(used);
        return false;
      }
      this.saved.shift();
    }
    return this.saved.length === 0;
  }
}

function frame(payload: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(MAGIC, 0);
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

async function listen(onConnection: (socket: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer({ pauseOnConnect: true }, onConnection);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address !== 'object') throw new Error('no address');
  return { server, port: address.port };
}

async function until(condition: () => boolean, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  return condition();
}

const SIZES = [0, 1, 7, 4096, 4097, 16 * 1024, 64 * 1024 + 3, 1024 * 1024, 4 * 1024 * 1024 + 1, 100];

t.test('an adopted socket: every frame intact, large payloads read in place', async (t) => {
  const sink = new FrameSink();
  let adopted: Socket | undefined;
  let original: Socket | undefined;
  const { server, port } = await listen((socket) => {
    original = socket;
    adopted = adoptForDirectReads(socket, sink);
  });
  t.teardown(() => server.close());
  const payloads = SIZES.map((size) => randomBytes(size));
  const client = connect({ port, host: '127.0.0.1' });
  t.teardown(() => client.destroy());
  await new Promise<void>((resolve) => client.once('connect', resolve));
  for (const payload of payloads) client.write(frame(payload));
  t.ok(await until(() => sink.frames.length === payloads.length), 'every frame arrived');
  t.equal(sink.error, undefined, 'no framing error');
  t.ok(adopted !== undefined && adopted !== original, 'the handle moved to a new socket (not the data-event fallback)');
  t.ok(original?.destroyed, 'the accepted socket object is destroyed');
  t.ok(payloads.every((payload, i) => payload.equals(sink.frames[i]!)), 'each payload byte for byte');
  const total = payloads.reduce((sum, payload) => sum + payload.length + HEADER_BYTES, 0);
  t.equal(sink.stagedBytes + sink.directBytes, total, 'every byte was delivered once');
  t.ok(sink.directBytes > total / 2, `most bytes were read in place (${sink.directBytes} of ${total})`);

  // The adopted socket writes too, and the peer sees its close.
  const echoed = new Promise<Buffer>((resolve) => client.once('data', resolve));
  adopted!.write('pong');
  t.equal((await echoed).toString(), 'pong', 'the adopted socket writes');
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  adopted!.destroy();
  await closed;
  t.pass('the client sees the close');
});

t.test('a sink that pauses stops the reads; resumed, nothing is lost', async (t) => {
  const sink = new FrameSink();
  sink.pauseAfterFrames = 3;
  let adopted: Socket | undefined;
  const { server, port } = await listen((socket) => {
    adopted = adoptForDirectReads(socket, sink);
  });
  t.teardown(() => server.close());
  const payloads = Array.from({ length: 40 }, (_, i) => randomBytes(i % 2 === 0 ? 200 : 70_000));
  const client = connect({ port, host: '127.0.0.1' });
  t.teardown(() => client.destroy());
  await new Promise<void>((resolve) => client.once('connect', resolve));
  for (const payload of payloads) client.write(frame(payload));
  t.ok(await until(() => sink.paused), 'the sink paused');
  await new Promise((resolve) => setTimeout(resolve, 100));
  const seenWhilePaused = sink.stagedBytes + sink.directBytes;
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(sink.stagedBytes + sink.directBytes, seenWhilePaused, 'no reads while paused');
  t.ok(sink.frames.length < payloads.length, 'frames wait');
  for (let round = 0; round < 100 && sink.frames.length < payloads.length; round += 1) {
    sink.pauseAfterFrames = sink.frames.length + 3;
    sink.paused = false;
    if (sink.drainSaved()) adopted!.resume();
    await until(() => sink.paused || sink.frames.length === payloads.length, 2000);
  }
  t.equal(sink.frames.length, payloads.length, 'every frame arrived across the pauses');
  t.ok(payloads.every((payload, i) => payload.equals(sink.frames[i]!)), 'each payload byte for byte');
});

t.test("a socket without a movable handle feeds the sink from 'data' events", async (t) => {
  const sink = new FrameSink();
  const socket = new Socket();
  (socket as unknown as { _handle: unknown })._handle = null;
  const same = adoptForDirectReads(socket, sink);
  t.equal(same, socket, 'the same socket comes back');
  const payload = randomBytes(100_000);
  const bytes = frame(payload);
  socket.emit('data', bytes.subarray(0, 5));
  socket.emit('data', bytes.subarray(5));
  t.equal(sink.frames.length, 1, 'the frame arrived');
  t.ok(sink.frames[0]!.equals(payload), 'byte for byte');
  t.equal(sink.directBytes, 0, 'nothing was read in place');
  socket.destroy();
});
