/**
 * The pflex_io native addon (DESIGN §7) on real file systems and, as root, a real loop device:
 * O_DIRECT really set (fcntl and /proc/self/fdinfo), the buffered fallback where O_DIRECT is refused,
 * aligned round trips, EOF handling, errno-coded errors, hole punching, zeroing, many IOs in flight,
 * and argument validation that never crashes the process.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fc from 'fast-check';
import { constants as fsConstants, existsSync, mkdtempSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as io from '../../src/sds/native-io.js';

type Tap = Test;

const KiB = 1024;
const MiB = 1024 * KiB;
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
/** O_DIRECT as /proc/self/fdinfo shows it (octal, x86-64 and arm64 generic value). */
const FDINFO_O_DIRECT = 0o40000;
const FDINFO_O_CLOEXEC = 0o2000000;
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The "flags:" field of /proc/self/fdinfo/<fd>, an octal number. */
function fdinfoFlags(fd: number): number {
  const match = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  if (match === null) throw new Error(`no flags in /proc/self/fdinfo/${fd}`);
  return parseInt(match[1]!, 8);
}

/** A temp dir on a disk file system where O_DIRECT opens really get O_DIRECT, or undefined. */
function findDirectDir(): string | undefined {
  for (const parent of ['/var/tmp', tmpdir(), REPO_ROOT]) {
    if (!existsSync(parent)) continue;
    const type = Number(statfsSync(parent).type);
    if (type === TMPFS_MAGIC || type === RAMFS_MAGIC) continue;
    const dir = mkdtempSync(join(parent, 'pflex-native-io-'));
    const probe = io.open(join(dir, 'probe'), { create: true, direct: true });
    io.close(probe.fd);
    if (probe.direct) return dir;
    rmSync(dir, { recursive: true, force: true });
  }
  return undefined;
}

const directDir = findDirectDir();
const workDir = directDir ?? mkdtempSync(join(tmpdir(), 'pflex-native-io-'));
t.teardown(() => rmSync(workDir, { recursive: true, force: true }));
const noDirect = directDir === undefined ? 'no disk file system here accepts O_DIRECT' : false;
t.comment(`work dir ${workDir} (${directDir === undefined ? 'buffered' : 'O_DIRECT'})`);

let fileCounter = 0;

/** Opens a new file in the work dir with O_DIRECT asked for; closed when `tt` ends. */
function openNew(tt: Tap, name: string): { fd: number; path: string; direct: boolean } {
  fileCounter += 1;
  const path = join(workDir, `${fileCounter}-${name}`);
  const { fd, direct } = io.open(path, { create: true, direct: true });
  tt.teardown(() => io.close(fd));
  return { fd, path, direct };
}

function randomAligned(sizeBytes: number): Buffer {
  return randomFillSync(io.allocAligned(sizeBytes));
}

function isAllZero(bytes: Uint8Array): boolean {
  return bytes.every((byte) => byte === 0);
}

/** Awaits a rejection and returns the error, or fails. */
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
  tt.equal(error.code, code, `${what}: .code`);
  tt.equal(error.errno, osConstants.errno[code as keyof typeof osConstants.errno], `${what}: .errno`);
  tt.equal(error.syscall, syscall, `${what}: .syscall`);
  tt.match(error.message, new RegExp(`^${syscall}: .+ \\(${code}\\)`), `${what}: message`);
}

t.test('O_DIRECT is really set on a disk file system', { skip: noDirect }, async (t) => {
  const { fd, path, direct } = openNew(t, 'direct');
  t.equal(direct, true, 'open reports direct');
  t.ok(io.isDirect(fd), 'isDirect');
  t.not(io.fileStatusFlags(fd) & io.O_DIRECT, 0, 'fcntl(F_GETFL) has O_DIRECT');
  t.equal(io.fileStatusFlags(fd) & io.O_ACCMODE, io.O_RDWR, 'opened read-write');
  const flags = fdinfoFlags(fd);
  t.not(flags & FDINFO_O_DIRECT, 0, `/proc/self/fdinfo flags ${flags.toString(8)} has O_DIRECT (040000)`);
  t.not(flags & FDINFO_O_CLOEXEC, 0, 'and O_CLOEXEC');
  t.equal(statSync(path).mode & 0o077, 0, 'created without group/other permissions (0600)');
  t.equal(io.isBlockDevice(fd), false, 'a file is not a block device');
  t.equal(io.logicalBlockSizeBytes(fd), 4096, 'files use a 4096-byte alignment');

  const readOnly = io.open(path, { readOnly: true, direct: true });
  t.teardown(() => io.close(readOnly.fd));
  t.equal(readOnly.direct, true);
  t.equal(io.fileStatusFlags(readOnly.fd) & io.O_ACCMODE, io.O_RDONLY, 'readOnly opens O_RDONLY');
  assertIoError(t, await rejection(t, io.pwrite(readOnly.fd, io.allocAligned(4096), 0), 'write'), 'EBADF', 'pwrite', 'pwrite on O_RDONLY');

  const buffered = io.open(path, { direct: false });
  t.teardown(() => io.close(buffered.fd));
  t.equal(buffered.direct, false);
  t.equal(io.fileStatusFlags(buffered.fd) & io.O_DIRECT, 0, 'direct: false opens without O_DIRECT');
});

