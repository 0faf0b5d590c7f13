#include "syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "errors.h"
#include "io_limits.h"

namespace pflex_io {
namespace {

// Chunk of zeros written when neither fallocate nor BLKZEROOUT can zero a range.
constexpr size_t kZeroChunkBytes = 1024u * 1024;

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

bool Fallocate(int fd, int mode, uint64_t offset, uint64_t length, IoResult* result) {
  const off_t at = static_cast<off_t>(offset);
  const off_t count = static_cast<off_t>(length);
  if (RetryOnEintr([&] { return fallocate(fd, mode, at, count); }) == 0) return true;
  return result->Fail(kSyscallFallocate, errno);
}

}  // namespace

bool AtEndOfRegularFile(int fd, uint64_t position) {
  struct stat st;
  if (fstat(fd, &st) != 0) return false;  // The next pread reports the real error.
  return S_ISREG(st.st_mode) && position >= static_cast<uint64_t>(st.st_size);
}

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

}  // namespace pflex_io
