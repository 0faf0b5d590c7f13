// pflex_io: O_DIRECT block IO for the SDS storage engine (DESIGN §7).
//
// Control-plane calls (open, close, sizes, allocAligned) run synchronously on the JS thread: they are
// rare and cheap. Data-plane calls (pread, pwrite, fdatasync, punchHole, zeroRange) run on the libuv
// threadpool and return Promises, so a slow disk never stalls the event loop. The IoQueue class runs
// the same calls on an io_uring driven from the event loop (default where the kernel allows it) or on
// its own threads, and hands completions to one JS callback per batch: the hot path (the SDS's chunk
// store) uses it, since it costs far less per IO (see IoQueue below).
//
// Errors: argument mistakes throw TypeError / RangeError before any syscall (no input may crash the
// process); syscall failures become an Error with .code (errno name, e.g. "EIO"), .errno (the positive
// C errno, as in os.constants.errno), .syscall and a message like "pwrite: Input/output error (EIO)".
//
// Alignment for O_DIRECT (buffer address, length, offset) is left to the kernel to judge: the
// requirement depends on the device (512 or 4096 bytes, sometimes a smaller DMA alignment for the
// address), and a misaligned request comes back as a rejection with code EINVAL, never a crash.

#include <napi.h>
#include <uv.h>

#if !__has_include(<liburing.h>)
#error "pflex_io needs liburing's header: install the Debian package liburing-dev (.ci/run's OS_PACKAGES has it)"
#endif
#include <liburing.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

static_assert(sizeof(off_t) == 8, "64-bit file offsets are required");

// Limits (units last). One IO never exceeds io_bytes_max: it bounds the memory one request pins and
// the time one threadpool slot is busy.
constexpr size_t kIoBytesMax = 64u * 1024 * 1024;
constexpr size_t kAlignmentBytesDefault = 4096;
constexpr size_t kAlignmentBytesMax = 2u * 1024 * 1024;
// Chunk of zeros written when neither fallocate nor BLKZEROOUT can zero a range.
constexpr size_t kZeroChunkBytes = 1024u * 1024;
// O_DIRECT on a file needs the alignment of the device under the file system (512 or 4096 bytes);
// 4096 satisfies both.
constexpr uint32_t kFileLogicalBlockBytes = 4096;
constexpr double kSafeIntegerMax = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER
constexpr int kAddressAlignmentShiftMax = 30;

// ---------------------------------------------------------------------------------------------------
// Errors

const char* ErrnoName(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
#else
  switch (err) {
    case EIO: return "EIO";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case ENOSPC: return "ENOSPC";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case EISDIR: return "EISDIR";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOTTY: return "ENOTTY";
    case EFBIG: return "EFBIG";
    case EOVERFLOW: return "EOVERFLOW";
    case ENOMEM: return "ENOMEM";
  }
#endif
  return "EUNKNOWN";
}

// Must run on the JS thread (strerror's buffer and the Napi calls); workers carry the errno over.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& path = "") {
  assert(err > 0);
  const char* name = ErrnoName(err);
  std::string message = std::string(syscall) + ": " + strerror(err) + " (" + name + ")";
  if (!path.empty()) message += " '" + path + "'";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, name));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) error.Set("path", Napi::String::New(env, path));
  return error;
}

template <typename Call>
auto RetryOnEintr(Call call) -> decltype(call()) {
  decltype(call()) result;
  do {
    result = call();
  } while (result == -1 && errno == EINTR);
  return result;
}

bool IsUnsupported(int err) { return err == EOPNOTSUPP || err == ENOSYS || err == ENOTTY; }

// ---------------------------------------------------------------------------------------------------
// Arguments: validated before any syscall.

std::string FormatNumber(double value) {
  char text[32];
  snprintf(text, sizeof(text), "%.17g", value);
  return text;
}

double ArgInteger(const Napi::CallbackInfo& info, size_t index, const char* name, double min,
                  double max) {
  assert(min <= max && max <= kSafeIntegerMax);
  Napi::Value value = info[index];
  if (!value.IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  }
  double number = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(number) || std::trunc(number) != number || number < min || number > max) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [" +
                                                FormatNumber(min) + ", " + FormatNumber(max) +
                                                "] (got " + FormatNumber(number) + ")");
  }
  return number;
}

int ArgFd(const Napi::CallbackInfo& info, size_t index) {
  return static_cast<int>(ArgInteger(info, index, "fd", 0, INT_MAX));
}

struct Bytes {
  Napi::Object object;
  uint8_t* data;
  size_t length;
};

// A Buffer or Uint8Array, possibly a subarray: its data pointer already includes the byte offset.
Bytes ArgBytes(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = info[index];
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer or Uint8Array");
  }
  Napi::Uint8Array array = value.As<Napi::Uint8Array>();
  return Bytes{array, array.Data(), array.ElementLength()};
}

Bytes ArgIoBuffer(const Napi::CallbackInfo& info, size_t index) {
  Bytes bytes = ArgBytes(info, index, "buffer");
  if (bytes.length == 0 || bytes.length > kIoBytesMax) {
    throw Napi::RangeError::New(info.Env(), "buffer length must be in [1, " +
                                                std::to_string(kIoBytesMax) + "] bytes (got " +
                                                std::to_string(bytes.length) + ")");
  }
  assert(bytes.data != nullptr);
  return bytes;
}

bool OptionalBool(Napi::Env env, Napi::Object options, const char* key) {
  Napi::Value value = options.Get(key);
  if (value.IsUndefined()) return false;
  if (!value.IsBoolean()) {
    throw Napi::TypeError::New(env, std::string("flags.") + key + " must be a boolean");
  }
  return value.As<Napi::Boolean>().Value();
}

struct stat FstatOrThrow(Napi::Env env, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw ErrnoError(env, errno, "fstat");
  return st;
}

// ---------------------------------------------------------------------------------------------------
// The system calls of the data plane. These run on a worker thread (libuv's threadpool for the
// promise functions, an IoQueue's own threads for the queue) and touch no JavaScript values: a
// failure is recorded as (syscall, errno) and turned into an Error on the JS thread.

// Failed calls, by index: IoQueue reports the index in its `syscalls` array and exports the names as
// SYSCALL_NAMES, so the table and the enum must stay in the same order.
enum Syscall : uint8_t {
  kSyscallNone = 0,
  kSyscallPread,
  kSyscallPwrite,
  kSyscallFdatasync,
  kSyscallFallocate,
  kSyscallFstat,
  kSyscallIoctl,
  kSyscallPosixMemalign,
  kSyscallCount,
};
constexpr const char* kSyscallNames[kSyscallCount] = {
    "", "pread", "pwrite", "fdatasync", "fallocate", "fstat", "ioctl", "posix_memalign",
};

struct IoResult {
  uint64_t done = 0;  // Bytes read or written.
  int error = 0;      // The positive errno of the failed call, or 0.
  Syscall syscall = kSyscallNone;

  // Records the failure of `call`; returns false so callers may write `return result->Fail(...)`.
  bool Fail(Syscall call, int err) {
    assert(err > 0 && call != kSyscallNone);
    syscall = call;
    error = err;
    return false;
  }
};

enum class RangeKind { kPunchHole, kZeroRange };

// Writes zeros over [offset, offset + length) with an aligned buffer (the fd may be O_DIRECT).
bool WriteZeros(int fd, uint64_t offset, uint64_t length, IoResult* result) {
  assert(length > 0);
  const size_t chunk = static_cast<size_t>(std::min<uint64_t>(length, kZeroChunkBytes));
  void* zeros = nullptr;
  int rc = posix_memalign(&zeros, kAlignmentBytesDefault, chunk);
  if (rc != 0) return result->Fail(kSyscallPosixMemalign, rc);
  memset(zeros, 0, chunk);
  bool ok = true;
  uint64_t done = 0;
  while (done < length) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk, length - done));
    ssize_t n = pwrite(fd, zeros, want, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ok = result->Fail(kSyscallPwrite, errno);
      break;
    }
    if (n == 0) {  // Never returned for want > 0; refuse to spin if it ever is.
      ok = result->Fail(kSyscallPwrite, EIO);
      break;
    }
    done += static_cast<uint64_t>(n);
  }
  free(zeros);
  return ok;
}

