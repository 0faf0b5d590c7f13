/**
 * pflex_io without liburing (issue 10): `npm install` must build the addon on a host that has only
 * Node, npm, python3, make and g++. In a mount namespace (unshare -m) where liburing's header and
 * library are hidden (bind mounts of /dev/null over each file, an empty directory over
 * /usr/include/liburing/), node-gyp rebuilds a copy of binding.gyp + native/ + scripts/native/; the
 * addon it makes has no io_uring backend (IO_URING_BUILT false, no liburing among its NEEDED
 * libraries), its IoQueues run on threads whether asked for 'auto' or 'io_uring', and a
 * write/fdatasync/read round trip through one works on an O_DIRECT file in a disk-backed directory.
 * Also: the detection (scripts/native/detect-liburing.cjs) calls the header alone, and the library
 * alone, absent; and the repository's own build has io_uring exactly when liburing is installed.
 *
 * Needs root and unshare(1) (util-linux): skipped, saying which, without them.
 */
import t from 'tap';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, statfsSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as io from '../../src/sds/native-io.js';
import { directTempDir } from '../helpers/sds.js';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const DETECT_SCRIPT = join('scripts', 'native', 'detect-liburing.cjs');
/** node-gyp rebuild of a few files: ~25 s alone on 2 cores, more beside other tests. */
const BUILD_TIMEOUT_MS = 240_000;
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

/** Why this test cannot run here, or undefined. */
function whyNotRunnable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (a mount namespace with bind mounts hides liburing)';
  const version = spawnSync('unshare', ['--version'], { encoding: 'utf8' });
  if (version.error !== undefined || version.status !== 0) return 'unshare(1) is not available (util-linux)';
  const probe = spawnSync('unshare', ['-m', '--propagation', 'private', 'true'], { encoding: 'utf8' });
  if (probe.status !== 0) return `unshare -m is not available here: ${probe.stderr.trim() || `status ${probe.status}`}`;
  return undefined;
}

interface LiburingFiles {
  /** liburing.h wherever it is. */
  headers: string[];
  /** /usr/include/liburing/ and the like. */
  headerDirs: string[];
  /** liburing.so, liburing.so.2*, liburing.a. */
  libraries: string[];
}

/** liburing's header and library files here: what dpkg says liburing-dev and liburing2 hold, plus a look in the usual directories. */
function findLiburing(): LiburingFiles {
  const candidates = new Set<string>();
  const dpkg = spawnSync('dpkg', ['-L', 'liburing-dev', 'liburing2'], { encoding: 'utf8' });
  for (const line of (dpkg.stdout ?? '').split('\n')) candidates.add(line.trim());
  const machine = spawnSync('gcc', ['-dumpmachine'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  for (const dir of ['/usr/include', '/usr/local/include', '/usr/lib', '/usr/lib64', '/usr/local/lib', `/usr/lib/${machine}`, `/lib/${machine}`]) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) if (name.startsWith('liburing')) candidates.add(join(dir, name));
  }
  const files: LiburingFiles = { headers: [], headerDirs: [], libraries: [] };
  // Merged /usr: /lib/<machine> is /usr/lib/<machine>; name each file once, by its directory's real path.
  const unique = new Set([...candidates].filter((path) => path !== '' && existsSync(path)).map((path) => join(realpathSync(dirname(path)), basename(path))));
  for (const path of [...unique].sort()) {
    if (/\/include\/liburing\.h$/.test(path)) files.headers.push(path);
    else if (/\/include\/liburing$/.test(path)) files.headerDirs.push(path);
    else if (/\/liburing\.(so|a)(\.[0-9.]+)?$/.test(path)) files.libraries.push(path);
  }
  return files;
}

function shellQuote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

/**
 * Runs `command` in a new mount namespace where each of `hideFiles` is covered by /dev/null and each
 * of `hideDirs` by the empty directory `emptyDir`. A bind mount over a symlink covers its target.
 */
function inNamespace(
  hide: { files: string[]; dirs: string[]; emptyDir: string },
  command: string[],
  options: { cwd: string; timeoutMs: number },
): SpawnSyncReturns<string> {
  const mounts = [
    ...hide.files.map((file) => `mount --bind /dev/null ${shellQuote(file)}`),
    ...hide.dirs.map((dir) => `mount --bind ${shellQuote(hide.emptyDir)} ${shellQuote(dir)}`),
  ];
  const script = [...mounts, 'exec "$@"'].join('\n');
  return spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-euc', script, 'sh', ...command], {
    cwd: options.cwd,
    encoding: 'utf8',
    timeout: options.timeoutMs,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
}

/** The libraries an ELF file needs (readelf -d, from binutils, which g++ needs anyway). */
function neededLibraries(path: string): string[] {
  const result = spawnSync('readelf', ['-d', path], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`readelf -d ${path}: ${result.stderr}`);
  return [...result.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((match) => match[1]!);
}

/** The nodedir the repository's own build used (build/config.gypi), so that the copy builds against the same headers. */
function nodedirOfRepoBuild(): string | undefined {
  const config = join(REPO_ROOT, 'build', 'config.gypi');
  if (!existsSync(config)) return process.env.npm_config_nodedir;
  return /"nodedir":\s*"([^"]+)"/.exec(readFileSync(config, 'utf8'))?.[1] ?? process.env.npm_config_nodedir;
}

