/**
 * The pflex_io addon's IoQueue (DESIGN §7, §10): batched IO on io_uring or on its own threads. For
 * both backends: round trips, EOF zero-fill, 1000 concurrent mixed operations checked against an
 * in-memory model, errno-coded rejections shaped like the promise functions', argument validation,
 * close semantics, and that an idle queue neither keeps the process alive nor leaks its threads or
 * ring once collected. Plus: the default backend is io_uring where the addon was built with liburing
 * (test/sds/native-io-build.test.ts builds it without), and what the start-up log says about it.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { randomFillSync, randomInt } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as io from '../../src/sds/native-io.js';

type Tap = Test;

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 4096;
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
const NATIVE_IO_URL = new URL('../../src/sds/native-io.js', import.meta.url).href;
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** A temp dir on a disk file system (O_DIRECT really applies there), else one in tmpdir(). */
function makeWorkDir(): { dir: string; direct: boolean } {
  for (const parent of ['/var/tmp', tmpdir(), REPO_ROOT]) {
    if (!existsSync(parent)) continue;
    const type = Number(statfsSync(parent).type);
    if (type === TMPFS_MAGIC || type === RAMFS_MAGIC) continue;
    const dir = mkdtempSync(join(parent, 'pflex-io-queue-'));
    const probe = io.open(join(dir, 'probe'), { create: true, direct: true });
    io.close(probe.fd);
    if (probe.direct) return { dir, direct: true };
    rmSync(dir, { recursive: true, force: true });
  }
  return { dir: mkdtempSync(join(tmpdir(), 'pflex-io-queue-')), direct: false };
}

const work = makeWorkDir();
t.teardown(() => rmSync(work.dir, { recursive: true, force: true }));
t.comment(`work dir ${work.dir} (${work.direct ? 'O_DIRECT' : 'buffered'})`);

let fileCounter = 0;

function openNew(tt: Tap, name: string): { fd: number; path: string } {
  fileCounter += 1;
  const path = join(work.dir, `${fileCounter}-${name}`);
  const { fd } = io.open(path, { create: true, direct: true });
  tt.teardown(() => io.close(fd));
  return { fd, path };
}

/** A queue closed when `tt` ends. */
function newQueue(tt: Tap, options: io.IoQueueOptions): io.IoQueue {
  const queue = new io.IoQueue(options);
  tt.teardown(() => queue.close());
  return queue;
}

function randomAligned(sizeBytes: number): Buffer {
  return randomFillSync(io.allocAligned(sizeBytes));
}

/** Threads of this process, without the kernel's io_uring workers (iou-wrk-*, iou-sqp-*). */
function threadCount(): number {
  return readdirSync('/proc/self/task').filter((task) => {
    try {
      return !readFileSync(`/proc/self/task/${task}/comm`, 'utf8').startsWith('iou-');
    } catch {
      return false; // gone meanwhile
    }
  }).length;
}

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

const nextLoopTurn = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 10));

async function rejection(tt: Tap, promise: Promise<unknown>, what: string): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  tt.fail(`${what} should reject`);
  return undefined;
}

function assertIoError(tt: Tap, error: unknown, code: string, syscall: string, what: string): void {
  tt.ok(io.isIoError(error, code), `${what}: IoError ${code}`, { found: error });
  if (!io.isIoError(error)) return;
  tt.equal(error.errno, osConstants.errno[code as keyof typeof osConstants.errno], `${what}: .errno`);
  tt.equal(error.syscall, syscall, `${what}: .syscall`);
  tt.match(error.message, new RegExp(`^${syscall}: .+ \\(${code}\\)$`), `${what}: message`);
}

/** The backend 'auto' and 'io_uring' run with this build (the kernel here allows io_uring). */
const ringOrThreads: io.IoQueueBackend = io.IO_URING_BUILT ? 'io_uring' : 'threads';
t.comment(`this addon was built ${io.IO_URING_BUILT ? 'with' : 'without'} liburing (IO_URING_BUILT ${io.IO_URING_BUILT})`);

