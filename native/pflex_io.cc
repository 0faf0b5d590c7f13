// pflex_io: O_DIRECT block IO for the SDS storage engine (DESIGN §7).
//
// Control-plane calls (open, close, sizes, allocAligned) run synchronously on the JS thread: they are
// rare and cheap. Data-plane calls (pread, pwrite, fdatasync, punchHole, zeroRange) run on the libuv
// threadpool and return Promises, so a slow disk never stalls the event loop.
//
// Errors: argument mistakes throw TypeError / RangeError before any syscall (no input may crash the
// process); syscall failures become an Error with .code (errno name, e.g. "EIO"), .errno (the positive
// C errno, as in os.constants.errno), .syscall and a message like "pwrite: Input/output error (EIO)".
//
// Alignment for O_DIRECT (buffer address, length, offset) is left to the kernel to judge: the
// requirement depends on the device (512 or 4096 bytes, sometimes a smaller DMA alignment for the
// address), and a misaligned request comes back as a rejection with code EINVAL, never a crash.

#include <napi.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

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
// Threadpool work. Execute() runs on a libuv worker thread and touches no JavaScript values; it records
// a failure as (syscall, errno) and OnOK() settles the promise on the JS thread.

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* syscall)
      : Napi::AsyncWorker(env, "pflex_io"),
        deferred_(Napi::Promise::Deferred::New(env)),
        syscall_(syscall) {}

  Napi::Promise QueueForPromise() {
    Napi::Promise promise = deferred_.Promise();
    Queue();  // The worker deletes itself after OnOK().
    return promise;
  }

 protected:
  // Execute() never calls SetError(): errors travel in error_ so rejections carry .code and .errno.
  void OnOK() override {
    if (error_ != 0) {
      deferred_.Reject(ErrnoError(Env(), error_, syscall_).Value());
    } else {
      deferred_.Resolve(Result());
    }
  }

  virtual Napi::Value Result() { return Env().Undefined(); }

  // Records the failure of `syscall`; returns false so callers may write `return Fail(...)`.
  bool Fail(const char* syscall, int err) {
    assert(err > 0);
    syscall_ = syscall;
    error_ = err;
    return false;
  }

  // Writes zeros over [offset, offset + length) with an aligned buffer (the fd may be O_DIRECT).
  bool WriteZeros(int fd, uint64_t offset, uint64_t length) {
    assert(length > 0);
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(length, kZeroChunkBytes));
    void* zeros = nullptr;
    int rc = posix_memalign(&zeros, kAlignmentBytesDefault, chunk);
    if (rc != 0) return Fail("posix_memalign", rc);
    memset(zeros, 0, chunk);
    bool ok = true;
    uint64_t done = 0;
    while (done < length) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk, length - done));
      ssize_t n = pwrite(fd, zeros, want, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ok = Fail("pwrite", errno);
        break;
      }
      if (n == 0) {  // Never returned for want > 0; refuse to spin if it ever is.
        ok = Fail("pwrite", EIO);
        break;
      }
      done += static_cast<uint64_t>(n);
    }
    free(zeros);
    return ok;
  }

  Napi::Promise::Deferred deferred_;
  const char* syscall_;
  int error_ = 0;
};

class ReadWriteWorker final : public PromiseWorker {
 public:
  ReadWriteWorker(Napi::Env env, bool write, int fd, const Bytes& bytes, uint64_t offset)
      : PromiseWorker(env, write ? "pwrite" : "pread"),
        write_(write),
        fd_(fd),
        data_(bytes.data),
        length_(bytes.length),
        offset_(offset),
        // The reference keeps the buffer (and its memory) alive until the worker is deleted on the JS
        // thread, after OnOK(): the GC cannot free memory a worker thread is still reading or writing.
        buffer_reference_(Napi::Persistent(bytes.object)) {}