bool AtEndOfRegularFile(int fd, uint64_t position) {
  struct stat st;
  if (fstat(fd, &st) != 0) return false;  // The next pread reports the real error.
  return S_ISREG(st.st_mode) && position >= static_cast<uint64_t>(st.st_size);
}

// pread/pwrite of all of [data, data + length), retrying short IO and EINTR. A read stops at the end
// of the file or device and zero-fills the rest of the buffer.
void ExecuteReadWrite(bool write, int fd, uint8_t* data, size_t length, uint64_t offset,
                      IoResult* result) {
  assert(length > 0 && length <= kIoBytesMax);
  const Syscall call = write ? kSyscallPwrite : kSyscallPread;
  size_t done = 0;
  while (done < length) {
    uint8_t* at_data = data + done;
    const size_t want = length - done;
    const off_t at = static_cast<off_t>(offset + done);
    ssize_t n = write ? pwrite(fd, at_data, want, at) : pread(fd, at_data, want, at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      result->Fail(call, errno);
      result->done = done;
      return;
    }
    if (n == 0) {
      if (write) {  // Never returned for want > 0; refuse to spin if it ever is.
        result->Fail(kSyscallPwrite, EIO);
        result->done = done;
        return;
      }
      break;  // End of file or device.
    }
    assert(static_cast<size_t>(n) <= want);
    done += static_cast<size_t>(n);
    // A short O_DIRECT read ends at the (possibly unaligned) end of the file; a further pread from
    // there would fail with EINVAL instead of returning 0, so stop at the file's size.
    if (!write && done < length && AtEndOfRegularFile(fd, offset + done)) break;
  }
  assert(done <= length);
  if (!write && done < length) memset(data + done, 0, length - done);
  result->done = done;
}

void ExecuteFdatasync(int fd, IoResult* result) {
  if (RetryOnEintr([&] { return fdatasync(fd); }) != 0) result->Fail(kSyscallFdatasync, errno);
}

bool Fallocate(int fd, int mode, uint64_t offset, uint64_t length, IoResult* result) {
  const off_t at = static_cast<off_t>(offset);
  const off_t count = static_cast<off_t>(length);
  if (RetryOnEintr([&] { return fallocate(fd, mode, at, count); }) == 0) return true;
  return result->Fail(kSyscallFallocate, errno);
}

// punchHole: fallocate(PUNCH_HOLE | KEEP_SIZE). zeroRange: see the exported zeroRange.
void ExecuteRange(RangeKind kind, int fd, uint64_t offset, uint64_t length, IoResult* result) {
  assert(length > 0);
  if (kind == RangeKind::kPunchHole) {
    Fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length, result);
    return;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    result->Fail(kSyscallFstat, errno);
    return;
  }
  if (S_ISBLK(st.st_mode)) {
    uint64_t range[2] = {offset, length};
    if (RetryOnEintr([&] { return ioctl(fd, BLKZEROOUT, range); }) == 0) return;
    if (!IsUnsupported(errno)) {
      result->Fail(kSyscallIoctl, errno);
      return;
    }
    WriteZeros(fd, offset, length, result);
    return;
  }
  // Regular file: ZERO_RANGE keeps the blocks allocated (no fragmentation on later writes); a hole
  // reads back as zeros too; writing zeros is the last resort.
  if (Fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length, result) ||
      !IsUnsupported(result->error)) {
    return;
  }
  *result = IoResult{};
  if (Fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length, result) ||
      !IsUnsupported(result->error)) {
    return;
  }
  *result = IoResult{};
  // Like KEEP_SIZE, never grow the file: zero only the part below its size.
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (offset >= size) return;
  WriteZeros(fd, offset, std::min(length, size - offset), result);
}

// ---------------------------------------------------------------------------------------------------
// One promise per call on the libuv threadpool (pread, pwrite, fdatasync, punchHole, zeroRange).
// Execute() runs on a threadpool thread; OnOK() settles the promise on the JS thread.

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env)
      : Napi::AsyncWorker(env, "pflex_io"), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise QueueForPromise() {
    Napi::Promise promise = deferred_.Promise();
    Queue();  // The worker deletes itself after OnOK().
    return promise;
  }

 protected:
  // Execute() never calls SetError(): errors travel in result_ so rejections carry .code and .errno.
  void OnOK() override {
    if (result_.error != 0) {
      deferred_.Reject(ErrnoError(Env(), result_.error, kSyscallNames[result_.syscall]).Value());
    } else {
      deferred_.Resolve(Result());
    }
  }

  virtual Napi::Value Result() { return Env().Undefined(); }

  Napi::Promise::Deferred deferred_;
  IoResult result_;
};

class ReadWriteWorker final : public PromiseWorker {
 public:
  ReadWriteWorker(Napi::Env env, bool write, int fd, const Bytes& bytes, uint64_t offset)
      : PromiseWorker(env),
        write_(write),
        fd_(fd),
        data_(bytes.data),
        length_(bytes.length),
        offset_(offset),
        // The reference keeps the buffer (and its memory) alive until the worker is deleted on the JS
        // thread, after OnOK(): the GC cannot free memory a worker thread is still reading or writing.
        buffer_reference_(Napi::Persistent(bytes.object)) {}

 private:
  void Execute() override { ExecuteReadWrite(write_, fd_, data_, length_, offset_, &result_); }

  Napi::Value Result() override {
    return Napi::Number::New(Env(), static_cast<double>(result_.done));
  }

  const bool write_;
  const int fd_;
  uint8_t* const data_;
  const size_t length_;
  const uint64_t offset_;
  Napi::ObjectReference buffer_reference_;
};

class FdatasyncWorker final : public PromiseWorker {
 public:
  FdatasyncWorker(Napi::Env env, int fd) : PromiseWorker(env), fd_(fd) {}

 private:
  void Execute() override { ExecuteFdatasync(fd_, &result_); }
  const int fd_;
};

class RangeWorker final : public PromiseWorker {
 public:
  RangeWorker(Napi::Env env, RangeKind kind, int fd, uint64_t offset, uint64_t length)
      : PromiseWorker(env), kind_(kind), fd_(fd), offset_(offset), length_(length) {}

 private:
  void Execute() override { ExecuteRange(kind_, fd_, offset_, length_, &result_); }

  const RangeKind kind_;
  const int fd_;
  const uint64_t offset_;
  const uint64_t length_;
};

// ---------------------------------------------------------------------------------------------------
// IoQueue: batched data-plane IO for the hot path (DESIGN §7, §10).
//
// Two backends, chosen at construction: the io_uring one (see "the io_uring backend" below: no
// threads for read, write and fdatasync; zeroRange and punchHole still run on a few worker threads
// started on first use) and the thread one described here. Both deliver through the same arrays and
// onComplete, with the same results and errors.
//
// The promise functions above cost one AsyncWorker, one promise and one callback scope per IO on the
// JS thread. An IoQueue has its own worker threads and hands completions back in batches:
//
//   submit(op, fd, buffer, offsetBytes, lengthBytes, tag)   JS thread; returns nothing
//     -> submission queue (mutex + condvar) -> worker thread runs the system calls
//     -> completion list (mutex); the first completion of a batch schedules ONE thread-safe-function
//        call (one uv_async wake-up); more completions join the list until the JS thread drains it
//     -> onComplete(count, tags, results, syscalls)          JS thread, once per batch (<= kBatchMax)
//
// `tags` (Int32Array), `results` (Float64Array) and `syscalls` (Uint8Array) are allocated once and
// reused for every batch; only their first `count` entries are meaningful and only during the call.
// results[i] >= 0: bytes read or written (0 for fdatasync, zeroRange, punchHole); < 0: -errno, and
// syscalls[i] is the index in SYSCALL_NAMES of the call that failed. No JS object is made per IO.
//
// Lifetime:
// - Each submitted buffer is held by a napi_ref from submit until its completion is delivered on the
//   JS thread, so the GC cannot free memory a worker is using.
// - While any IO is in flight the thread-safe function is ref'd (the process does not exit mid-IO)
//   and the queue object itself is held strongly; when idle both are released, so an idle queue
//   keeps neither the event loop nor itself alive.
// - close() stops new submissions (they throw ERR_IO_QUEUE_CLOSED), lets the workers finish what is
//   queued, delivers every completion, joins the threads and resolves its promise.
// - An idle queue collected by the GC without close(), and a queue alive at environment teardown,
//   stop and join their threads (teardown waits for IO in flight: the buffers must outlive it).
//   Teardown frees allocAligned buffers before any cleanup hook runs, so their finalizer first waits
//   for the requests using their memory (WaitUntilMemoryUnused).
// - A throw from onComplete does not stop the batch: the rest is delivered, then the first error is
//   rethrown to Node, which handles it by its N-API policy for thread-safe-function callbacks.
//
// Wake-ups: a submit wakes one idle worker only when no wake-up is already pending; a woken worker
// that leaves work in the queue wakes the next one. A burst of submits thus costs the JS thread at
// most one futex wake, and the workers fan out among themselves.

