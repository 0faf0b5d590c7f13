// The system calls of the data plane. These run on a worker thread (libuv's threadpool for the
// promise functions, an IoQueue's own threads for the queue) and touch no JavaScript values: a
// failure is recorded as (syscall, errno) and turned into an Error on the JS thread.
#ifndef PFLEX_IO_SYSCALLS_H_
#define PFLEX_IO_SYSCALLS_H_

#include <cassert>
#include <cstddef>
#include <cstdint>

namespace pflex_io {

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
inline constexpr const char* kSyscallNames[kSyscallCount] = {
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

// True when `fd` is a regular file whose size is at most `position`; false on any fstat error (the
// next pread reports the real one).
bool AtEndOfRegularFile(int fd, uint64_t position);

// pread/pwrite of all of [data, data + length), retrying short IO and EINTR. A read stops at the end
// of the file or device and zero-fills the rest of the buffer.
void ExecuteReadWrite(bool write, int fd, uint8_t* data, size_t length, uint64_t offset,
                      IoResult* result);

void ExecuteFdatasync(int fd, IoResult* result);

// punchHole: fallocate(PUNCH_HOLE | KEEP_SIZE). zeroRange: fallocate(ZERO_RANGE), else punch hole,
// else writing zeros (files); BLKZEROOUT, else writing zeros (block devices). Never grows a file.
void ExecuteRange(RangeKind kind, int fd, uint64_t offset, uint64_t length, IoResult* result);

}  // namespace pflex_io

#endif  // PFLEX_IO_SYSCALLS_H_