/**
 * The child's script: loads the addon at argv[2] and, on a file in argv[3], runs a round trip
 * through an IoQueue asked for io_uring; prints one JSON line.
 */
const CHILD_SOURCE = `
'use strict';
const { randomFillSync } = require('node:crypto');
const native = require(process.argv[2]);
const path = process.argv[3];
const out = { ioUringBuilt: native.IO_URING_BUILT, backends: {}, threads: {} };
for (const asked of ['auto', 'io_uring', 'threads']) {
  const queue = new native.IoQueue(() => {}, 3, asked);
  out.backends[asked] = queue.backend;
  out.threads[asked] = queue.threads;
  queue.close();
}
// A round trip through the raw queue: tags in, one callback per batch out.
const settlers = new Map();
let nextTag = 0;
const queue = new native.IoQueue((count, tags, results, syscalls) => {
  for (let i = 0; i < count; i += 1) {
    const settle = settlers.get(tags[i]);
    settlers.delete(tags[i]);
    settle(results[i], syscalls[i]);
  }
}, 4, 'io_uring');
function submit(op, fd, buffer, offset, length) {
  return new Promise((resolve, reject) => {
    const tag = nextTag++;
    settlers.set(tag, (result, syscall) =>
      result >= 0 ? resolve(result) : reject(native.errnoError(-result, native.SYSCALL_NAMES[syscall])));
    queue.submit(op, fd, buffer, offset, length, tag);
  });
}
(async () => {
  const { fd, direct } = native.open(path, { create: true, direct: true });
  out.direct = direct;
  out.queueBackend = queue.backend;
  const data = randomFillSync(native.allocAligned(256 * 1024));
  const offset = 3 * 4096;
  out.written = await submit(native.IO_OP_WRITE, fd, data, offset, undefined);
  out.synced = (await submit(native.IO_OP_FDATASYNC, fd, undefined, undefined, undefined)) === 0;
  const back = native.allocAligned(data.length);
  out.read = await submit(native.IO_OP_READ, fd, back, offset, undefined);
  out.same = back.equals(data);
  // The promise functions agree with the queue.
  const again = native.allocAligned(data.length);
  await native.pread(fd, again, offset);
  out.samePread = again.equals(data);
  // An errno-coded failure comes back the same way: EBADF from a closed descriptor.
  native.close(fd);
  out.afterClose = await submit(native.IO_OP_READ, fd, back, 0, undefined).then(
    () => 'resolved', (error) => error.code + ' ' + error.syscall);
  await queue.close();
  console.log(JSON.stringify(out));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
`;

const notRunnable = whyNotRunnable();
const liburing = findLiburing();
/** Installed: a header and a shared library to link against (as liburing-dev brings). */
const liburingInstalled = liburing.headers.length > 0 && liburing.libraries.some((path) => /\.so$/.test(path));
t.comment(
  `liburing here: ${liburingInstalled ? 'installed' : 'not installed'}; ` +
    `files: ${[...liburing.headers, ...liburing.headerDirs, ...liburing.libraries].join(', ') || 'none'}`,
);

t.test("the repository's build has io_uring exactly when liburing is installed", async (t) => {
  const detect = spawnSync(process.execPath, [DETECT_SCRIPT], { cwd: REPO_ROOT, encoding: 'utf8' });
  t.equal(detect.status, 0, 'the detection exits 0', { stderr: detect.stderr });
  t.equal(detect.stdout.trim(), liburingInstalled ? '1' : '0', `the detection says ${liburingInstalled ? 'present' : 'absent'}`, {
    stderr: detect.stderr,
  });
  t.equal(io.IO_URING_BUILT, liburingInstalled, `IO_URING_BUILT is ${liburingInstalled} (build/Release/pflex_io.node)`);
  const needed = neededLibraries(io.nativeAddonPath);
  t.equal(needed.some((name) => name.startsWith('liburing')), liburingInstalled, `NEEDED: ${needed.join(', ')}`);
  const queue = new io.IoQueue({});
  t.teardown(() => queue.close());
  t.equal(queue.backend, liburingInstalled ? 'io_uring' : 'threads', `an 'auto' queue runs ${queue.backend} (${queue.ioUring})`);
});