enum QueueOp : uint8_t {
  kOpRead = 0,
  kOpWrite,
  kOpFdatasync,
  kOpZeroRange,
  kOpPunchHole,
  kOpCount,
};

constexpr uint32_t kQueueThreadsDefault = 8;
constexpr uint32_t kQueueThreadsMax = 64;
// io_uring backend: ring entries, which also bound the IO the kernel holds at once (more waits in
// user space); and the worker threads it starts, on first use, for zeroRange and punchHole.
constexpr unsigned kRingEntries = 256;
constexpr uint32_t kRingRangeThreadsMax = 2;
// Completions delivered per onComplete call; a larger batch is delivered in several calls.
constexpr size_t kBatchMax = 1024;
constexpr double kTagMax = 2147483647.0;  // INT32_MAX: tags travel in an Int32Array.

struct QueueRequest {
  QueueOp op;
  int fd;
  uint8_t* data;
  uint64_t offset;
  uint64_t length;
  int32_t tag;
  napi_ref buffer;  // Holds the buffer while in flight; null for ops without one.
  IoResult result;
  // The list of requests in flight (submitted, not yet delivered): JS thread only.
  QueueRequest* prev;
  QueueRequest* next;
  bool executed;  // The system calls are done; guarded by the queue's completion_mutex_.
  bool on_ring;   // Runs on the io_uring (JS thread only), not on the worker threads.
};

Napi::Error QueueClosedError(Napi::Env env) {
  Napi::Error error = Napi::Error::New(env, "the IoQueue is closed");
  error.Set("code", Napi::String::New(env, "ERR_IO_QUEUE_CLOSED"));
  return error;
}

bool IsNullish(const Napi::Value& value) { return value.IsUndefined() || value.IsNull(); }

// The value a raw napi_ref holds (a Napi::Reference built over it would delete it when destroyed).
template <typename T>
T RefValue(Napi::Env env, napi_ref ref) {
  napi_value value = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_get_reference_value(env, ref, &value), T());
  return Napi::Value(env, value).As<T>();
}

class IoQueue;

// Queues whose environment cleanup hook is registered, with their environment (any thread's).
struct QueueRegistry {
  std::mutex mutex;
  std::vector<std::pair<napi_env, IoQueue*>> queues;
};

QueueRegistry& Registry() {
  static QueueRegistry* registry = new QueueRegistry();  // Never destroyed: workers may outlive exit.
  return *registry;
}

class IoQueue final : public Napi::ObjectWrap<IoQueue> {
 public:
  // Called by allocAligned's finalizer, on the JS thread, before it frees [data, data + size): waits
  // until no request of a queue of `env` is still using that memory. The GC never finalizes a buffer
  // in flight (the queue holds a reference to it), but environment teardown (a worker thread ending
  // with IO in flight) frees external buffers before any cleanup hook can stop the queues. Memory that
  // V8 allocates is freed only after the hooks have run.
  static void WaitUntilMemoryUnused(napi_env env, const uint8_t* data, size_t size) {
    QueueRegistry& registry = Registry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    for (const auto& [queue_env, queue] : registry.queues) {
      if (queue_env == env) queue->WaitUntilUnused(data, size);
    }
  }

  static Napi::Function DefineClass(Napi::Env env) {
    return Napi::ObjectWrap<IoQueue>::DefineClass(
        env, "IoQueue",
        {
            InstanceMethod<&IoQueue::Submit>("submit"),
            InstanceMethod<&IoQueue::Close>("close"),
            InstanceAccessor<&IoQueue::InFlight>("inFlight"),
            InstanceAccessor<&IoQueue::Threads>("threads"),
            InstanceAccessor<&IoQueue::Closed>("closed"),
            InstanceAccessor<&IoQueue::BackendName>("backend"),
        });
  }

  // new IoQueue(onComplete, threads = 8, backend = "auto")
  //   backend "auto": io_uring where the kernel allows it, else threads; "io_uring": the same (it still
  //   falls back to threads where io_uring_setup fails: `backend` tells which one runs); "threads".
  explicit IoQueue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IoQueue>(info) {
    Napi::Env env = info.Env();
    env_ = env;
    if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "onComplete must be a function");
    uint32_t threads = kQueueThreadsDefault;
    if (!info[1].IsUndefined()) {
      threads = static_cast<uint32_t>(ArgInteger(info, 1, "threads", 1, kQueueThreadsMax));
    }
    std::string backend = "auto";
    if (!IsNullish(info[2])) {
      if (!info[2].IsString()) throw Napi::TypeError::New(env, "backend must be a string");
      backend = info[2].As<Napi::String>().Utf8Value();
      if (backend != "auto" && backend != "threads" && backend != "io_uring") {
        throw Napi::RangeError::New(env, "backend must be 'auto', 'threads' or 'io_uring' (got '" +
                                             backend + "')");
      }
    }
    CreateArrays(env);

    tsfn_finalized_ = std::make_shared<std::atomic<bool>>(false);
    auto* finalized = new std::shared_ptr<std::atomic<bool>>(tsfn_finalized_);
    napi_status status = napi_create_threadsafe_function(
        env, info[0], nullptr, Napi::String::New(env, "pflex_io.IoQueue"), 0, 1, finalized,
        [](napi_env, void* data, void*) {
          auto* flag = static_cast<std::shared_ptr<std::atomic<bool>>*>(data);
          (*flag)->store(true);
          delete flag;
        },
        this, &IoQueue::CallJs, &tsfn_);
    if (status != napi_ok) {
      delete finalized;
      ReleaseArrays();
      throw Napi::Error::New(env, "napi_create_threadsafe_function failed");
    }
    // Idle: the async handle must not keep the event loop alive.
    napi_unref_threadsafe_function(env, tsfn_);

