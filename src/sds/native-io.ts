/**
 * Typed wrappers over the pflex_io native addon (native/pflex_io.cc, DESIGN §7): O_DIRECT open,
 * aligned buffers, and pread/pwrite/fdatasync/punchHole/zeroRange on the libuv threadpool.
 *
 * Errors:
 * - Bad arguments (wrong types, negative or unsafe integers, empty or oversized buffers) are
 *   programming errors: the synchronous functions throw TypeError / RangeError, and the
 *   Promise-returning ones reject with them (they never throw synchronously).
 * - Failed system calls throw / reject with an {@link IoError}: `.code` is the errno name ("EIO"),
 *   `.errno` the positive C errno (as in `os.constants.errno`; Node's fs uses negative numbers),
 *   `.syscall` the call ("pwrite"), and the message reads "pwrite: Input/output error (EIO)".
 *
 * O_DIRECT needs the buffer address, length and file offset aligned to the device's logical block
 * size ({@link logicalBlockSizeBytes}; 4096 is always safe). The kernel judges it: misaligned IO on
 * an O_DIRECT descriptor rejects with code EINVAL. Buffers from {@link allocAligned} are aligned.
 *
 * Concurrency: any number of IOs may be in flight on one descriptor; they run on the libuv threadpool
 * (UV_THREADPOOL_SIZE threads, 4 by default). Do not close a descriptor, nor transfer or detach a
 * buffer, while an IO on it is in flight.
 *
 * The hot path uses an {@link IoQueue} instead: its own worker threads, and completions handed to
 * JavaScript in batches (one wake-up and one callback for every IO that is done), which costs the
 * JS thread a small fraction of the one-promise-per-call functions.
 *
 * Nothing here logs: a caller that gets `direct: false` from {@link open} logs the buffered fallback.
 */
import { addonCandidates, findAddon, loadAddon } from '../common/native-addons.js';

/** Flags for {@link open}; every one defaults to false. */
export interface OpenFlags {
  /** O_CREAT with mode 0600 (before umask). */
  create?: boolean;
  /** O_RDONLY instead of O_RDWR. */
  readOnly?: boolean;
  /** Ask for O_DIRECT; falls back to buffered IO where the file system refuses it. */
  direct?: boolean;
}

/** An open descriptor and whether it really bypasses the page cache. */
export interface OpenedFile {
  fd: number;
  /** True when the descriptor has O_DIRECT; false when not asked for or refused (EINVAL). */
  direct: boolean;
}

/** An errno-coded failure of a system call made by the addon. */
export interface IoError extends Error {
  /** The errno name, e.g. "EIO", "EINVAL", "EBADF", "ENOSPC". */
  code: string;
  /** The positive C errno. */
  errno: number;
  /** The failed call: "open", "pread", "pwrite", "fdatasync", "fallocate", "ioctl", ... */
  syscall: string;
  /** The path, for open. */
  path?: string;
}

