#include "sync_calls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cassert>
#include <cstdint>
#include <string>

#include "args.h"
#include "errors.h"
#include "io_limits.h"
#include "io_queue.h"

namespace pflex_io {
namespace {

// O_DIRECT on a file needs the alignment of the device under the file system (512 or 4096 bytes);
// 4096 satisfies both.
constexpr uint32_t kFileLogicalBlockBytes = 4096;
constexpr int kAddressAlignmentShiftMax = 30;

struct stat FstatOrThrow(Napi::Env env, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw ErrnoError(env, errno, "fstat");
  return st;
}

}  // namespace

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
        WaitUntilMemoryUnusedByQueues(finalize_env, data, *size_hint);
        free(data);
        Napi::MemoryManagement::AdjustExternalMemory(finalize_env, -static_cast<int64_t>(*size_hint));
        delete size_hint;
      },
      hint);
  return buffer;
}

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

Napi::Value ErrnoErrorValue(const Napi::CallbackInfo& info) {
  const int err = static_cast<int>(ArgInteger(info, 0, "errno", 1, 4095));
  if (!info[1].IsString()) throw Napi::TypeError::New(info.Env(), "syscall must be a string");
  const std::string syscall = info[1].As<Napi::String>().Utf8Value();
  return ErrnoError(info.Env(), err, syscall.c_str()).Value();
}

}  // namespace pflex_io