    int spawn_error = 0;
    if (backend != "threads" && InitRing(env, info[0].As<Napi::Function>())) {
      // Reads, writes and fdatasync go to the ring; zeroRange and punchHole start a few threads
      // when first used.
      range_threads_ = std::min(threads, kRingRangeThreadsMax);
    } else {
      spawn_error = SpawnThreads(threads);
    }
    if (spawn_error != 0) {
      StopThreads();
      napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
      tsfn_released_ = true;
      ReleaseArrays();
      state_ = State::kClosed;
      throw ErrnoError(env, spawn_error, "pthread_create");
    }
    AddCleanupHook();
  }

  ~IoQueue() override {
    // Closed: nothing left. Otherwise the GC found the queue idle and unreachable (it is held strongly
    // while IO is in flight), or the environment is going away.
    if (state_ == State::kClosed) return;
    StopThreads();
    if (ring_open_) {
      DrainRingBlocking();  // Only at environment teardown can IO still be in flight here.
      TearDownRing(false);
    }
    RemoveCleanupHook();
    if (!tsfn_released_ && !tsfn_finalized_->load()) {
      napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
    }
    tsfn_released_ = true;
    // Left only at environment teardown, which frees the references itself.
    for (QueueRequest* request : submitted_) delete request;
    for (QueueRequest* request : completed_) delete request;
    for (QueueRequest* request : draining_) delete request;
    for (QueueRequest* request : ring_done_) delete request;
    for (QueueRequest* request : ring_overflow_) delete request;
    ReleaseArrays();
  }

 private:
  enum class State { kOpen, kClosing, kClosed };

  // submit(op, fd, buffer, offsetBytes, lengthBytes, tag)
  //   read/write:         buffer (1 .. IO_BYTES_MAX bytes), offsetBytes; lengthBytes undefined or
  //                       buffer.length.
  //   zeroRange/punchHole: buffer undefined or null; offsetBytes; lengthBytes >= 1.
  //   fdatasync:          buffer undefined or null; offsetBytes and lengthBytes undefined or 0.
  //   tag:                an integer in [0, 2^31 - 1], handed back with the completion.
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_ != State::kOpen) throw QueueClosedError(env);
    const auto op = static_cast<QueueOp>(ArgInteger(info, 0, "op", 0, kOpCount - 1));
    const int fd = ArgFd(info, 1);
    QueueRequest request{};
    request.op = op;
    request.fd = fd;
    Napi::Object buffer;
    switch (op) {
      case kOpRead:
      case kOpWrite: {
        const Bytes bytes = ArgIoBuffer(info, 2);
        request.offset = static_cast<uint64_t>(ArgInteger(info, 3, "offsetBytes", 0, kSafeIntegerMax));
        if (!info[4].IsUndefined()) {
          const double length = static_cast<double>(bytes.length);
          ArgInteger(info, 4, "lengthBytes (the buffer's length)", length, length);
        }
        request.data = bytes.data;
        request.length = bytes.length;
        buffer = bytes.object;
        break;
      }
      case kOpZeroRange:
      case kOpPunchHole: {
        if (!IsNullish(info[2])) throw Napi::TypeError::New(env, "buffer must be undefined or null");
        const double offset = ArgInteger(info, 3, "offsetBytes", 0, kSafeIntegerMax);
        const double length = ArgInteger(info, 4, "lengthBytes", 1, kSafeIntegerMax);
        if (offset + length > kSafeIntegerMax) {
          throw Napi::RangeError::New(env, "offsetBytes + lengthBytes must not exceed " +
                                               FormatNumber(kSafeIntegerMax));
        }
        request.offset = static_cast<uint64_t>(offset);
        request.length = static_cast<uint64_t>(length);
        break;
      }
      case kOpFdatasync: {
        if (!IsNullish(info[2])) throw Napi::TypeError::New(env, "buffer must be undefined or null");
        if (!info[3].IsUndefined()) ArgInteger(info, 3, "offsetBytes", 0, 0);
        if (!info[4].IsUndefined()) ArgInteger(info, 4, "lengthBytes", 0, 0);
        break;
      }
      default:
        assert(false);
    }
    request.tag = static_cast<int32_t>(ArgInteger(info, 5, "tag", 0, kTagMax));
    request.on_ring = ring_open_ && (op == kOpRead || op == kOpWrite || op == kOpFdatasync);
    if (!request.on_ring && threads_.empty()) {
      // The io_uring backend runs zeroRange and punchHole on threads started on first use.
      const int spawn_error = SpawnThreads(range_threads_);
      if (threads_.empty()) throw ErrnoError(env, spawn_error != 0 ? spawn_error : EAGAIN, "pthread_create");
    }

    // Arguments are valid: nothing below throws a JavaScript exception.
    auto* queued = new QueueRequest(request);
    if (!buffer.IsEmpty()) {
      if (napi_create_reference(env, buffer, 1, &queued->buffer) != napi_ok) {
        delete queued;
        throw Napi::Error::New(env, "napi_create_reference failed");
      }
    }
    LinkInFlight(queued);
    in_flight_++;
    if (!active_) {
      // Busy: keep the event loop alive, and this object, until the last completion is delivered.
      active_ = true;
      napi_ref_threadsafe_function(env, tsfn_);
      if (handles_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&handles_->poll));
      Ref();
    }
    if (queued->on_ring) {
      RingQueue(queued);  // Submitted to the kernel at the end of this event-loop phase.
      return env.Undefined();
    }
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(submit_mutex_);
      submitted_.push_back(queued);
      if (idle_ > 0 && !wake_pending_) {
        wake_pending_ = true;
        wake = true;
      }
    }
    if (wake) submit_cv_.notify_one();
    return env.Undefined();
  }

  // close() => Promise<void>: resolves once every submitted IO has completed and been delivered and
  // the threads are joined. Idempotent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_ == State::kClosed) {
      Napi::Promise::Deferred done = Napi::Promise::Deferred::New(env);
      done.Resolve(env.Undefined());
      return done.Promise();
    }
    if (state_ == State::kOpen) {
      state_ = State::kClosing;
      close_deferred_ = std::make_unique<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
      {
        // Workers finish the queue, then exit.
        std::lock_guard<std::mutex> lock(submit_mutex_);
        stopping_ = true;
      }
      submit_cv_.notify_all();
    }
    Napi::Promise promise = close_deferred_->Promise();
    if (in_flight_ == 0) FinishClose(env);
    return promise;
  }

  Napi::Value InFlight(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(in_flight_));
  }
  Napi::Value Threads(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(threads_.size()));
  }
  Napi::Value Closed(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), state_ != State::kOpen);
  }
  Napi::Value BackendName(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), ring_backend_ ? "io_uring" : "threads");
  }

  // Starts `count` workers; returns 0 or the errno of the first thread that could not start (the
  // ones started before it keep running).
  int SpawnThreads(uint32_t count) {
    // Workers block every signal, so signals go to Node's own threads and IO rarely sees EINTR.
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int spawn_error = 0;
    try {
      threads_.reserve(threads_.size() + count);
      for (uint32_t i = 0; i < count; i++) threads_.emplace_back(&IoQueue::WorkerLoop, this);
    } catch (const std::system_error& error) {
      spawn_error = error.code().value() > 0 ? error.code().value() : EAGAIN;
    } catch (const std::bad_alloc&) {
      spawn_error = ENOMEM;
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return spawn_error;
  }

  // ------------------------------------------------------------------ worker threads

  void WorkerLoop() {
    std::unique_lock<std::mutex> lock(submit_mutex_);
    for (;;) {
      while (submitted_.empty() && !stopping_) {
        idle_++;
        submit_cv_.wait(lock);
        idle_--;
        wake_pending_ = false;
      }
      if (submitted_.empty()) return;  // Stopping, and the queue is drained.
      QueueRequest* request = submitted_.front();
      submitted_.pop_front();
      const bool wake_next = !submitted_.empty() && idle_ > 0 && !wake_pending_;
      if (wake_next) wake_pending_ = true;
      lock.unlock();
      if (wake_next) submit_cv_.notify_one();

      Execute(request);

      bool schedule = false;
      bool memory_waiter = false;
      {
        std::lock_guard<std::mutex> completion_lock(completion_mutex_);
        request->executed = true;
        completed_.push_back(request);
        if (!drain_scheduled_) {
          drain_scheduled_ = true;
          schedule = true;
        }
        memory_waiter = memory_waiters_ > 0;
      }
      if (memory_waiter) executed_cv_.notify_all();
      // One call per batch. The thread-safe function outlives the workers: it is released only after
      // they are joined.
      if (schedule) napi_call_threadsafe_function(tsfn_, nullptr, napi_tsfn_nonblocking);
      lock.lock();
    }
  }

  static void Execute(QueueRequest* request) {
    IoResult* result = &request->result;
    switch (request->op) {
      case kOpRead:
      case kOpWrite:
        ExecuteReadWrite(request->op == kOpWrite, request->fd, request->data,
                         static_cast<size_t>(request->length), request->offset, result);
        break;
      case kOpFdatasync:
        ExecuteFdatasync(request->fd, result);
        break;
      case kOpZeroRange:
        ExecuteRange(RangeKind::kZeroRange, request->fd, request->offset, request->length, result);
        break;
      case kOpPunchHole:
        ExecuteRange(RangeKind::kPunchHole, request->fd, request->offset, request->length, result);
        break;
      default:
        assert(false);
    }
  }

  // Sets stopping and joins the workers; they finish the queue first. Idempotent.
  void StopThreads() {
    {
      std::lock_guard<std::mutex> lock(submit_mutex_);
      stopping_ = true;
    }
    submit_cv_.notify_all();
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

  // ------------------------------------------------------------------ the JS thread

  static void CallJs(napi_env env, napi_value callback, void* context, void*) {
    if (env == nullptr || callback == nullptr) return;  // The thread-safe function is going away.
    IoQueue* queue = static_cast<IoQueue*>(context);
    try {
      queue->Drain(Napi::Env(env), Napi::Function(env, callback));
    } catch (const Napi::Error& error) {
      // Becomes an uncaught exception, as a throw from any other callback would. napi_throw fails
      // only where JavaScript cannot run any more (a worker thread being terminated).
      napi_throw(env, error.Value());
    } catch (...) {
      // Nothing may escape into Node (std::terminate); Drain has already settled its state.
    }
  }

  // Delivers every completion that is ready, kBatchMax per call of onComplete.
  void Drain(Napi::Env env, Napi::Function callback) {
    {
      std::lock_guard<std::mutex> lock(completion_mutex_);
      assert(draining_.empty());
      draining_.swap(completed_);
      drain_scheduled_ = false;
    }
    std::unique_ptr<Napi::Error> first_error = Deliver(env, &draining_, [&](size_t count, Napi::Int32Array tags, Napi::Float64Array results, Napi::Uint8Array syscalls) {
      callback.Call({Napi::Number::New(env, static_cast<double>(count)), tags, results, syscalls});
    });
    if (first_error) throw *first_error;
  }

  // Hands `list` to onComplete through `invoke`, kBatchMax per call, frees the requests and clears
  // the list; returns the first error a call threw (the rest of the batch is still delivered).
  template <typename Invoke>
  std::unique_ptr<Napi::Error> Deliver(Napi::Env env, std::vector<QueueRequest*>* list, Invoke invoke) {
    std::vector<QueueRequest*>& draining = *list;
    std::unique_ptr<Napi::Error> first_error;
    size_t next = 0;
    while (next < draining.size()) {
      const size_t count = std::min(kBatchMax, draining.size() - next);
      EnsureArrays(env);
      Napi::Int32Array tags = RefValue<Napi::Int32Array>(env, tags_ref_);
      Napi::Float64Array results = RefValue<Napi::Float64Array>(env, results_ref_);
      Napi::Uint8Array syscalls = RefValue<Napi::Uint8Array>(env, syscalls_ref_);
      int32_t* tag_data = tags.Data();
      double* result_data = results.Data();
      uint8_t* syscall_data = syscalls.Data();
      for (size_t i = 0; i < count; i++) {
        QueueRequest* request = draining[next + i];
        tag_data[i] = request->tag;
        if (request->result.error != 0) {
          result_data[i] = -static_cast<double>(request->result.error);
          syscall_data[i] = request->result.syscall;
        } else {
          result_data[i] = static_cast<double>(request->result.done);
          syscall_data[i] = kSyscallNone;
        }
        if (request->buffer != nullptr) napi_delete_reference(env, request->buffer);
        UnlinkInFlight(request);
        delete request;
      }
      next += count;
      in_flight_ -= count;
      try {
        invoke(count, tags, results, syscalls);
      } catch (const Napi::Error& error) {
        // The rest of the batch is still delivered; the first error is rethrown at the end.
        if (!first_error) first_error = std::make_unique<Napi::Error>(error);
      }
    }
    draining.clear();
    if (in_flight_ == 0) Deactivate(env);
    if (in_flight_ == 0 && state_ == State::kClosing) FinishClose(env);
    return first_error;
  }

  // ------------------------------------------------------------------ the io_uring backend
  //
  // Everything below runs on the JS thread. submit() fills an SQE (or, with kRingEntries IOs already
  // in the kernel, waits in ring_overflow_); a uv_check and a uv_prepare handle call io_uring_submit
  // once per event-loop phase when SQEs are pending, so a burst of submits costs one io_uring_enter.
  // Completions signal an eventfd registered with the ring, watched by a uv_poll handle: on wake-up
  // the CQ is drained fully (short IO and EINTR/EAGAIN resubmitted), pending SQEs are submitted, and
  // the finished requests go to onComplete in one batch, inside a callback scope (napi_make_callback)
  // so promise reactions run right after it. The poll handle is ref'd only while IO is in flight.
  // Environment teardown uses an async cleanup hook: wait for the ring's IO, close the handles, then
  // let Node go on.

  // The libuv handles of a ring: freed in the last close callback, which may run after the queue is
  // gone.
  struct RingHandles {
    uv_poll_t poll;
    uv_prepare_t prepare;
    uv_check_t check;
    IoQueue* queue;
    int eventfd;
    int open;  // Handles not closed yet.
    napi_async_cleanup_hook_handle hook;  // Removed once all are closed (teardown), or null.
  };

  bool InitRing(Napi::Env env, Napi::Function callback) {
    if (io_uring_queue_init(kRingEntries, &ring_, 0) != 0) return false;
    const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
      io_uring_queue_exit(&ring_);
      return false;
    }
    if (io_uring_register_eventfd(&ring_, efd) != 0) {
      io_uring_queue_exit(&ring_);
      close(efd);
      return false;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      io_uring_queue_exit(&ring_);
      close(efd);
      return false;
    }
    auto* handles = new RingHandles{};
    handles->queue = this;
    handles->eventfd = efd;
    if (uv_poll_init(loop, &handles->poll, efd) != 0) {
      delete handles;
      io_uring_queue_exit(&ring_);
      close(efd);
      return false;
    }
    uv_prepare_init(loop, &handles->prepare);
    uv_check_init(loop, &handles->check);
    handles->open = 3;
    handles->poll.data = handles;
    handles->prepare.data = handles;
    handles->check.data = handles;
    uv_poll_start(&handles->poll, UV_READABLE, &IoQueue::OnRingPoll);
    uv_prepare_start(&handles->prepare, &IoQueue::OnRingTick<uv_prepare_t>);
    uv_check_start(&handles->check, &IoQueue::OnRingTick<uv_check_t>);
    // None of them keeps the loop alive when idle; the poll handle is ref'd while IO is in flight.
    uv_unref(reinterpret_cast<uv_handle_t*>(&handles->poll));
    uv_unref(reinterpret_cast<uv_handle_t*>(&handles->prepare));
    uv_unref(reinterpret_cast<uv_handle_t*>(&handles->check));
    handles_ = handles;
    ring_open_ = true;
    ring_backend_ = true;

    napi_create_reference(env, callback, 1, &callback_ref_);
    napi_async_init(env, Napi::Object::New(env), Napi::String::New(env, "pflex_io.IoQueue"),
                    &async_context_);
    napi_add_async_cleanup_hook(env, &IoQueue::RingEnvCleanup, this, &async_hook_);
    return true;
  }

  // Hands `request` (or what is left of it) to the ring, or queues it while the ring is full.
  void RingQueue(QueueRequest* request) {
    io_uring_sqe* sqe = ring_in_flight_ < kRingEntries ? io_uring_get_sqe(&ring_) : nullptr;
    if (sqe == nullptr) {
      ring_overflow_.push_back(request);
      return;
    }
    const uint64_t done = request->result.done;
    switch (request->op) {
      case kOpRead:
        io_uring_prep_read(sqe, request->fd, request->data + done,
                           static_cast<unsigned>(request->length - done), request->offset + done);
        break;
      case kOpWrite:
        io_uring_prep_write(sqe, request->fd, request->data + done,
                            static_cast<unsigned>(request->length - done), request->offset + done);
        break;
      case kOpFdatasync:
        io_uring_prep_fsync(sqe, request->fd, IORING_FSYNC_DATASYNC);
        break;
      default:
        assert(false);
    }
    io_uring_sqe_set_data(sqe, request);
    ring_in_flight_++;
    ring_unsubmitted_++;
  }

  void RingSubmit() {
    if (ring_unsubmitted_ == 0) return;
    // Failures (EAGAIN, EBUSY, EINTR) leave the SQEs in the ring: the next phase tries again.
    io_uring_submit(&ring_);
    ring_unsubmitted_ = io_uring_sq_ready(&ring_);
  }

  // Applies one CQE to its request; returns true when the request is finished.
  static bool RingApply(QueueRequest* request, int res) {
    IoResult* result = &request->result;
    if (res == -EINTR || res == -EAGAIN) return false;  // Again, as the thread path retries EINTR.
    if (request->op == kOpFdatasync) {
      if (res < 0) result->Fail(kSyscallFdatasync, -res);
      return true;
    }
    const bool write = request->op == kOpWrite;
    if (res < 0) {
      result->Fail(write ? kSyscallPwrite : kSyscallPread, -res);
      return true;
    }
    if (res == 0) {
      if (write) {  // Never returned for a length > 0; refuse to spin if it ever is.
        result->Fail(kSyscallPwrite, EIO);
        return true;
      }
    } else {
      result->done += static_cast<uint64_t>(res);
      assert(result->done <= request->length);
      if (result->done == request->length) return true;
      // A short O_DIRECT read ends at the (possibly unaligned) end of a file; a further read from
      // there would fail with EINVAL instead of returning 0. Anything else: read the rest.
      if (write || !AtEndOfRegularFile(request->fd, request->offset + result->done)) return false;
    }
    // End of file or device: zero the rest of the buffer.
    memset(request->data + result->done, 0, request->length - result->done);
    return true;
  }

  // Takes every CQE: finished requests go to ring_done_, the others back to the ring; then moves
  // queued requests into the freed entries.
  void RingReap() {
    for (;;) {
      unsigned head;
      unsigned seen = 0;
      io_uring_cqe* cqe;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        seen++;
        auto* request = static_cast<QueueRequest*>(io_uring_cqe_get_data(cqe));
        ring_in_flight_--;
        if (RingApply(request, cqe->res)) {
          request->executed = true;
          ring_done_.push_back(request);
        } else {
          ring_again_.push_back(request);
        }
      }
      if (seen == 0) break;
      io_uring_cq_advance(&ring_, seen);
    }
    for (QueueRequest* request : ring_again_) RingQueue(request);
    ring_again_.clear();
    while (!ring_overflow_.empty() && ring_in_flight_ < kRingEntries) {
      QueueRequest* request = ring_overflow_.front();
      ring_overflow_.pop_front();
      RingQueue(request);
    }
  }

  // Waits for at least one completion without delivering it (teardown, WaitUntilUnused); false when
  // nothing is in the ring.
  bool RingWaitOne() {
    if (!ring_open_ || ring_in_flight_ == 0) return false;
    int ret;
    do {
      ret = io_uring_submit_and_wait(&ring_, 1);
    } while (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY);
    ring_unsubmitted_ = io_uring_sq_ready(&ring_);
    if (ret < 0) return false;
    RingReap();
    return true;
  }

  void DrainRingBlocking() {
    while (RingWaitOne()) {
    }
  }

  template <typename Handle>
  static void OnRingTick(Handle* handle) {
    IoQueue* queue = static_cast<RingHandles*>(handle->data)->queue;
    if (queue != nullptr) queue->RingSubmit();
  }

  static void OnRingPoll(uv_poll_t* handle, int status, int events) {
    IoQueue* queue = static_cast<RingHandles*>(handle->data)->queue;
    if (queue != nullptr) queue->OnRingReadable();
  }

  void OnRingReadable() {
    uint64_t count;
    // Cleared before the CQ is read: a completion posted after this signals again.
    while (read(handles_->eventfd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    RingReap();
    RingSubmit();  // Resubmissions and queued requests, before JavaScript runs.
    if (ring_done_.empty()) return;
    std::vector<QueueRequest*> done;
    done.swap(ring_done_);
    Napi::Env env(env_);
    std::unique_ptr<Napi::Error> first_error;
    try {
      Napi::HandleScope scope(env);
      first_error = Deliver(env, &done, [&](size_t count, Napi::Int32Array tags, Napi::Float64Array results, Napi::Uint8Array syscalls) {
        Napi::Function callback = RefValue<Napi::Function>(env, callback_ref_);
        napi_value argv[] = {Napi::Number::New(env, static_cast<double>(count)), tags, results, syscalls};
        napi_value returned = nullptr;
        if (napi_make_callback(env, async_context_, env.Global(), callback, 4, argv, &returned) == napi_ok) {
          return;
        }
        // A throw, or JavaScript cannot run any more (a worker thread being terminated: no exception
        // is pending then, and nothing is left to tell).
        napi_value exception = nullptr;
        if (napi_get_and_clear_last_exception(env, &exception) != napi_ok || exception == nullptr) return;
        napi_valuetype type = napi_undefined;
        napi_typeof(env, exception, &type);
        if (type == napi_object || type == napi_function) throw Napi::Error(env, exception);
        if (type != napi_undefined) napi_fatal_exception(env, exception);
      });
    } catch (const Napi::Error& error) {
      first_error = std::make_unique<Napi::Error>(error);
    } catch (...) {
    }
    // As for any other callback: an uncaught exception.
    if (first_error) {
      Napi::HandleScope scope(env);
      napi_fatal_exception(env, first_error->Value());
    }
  }

  // Environment teardown: wait for the ring's IO (its buffers are about to go), then close.
  static void RingEnvCleanup(napi_async_cleanup_hook_handle handle, void* arg) {
    IoQueue* queue = static_cast<IoQueue*>(arg);
    queue->DrainRingBlocking();
    queue->TearDownRing(true);
  }

  // Closes the ring (nothing may be in it) and its handles. Idempotent.
  void TearDownRing(bool from_cleanup_hook) {
    if (!ring_open_) return;
    ring_open_ = false;
    io_uring_queue_exit(&ring_);
    RingHandles* handles = handles_;
    handles_ = nullptr;
    handles->queue = nullptr;
    if (from_cleanup_hook) {
      handles->hook = async_hook_;  // Node waits for the handles to close.
    } else if (async_hook_ != nullptr) {
      napi_remove_async_cleanup_hook(async_hook_);
    }
    async_hook_ = nullptr;
    auto closed = [](uv_handle_t* closed_handle) {
      auto* owner = static_cast<RingHandles*>(closed_handle->data);
      if (--owner->open > 0) return;
      close(owner->eventfd);
      if (owner->hook != nullptr) napi_remove_async_cleanup_hook(owner->hook);
      delete owner;
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&handles->poll), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&handles->prepare), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&handles->check), closed);
    if (async_context_ != nullptr) napi_async_destroy(env_, async_context_);
    async_context_ = nullptr;
    if (callback_ref_ != nullptr) napi_delete_reference(env_, callback_ref_);
    callback_ref_ = nullptr;
  }

  // Idle: neither the event loop nor this object is held any more.
  void Deactivate(Napi::Env env) {
    if (!active_) return;
    active_ = false;
    napi_unref_threadsafe_function(env, tsfn_);
    if (handles_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&handles_->poll));
    Unref();
  }

  void FinishClose(Napi::Env env) {
    assert(state_ == State::kClosing && in_flight_ == 0);
    Deactivate(env);  // close() may be called from onComplete, before Drain deactivates.
    StopThreads();
    TearDownRing(false);
    RemoveCleanupHook();
    if (!tsfn_released_) {
      napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
      tsfn_released_ = true;
    }
    ReleaseArrays();
    state_ = State::kClosed;
    std::unique_ptr<Napi::Promise::Deferred> deferred = std::move(close_deferred_);
    deferred->Resolve(env.Undefined());
  }

  void LinkInFlight(QueueRequest* request) {
    request->prev = in_flight_tail_;
    request->next = nullptr;
    if (in_flight_tail_ != nullptr) {
      in_flight_tail_->next = request;
    } else {
      in_flight_head_ = request;
    }
    in_flight_tail_ = request;
  }

  void UnlinkInFlight(QueueRequest* request) {
    (request->prev != nullptr ? request->prev->next : in_flight_head_) = request->next;
    (request->next != nullptr ? request->next->prev : in_flight_tail_) = request->prev;
  }

  // JS thread. A worker runs every queued request, even when stopping, so the wait ends.
  void WaitUntilUnused(const uint8_t* data, size_t size) {
    const uint8_t* end = data + size;
    for (QueueRequest* request = in_flight_head_; request != nullptr; request = request->next) {
      if (request->data == nullptr) continue;
      if (!(request->data < end && data < request->data + request->length)) continue;
      if (request->on_ring) {
        while (!request->executed && RingWaitOne()) {
        }
        continue;
      }
      std::unique_lock<std::mutex> lock(completion_mutex_);
      memory_waiters_++;
      executed_cv_.wait(lock, [request] { return request->executed; });
      memory_waiters_--;
    }
  }

  static void EnvCleanup(void* arg) {
    IoQueue* queue = static_cast<IoQueue*>(arg);
    queue->Unregister();  // A hook runs once.
    queue->StopThreads();
  }

  void AddCleanupHook() {
    QueueRegistry& registry = Registry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    napi_add_env_cleanup_hook(env_, &IoQueue::EnvCleanup, this);
    registry.queues.emplace_back(env_, this);
    cleanup_hook_added_ = true;
  }

  void RemoveCleanupHook() {
    if (!cleanup_hook_added_) return;
    napi_remove_env_cleanup_hook(env_, &IoQueue::EnvCleanup, this);
    Unregister();
  }

  void Unregister() {
    QueueRegistry& registry = Registry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    auto& queues = registry.queues;
    queues.erase(std::remove_if(queues.begin(), queues.end(),
                                [this](const auto& entry) { return entry.second == this; }),
                 queues.end());
    cleanup_hook_added_ = false;
  }

  // The arrays handed to onComplete. JS could detach their buffers (transfer them to a worker), so
  // they are checked before each batch and made again if so.
  void CreateArrays(Napi::Env env) {
    ReleaseArrays();
    napi_create_reference(env, Napi::Int32Array::New(env, kBatchMax), 1, &tags_ref_);
    napi_create_reference(env, Napi::Float64Array::New(env, kBatchMax), 1, &results_ref_);
    napi_create_reference(env, Napi::Uint8Array::New(env, kBatchMax), 1, &syscalls_ref_);
  }

  void EnsureArrays(Napi::Env env) {
    const bool intact =
        RefValue<Napi::Int32Array>(env, tags_ref_).ElementLength() == kBatchMax &&
        RefValue<Napi::Float64Array>(env, results_ref_).ElementLength() == kBatchMax &&
        RefValue<Napi::Uint8Array>(env, syscalls_ref_).ElementLength() == kBatchMax;
    if (!intact) CreateArrays(env);
  }

  void ReleaseArrays() {
    for (napi_ref* ref : {&tags_ref_, &results_ref_, &syscalls_ref_}) {
      if (*ref != nullptr) napi_delete_reference(env_, *ref);
      *ref = nullptr;
    }
  }

  napi_env env_ = nullptr;
  napi_threadsafe_function tsfn_ = nullptr;
  // Set by the thread-safe function's finalizer (environment teardown may run it before the GC
  // finalizes this object); shared because either may go first.
  std::shared_ptr<std::atomic<bool>> tsfn_finalized_;
  bool tsfn_released_ = false;
  bool cleanup_hook_added_ = false;
  std::vector<std::thread> threads_;

  // Submission queue: guarded by submit_mutex_.
  std::mutex submit_mutex_;
  std::condition_variable submit_cv_;
  std::deque<QueueRequest*> submitted_;
  uint32_t idle_ = 0;          // Workers waiting on submit_cv_.
  bool wake_pending_ = false;  // A worker has been notified and has not woken yet.
  bool stopping_ = false;

  // Completion list: guarded by completion_mutex_.
  std::mutex completion_mutex_;
  std::vector<QueueRequest*> completed_;
  bool drain_scheduled_ = false;  // A thread-safe-function call is pending.
  std::condition_variable executed_cv_;  // Signalled for WaitUntilUnused.
  uint32_t memory_waiters_ = 0;

  // JS thread only.
  std::vector<QueueRequest*> draining_;
  QueueRequest* in_flight_head_ = nullptr;
  QueueRequest* in_flight_tail_ = nullptr;
  size_t in_flight_ = 0;  // Submitted and not yet delivered.
  bool active_ = false;   // The thread-safe function and this object are ref'd.
  State state_ = State::kOpen;
  std::unique_ptr<Napi::Promise::Deferred> close_deferred_;
  napi_ref tags_ref_ = nullptr;
  napi_ref results_ref_ = nullptr;
  napi_ref syscalls_ref_ = nullptr;

  // The io_uring backend (JS thread only).
  bool ring_backend_ = false;  // Chosen at construction; `backend` reports it.
  bool ring_open_ = false;     // Until torn down.
  uint32_t range_threads_ = 0; // Workers started on the first zeroRange or punchHole.
  io_uring ring_{};
  RingHandles* handles_ = nullptr;
  unsigned ring_in_flight_ = 0;    // Requests holding an SQE or in the kernel, CQE not yet reaped.
  unsigned ring_unsubmitted_ = 0;  // SQEs filled and not yet consumed by the kernel.
  std::deque<QueueRequest*> ring_overflow_;  // Waiting for a free ring entry.
  std::vector<QueueRequest*> ring_done_;     // Finished, not yet delivered.
  std::vector<QueueRequest*> ring_again_;    // Scratch: to resubmit after a reap.
  napi_ref callback_ref_ = nullptr;
  napi_async_context async_context_ = nullptr;
  napi_async_cleanup_hook_handle async_hook_ = nullptr;
};