t.test('where O_DIRECT is refused, open falls back to buffered IO', async (t) => {
  t.test('procfs (read-only)', async (t) => {
    const { fd, direct } = io.open('/proc/self/status', { readOnly: true, direct: true });
    t.teardown(() => io.close(fd));
    t.equal(direct, false, 'direct: false');
    t.equal(io.fileStatusFlags(fd) & io.O_DIRECT, 0, 'no O_DIRECT on the fd');
    t.equal(fdinfoFlags(fd) & FDINFO_O_DIRECT, 0, 'nor in fdinfo');
    const buffer = Buffer.alloc(4096);
    const bytes = await io.pread(fd, buffer, 0);
    t.ok(bytes > 0 && bytes < 4096, `buffered read of ${bytes} bytes`);
    t.match(buffer.subarray(0, bytes).toString(), /^Name:/);
  });

  const ramfsSkip = process.getuid?.() === 0 ? false : 'needs root to mount ramfs';
  t.test('ramfs (mounted for the test)', { skip: ramfsSkip }, async (t) => {
    const mountPoint = mkdtempSync(join(workDir, 'ramfs-'));
    const mount = spawnSync('mount', ['-t', 'ramfs', 'pflex-test-ramfs', mountPoint], { encoding: 'utf8' });
    if (mount.status !== 0) return t.plan(0, `cannot mount ramfs: ${(mount.stderr || String(mount.error)).trim()}`);
    t.teardown(() => {
      spawnSync('umount', ['-l', mountPoint]);
    });
    const path = join(mountPoint, 'file');
    const { fd, direct } = io.open(path, { create: true, direct: true });
    t.equal(direct, false, 'direct: false');
    t.equal(io.fileStatusFlags(fd) & io.O_DIRECT, 0, 'no O_DIRECT on the fd');
    // Buffered IO takes any alignment.
    const data = randomFillSync(Buffer.alloc(5000));
    t.equal(await io.pwrite(fd, data, 123), 5000);
    const back = Buffer.alloc(5000);
    t.equal(await io.pread(fd, back, 123), 5000);
    t.same(back, data, 'round trip');
    await io.fdatasync(fd);
    // ramfs has no fallocate: punchHole reports it, zeroRange falls back to writing zeros.
    assertIoError(t, await rejection(t, io.punchHole(fd, 0, 4096), 'punchHole'), 'EOPNOTSUPP', 'fallocate', 'punchHole on ramfs');
    await io.zeroRange(fd, 1000, 3000);
    await io.zeroRange(fd, 4000, 1 * MiB); // reaches past EOF: zeroes up to the size, no growth
    t.equal(io.sizeBytes(fd), 5123, 'size kept');
    const zeroed = Buffer.alloc(5123);
    t.equal(await io.pread(fd, zeroed, 0), 5123);
    const expected = Buffer.alloc(5123);
    data.subarray(0, 1000 - 123).copy(expected, 123);
    t.same(zeroed, expected, 'zeroRange wrote zeros over exactly the range');
    io.close(fd);
  });

  t.test('tmpfs (/dev/shm)', { skip: existsSync('/dev/shm') ? false : 'no /dev/shm' }, async (t) => {
    const dir = mkdtempSync(join('/dev/shm', 'pflex-native-io-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const { fd, direct } = io.open(join(dir, 'file'), { create: true, direct: true });
    t.teardown(() => io.close(fd));
    // Linux 6.6 and later accept O_DIRECT on tmpfs; older kernels refuse it and we fall back.
    t.comment(`tmpfs O_DIRECT ${direct ? 'accepted (Linux >= 6.6)' : 'refused: buffered fallback'}`);
    t.equal(io.isDirect(fd), direct, 'direct matches the fd flags');
    t.equal((fdinfoFlags(fd) & FDINFO_O_DIRECT) !== 0, direct, 'and fdinfo');
    const data = randomAligned(64 * KiB);
    t.equal(await io.pwrite(fd, data, 4096), data.length);
    const back = io.allocAligned(64 * KiB);
    t.equal(await io.pread(fd, back, 4096), back.length);
    t.same(back, data, 'IO works');
  });
});

t.test('aligned write/read round trips at several offsets', async (t) => {
  const { fd } = openNew(t, 'round-trip');
  const cases = [
    { offsetBytes: 0, lengthBytes: 4096 },
    { offsetBytes: 4096, lengthBytes: 8192 },
    { offsetBytes: 7 * 4096, lengthBytes: 64 * KiB },
    { offsetBytes: 1 * MiB, lengthBytes: 1 * MiB },
    { offsetBytes: 3 * MiB + 4096, lengthBytes: 4 * MiB },
    { offsetBytes: 5 * 1024 * MiB, lengthBytes: 4096 }, // past 4 GiB: 64-bit offsets
  ];
  const written = [];
  for (const c of cases) {
    const data = randomAligned(c.lengthBytes);
    t.equal(await io.pwrite(fd, data, c.offsetBytes), c.lengthBytes, `pwrite ${c.lengthBytes} at ${c.offsetBytes}`);
    written.push(data);
  }
  for (const [i, c] of cases.entries()) {
    const back = io.allocAligned(c.lengthBytes);
    t.equal(await io.pread(fd, back, c.offsetBytes), c.lengthBytes);
    t.ok(back.equals(written[i]!), `read back ${c.lengthBytes} at ${c.offsetBytes}`);
  }
  t.equal(io.sizeBytes(fd), 5 * 1024 * MiB + 4096, 'size');

  // A subarray of an aligned buffer: the addon must use its byte offset.
  const big = io.allocAligned(64 * KiB);
  const window = big.subarray(16 * KiB, 32 * KiB);
  randomFillSync(window);
  t.equal(await io.pwrite(fd, window, 8 * MiB), window.length);
  const back = io.allocAligned(64 * KiB);
  back.fill(0xee);
  t.equal(await io.pread(fd, back.subarray(4096, 4096 + 16 * KiB), 8 * MiB), 16 * KiB);
  t.ok(back.subarray(4096, 4096 + 16 * KiB).equals(window), 'subarray round trip');
  t.ok(back.subarray(0, 4096).every((b) => b === 0xee), 'bytes before the subarray untouched');
  t.ok(back.subarray(4096 + 16 * KiB).every((b) => b === 0xee), 'bytes after the subarray untouched');
});

t.test('pread at and past the end of the file', async (t) => {
  const { fd, path } = openNew(t, 'eof');
  await io.pwrite(fd, randomAligned(8192), 0);

  const buffer = io.allocAligned(16 * KiB).fill(0xff);
  t.equal(await io.pread(fd, buffer, 4096), 4096, 'short read at EOF');
  t.ok(isAllZero(buffer.subarray(4096)), 'the rest of the buffer is zeroed');

  buffer.fill(0xff);
  t.equal(await io.pread(fd, buffer, 1 * MiB), 0, 'nothing past EOF');
  t.ok(isAllZero(buffer), 'all zeroed');

  // An unaligned end of file: an O_DIRECT read stops there instead of failing with EINVAL.
  const odd = join(dirname(path), 'odd-size');
  const content = randomFillSync(Buffer.alloc(5000));
  writeFileSync(odd, content);
  const opened = io.open(odd, { direct: true });
  t.teardown(() => io.close(opened.fd));
  const whole = io.allocAligned(8192).fill(0xff);
  t.equal(await io.pread(opened.fd, whole, 0), 5000, 'reads up to the unaligned EOF');
  t.ok(whole.subarray(0, 5000).equals(content), 'content');
  t.ok(isAllZero(whole.subarray(5000)), 'zero tail');
});

t.test('misaligned O_DIRECT IO rejects with EINVAL, and IO goes on', { skip: noDirect }, async (t) => {
  const { fd } = openNew(t, 'misaligned');
  // Data first: a read at or past EOF returns 0 before the kernel looks at alignment.
  t.equal(await io.pwrite(fd, randomAligned(64 * KiB), 0), 64 * KiB);
  const aligned = io.allocAligned(8192);
  const cases: Array<[string, () => Promise<number>]> = [
    ['pread of 4097 bytes', () => io.pread(fd, aligned.subarray(0, 4097), 0)],
    ['pwrite of 4097 bytes', () => io.pwrite(fd, aligned.subarray(0, 4097), 0)],
    ['pwrite at offset 100', () => io.pwrite(fd, aligned.subarray(0, 4096), 100)],
    ['pread of 100 bytes', () => io.pread(fd, Buffer.alloc(100), 0)],
  ];
  for (const [what, call] of cases) {
    const syscall = what.startsWith('pread') ? 'pread' : 'pwrite';
    assertIoError(t, await rejection(t, call(), what), 'EINVAL', syscall, what);
  }
  const data = randomAligned(4096);
  t.equal(await io.pwrite(fd, data, 4096), 4096, 'aligned IO still works');
  const back = io.allocAligned(4096);
  await io.pread(fd, back, 4096);
  t.ok(back.equals(data));
});

t.test('errno-coded errors', async (t) => {
  const badFd = 1_000_000;
  const buffer = io.allocAligned(4096);
  assertIoError(t, await rejection(t, io.pread(badFd, buffer, 0), 'pread'), 'EBADF', 'pread', 'pread on a bad fd');
  assertIoError(t, await rejection(t, io.pwrite(badFd, buffer, 0), 'pwrite'), 'EBADF', 'pwrite', 'pwrite on a bad fd');
  assertIoError(t, await rejection(t, io.fdatasync(badFd), 'fdatasync'), 'EBADF', 'fdatasync', 'fdatasync on a bad fd');
  assertIoError(t, await rejection(t, io.punchHole(badFd, 0, 4096), 'punchHole'), 'EBADF', 'fallocate', 'punchHole on a bad fd');
  assertIoError(t, await rejection(t, io.zeroRange(badFd, 0, 4096), 'zeroRange'), 'EBADF', 'fstat', 'zeroRange on a bad fd');
  const syncCases: Array<[string, string, () => unknown]> = [
    ['fcntl', 'fileStatusFlags', () => io.fileStatusFlags(badFd)],
    ['fstat', 'sizeBytes', () => io.sizeBytes(badFd)],
    ['fstat', 'isBlockDevice', () => io.isBlockDevice(badFd)],
    ['fstat', 'logicalBlockSizeBytes', () => io.logicalBlockSizeBytes(badFd)],
    ['ftruncate', 'truncate', () => io.truncate(badFd, 0)],
    ['close', 'close', () => io.close(badFd)],
  ];
  for (const [syscall, what, call] of syncCases) {
    let caught: unknown;
    try {
      call();
    } catch (error) {
      caught = error;
    }
    assertIoError(t, caught, 'EBADF', syscall, `${what} on a bad fd`);
  }

  let missing: unknown;
  try {
    io.open(join(workDir, 'no', 'such', 'file'), {});
  } catch (error) {
    missing = error;
  }
  assertIoError(t, missing, 'ENOENT', 'open', 'open of a missing path');
  t.equal((missing as io.IoError).path, join(workDir, 'no', 'such', 'file'), '.path');
  t.notOk(io.isIoError(new Error('plain')), 'a plain Error is not an IoError');
  t.notOk(io.isIoError({ code: 'EIO', errno: 5, syscall: 'pread' }), 'nor a look-alike object');
  t.notOk(io.isIoError(missing, 'EIO'), 'code filter');
});

t.test('punchHole frees blocks and reads back zeros', async (t) => {
  const { fd, path } = openNew(t, 'punch');
  const data = randomAligned(1 * MiB);
  await io.pwrite(fd, data, 0);
  await io.fdatasync(fd);
  const blocksBefore = statSync(path).blocks;
  t.ok(blocksBefore * 512 >= 1 * MiB, `${blocksBefore} blocks allocated`);

  await io.punchHole(fd, 256 * KiB, 512 * KiB);
  const blocksAfter = statSync(path).blocks;
  t.ok((blocksBefore - blocksAfter) * 512 >= 512 * KiB, `blocks ${blocksBefore} -> ${blocksAfter}`);
  t.equal(io.sizeBytes(fd), 1 * MiB, 'size kept');
  const back = io.allocAligned(1 * MiB);
  await io.pread(fd, back, 0);
  t.ok(isAllZero(back.subarray(256 * KiB, 768 * KiB)), 'the hole reads zeros');
  t.ok(back.subarray(0, 256 * KiB).equals(data.subarray(0, 256 * KiB)), 'data before intact');
  t.ok(back.subarray(768 * KiB).equals(data.subarray(768 * KiB)), 'data after intact');
});

t.test('zeroRange zeroes without changing the size', async (t) => {
  const { fd } = openNew(t, 'zero');
  const data = randomAligned(256 * KiB);
  await io.pwrite(fd, data, 0);
  await io.zeroRange(fd, 64 * KiB, 64 * KiB);
  await io.zeroRange(fd, 200 * KiB + 100, 1000); // unaligned: fallocate zeroes partial blocks
  await io.zeroRange(fd, 1 * MiB, 1 * MiB); // past EOF: no growth
  t.equal(io.sizeBytes(fd), 256 * KiB, 'size kept');
  const back = io.allocAligned(256 * KiB);
  await io.pread(fd, back, 0);
  const expected = Buffer.from(data);
  expected.fill(0, 64 * KiB, 128 * KiB);
  expected.fill(0, 200 * KiB + 100, 200 * KiB + 1100);
  t.ok(back.equals(expected), 'exactly the ranges are zero');
  t.equal(await io.fdatasync(fd), undefined, 'fdatasync resolves');
});

t.test('truncate and sizes of a sparse device file', async (t) => {
  const { fd, path } = openNew(t, 'sparse');
  io.truncate(fd, 64 * MiB);
  t.equal(io.sizeBytes(fd), 64 * MiB);
  t.equal(statSync(path).size, 64 * MiB);
  t.ok(statSync(path).blocks * 512 < 1 * MiB, 'sparse');
  io.truncate(fd, 4096);
  t.equal(io.sizeBytes(fd), 4096, 'shrinks too');
});

t.test('allocAligned', async (t) => {
  const buffer = io.allocAligned(12288);
  t.ok(Buffer.isBuffer(buffer), 'a Buffer');
  t.equal(buffer.length, 12288);
  t.ok(isAllZero(buffer), 'zero-filled');
  t.ok(io.addressAlignmentOf(buffer) >= 4096, `default alignment (address aligned to ${io.addressAlignmentOf(buffer)})`);
  t.equal(io.addressAlignmentOf(buffer.subarray(512)), 512, 'a subarray has its own address');
  const wide = io.allocAligned(4096, 64 * KiB);
  t.ok(io.addressAlignmentOf(wide) >= 64 * KiB, '64 KiB alignment');
  t.ok(io.addressAlignmentOf(io.allocAligned(1, 512)) >= 512, '512 alignment, 1 byte');
  t.equal(io.allocAligned(io.IO_BYTES_MAX).length, io.IO_BYTES_MAX, 'the largest size');
  // Many short-lived buffers: the finalizer frees them (the GC sees the external memory).
  for (let i = 0; i < 256; i += 1) io.allocAligned(1 * MiB);
  t.pass('allocated and dropped 256 MiB');
});

t.test('256 concurrent preads and pwrites', async (t) => {
  const { fd } = openNew(t, 'concurrent');
  const count = 256;
  const blocks = Array.from({ length: count }, (_, i) => randomAligned(4096 * (1 + (i % 4))));
  const offsets = blocks.map((_, i) => i * 16 * KiB);
  const writes = await Promise.all(blocks.map((block, i) => io.pwrite(fd, block, offsets[i]!)));
  t.same(writes, blocks.map((block) => block.length), 'every pwrite wrote all of its buffer');
  const backs = blocks.map((block) => io.allocAligned(block.length));
  const reads = await Promise.all(backs.map((back, i) => io.pread(fd, back, offsets[i]!)));
  t.same(reads, blocks.map((block) => block.length), 'every pread read all of its buffer');
  const mismatches = backs.filter((back, i) => !back.equals(blocks[i]!)).length;
  t.equal(mismatches, 0, 'every block reads back');

  // Mixed reads and writes on disjoint ranges, all in flight at once.
  const mixed = await Promise.all(
    blocks.map((block, i) => (i % 2 === 0 ? io.pwrite(fd, block, 8 * MiB + offsets[i]!) : io.pread(fd, backs[i]!, offsets[i]!))),
  );
  t.same(mixed, blocks.map((block) => block.length));
  await io.fdatasync(fd);
});

t.test('argument validation throws TypeError / RangeError, never crashes', async (t) => {
  const { fd, path } = openNew(t, 'validation');
  const buffer = io.allocAligned(4096);
  const sync: Array<[string, ErrorConstructor, () => unknown]> = [
    ['open(123)', TypeError, () => io.open(123 as unknown as string)],
    ["open('')", RangeError, () => io.open('')],
    ['open(path with NUL)', TypeError, () => io.open('a\0b')],
    ['open(path too long)', RangeError, () => io.open('x'.repeat(5000))],
    ['open(path, flags 5)', TypeError, () => io.open(path, 5 as unknown as io.OpenFlags)],
    ["open(path, {direct: 'yes'})", TypeError, () => io.open(path, { direct: 'yes' as unknown as boolean })],
    ['close(-1)', RangeError, () => io.close(-1)],
    ['close(1.5)', RangeError, () => io.close(1.5)],
    ["close('3')", TypeError, () => io.close('3' as unknown as number)],
    ['close(2 ** 31)', RangeError, () => io.close(2 ** 31)],
    ['close()', TypeError, () => (io.close as unknown as () => void)()],
    ['allocAligned(0)', RangeError, () => io.allocAligned(0)],
    ['allocAligned(-1)', RangeError, () => io.allocAligned(-1)],
    ['allocAligned(1.5)', RangeError, () => io.allocAligned(1.5)],
    ['allocAligned(2 ** 40)', RangeError, () => io.allocAligned(2 ** 40)],
    ['allocAligned(IO_BYTES_MAX + 1)', RangeError, () => io.allocAligned(io.IO_BYTES_MAX + 1)],
    ["allocAligned('4096')", TypeError, () => io.allocAligned('4096' as unknown as number)],
    ['allocAligned(4096, 3000)', RangeError, () => io.allocAligned(4096, 3000)],
    ['allocAligned(4096, 4)', RangeError, () => io.allocAligned(4096, 4)],
    ['allocAligned(4096, 4 MiB)', RangeError, () => io.allocAligned(4096, 4 * MiB)],
    ['allocAligned(NaN)', RangeError, () => io.allocAligned(NaN)],
    ["addressAlignmentOf('x')", TypeError, () => io.addressAlignmentOf('x' as unknown as Buffer)],
    ['truncate(fd, -1)', RangeError, () => io.truncate(fd, -1)],
    ['truncate(fd, 2 ** 53)', RangeError, () => io.truncate(fd, 2 ** 53)],
    ["sizeBytes('x')", TypeError, () => io.sizeBytes('x' as unknown as number)],
    ['fileStatusFlags(Infinity)', RangeError, () => io.fileStatusFlags(Infinity)],
    ['isBlockDevice(null)', TypeError, () => io.isBlockDevice(null as unknown as number)],
    ['logicalBlockSizeBytes(-0.5)', RangeError, () => io.logicalBlockSizeBytes(-0.5)],
  ];
  for (const [what, type, call] of sync) t.throws(call, type, what);

  const asynchronous: Array<[string, ErrorConstructor, () => Promise<unknown>]> = [
    ["pread(fd, 'str', 0)", TypeError, () => io.pread(fd, 'str' as unknown as Buffer, 0)],
    ['pread(fd, Uint16Array, 0)', TypeError, () => io.pread(fd, new Uint16Array(2048) as unknown as Buffer, 0)],
    ['pread(fd, DataView, 0)', TypeError, () => io.pread(fd, new DataView(buffer.buffer) as unknown as Buffer, 0)],
    ['pread(fd, empty, 0)', RangeError, () => io.pread(fd, Buffer.alloc(0), 0)],
    ['pread(fd, buffer, -4096)', RangeError, () => io.pread(fd, buffer, -4096)],
    ['pread(fd, buffer, NaN)', RangeError, () => io.pread(fd, buffer, NaN)],
    ['pread(fd, buffer, Infinity)', RangeError, () => io.pread(fd, buffer, Infinity)],
    ['pread(fd, buffer, 2 ** 53)', RangeError, () => io.pread(fd, buffer, 2 ** 53)],
    ['pread(fd, buffer, 4096.5)', RangeError, () => io.pread(fd, buffer, 4096.5)],
    ["pread(fd, buffer, '0')", TypeError, () => io.pread(fd, buffer, '0' as unknown as number)],
    ['pread(fd, buffer, 0n)', TypeError, () => io.pread(fd, buffer, 0n as unknown as number)],
    ['pread()', TypeError, () => (io.pread as unknown as () => Promise<number>)()],
    ['pread(-1, buffer, 0)', RangeError, () => io.pread(-1, buffer, 0)],
    ['pwrite(fd, over IO_BYTES_MAX, 0)', RangeError, () => io.pwrite(fd, Buffer.allocUnsafe(io.IO_BYTES_MAX + 1), 0)],
    ['pwrite(fd, null, 0)', TypeError, () => io.pwrite(fd, null as unknown as Buffer, 0)],
    ["fdatasync('1')", TypeError, () => io.fdatasync('1' as unknown as number)],
    ['punchHole(fd, 0, 0)', RangeError, () => io.punchHole(fd, 0, 0)],
    ['punchHole(fd, -1, 4096)', RangeError, () => io.punchHole(fd, -1, 4096)],
    ['zeroRange(fd, 2 ** 53 - 1, 2)', RangeError, () => io.zeroRange(fd, 2 ** 53 - 1, 2)],
    ["zeroRange(fd, 0, '4096')", TypeError, () => io.zeroRange(fd, 0, '4096' as unknown as number)],
  ];
  for (const [what, type, call] of asynchronous) {
    let promise: Promise<unknown> | undefined;
    t.doesNotThrow(() => {
      promise = call();
    }, `${what} does not throw synchronously`);
    await t.rejects(promise!, type, `${what} rejects with ${type.name}`);
  }

  const data = randomAligned(4096);
  t.equal(await io.pwrite(fd, data, 0), 4096, 'the process and the fd still work');
  t.equal(await io.pread(fd, buffer, 0), 4096);
  t.ok(buffer.equals(data));
});

function loopSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root for losetup';
  const probe = spawnSync('losetup', ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) return 'losetup is not available';
  return false;
}

t.test('arbitrary arguments never crash the process', async (t) => {
  const { fd } = openNew(t, 'fuzz');
  // Descriptors come from a safe set: any other valid number might be the runner's stdout or a pipe.
  const isDescriptorNumber = (value: unknown) => typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 2 ** 31;
  const fdArbitrary = fc.oneof(fc.constant(fd), fc.constant(1_000_000), fc.anything().filter((value) => !isDescriptorNumber(value)));
  const bufferArbitrary = fc.oneof(
    fc.constant(io.allocAligned(4096)),
    fc.integer({ min: 0, max: 9000 }).map((length) => Buffer.alloc(length)),
    fc.anything(),
  );
  const numberArbitrary = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(-1, 2 ** 53, 2 ** 64, 4096, 1.5), fc.anything());
  const calls: Array<(args: unknown[]) => unknown> = [
    ([a, b, c]) => (io.pread as (...args: unknown[]) => unknown)(a, b, c),
    ([a, b, c]) => (io.pwrite as (...args: unknown[]) => unknown)(a, b, c),
    ([a, , c, d]) => (io.punchHole as (...args: unknown[]) => unknown)(a, c, d),
    ([a, , c, d]) => (io.zeroRange as (...args: unknown[]) => unknown)(a, c, d),
    ([a]) => (io.fdatasync as (...args: unknown[]) => unknown)(a),
    ([, , c, d]) => (io.allocAligned as (...args: unknown[]) => unknown)(c, d),
    ([, b]) => (io.addressAlignmentOf as (...args: unknown[]) => unknown)(b),
    ([a]) => (io.sizeBytes as (...args: unknown[]) => unknown)(a),
    ([a]) => (io.logicalBlockSizeBytes as (...args: unknown[]) => unknown)(a),
    ([a, , c]) => (io.truncate as (...args: unknown[]) => unknown)(a, c === undefined ? 0 : Number(c) % (1024 * MiB)),
    // Any string path becomes one file in the work dir: arbitrary flags may include create.
    ([, b, c]) => (io.open as (...args: unknown[]) => unknown)(typeof b === 'string' ? join(workDir, 'fuzz-open') : b, c),
  ];
  let outcomes = 0;
  await fc.assert(
    fc.asyncProperty(fc.nat({ max: calls.length - 1 }), fdArbitrary, bufferArbitrary, numberArbitrary, numberArbitrary, async (which, a, b, c, d) => {
      try {
        const result = calls[which]!([a, b, c, d]);
        if (result instanceof Promise) await result;
        if (which === calls.length - 1 && typeof result === 'object' && result !== null) io.close((result as io.OpenedFile).fd);
      } catch (error) {
        if (!(error instanceof TypeError || error instanceof RangeError || io.isIoError(error))) throw error;
      }
      outcomes += 1;
    }),
    { numRuns: 500, seed: 0x70_66_6c },
  );
  t.equal(outcomes, 500, 'every call returned, threw a TypeError/RangeError, or failed with an errno');
});

