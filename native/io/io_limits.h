// Limits shared by the addon's modules (units last).
#ifndef PFLEX_IO_IO_LIMITS_H_
#define PFLEX_IO_IO_LIMITS_H_

#include <sys/types.h>

#include <cstddef>

namespace pflex_io {

static_assert(sizeof(off_t) == 8, "64-bit file offsets are required");

// One IO never exceeds io_bytes_max: it bounds the memory one request pins and the time one
// threadpool slot is busy.
constexpr size_t kIoBytesMax = 64u * 1024 * 1024;
constexpr size_t kAlignmentBytesDefault = 4096;
constexpr size_t kAlignmentBytesMax = 2u * 1024 * 1024;
constexpr double kSafeIntegerMax = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER

}  // namespace pflex_io

#endif  // PFLEX_IO_IO_LIMITS_H_