// errnoError(errno, syscall) => the Error the promise functions reject with, for IoQueue failures.
Napi::Value ErrnoErrorValue(const Napi::CallbackInfo& info) {
  const int err = static_cast<int>(ArgInteger(info, 0, "errno", 1, 4095));
  if (!info[1].IsString()) throw Napi::TypeError::New(info.Env(), "syscall must be a string");
  const std::string syscall = info[1].As<Napi::String>().Utf8Value();
  return ErrnoError(info.Env(), err, syscall.c_str()).Value();
}

// ---------------------------------------------------------------------------------------------------
// Exported functions

// open(path, {create?, readOnly?, direct?}) => {fd, direct}
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  if (path.empty() || path.size() >= PATH_MAX) {
    throw Napi::RangeError::New(env, "path length must be in [1, " + std::to_string(PATH_MAX - 1) +
                                         "] bytes");
  }
  if (path.find('\0') != std::string::npos) {
    throw Napi::TypeError::New(env, "path must not contain NUL bytes");
  }
  bool create = false;
  bool read_only = false;
  bool direct = false;
  if (!info[1].IsUndefined()) {
    if (!info[1].IsObject()) throw Napi::TypeError::New(env, "flags must be an object");
    Napi::Object flags = info[1].As<Napi::Object>();
    create = OptionalBool(env, flags, "create");
    read_only = OptionalBool(env, flags, "readOnly");
    direct = OptionalBool(env, flags, "direct");
  }

  const int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | (create ? O_CREAT : 0);
  int fd = RetryOnEintr([&] { return open(path.c_str(), flags | (direct ? O_DIRECT : 0), 0600); });
  if (fd < 0 && direct && errno == EINVAL) {
    // tmpfs before Linux 6.6, ramfs, procfs and some FUSE file systems refuse O_DIRECT with EINVAL
    // (with O_CREAT the file already exists by then). Fall back to buffered IO; the caller learns it
    // from direct: false and logs it once.
    direct = false;
    fd = RetryOnEintr([&] { return open(path.c_str(), flags, 0600); });
  }
  if (fd < 0) throw ErrnoError(env, errno, "open", path);

  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  result.Set("direct", Napi::Boolean::New(env, direct));
  return result;
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  const int fd = ArgFd(info, 0);
  // No retry on EINTR: Linux has released the descriptor already, and a retry could close a
  // descriptor another thread has just been given.
  if (close(fd) != 0 && errno != EINTR) throw ErrnoError(info.Env(), errno, "close");
  return info.Env().Undefined();
}