t.test('loop device', { skip: loopSkipReason() }, async (t) => {

  const dir = mkdtempSync(join(workDir, 'loop-'));
  const backing = join(dir, 'backing.img');
  const backingFd = io.open(backing, { create: true });
  io.truncate(backingFd.fd, 64 * MiB);
  io.close(backingFd.fd);
  const attach = spawnSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' });
  if (attach.status !== 0) return t.plan(0, `losetup cannot attach here: ${(attach.stderr || String(attach.error)).trim()}`);
  const device = attach.stdout.trim();
  t.match(device, /^\/dev\/loop\d+$/, `attached ${device}`);
  let fd = -1;
  t.teardown(() => {
    if (fd >= 0) io.close(fd);
    spawnSync('losetup', ['-d', device]);
  });

  const opened = io.open(device, { direct: true });
  fd = opened.fd;
  t.equal(opened.direct, true, 'O_DIRECT on the block device');
  t.not(fdinfoFlags(fd) & FDINFO_O_DIRECT, 0, 'fdinfo has O_DIRECT');
  t.equal(io.isBlockDevice(fd), true, 'isBlockDevice');
  t.equal(io.sizeBytes(fd), 64 * MiB, 'BLKGETSIZE64');
  const blockBytes = io.logicalBlockSizeBytes(fd);
  t.ok(blockBytes === 512 || blockBytes === 4096, `BLKSSZGET ${blockBytes}`);

  const data = randomAligned(1 * MiB);
  t.equal(await io.pwrite(fd, data, 0), 1 * MiB);
  const tail = randomAligned(64 * KiB);
  t.equal(await io.pwrite(fd, tail, 64 * MiB - 64 * KiB), 64 * KiB, 'write at the end of the device');
  await io.fdatasync(fd);
  const back = io.allocAligned(1 * MiB);
  t.equal(await io.pread(fd, back, 0), 1 * MiB);
  t.ok(back.equals(data), 'round trip');

  const across = io.allocAligned(128 * KiB).fill(0xff);
  t.equal(await io.pread(fd, across, 64 * MiB - 64 * KiB), 64 * KiB, 'short read at the end of the device');
  t.ok(across.subarray(0, 64 * KiB).equals(tail), 'tail data');
  t.ok(isAllZero(across.subarray(64 * KiB)), 'zero-filled beyond the end');

  await io.zeroRange(fd, 256 * KiB, 512 * KiB);
  t.equal(await io.pread(fd, back, 0), 1 * MiB);
  const expected = Buffer.from(data);
  expected.fill(0, 256 * KiB, 768 * KiB);
  t.ok(back.equals(expected), 'zeroRange (BLKZEROOUT) zeroes exactly the range');

  assertIoError(t, await rejection(t, io.pread(fd, io.allocAligned(4096).subarray(0, 100), 0), 'misaligned'), 'EINVAL', 'pread', 'misaligned read on the device');

  // Through the backing file, after the device is flushed: the data is really there.
  await io.fdatasync(fd);
  const file = io.open(backing, { readOnly: true, direct: true });
  t.teardown(() => io.close(file.fd));
  const fromFile = io.allocAligned(1 * MiB);
  await io.pread(file.fd, fromFile, 0);
  t.ok(fromFile.equals(expected), 'the backing file holds the same bytes');
  t.equal(fsConstants.O_DIRECT, io.O_DIRECT, 'O_DIRECT matches node:fs constants');
});