t.test('without liburing: the detection says absent, node-gyp builds a threads-only addon, and it works', { skip: notRunnable ?? false }, async (t) => {
  const work = directTempDir('pflex-native-build-');
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const copy = join(work, 'pkg');
  const emptyDir = join(work, 'empty');
  mkdirSync(emptyDir);
  mkdirSync(join(copy, 'scripts'), { recursive: true });
  cpSync(join(REPO_ROOT, 'binding.gyp'), join(copy, 'binding.gyp'));
  cpSync(join(REPO_ROOT, 'native'), join(copy, 'native'), { recursive: true });
  cpSync(join(REPO_ROOT, 'scripts', 'native'), join(copy, 'scripts', 'native'), { recursive: true });
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(copy, 'node_modules'));

  const everything = { files: [...liburing.headers, ...liburing.libraries], dirs: liburing.headerDirs, emptyDir };
  t.comment(`hidden (bind mounts of /dev/null, and of an empty dir over directories): ${[...everything.files, ...everything.dirs].join(', ') || 'nothing (liburing is not installed)'}`);
  const detect = (hide: typeof everything) =>
    inNamespace(hide, [process.execPath, DETECT_SCRIPT], { cwd: copy, timeoutMs: 60_000 });

  if (liburingInstalled) {
    const headerOnly = detect({ files: liburing.libraries, dirs: [], emptyDir });
    t.equal(headerOnly.stdout.trim(), '0', 'the header without the library: absent', { stderr: headerOnly.stderr });
    t.match(headerOnly.stderr, /liburing not usable/, 'and it says why', { stderr: headerOnly.stderr });
    const libraryOnly = detect({ files: liburing.headers, dirs: liburing.headerDirs, emptyDir });
    t.equal(libraryOnly.stdout.trim(), '0', 'the library without the header: absent', { stderr: libraryOnly.stderr });
  }
  const none = detect(everything);
  t.equal(none.status, 0, 'the detection exits 0 without liburing', { stderr: none.stderr });
  t.equal(none.stdout.trim(), '0', 'neither: absent', { stderr: none.stderr });

  const nodedir = nodedirOfRepoBuild();
  const gyp = [process.execPath, join(REPO_ROOT, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'), 'rebuild', '--jobs', '2'];
  if (nodedir !== undefined) gyp.push(`--nodedir=${nodedir}`);
  const started = Date.now();
  const build = inNamespace(everything, gyp, { cwd: copy, timeoutMs: BUILD_TIMEOUT_MS });
  const buildSeconds = ((Date.now() - started) / 1000).toFixed(1);
  const buildLog = `${build.stdout}\n${build.stderr}`;
  t.equal(build.error, undefined, `node-gyp rebuild finished (${buildSeconds} s)`, { error: build.error });
  t.equal(build.status, 0, 'node-gyp rebuild succeeded with liburing hidden', { log: buildLog.slice(-4000) });
  t.match(build.stderr, /pflex_io: liburing not usable .*building without the io_uring backend/, 'it said it builds without io_uring');
  t.notMatch(buildLog, /warning:/, 'no compiler warnings (-Wall -Wextra)', { log: buildLog.slice(-4000) });
  t.notMatch(buildLog, /io_uring_backend\.o/, 'the io_uring backend was not compiled');
  const addon = join(copy, 'build', 'Release', 'pflex_io.node');
  if (!t.ok(existsSync(addon), 'build/Release/pflex_io.node exists')) return;
  const needed = neededLibraries(addon);
  t.notOk(needed.some((name) => name.startsWith('liburing')), `not linked with liburing (NEEDED: ${needed.join(', ')})`);

  const childFile = join(work, 'child.cjs');
  writeFileSync(childFile, CHILD_SOURCE);
  const dataFile = join(work, 'data');
  const child = inNamespace(everything, [process.execPath, childFile, addon, dataFile], { cwd: work, timeoutMs: 30_000 });
  t.equal(child.status, 0, 'the child loaded the addon and ran its IO with liburing still hidden', { stderr: child.stderr });
  let out: Record<string, unknown>;
  try {
    out = JSON.parse(child.stdout.trim()) as Record<string, unknown>;
  } catch {
    t.fail('the child printed its JSON line', { stdout: child.stdout, stderr: child.stderr });
    return;
  }
  t.equal(out.ioUringBuilt, false, 'IO_URING_BUILT is false');
  t.same(out.backends, { auto: 'threads', io_uring: 'threads', threads: 'threads' }, "'auto' and 'io_uring' run threads, no error");
  t.same(out.threads, { auto: 3, io_uring: 3, threads: 3 }, 'with their worker threads started');
  t.equal(out.queueBackend, 'threads', 'the round-trip queue runs threads');
  const diskBacked = ![TMPFS_MAGIC, RAMFS_MAGIC].includes(Number(statfsSync(work).type));
  t.equal(out.direct, diskBacked, `O_DIRECT on ${work} (${diskBacked ? 'disk-backed' : 'tmpfs'})`);
  t.equal(out.written, 256 * 1024, 'write: every byte');
  t.equal(out.synced, true, 'fdatasync');
  t.equal(out.read, 256 * 1024, 'read: every byte');
  t.equal(out.same, true, 'the bytes read are the bytes written');
  t.equal(out.samePread, true, 'and pread (the threadpool) agrees');
  t.equal(out.afterClose, 'EBADF pread', 'an IO on a closed descriptor rejects with EBADF from pread');
  const onDisk = readFileSync(dataFile);
  t.equal(onDisk.length, 3 * 4096 + 256 * 1024, 'the file has the size the write made');
});