// allocAligned(sizeBytes, alignmentBytes = 4096) => Buffer: zero-filled, freed by the GC finalizer.
Napi::Value AllocAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t size = static_cast<size_t>(ArgInteger(info, 0, "sizeBytes", 1, kIoBytesMax));
  size_t alignment = kAlignmentBytesDefault;
  if (!info[1].IsUndefined()) {
    alignment = static_cast<size_t>(
        ArgInteger(info, 1, "alignmentBytes", sizeof(void*), kAlignmentBytesMax));
    if ((alignment & (alignment - 1)) != 0) {
      throw Napi::RangeError::New(env, "alignmentBytes must be a power of two (got " +
                                           std::to_string(alignment) + ")");
    }
  }
  void* memory = nullptr;
  const int rc = posix_memalign(&memory, alignment, size);
  if (rc != 0) throw ErrnoError(env, rc, "posix_memalign");
  assert(memory != nullptr && reinterpret_cast<uintptr_t>(memory) % alignment == 0);
  memset(memory, 0, size);

  // Tell V8 about the memory so that dropped buffers get collected under pressure.
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(size));
  size_t* hint = new size_t(size);
  Napi::Buffer<uint8_t> buffer = Napi::Buffer<uint8_t>::New(
      env, static_cast<uint8_t*>(memory), size,
      [](Napi::Env finalize_env, uint8_t* data, size_t* size_hint) {
        IoQueue::WaitUntilMemoryUnused(finalize_env, data, *size_hint);
        free(data);
        Napi::MemoryManagement::AdjustExternalMemory(finalize_env, -static_cast<int64_t>(*size_hint));
        delete size_hint;
      },
      hint);
  return buffer;
}