/** The addon's own interface (see native/pflex_io.cc). */
interface NativeIo {
  open(path: string, flags: OpenFlags): OpenedFile;
  close(fd: number): void;
  allocAligned(sizeBytes: number, alignmentBytes?: number): Buffer;
  addressAlignmentOf(buffer: Uint8Array): number;
  pread(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number>;
  pwrite(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number>;
  fdatasync(fd: number): Promise<void>;
  punchHole(fd: number, offsetBytes: number, lengthBytes: number): Promise<void>;
  zeroRange(fd: number, offsetBytes: number, lengthBytes: number): Promise<void>;
  fileStatusFlags(fd: number): number;
  isBlockDevice(fd: number): boolean;
  sizeBytes(fd: number): number;
  logicalBlockSizeBytes(fd: number): number;
  truncate(fd: number, sizeBytes: number): void;
  errnoError(errno: number, syscall: string): IoError;
  IoQueue: new (onComplete: NativeCompletionCallback, threads?: number, backend?: IoQueueBackendChoice) => NativeIoQueue;
  IO_OP_READ: number;
  IO_OP_WRITE: number;
  IO_OP_FDATASYNC: number;
  IO_OP_ZERO_RANGE: number;
  IO_OP_PUNCH_HOLE: number;
  IO_QUEUE_THREADS_DEFAULT: number;
  IO_QUEUE_THREADS_MAX: number;
  IO_QUEUE_BATCH_MAX: number;
  SYSCALL_NAMES: string[];
  IO_URING_BUILT: boolean;
  O_RDONLY: number;
  O_WRONLY: number;
  O_RDWR: number;
  O_ACCMODE: number;
  O_CREAT: number;
  O_DIRECT: number;
  O_CLOEXEC: number;
  O_DSYNC: number;
  O_SYNC: number;
  IO_BYTES_MAX: number;
  ALIGNMENT_BYTES_DEFAULT: number;
  ALIGNMENT_BYTES_MAX: number;
}

/**
 * Called on the JS thread once per batch of completions: entries [0, count) of the arrays are valid
 * during the call only (the arrays are reused). results[i] >= 0: bytes done; < 0: -errno, and
 * syscalls[i] indexes SYSCALL_NAMES.
 */
type NativeCompletionCallback = (count: number, tags: Int32Array, results: Float64Array, syscalls: Uint8Array) => void;

/** The addon's IoQueue (native/pflex_io.cc). */
interface NativeIoQueue {
  /** Throws TypeError/RangeError on bad arguments, and an Error with code ERR_IO_QUEUE_CLOSED after close(). */
  submit(op: number, fd: number, buffer: Uint8Array | undefined, offsetBytes: number | undefined, lengthBytes: number | undefined, tag: number): void;
  close(): Promise<void>;
  readonly inFlight: number;
  readonly threads: number;
  readonly closed: boolean;
  readonly backend: IoQueueBackend;
}

/** Finds build/Release/pflex_io.node at the repository root. */
function findAddonPath(): string {
  const found = findAddon('pflex_io');
  if (found === undefined) {
    throw new Error(
      `pflex_io native addon not found (looked at ${addonCandidates('pflex_io').join(', ')}); ` +
        'build it with `npm install` or `npx node-gyp rebuild` in the repository root',
    );
  }
  return found;
}

/** Where the addon was loaded from. */
export const nativeAddonPath: string = findAddonPath();

const native = loadAddon<NativeIo>(nativeAddonPath);

export const O_RDONLY: number = native.O_RDONLY;
export const O_WRONLY: number = native.O_WRONLY;
export const O_RDWR: number = native.O_RDWR;
export const O_ACCMODE: number = native.O_ACCMODE;
export const O_CREAT: number = native.O_CREAT;
export const O_DIRECT: number = native.O_DIRECT;
export const O_CLOEXEC: number = native.O_CLOEXEC;
export const O_DSYNC: number = native.O_DSYNC;
export const O_SYNC: number = native.O_SYNC;
/** The largest single pread/pwrite buffer and allocAligned size: 64 MiB. */
export const IO_BYTES_MAX: number = native.IO_BYTES_MAX;
/** allocAligned's default alignment: 4096 bytes. */
export const ALIGNMENT_BYTES_DEFAULT: number = native.ALIGNMENT_BYTES_DEFAULT;
/** The largest alignment allocAligned accepts: 2 MiB. */
export const ALIGNMENT_BYTES_MAX: number = native.ALIGNMENT_BYTES_MAX;

/**
 * True when `error` is an errno-coded {@link IoError}, and, if `code` is given, has that code.
 * Node's own fs errors have the same shape and match too (their `.errno` is negative).
 */
export function isIoError(error: unknown, code?: string): error is IoError {
  if (!(error instanceof Error)) return false;
  const fields = error as Partial<IoError>;
  if (typeof fields.code !== 'string' || typeof fields.errno !== 'number' || typeof fields.syscall !== 'string') return false;
  return code === undefined || fields.code === code;
}

/** Runs a native call that returns a Promise so that argument errors reject instead of throwing. */
function settle<T>(call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * Opens `path` with O_RDWR (or O_RDONLY) | O_CLOEXEC, plus O_CREAT (mode 0600) and O_DIRECT when
 * asked. Where O_DIRECT is refused with EINVAL (tmpfs before Linux 6.6, ramfs, procfs) it retries
 * without it and returns `direct: false`. Synchronous: opening is control plane.
 * @throws IoError from open(2) (ENOENT, EACCES, EISDIR, ...); TypeError/RangeError on bad arguments.
 */
export function open(path: string, flags: OpenFlags = {}): OpenedFile {
  return native.open(path, flags);
}

/** Closes `fd`. An EINTR from close(2) is treated as success (Linux has released the fd). */
export function close(fd: number): void {
  native.close(fd);
}

/**
 * A zero-filled Buffer of `sizeBytes` (1 .. IO_BYTES_MAX) whose memory starts at a multiple of
 * `alignmentBytes` (a power of two, 8 .. ALIGNMENT_BYTES_MAX). Allocated with posix_memalign, freed
 * when the GC collects the Buffer, and counted as external memory so the GC sees it.
 */
export function allocAligned(sizeBytes: number, alignmentBytes: number = ALIGNMENT_BYTES_DEFAULT): Buffer {
  return native.allocAligned(sizeBytes, alignmentBytes);
}

/** The largest power of two (capped at 2^30) dividing the address of `buffer`'s first byte. */
export function addressAlignmentOf(buffer: Uint8Array): number {
  return native.addressAlignmentOf(buffer);
}

/**
 * Reads `buffer.length` bytes (1 .. IO_BYTES_MAX) at `offsetBytes` on the threadpool, retrying short
 * reads and EINTR. Resolves with the bytes read: fewer than `buffer.length` only at the end of the
 * file or device, and then the rest of `buffer` is zero-filled. `buffer` may be a subarray.
 */
export function pread(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number> {
  return settle(() => native.pread(fd, buffer, offsetBytes));
}

/**
 * Writes all of `buffer` (1 .. IO_BYTES_MAX bytes) at `offsetBytes` on the threadpool, retrying
 * short writes and EINTR. Resolves with `buffer.length`. Not durable until {@link fdatasync}.
 */
export function pwrite(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number> {
  return settle(() => native.pwrite(fd, buffer, offsetBytes));
}

/** fdatasync(2) on the threadpool: written data (and the size, if it changed) reach stable storage. */
export function fdatasync(fd: number): Promise<void> {
  return settle(() => native.fdatasync(fd));
}

/**
 * Deallocates [offsetBytes, offsetBytes + lengthBytes) with fallocate(PUNCH_HOLE | KEEP_SIZE): the
 * range reads back as zeros and frees its blocks; the size does not change. Rejects with EOPNOTSUPP
 * where the file system cannot punch holes.
 */
export function punchHole(fd: number, offsetBytes: number, lengthBytes: number): Promise<void> {
  return settle(() => native.punchHole(fd, offsetBytes, lengthBytes));
}

/**
 * Makes [offsetBytes, offsetBytes + lengthBytes) read back as zeros, never changing the size.
 * Regular files: fallocate(ZERO_RANGE | KEEP_SIZE), else punch hole, else writing zeros (below the
 * size only). Block devices: ioctl(BLKZEROOUT), else writing zeros; the range must then be aligned
 * to the logical block size (EINVAL otherwise).
 */
export function zeroRange(fd: number, offsetBytes: number, lengthBytes: number): Promise<void> {
  return settle(() => native.zeroRange(fd, offsetBytes, lengthBytes));
}

/** fcntl(F_GETFL): the descriptor's access mode and status flags (test with O_DIRECT etc.). */
export function fileStatusFlags(fd: number): number {
  return native.fileStatusFlags(fd);
}

/** True when the descriptor has O_DIRECT set. */
export function isDirect(fd: number): boolean {
  return (native.fileStatusFlags(fd) & native.O_DIRECT) !== 0;
}

/** True when `fd` is a block device. */
export function isBlockDevice(fd: number): boolean {
  return native.isBlockDevice(fd);
}

/** The size: st_size for a file, ioctl(BLKGETSIZE64) for a block device. */
export function sizeBytes(fd: number): number {
  return native.sizeBytes(fd);
}

/**
 * The alignment O_DIRECT IO needs: ioctl(BLKSSZGET) for a block device (512 or 4096), and 4096 for
 * a file (safe whatever the device under the file system).
 */
export function logicalBlockSizeBytes(fd: number): number {
  return native.logicalBlockSizeBytes(fd);
}

/** ftruncate(2): sets a file's size; growing makes it sparse. Synchronous (control plane). */
export function truncate(fd: number, sizeBytes: number): void {
  native.truncate(fd, sizeBytes);
}

// ---------------------------------------------------------------------------------------------------
// IoQueue

/** The default number of IoQueue worker threads: 8. */
export const IO_QUEUE_THREADS_DEFAULT: number = native.IO_QUEUE_THREADS_DEFAULT;
/** The most IoQueue worker threads: 64. */
export const IO_QUEUE_THREADS_MAX: number = native.IO_QUEUE_THREADS_MAX;
/** The environment variable {@link ioQueueThreadsFromEnv} reads. */
export const IO_THREADS_ENV = 'PFLEX_SDS_IO_THREADS';

/**
 * The SDS's IoQueue thread count from PFLEX_SDS_IO_THREADS (an integer in 1 .. 64), or 8 when unset
 * or empty. Independent of UV_THREADPOOL_SIZE. @throws RangeError on any other value.
 */
export function ioQueueThreadsFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const text = env[IO_THREADS_ENV]?.trim();
  if (text === undefined || text === '') return IO_QUEUE_THREADS_DEFAULT;
  const threads = Number(text);
  if (!/^[0-9]+$/.test(text) || threads < 1 || threads > IO_QUEUE_THREADS_MAX) {
    throw new RangeError(`${IO_THREADS_ENV} must be an integer in [1, ${IO_QUEUE_THREADS_MAX}] (got '${text}')`);
  }
  return threads;
}

/**
 * True when the addon was built with the IoQueue's io_uring backend: `npm install` (node-gyp,
 * binding.gyp) found liburing's header and library (Debian: liburing-dev). False: built without it,
 * and every IoQueue runs on threads whatever backend it is asked for.
 */
export const IO_URING_BUILT: boolean = native.IO_URING_BUILT;

/** The IoQueue backend running: io_uring (no worker threads for read/write/fdatasync) or threads. */
export type IoQueueBackend = 'io_uring' | 'threads';
/** The backend asked for: 'auto' (the default) is io_uring where the kernel allows it, else threads. */
export type IoQueueBackendChoice = 'auto' | IoQueueBackend;
/** The environment variable {@link ioQueueBackendFromEnv} reads. */
export const IO_BACKEND_ENV = 'PFLEX_SDS_IO_BACKEND';

/**
 * The SDS's IoQueue backend from PFLEX_SDS_IO_BACKEND ('auto', 'threads' or 'io_uring'), or 'auto'
 * when unset or empty. @throws RangeError on any other value.
 */
export function ioQueueBackendFromEnv(env: NodeJS.ProcessEnv = process.env): IoQueueBackendChoice {
  const text = env[IO_BACKEND_ENV]?.trim();
  if (text === undefined || text === '') return 'auto';
  if (text !== 'auto' && text !== 'threads' && text !== 'io_uring') {
    throw new RangeError(`${IO_BACKEND_ENV} must be auto, threads or io_uring (got '${text}')`);
  }
  return text;
}

export interface IoQueueOptions {
  /**
   * Worker threads, 1 .. IO_QUEUE_THREADS_MAX; default IO_QUEUE_THREADS_DEFAULT (8). With the
   * io_uring backend only zeroRange and punchHole use threads: min(threads, 2), started on first use.
   */
  threads?: number;
  /**
   * 'auto' (default) or 'io_uring': an io_uring where the addon was built with it
   * ({@link IO_URING_BUILT}) and io_uring_setup works, else the threads (no error);
   * 'threads': worker threads. {@link IoQueue.backend} tells which one runs,
   * {@link IoQueue.ioUring} why.
   */
  backend?: IoQueueBackendChoice;
}

/**
 * Whether io_uring runs for a queue asked for `asked` that runs `running`, and if not why, for the
 * log: 'in use', 'not asked for (backend threads)', 'not built (liburing-dev missing at npm
 * install)' or 'refused by the kernel (io_uring_setup failed)'; where io_uring was asked for by name
 * and threads run, the reason says so.
 */
export function describeIoUring(asked: IoQueueBackendChoice, running: IoQueueBackend, built: boolean = IO_URING_BUILT): string {
  if (running === 'io_uring') return 'in use';
  if (asked === 'threads') return 'not asked for (backend threads)';
  const reason = built ? 'refused by the kernel (io_uring_setup failed)' : 'not built (liburing-dev missing at npm install)';
  return asked === 'io_uring' ? `${reason}: io_uring was asked for, threads run instead` : reason;
}

const OP_READ = native.IO_OP_READ;
const OP_WRITE = native.IO_OP_WRITE;
const OP_FDATASYNC = native.IO_OP_FDATASYNC;
const OP_ZERO_RANGE = native.IO_OP_ZERO_RANGE;
const OP_PUNCH_HOLE = native.IO_OP_PUNCH_HOLE;
const SYSCALL_NAMES: readonly string[] = native.SYSCALL_NAMES;
/** Tag slots made at first; the table doubles when every slot is in flight. */
const TAGS_INITIAL = 256;

type Resolve = (value: number | undefined) => void;
type Reject = (error: unknown) => void;

/**
 * Tag -> promise settlers of the IOs in flight: parallel arrays indexed by tag and a stack of free
 * tags, so an IO allocates nothing here beyond its promise. Deliberately holds no reference to the
 * native queue: an IoQueue dropped without close() can then still be collected once idle.
 */
class CompletionTable {
  private resolves: (Resolve | undefined)[] = [];
  private rejects: (Reject | undefined)[] = [];
  /** 1 when the promise resolves with the byte count (read, write), 0 with undefined. */
  private valued = new Uint8Array(0);
  private free = new Int32Array(0);
  private freeCount = 0;

  constructor() {
    this.grow(TAGS_INITIAL);
  }

  /** Takes a free tag. */
  take(): number {
    if (this.freeCount === 0) this.grow(this.resolves.length * 2);
    this.freeCount -= 1;
    return this.free[this.freeCount]!;
  }

  /** Returns a tag whose IO was never submitted. */
  give(tag: number): void {
    this.free[this.freeCount] = tag;
    this.freeCount += 1;
  }

  /** A promise settled when `tag` completes. */
  wait<T extends number | undefined>(tag: number, valued: boolean): Promise<T> {
    this.valued[tag] = valued ? 1 : 0;
    return new Promise<T>((resolve, reject) => {
      this.resolves[tag] = resolve as Resolve;
      this.rejects[tag] = reject;
    });
  }

  /** The native callback: settles a batch. */
  readonly complete: NativeCompletionCallback = (count, tags, results, syscalls) => {
    for (let i = 0; i < count; i += 1) {
      const tag = tags[i]!;
      const result = results[i]!;
      const resolve = this.resolves[tag];
      const reject = this.rejects[tag];
      this.resolves[tag] = undefined;
      this.rejects[tag] = undefined;
      this.give(tag);
      if (resolve === undefined || reject === undefined) continue; // never: every tag is waited on
      if (result >= 0) resolve(this.valued[tag] === 1 ? result : undefined);
      else reject(native.errnoError(-result, SYSCALL_NAMES[syscalls[i]!] ?? 'unknown'));
    }
  };

  private grow(size: number): void {
    const old = this.resolves.length;
    for (let tag = old; tag < size; tag += 1) {
      this.resolves.push(undefined);
      this.rejects.push(undefined);
    }
    const valued = new Uint8Array(size);
    valued.set(this.valued);
    this.valued = valued;
    const free = new Int32Array(size);
    free.set(this.free.subarray(0, this.freeCount));
    // New tags go on the stack so the lowest is taken first.
    for (let tag = size - 1; tag >= old; tag -= 1) free[this.freeCount++] = tag;
    this.free = free;
  }
}

/**
 * Batched data-plane IO (DESIGN §7, §10): the same operations, semantics and errors as the
 * Promise-returning functions above ({@link pread}, {@link pwrite}, ...), with completions delivered
 * to JavaScript in batches. Two backends: an io_uring driven from the event loop (the default where
 * the addon was built with liburing, {@link IO_URING_BUILT}, and the kernel allows it: SQEs
 * submitted once per loop phase, completions noticed through an eventfd) or the queue's own worker
 * threads (not the libuv threadpool).
 *
 * - Argument errors reject with TypeError / RangeError; failed system calls with an {@link IoError}
 *   whose code, errno, syscall and message match the functions above.
 * - After {@link close} every method rejects with an Error whose code is ERR_IO_QUEUE_CLOSED.
 * - An idle queue keeps neither the event loop nor itself alive; with IO in flight it keeps both.
 * - As with the functions above: do not close a descriptor, nor transfer or detach a buffer, while an
 *   IO on it is in flight.
 */
export class IoQueue {
  private readonly table = new CompletionTable();
  private readonly native: NativeIoQueue;
  private readonly asked: IoQueueBackendChoice;

  constructor(options: IoQueueOptions = {}) {
    this.native = new native.IoQueue(this.table.complete, options.threads, options.backend);
    this.asked = options.backend ?? 'auto';
  }

  /**
   * The backend running: 'io_uring' or 'threads' (also where io_uring was asked for but not built
   * or refused).
   */
  get backend(): IoQueueBackend {
    return this.native.backend;
  }

  /** Whether io_uring runs here and if not why ({@link describeIoUring}), for the start-up log. */
  get ioUring(): string {
    return describeIoUring(this.asked, this.native.backend);
  }

  /** Worker threads running (io_uring backend: 0 until the first zeroRange or punchHole). */
  get threads(): number {
    return this.native.threads;
  }

  /** IOs submitted whose promises are not settled yet. */
  get inFlight(): number {
    return this.native.inFlight;
  }

  /** True once {@link close} has been called. */
  get closed(): boolean {
    return this.native.closed;
  }

  /** Like {@link pread}: resolves with the bytes read; the rest of `buffer` is zeroed at EOF. */
  read(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number> {
    return this.submit<number>(OP_READ, fd, buffer, offsetBytes, undefined, true);
  }

  /** Like {@link pwrite}: resolves with `buffer.length`. */
  write(fd: number, buffer: Uint8Array, offsetBytes: number): Promise<number> {
    return this.submit<number>(OP_WRITE, fd, buffer, offsetBytes, undefined, true);
  }

  /** Like {@link fdatasync}. */
  fdatasync(fd: number): Promise<void> {
    return this.submit<undefined>(OP_FDATASYNC, fd, undefined, undefined, undefined, false);
  }

  /** Like {@link zeroRange}. */
  zeroRange(fd: number, offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.submit<undefined>(OP_ZERO_RANGE, fd, undefined, offsetBytes, lengthBytes, false);
  }

  /** Like {@link punchHole}. */
  punchHole(fd: number, offsetBytes: number, lengthBytes: number): Promise<void> {
    return this.submit<undefined>(OP_PUNCH_HOLE, fd, undefined, offsetBytes, lengthBytes, false);
  }

  /**
   * Stops taking IO, lets every submitted IO finish and settle, and joins the threads. Idempotent:
   * every call resolves when the queue is closed.
   */
  close(): Promise<void> {
    return this.native.close();
  }

  private submit<T extends number | undefined>(
    op: number,
    fd: number,
    buffer: Uint8Array | undefined,
    offsetBytes: number | undefined,
    lengthBytes: number | undefined,
    valued: boolean,
  ): Promise<T> {
    const tag = this.table.take();
    try {
      this.native.submit(op, fd, buffer, offsetBytes, lengthBytes, tag);
    } catch (error) {
      this.table.give(tag);
      return Promise.reject(error);
    }
    return this.table.wait<T>(tag, valued);
  }
}
