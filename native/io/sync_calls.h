// The control-plane calls: synchronous on the JS thread (they are rare and cheap). Argument errors
// throw TypeError / RangeError; syscall failures throw an errno-coded Error (errors.h).
#ifndef PFLEX_IO_SYNC_CALLS_H_
#define PFLEX_IO_SYNC_CALLS_H_

#include <napi.h>

namespace pflex_io {

// open(path, {create?, readOnly?, direct?}) => {fd, direct}
Napi::Value Open(const Napi::CallbackInfo& info);
// close(fd)
Napi::Value Close(const Napi::CallbackInfo& info);
// allocAligned(sizeBytes, alignmentBytes = 4096) => Buffer: zero-filled, freed by the GC finalizer.
Napi::Value AllocAligned(const Napi::CallbackInfo& info);
// addressAlignmentOf(buffer) => the largest power of two (capped at 2^30) dividing its address.
Napi::Value AddressAlignmentOf(const Napi::CallbackInfo& info);
// fileStatusFlags(fd) => fcntl(F_GETFL)
Napi::Value FileStatusFlags(const Napi::CallbackInfo& info);
// isBlockDevice(fd) => boolean
Napi::Value IsBlockDevice(const Napi::CallbackInfo& info);
// sizeBytes(fd) => st_size, or BLKGETSIZE64 for a block device
Napi::Value SizeBytes(const Napi::CallbackInfo& info);
// logicalBlockSizeBytes(fd) => BLKSSZGET for a block device, 4096 for a file
Napi::Value LogicalBlockSizeBytes(const Napi::CallbackInfo& info);
// truncate(fd, sizeBytes)
Napi::Value Truncate(const Napi::CallbackInfo& info);
// errnoError(errno, syscall) => the Error the promise functions reject with, for IoQueue failures.
Napi::Value ErrnoErrorValue(const Napi::CallbackInfo& info);

}  // namespace pflex_io

#endif  // PFLEX_IO_SYNC_CALLS_H_