// addressAlignmentOf(buffer) => the largest power of two (capped at 2^30) dividing the address of the
// buffer's first byte. For tests and assertions.
Napi::Value AddressAlignmentOf(const Napi::CallbackInfo& info) {
  const Bytes bytes = ArgBytes(info, 0, "buffer");
  const uintptr_t address = reinterpret_cast<uintptr_t>(bytes.data);
  int shift = 0;
  while (shift < kAddressAlignmentShiftMax && address != 0 && (address & (uintptr_t{1} << shift)) == 0) {
    shift++;
  }
  if (address == 0) shift = kAddressAlignmentShiftMax;
  return Napi::Number::New(info.Env(), static_cast<double>(uint64_t{1} << shift));
}

Napi::Value ReadOrWrite(const Napi::CallbackInfo& info, bool write) {
  const int fd = ArgFd(info, 0);
  const Bytes bytes = ArgIoBuffer(info, 1);
  const uint64_t offset = static_cast<uint64_t>(ArgInteger(info, 2, "offsetBytes", 0, kSafeIntegerMax));
  return (new ReadWriteWorker(info.Env(), write, fd, bytes, offset))->QueueForPromise();
}

Napi::Value Pread(const Napi::CallbackInfo& info) { return ReadOrWrite(info, false); }
Napi::Value Pwrite(const Napi::CallbackInfo& info) { return ReadOrWrite(info, true); }