t.test('the default backend is io_uring where built with liburing (auto), and PFLEX_SDS_IO_BACKEND chooses', async (t) => {
  const queue = newQueue(t, {});
  t.equal(queue.backend, ringOrThreads, `default: ${ringOrThreads}`);
  t.equal(queue.threads, io.IO_URING_BUILT ? 0 : io.IO_QUEUE_THREADS_DEFAULT, 'worker threads: none with io_uring');
  t.equal(io.ioQueueBackendFromEnv({}), 'auto', 'unset: auto');
  t.equal(io.ioQueueBackendFromEnv({ [io.IO_BACKEND_ENV]: '' }), 'auto', 'empty: auto');
  t.equal(io.ioQueueBackendFromEnv({ [io.IO_BACKEND_ENV]: ' threads ' }), 'threads');
  t.equal(io.ioQueueBackendFromEnv({ [io.IO_BACKEND_ENV]: 'io_uring' }), 'io_uring');
  for (const bad of ['uring', 'THREADS', 'x']) {
    t.throws(() => io.ioQueueBackendFromEnv({ [io.IO_BACKEND_ENV]: bad }), RangeError, `${io.IO_BACKEND_ENV}=${bad}`);
  }
  t.throws(() => new io.IoQueue({ backend: 'uring' as io.IoQueueBackendChoice }), RangeError, "backend 'uring'");
  t.throws(() => new io.IoQueue({ backend: 1 as unknown as io.IoQueueBackendChoice }), TypeError, 'backend 1');
  t.equal(newQueue(t, { backend: 'threads' }).backend, 'threads', 'threads when asked');
  t.equal(newQueue(t, { backend: 'io_uring' }).backend, ringOrThreads, `${ringOrThreads} when io_uring is asked for`);
});

t.test('ioUring and describeIoUring: whether io_uring runs and why not, for the start-up log', async (t) => {
  t.equal(newQueue(t, {}).ioUring, io.IO_URING_BUILT ? 'in use' : 'not built (liburing-dev missing at npm install)', 'auto');
  t.equal(newQueue(t, { backend: 'threads' }).ioUring, 'not asked for (backend threads)', 'threads');
  t.equal(
    newQueue(t, { backend: 'io_uring' }).ioUring,
    io.IO_URING_BUILT ? 'in use' : 'not built (liburing-dev missing at npm install): io_uring was asked for, threads run instead',
    'io_uring asked for',
  );
  t.equal(io.describeIoUring('auto', 'io_uring', true), 'in use', 'auto running io_uring');
  t.equal(io.describeIoUring('io_uring', 'io_uring', true), 'in use', 'io_uring running io_uring');
  for (const built of [true, false]) {
    t.equal(io.describeIoUring('threads', 'threads', built), 'not asked for (backend threads)', `built ${built}: threads asked for`);
  }
  t.equal(io.describeIoUring('auto', 'threads', false), 'not built (liburing-dev missing at npm install)', 'auto, not built');
  t.equal(io.describeIoUring('auto', 'threads', true), 'refused by the kernel (io_uring_setup failed)', 'auto, refused');
  t.equal(
    io.describeIoUring('io_uring', 'threads', false),
    'not built (liburing-dev missing at npm install): io_uring was asked for, threads run instead',
    'io_uring asked for, not built',
  );
  t.equal(
    io.describeIoUring('io_uring', 'threads', true),
    'refused by the kernel (io_uring_setup failed): io_uring was asked for, threads run instead',
    'io_uring asked for, refused',
  );
});

for (const backend of ['threads', 'io_uring'] as const) defineSuite(backend);