 private:
  void Execute() override {
    assert(length_ > 0 && length_ <= kIoBytesMax);
    while (done_ < length_) {
      uint8_t* data = data_ + done_;
      const size_t want = length_ - done_;
      const off_t at = static_cast<off_t>(offset_ + done_);
      ssize_t n = write_ ? pwrite(fd_, data, want, at) : pread(fd_, data, want, at);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        Fail(syscall_, errno);
        return;
      }
      if (n == 0) {
        if (write_) {  // Never returned for want > 0; refuse to spin if it ever is.
          Fail("pwrite", EIO);
          return;
        }
        break;  // End of file or device.
      }
      assert(static_cast<size_t>(n) <= want);
      done_ += static_cast<size_t>(n);
      // A short O_DIRECT read ends at the (possibly unaligned) end of the file; a further pread from
      // there would fail with EINVAL instead of returning 0, so stop at the file's size.
      if (!write_ && done_ < length_ && AtEndOfRegularFile(offset_ + done_)) break;
    }
    assert(done_ <= length_);
    if (!write_ && done_ < length_) memset(data_ + done_, 0, length_ - done_);
  }

  bool AtEndOfRegularFile(uint64_t position) {
    struct stat st;
    if (fstat(fd_, &st) != 0) return false;  // The next pread reports the real error.
    return S_ISREG(st.st_mode) && position >= static_cast<uint64_t>(st.st_size);
  }

  Napi::Value Result() override { return Napi::Number::New(Env(), static_cast<double>(done_)); }

  const bool write_;
  const int fd_;
  uint8_t* const data_;
  const size_t length_;
  const uint64_t offset_;
  size_t done_ = 0;
  Napi::ObjectReference buffer_reference_;
};

class FdatasyncWorker final : public PromiseWorker {
 public:
  FdatasyncWorker(Napi::Env env, int fd) : PromiseWorker(env, "fdatasync"), fd_(fd) {}

 private:
  void Execute() override {
    if (RetryOnEintr([&] { return fdatasync(fd_); }) != 0) Fail("fdatasync", errno);
  }
  const int fd_;
};

class RangeWorker final : public PromiseWorker {
 public:
  enum class Kind { kPunchHole, kZeroRange };

  RangeWorker(Napi::Env env, Kind kind, int fd, uint64_t offset, uint64_t length)
      : PromiseWorker(env, "fallocate"), kind_(kind), fd_(fd), offset_(offset), length_(length) {}

 private:
  void Execute() override {
    assert(length_ > 0);
    if (kind_ == Kind::kPunchHole) {
      Fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
      return;
    }
    struct stat st;
    if (fstat(fd_, &st) != 0) {
      Fail("fstat", errno);
      return;
    }
    if (S_ISBLK(st.st_mode)) {
      uint64_t range[2] = {offset_, length_};
      if (RetryOnEintr([&] { return ioctl(fd_, BLKZEROOUT, range); }) == 0) return;
      if (!IsUnsupported(errno)) {
        Fail("ioctl", errno);
        return;
      }
      WriteZeros(fd_, offset_, length_);
      return;
    }
    // Regular file: ZERO_RANGE keeps the blocks allocated (no fragmentation on later writes); a hole
    // reads back as zeros too; writing zeros is the last resort.
    if (Fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE) || !IsUnsupported(error_)) return;
    error_ = 0;
    if (Fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) || !IsUnsupported(error_)) return;
    error_ = 0;
    // Like KEEP_SIZE, never grow the file: zero only the part below its size.
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (offset_ >= size) return;
    WriteZeros(fd_, offset_, std::min(length_, size - offset_));
  }

  bool Fallocate(int mode) {
    const off_t offset = static_cast<off_t>(offset_);
    const off_t length = static_cast<off_t>(length_);
    if (RetryOnEintr([&] { return fallocate(fd_, mode, offset, length); }) == 0) return true;
    return Fail("fallocate", errno);
  }

  const Kind kind_;
  const int fd_;
  const uint64_t offset_;
  const uint64_t length_;
};

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
  return Napi::Buffer<uint8_t>::New(
      env, static_cast<uint8_t*>(memory), size,
      [](Napi::Env finalize_env, uint8_t* data, size_t* size_hint) {
        free(data);
        Napi::MemoryManagement::AdjustExternalMemory(finalize_env, -static_cast<int64_t>(*size_hint));
        delete size_hint;
      },
      hint);
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

Napi::Value Range(const Napi::CallbackInfo& info, RangeWorker::Kind kind) {
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
  return Range(info, RangeWorker::Kind::kPunchHole);
}
Napi::Value ZeroRange(const Napi::CallbackInfo& info) {
  return Range(info, RangeWorker::Kind::kZeroRange);
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
  return exports;
}

}  // namespace

NODE_API_MODULE(pflex_io, Init)