Napi::Value Fdatasync(const Napi::CallbackInfo& info) {
  const int fd = ArgFd(info, 0);
  return (new FdatasyncWorker(info.Env(), fd))->QueueForPromise();
}

Napi::Value Range(const Napi::CallbackInfo& info, RangeKind kind) {
  const int fd = ArgFd(info, 0);
  const double offset = ArgInteger(info, 1, "offsetBytes", 0, kSafeIntegerMax);
  const double length = ArgInteger(info, 2, "lengthBytes", 1, kSafeIntegerMax);
  if (offset + length > kSafeIntegerMax) {
    throw Napi::RangeError::New(info.Env(), "offsetBytes + lengthBytes must not exceed " +
                                                FormatNumber(kSafeIntegerMax));
  }
  return (new RangeWorker(info.Env(), kind, fd, static_cast<uint64_t>(offset),
                          static_cast<uint64_t>(length)))
      ->QueueForPromise();
}

Napi::Value PunchHole(const Napi::CallbackInfo& info) {
  return Range(info, RangeKind::kPunchHole);
}
Napi::Value ZeroRange(const Napi::CallbackInfo& info) {
  return Range(info, RangeKind::kZeroRange);
}

Napi::Value FileStatusFlags(const Napi::CallbackInfo& info) {
  const int fd = ArgFd(info, 0);
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0) throw ErrnoError(info.Env(), errno, "fcntl");
  return Napi::Number::New(info.Env(), flags);
}

Napi::Value IsBlockDevice(const Napi::CallbackInfo& info) {
  const int fd = ArgFd(info, 0);
  const struct stat st = FstatOrThrow(info.Env(), fd);
  return Napi::Boolean::New(info.Env(), S_ISBLK(st.st_mode));
}

Napi::Value SizeBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = ArgFd(info, 0);
  const struct stat st = FstatOrThrow(env, fd);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) throw ErrnoError(env, errno, "ioctl");
  }
  if (static_cast<double>(size) > kSafeIntegerMax) throw ErrnoError(env, EOVERFLOW, "ioctl");
  return Napi::Number::New(env, static_cast<double>(size));
}

Napi::Value LogicalBlockSizeBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = ArgFd(info, 0);
  const struct stat st = FstatOrThrow(env, fd);
  if (!S_ISBLK(st.st_mode)) return Napi::Number::New(env, kFileLogicalBlockBytes);
  int size = 0;
  if (ioctl(fd, BLKSSZGET, &size) != 0) throw ErrnoError(env, errno, "ioctl");
  assert(size >= 512 && (size & (size - 1)) == 0);
  return Napi::Number::New(env, size);
}

Napi::Value Truncate(const Napi::CallbackInfo& info) {
  const int fd = ArgFd(info, 0);
  const off_t size = static_cast<off_t>(ArgInteger(info, 1, "sizeBytes", 0, kSafeIntegerMax));
  if (RetryOnEintr([&] { return ftruncate(fd, size); }) != 0) {
    throw ErrnoError(info.Env(), errno, "ftruncate");
  }
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("allocAligned", Napi::Function::New(env, AllocAligned, "allocAligned"));
  exports.Set("addressAlignmentOf", Napi::Function::New(env, AddressAlignmentOf, "addressAlignmentOf"));
  exports.Set("pread", Napi::Function::New(env, Pread, "pread"));
  exports.Set("pwrite", Napi::Function::New(env, Pwrite, "pwrite"));
  exports.Set("fdatasync", Napi::Function::New(env, Fdatasync, "fdatasync"));
  exports.Set("punchHole", Napi::Function::New(env, PunchHole, "punchHole"));
  exports.Set("zeroRange", Napi::Function::New(env, ZeroRange, "zeroRange"));
  exports.Set("fileStatusFlags", Napi::Function::New(env, FileStatusFlags, "fileStatusFlags"));
  exports.Set("isBlockDevice", Napi::Function::New(env, IsBlockDevice, "isBlockDevice"));
  exports.Set("sizeBytes", Napi::Function::New(env, SizeBytes, "sizeBytes"));
  exports.Set("logicalBlockSizeBytes",
              Napi::Function::New(env, LogicalBlockSizeBytes, "logicalBlockSizeBytes"));
  exports.Set("truncate", Napi::Function::New(env, Truncate, "truncate"));
  exports.Set("errnoError", Napi::Function::New(env, ErrnoErrorValue, "errnoError"));
  exports.Set("IoQueue", IoQueue::DefineClass(env));

  exports.Set("O_RDONLY", Napi::Number::New(env, O_RDONLY));
  exports.Set("O_WRONLY", Napi::Number::New(env, O_WRONLY));
  exports.Set("O_RDWR", Napi::Number::New(env, O_RDWR));
  exports.Set("O_ACCMODE", Napi::Number::New(env, O_ACCMODE));
  exports.Set("O_CREAT", Napi::Number::New(env, O_CREAT));
  exports.Set("O_DIRECT", Napi::Number::New(env, O_DIRECT));
  exports.Set("O_CLOEXEC", Napi::Number::New(env, O_CLOEXEC));
  exports.Set("O_DSYNC", Napi::Number::New(env, O_DSYNC));
  exports.Set("O_SYNC", Napi::Number::New(env, O_SYNC));
  exports.Set("IO_BYTES_MAX", Napi::Number::New(env, static_cast<double>(kIoBytesMax)));
  exports.Set("ALIGNMENT_BYTES_DEFAULT",
              Napi::Number::New(env, static_cast<double>(kAlignmentBytesDefault)));
  exports.Set("ALIGNMENT_BYTES_MAX", Napi::Number::New(env, static_cast<double>(kAlignmentBytesMax)));
  exports.Set("IO_OP_READ", Napi::Number::New(env, kOpRead));
  exports.Set("IO_OP_WRITE", Napi::Number::New(env, kOpWrite));
  exports.Set("IO_OP_FDATASYNC", Napi::Number::New(env, kOpFdatasync));
  exports.Set("IO_OP_ZERO_RANGE", Napi::Number::New(env, kOpZeroRange));
  exports.Set("IO_OP_PUNCH_HOLE", Napi::Number::New(env, kOpPunchHole));
  exports.Set("IO_QUEUE_THREADS_DEFAULT", Napi::Number::New(env, kQueueThreadsDefault));
  exports.Set("IO_QUEUE_THREADS_MAX", Napi::Number::New(env, kQueueThreadsMax));
  exports.Set("IO_QUEUE_BATCH_MAX", Napi::Number::New(env, static_cast<double>(kBatchMax)));
  Napi::Array syscall_names = Napi::Array::New(env, kSyscallCount);
  for (uint32_t i = 0; i < kSyscallCount; i++) {
    syscall_names.Set(i, Napi::String::New(env, kSyscallNames[i]));
  }
  exports.Set("SYSCALL_NAMES", syscall_names);
  return exports;
}

}  // namespace

NODE_API_MODULE(pflex_io, Init)