function defineSuite(backend: io.IoQueueBackend): void {
  if (backend === 'io_uring' && !io.IO_URING_BUILT) {
    t.test('io_uring: the backend suite', { skip: 'this addon was built without liburing (IO_URING_BUILT false)' }, async () => {});
    return;
  }
  /** The worker threads a queue asked for `threads` starts at once. */
  const startedThreads = (threads: number) => (backend === 'threads' ? threads : 0);
  t.test(`${backend}: round trips, subarrays, EOF zero-fill, fdatasync, zeroRange and punchHole`, async (t) => {
    const queue = newQueue(t, { threads: 4, backend });
    t.equal(queue.backend, backend, 'backend');
    t.equal(queue.threads, startedThreads(4), 'threads');
    t.equal(queue.inFlight, 0, 'idle');
    const { fd, path } = openNew(t, 'round-trip');
    const cases = [
      { offsetBytes: 0, lengthBytes: 4096 },
      { offsetBytes: 4096, lengthBytes: 8192 },
      { offsetBytes: 1 * MiB, lengthBytes: 1 * MiB },
      { offsetBytes: 5 * 1024 * MiB, lengthBytes: 4096 }, // past 4 GiB: 64-bit offsets
    ];
    const written = cases.map((c) => randomAligned(c.lengthBytes));
    const writes = cases.map((c, i) => queue.write(fd, written[i]!, c.offsetBytes));
    t.equal(queue.inFlight, cases.length, 'in flight');
    t.same(await Promise.all(writes), cases.map((c) => c.lengthBytes), 'writes resolve with their lengths');
    t.equal(queue.inFlight, 0, 'idle again');
    t.equal(await queue.fdatasync(fd), undefined, 'fdatasync resolves with undefined');
    for (const [i, c] of cases.entries()) {
      const back = io.allocAligned(c.lengthBytes);
      t.equal(await queue.read(fd, back, c.offsetBytes), c.lengthBytes);
      t.ok(back.equals(written[i]!), `read back ${c.lengthBytes} at ${c.offsetBytes}`);
    }

    const big = io.allocAligned(64 * KiB).fill(0xee);
    const window = randomFillSync(big.subarray(16 * KiB, 32 * KiB));
    t.equal(await queue.write(fd, window, 8 * MiB), window.length, 'subarray write');
    const back = io.allocAligned(64 * KiB).fill(0xee);
    t.equal(await queue.read(fd, back.subarray(4096, 4096 + 16 * KiB), 8 * MiB), 16 * KiB);
    t.ok(back.subarray(4096, 4096 + 16 * KiB).equals(window), 'subarray round trip');
    t.ok(back.subarray(0, 4096).every((b) => b === 0xee) && back.subarray(4096 + 16 * KiB).every((b) => b === 0xee), 'bytes around it untouched');

    const size = io.sizeBytes(fd);
    const tail = io.allocAligned(16 * KiB).fill(0xff);
    t.equal(await queue.read(fd, tail, size - 4096), 4096, 'short read at EOF');
    t.ok(tail.subarray(4096).every((b) => b === 0), 'zero-filled past EOF');

    const odd = join(dirname(path), 'odd-size');
    const content = randomFillSync(Buffer.alloc(5000));
    writeFileSync(odd, content);
    const opened = io.open(odd, { direct: true });
    t.teardown(() => io.close(opened.fd));
    const whole = io.allocAligned(8192).fill(0xff);
    t.equal(await queue.read(opened.fd, whole, 0), 5000, 'reads up to an unaligned EOF');
    t.ok(whole.subarray(0, 5000).equals(content) && whole.subarray(5000).every((b) => b === 0), 'content and zero tail');

    await queue.zeroRange(fd, 4096, 4096);
    await queue.punchHole(fd, 1 * MiB + 64 * KiB, 64 * KiB);
    t.equal(io.sizeBytes(fd), size, 'size kept');
    const check = io.allocAligned(4096);
    await queue.read(fd, check, 4096);
    t.ok(check.every((b) => b === 0), 'zeroRange zeroed its range');
    const afterHole = io.allocAligned(1 * MiB);
    await queue.read(fd, afterHole, 1 * MiB);
    const expected = Buffer.from(written[2]!);
    expected.fill(0, 64 * KiB, 128 * KiB);
    t.ok(afterHole.equals(expected), 'punchHole zeroed exactly its range');
  });

  t.test(`${backend}: 1000 concurrent mixed operations agree with a model`, async (t) => {
    const queue = newQueue(t, { backend });
    const { fd } = openNew(t, 'model');
    // Every operation of a round gets its own slot of 4 blocks: IOs of one round never overlap, so
    // their order does not matter and reads know what they must see.
    const slotBlocks = 4;
    const slots = 1000;
    const fileBytes = slots * slotBlocks * BLOCK;
    const model = randomFillSync(Buffer.alloc(fileBytes));
    const prefill: Promise<number>[] = [];
    for (let offset = 0; offset < fileBytes; offset += 1 * MiB) {
      const chunk = io.allocAligned(Math.min(1 * MiB, fileBytes - offset));
      model.copy(chunk, 0, offset, offset + chunk.length);
      prefill.push(queue.write(fd, chunk, offset));
    }
    await Promise.all(prefill);

    const rounds = 3;
    const counts = { read: 0, write: 0, zeroRange: 0, punchHole: 0, fdatasync: 0 };
    for (let round = 0; round < rounds; round += 1) {
      const order = Array.from({ length: slots }, (_, i) => i);
      for (let i = order.length - 1; i > 0; i -= 1) {
        const j = randomInt(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      const pending: Promise<void>[] = [];
      const next = new Uint8Array(model); // the model after this round
      for (const slot of order) {
        const firstBlock = randomInt(slotBlocks);
        const blocks = 1 + randomInt(slotBlocks - firstBlock);
        const offset = (slot * slotBlocks + firstBlock) * BLOCK;
        const length = blocks * BLOCK;
        const kind = randomInt(100);
        if (kind < 45) {
          counts.read += 1;
          const buffer = io.allocAligned(length).fill(0xa5);
          const want = model.subarray(offset, offset + length);
          pending.push(
            queue.read(fd, buffer, offset).then((n) => {
              if (n !== length || !buffer.equals(want)) throw new Error(`read of ${length} at ${offset} differs from the model (${n} bytes)`);
            }),
          );
        } else if (kind < 85) {
          counts.write += 1;
          const buffer = randomAligned(length);
          next.set(buffer, offset);
          pending.push(
            queue.write(fd, buffer, offset).then((n) => {
              if (n !== length) throw new Error(`short write ${n} of ${length}`);
            }),
          );
        } else if (kind < 93) {
          counts.zeroRange += 1;
          next.fill(0, offset, offset + length);
          pending.push(queue.zeroRange(fd, offset, length));
        } else if (kind < 98) {
          counts.punchHole += 1;
          next.fill(0, offset, offset + length);
          pending.push(queue.punchHole(fd, offset, length));
        } else {
          counts.fdatasync += 1;
          pending.push(queue.fdatasync(fd));
        }
      }
      t.ok(queue.inFlight >= slots, `round ${round}: ${queue.inFlight} operations in flight at once`);
      const outcomes = await Promise.allSettled(pending);
      const failures = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
      t.equal(failures.length, 0, `round ${round}: every operation succeeded`, { first: failures[0]?.reason });
      model.set(next);
      const whole = io.allocAligned(fileBytes);
      t.equal(await queue.read(fd, whole, 0), fileBytes);
      t.ok(whole.equals(model), `round ${round}: the file equals the model`);
    }
    t.comment(`operations: ${JSON.stringify(counts)}`);
    t.equal(queue.inFlight, 0, 'nothing left in flight');
  });

  t.test(`${backend}: errno-coded rejections shaped like the promise functions`, async (t) => {
    const queue = newQueue(t, { threads: 2, backend });
    const badFd = 1_000_000;
    const buffer = io.allocAligned(4096);
    assertIoError(t, await rejection(t, queue.read(badFd, buffer, 0), 'read'), 'EBADF', 'pread', 'read on a bad fd');
    assertIoError(t, await rejection(t, queue.write(badFd, buffer, 0), 'write'), 'EBADF', 'pwrite', 'write on a bad fd');
    assertIoError(t, await rejection(t, queue.fdatasync(badFd), 'fdatasync'), 'EBADF', 'fdatasync', 'fdatasync on a bad fd');
    assertIoError(t, await rejection(t, queue.punchHole(badFd, 0, 4096), 'punchHole'), 'EBADF', 'fallocate', 'punchHole on a bad fd');
    assertIoError(t, await rejection(t, queue.zeroRange(badFd, 0, 4096), 'zeroRange'), 'EBADF', 'fstat', 'zeroRange on a bad fd');

    // The same Error as the promise function gives.
    const fromQueue = (await rejection(t, queue.read(badFd, buffer, 0), 'read')) as io.IoError;
    const fromPromise = (await rejection(t, io.pread(badFd, buffer, 0), 'pread')) as io.IoError;
    t.same(
      { message: fromQueue.message, code: fromQueue.code, errno: fromQueue.errno, syscall: fromQueue.syscall },
      { message: fromPromise.message, code: fromPromise.code, errno: fromPromise.errno, syscall: fromPromise.syscall },
      'identical to pread\'s rejection',
    );

    const { fd, path } = openNew(t, 'errors');
    const readOnly = io.open(path, { readOnly: true, direct: true });
    t.teardown(() => io.close(readOnly.fd));
    assertIoError(t, await rejection(t, queue.write(readOnly.fd, buffer, 0), 'write'), 'EBADF', 'pwrite', 'write on O_RDONLY');

    if (work.direct) {
      t.equal(await queue.write(fd, randomAligned(64 * KiB), 0), 64 * KiB);
      const aligned = io.allocAligned(8192);
      assertIoError(t, await rejection(t, queue.read(fd, aligned.subarray(0, 4097), 0), 'misaligned'), 'EINVAL', 'pread', 'misaligned read');
      assertIoError(t, await rejection(t, queue.write(fd, aligned.subarray(0, 4096), 100), 'misaligned'), 'EINVAL', 'pwrite', 'misaligned write');
    }
    // Failures and successes mixed in one batch each settle their own promise.
    const mixed = await Promise.allSettled([queue.read(badFd, buffer, 0), queue.write(fd, randomAligned(4096), 0), queue.fdatasync(badFd), queue.fdatasync(fd)]);
    t.same(mixed.map((o) => o.status), ['rejected', 'fulfilled', 'rejected', 'fulfilled'], 'mixed batch');
    t.equal(queue.inFlight, 0);
  });

  t.test(`${backend}: argument validation rejects with TypeError / RangeError, never crashes`, async (t) => {
    const queue = newQueue(t, { threads: 2, backend });
    const { fd } = openNew(t, 'validation');
    const buffer = io.allocAligned(4096);
    const cases: Array<[string, ErrorConstructor, () => Promise<unknown>]> = [
      ["read(fd, 'str', 0)", TypeError, () => queue.read(fd, 'str' as unknown as Buffer, 0)],
      ['read(fd, Uint16Array, 0)', TypeError, () => queue.read(fd, new Uint16Array(2048) as unknown as Buffer, 0)],
      ['read(fd, DataView, 0)', TypeError, () => queue.read(fd, new DataView(buffer.buffer) as unknown as Buffer, 0)],
      ['read(fd, empty, 0)', RangeError, () => queue.read(fd, Buffer.alloc(0), 0)],
      ['read(fd, buffer, -4096)', RangeError, () => queue.read(fd, buffer, -4096)],
      ['read(fd, buffer, NaN)', RangeError, () => queue.read(fd, buffer, NaN)],
      ['read(fd, buffer, 2 ** 53)', RangeError, () => queue.read(fd, buffer, 2 ** 53)],
      ['read(fd, buffer, 4096.5)', RangeError, () => queue.read(fd, buffer, 4096.5)],
      ["read(fd, buffer, '0')", TypeError, () => queue.read(fd, buffer, '0' as unknown as number)],
      ['read(fd, buffer, 0n)', TypeError, () => queue.read(fd, buffer, 0n as unknown as number)],
      ['read(-1, buffer, 0)', RangeError, () => queue.read(-1, buffer, 0)],
      ['read(2 ** 31, buffer, 0)', RangeError, () => queue.read(2 ** 31, buffer, 0)],
      ['write(fd, over IO_BYTES_MAX, 0)', RangeError, () => queue.write(fd, Buffer.allocUnsafe(io.IO_BYTES_MAX + 1), 0)],
      ['write(fd, null, 0)', TypeError, () => queue.write(fd, null as unknown as Buffer, 0)],
      ["fdatasync('1')", TypeError, () => queue.fdatasync('1' as unknown as number)],
      ['punchHole(fd, 0, 0)', RangeError, () => queue.punchHole(fd, 0, 0)],
      ['punchHole(fd, -1, 4096)', RangeError, () => queue.punchHole(fd, -1, 4096)],
      ['zeroRange(fd, 2 ** 53 - 1, 2)', RangeError, () => queue.zeroRange(fd, 2 ** 53 - 1, 2)],
      ["zeroRange(fd, 0, '4096')", TypeError, () => queue.zeroRange(fd, 0, '4096' as unknown as number)],
    ];
    for (const [what, type, call] of cases) {
      let promise: Promise<unknown> | undefined;
      t.doesNotThrow(() => {
        promise = call();
      }, `${what} does not throw synchronously`);
      await t.rejects(promise!, type, `${what} rejects with ${type.name}`);
    }
    t.equal(queue.inFlight, 0, 'nothing was submitted');

    for (const threads of [0, -1, 1.5, 65, NaN, 2 ** 32]) {
      t.throws(() => new io.IoQueue({ threads, backend }), RangeError, `threads ${threads}`);
    }
    t.throws(() => new io.IoQueue({ threads: '4' as unknown as number, backend }), TypeError, "threads '4'");
    const one = new io.IoQueue({ threads: 1, backend });
    t.equal(one.threads, startedThreads(1), 'one thread');
    const most = new io.IoQueue({ threads: io.IO_QUEUE_THREADS_MAX, backend });
    t.equal(most.threads, startedThreads(io.IO_QUEUE_THREADS_MAX), 'the most threads');
    await Promise.all([one.close(), most.close()]);

    t.equal(io.ioQueueThreadsFromEnv({}), io.IO_QUEUE_THREADS_DEFAULT, 'unset: the default');
    t.equal(io.ioQueueThreadsFromEnv({ [io.IO_THREADS_ENV]: '' }), io.IO_QUEUE_THREADS_DEFAULT, 'empty: the default');
    t.equal(io.ioQueueThreadsFromEnv({ [io.IO_THREADS_ENV]: ' 16 ' }), 16);
    for (const bad of ['0', '65', '1.5', '-2', 'x', '1e1', '0x10']) {
      t.throws(() => io.ioQueueThreadsFromEnv({ [io.IO_THREADS_ENV]: bad }), RangeError, `${io.IO_THREADS_ENV}=${bad}`);
    }

    const data = randomAligned(4096);
    t.equal(await queue.write(fd, data, 0), 4096, 'the queue still works');
    t.equal(await queue.read(fd, buffer, 0), 4096);
    t.ok(buffer.equals(data));
  });

  t.test(`${backend}: close drains, joins the threads, closes the ring, then refuses IO`, async (t) => {
    await nextLoopTurn(); // earlier tests' rings finish closing
    const before = threadCount();
    const fdsBefore = fdCount();
    const queue = new io.IoQueue({ threads: 6, backend });
    t.equal(threadCount(), before + startedThreads(6), 'six worker threads, or none with io_uring');
    t.equal(fdCount(), fdsBefore + (backend === 'io_uring' ? 2 : 0), 'a ring and its eventfd, or no descriptor');
    const { fd } = openNew(t, 'close');
    const blocks = Array.from({ length: 200 }, () => randomAligned(4096));
    const writes = blocks.map((block, i) => queue.write(fd, block, i * 4096));
    const sync = queue.fdatasync(fd);
    let closeSettled = false;
    const closing = queue.close().then(() => {
      closeSettled = true;
    });
    t.equal(queue.closed, true, 'closed as soon as close() is called');
    const settled = await Promise.allSettled([...writes, sync]);
    t.ok(settled.every((o) => o.status === 'fulfilled'), 'IO submitted before close completes');
    await closing;
    t.ok(closeSettled, 'close resolved');
    t.equal(queue.inFlight, 0);
    t.equal(threadCount(), before, 'threads joined');
    await nextLoopTurn(); // libuv closes the handles (and the eventfd) in the loop's close phase
    t.equal(fdCount(), fdsBefore + 1, 'the ring and eventfd are closed (the test file is still open)');

    const after = await rejection(t, queue.read(fd, io.allocAligned(4096), 0), 'read after close');
    t.match(after, { code: 'ERR_IO_QUEUE_CLOSED' }, 'read after close rejects with ERR_IO_QUEUE_CLOSED');
    t.match(await rejection(t, queue.fdatasync(fd), 'fdatasync after close'), { code: 'ERR_IO_QUEUE_CLOSED' });
    t.match(await rejection(t, queue.zeroRange(fd, 0, 4096), 'zeroRange after close'), { code: 'ERR_IO_QUEUE_CLOSED' });
    await queue.close();
    t.pass('close again resolves');

    const back = io.allocAligned(200 * 4096);
    await io.pread(fd, back, 0);
    t.ok(blocks.every((block, i) => back.subarray(i * 4096, (i + 1) * 4096).equals(block)), 'the data written before close is there');

    const idle = new io.IoQueue({ threads: 2, backend });
    await Promise.all([idle.close(), idle.close()]);
    t.equal(threadCount(), before, 'closing an idle queue joins its threads');
    await nextLoopTurn();
    t.equal(fdCount(), fdsBefore + 1, 'closing an idle queue closes its ring');
  });

  /** Runs an ES module in a child Node process; it must exit by itself within `timeoutMs`. */
  function runChild(source: string, args: string[] = [], timeoutMs = 10_000) {
    const started = Date.now();
    const result = spawnSync(process.execPath, [...args, '--input-type=module', '-e', source], { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, NODE_OPTIONS: '' } });
    return { ...result, elapsedMs: Date.now() - started };
  }

  t.test(`${backend}: an idle queue does not keep the process alive; IO in flight does`, async (t) => {
    const path = join(work.dir, `child-file-${backend}`);
    const source = `
      import * as io from ${JSON.stringify(NATIVE_IO_URL)};
      const { fd } = io.open(${JSON.stringify(path)}, { create: true, direct: true });
      const queue = new io.IoQueue({ backend: ${JSON.stringify(backend)} });
      if (queue.backend !== ${JSON.stringify(backend)}) throw new Error('backend ' + queue.backend);
      const data = io.allocAligned(4096).fill(7);
      // Nothing but the IO in flight keeps the process alive here.
      queue.write(fd, data, 0).then((n) => queue.fdatasync(fd).then(() => n)).then((n) => {
        const back = io.allocAligned(4096);
        return queue.read(fd, back, 0).then(() => console.log('done', n, back[4095]));
      });
    `;
    const child = runChild(source);
    t.equal(child.error, undefined, 'exited by itself', { error: child.error });
    t.equal(child.status, 0, 'status 0', { stderr: child.stderr });
    t.equal(child.stdout.trim(), 'done 4096 7', 'every IO completed before the exit');
    t.ok(child.elapsedMs < 5000, `exited in ${child.elapsedMs} ms`);
  });

  t.test(`${backend}: an unreferenced idle queue is collected and its threads joined, its ring closed`, async (t) => {
    const source = `
      import * as io from ${JSON.stringify(NATIVE_IO_URL)};
      import { readdirSync, readFileSync } from 'node:fs';
      // Threads (without the kernel's io_uring workers) and descriptors: what a queue holds.
      const threads = () => readdirSync('/proc/self/task').filter((task) => {
        try { return !readFileSync('/proc/self/task/' + task + '/comm', 'utf8').startsWith('iou-'); } catch { return false; }
      }).length + readdirSync('/proc/self/fd').length;
      const before = threads();
      // Used once and dropped without close(); nothing refers to it once the function returns.
      async function useOnce() {
        const queue = new io.IoQueue({ threads: 4, backend: ${JSON.stringify(backend)} });
        await queue.fdatasync(1_000_000).catch(() => undefined);
        await queue.zeroRange(1_000_000, 0, 4096).catch(() => undefined);
      }
      for (let i = 0; i < 10; i += 1) await useOnce();
      const made = threads() - before;
      for (let i = 0; i < 10 && threads() > before; i += 1) {
        globalThis.gc();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      console.log(made, threads() - before);
    `;
    const child = runChild(source, ['--expose-gc']);
    t.equal(child.status, 0, 'status 0', { stderr: child.stderr, error: child.error });
    const [made, left] = child.stdout.trim().split(' ').map(Number);
    t.ok(made! >= 4, `the queues started threads or rings (${made})`);
    t.equal(left, 0, 'every thread joined and ring closed after collection');
  });

  t.test(`${backend}: a worker thread terminated with IO in flight on aligned buffers`, async (t) => {
    // Environment teardown frees external (allocAligned) buffers before any cleanup hook runs: the
    // buffers' finalizer must wait for the queue's workers, or they read and write freed memory.
    const path = join(work.dir, `worker-file-${backend}`);
    const source = `
      import * as io from ${JSON.stringify(NATIVE_IO_URL)};
      import { parentPort, workerData } from 'node:worker_threads';
      const { fd } = io.open(${JSON.stringify(path)}, { create: true, direct: true });
      const queue = new io.IoQueue({ threads: 4, backend: ${JSON.stringify(backend)} });
      const loop = (buffer, i) => {
        const at = i * buffer.length;
        const next = () => loop(buffer, i);
        (i % 2 === 0 ? queue.write(fd, buffer, at) : queue.read(fd, buffer, at)).then(next, (error) => parentPort.postMessage(String(error)));
      };
      for (let i = 0; i < 32; i += 1) loop(io.allocAligned(256 * 1024).fill(i), i);
      parentPort.postMessage(workerData === 'exit' ? 'exiting' : 'started');
      if (workerData === 'exit') setTimeout(() => process.exit(3), 20);
    `;
    const { Worker } = await import('node:worker_threads');
    for (const [round, mode] of ['terminate', 'exit', 'terminate', 'exit'].entries()) {
      const worker = new Worker(source, { eval: true, workerData: mode });
      const messages: string[] = [];
      worker.on('message', (message: string) => {
        messages.push(message);
        if (message === 'started') setTimeout(() => void worker.terminate(), 30);
      });
      const code = await new Promise<number>((resolve) => worker.on('exit', resolve));
      t.equal(code, mode === 'exit' ? 3 : 1, `round ${round}: the worker ended by ${mode}`);
      t.same(messages.filter((m) => m !== 'started' && m !== 'exiting'), [], 'no IO failed before');
    }
    // Still alive, and the heap is sound enough to go on.
    const queue = newQueue(t, { threads: 2, backend });
    const { fd } = openNew(t, `after-workers-${backend}`);
    t.equal(await queue.write(fd, randomAligned(4096), 0), 4096, 'this thread goes on');
  });
}
