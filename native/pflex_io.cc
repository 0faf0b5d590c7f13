// pflex_io: O_DIRECT block IO for the SDS storage engine (DESIGN §7). This file is the module's
// entry: it exports what the modules under native/io/ define.
//
// Control-plane calls (open, close, sizes, allocAligned: io/sync_calls.h) run synchronously on the
// JS thread: they are rare and cheap. Data-plane calls (pread, pwrite, fdatasync, punchHole,
// zeroRange: io/promise_workers.h) run on the libuv threadpool and return Promises, so a slow disk
// never stalls the event loop. The IoQueue class (io/io_queue.h) runs the same calls
// (io/syscalls.h) on an io_uring driven from the event loop (io/io_uring_backend.h: the default where
// the addon was built with liburing and the kernel allows it) or on its own threads, and hands
// completions to one JS callback per batch: the hot path (the SDS's chunk store) uses it, since it
// costs far less per IO. IO_URING_BUILT tells whether the io_uring backend was compiled in
// (binding.gyp decides from scripts/native/detect-liburing.cjs at npm install).
//
// Errors (io/errors.h, io/args.h): argument mistakes throw TypeError / RangeError before any
// syscall (no input may crash the process); syscall failures become an Error with .code (errno
// name, e.g. "EIO"), .errno (the positive C errno, as in os.constants.errno), .syscall and a message
// like "pwrite: Input/output error (EIO)".
//
// Alignment for O_DIRECT (buffer address, length, offset) is left to the kernel to judge: the
// requirement depends on the device (512 or 4096 bytes, sometimes a smaller DMA alignment for the
// address), and a misaligned request comes back as a rejection with code EINVAL, never a crash.

#include <napi.h>

#include <fcntl.h>

#include <cstdint>

#include "io/build_config.h"
#include "io/io_limits.h"
#include "io/io_queue.h"
#include "io/promise_workers.h"
#include "io/queue_request.h"
#include "io/sync_calls.h"
#include "io/syscalls.h"

namespace {

using namespace pflex_io;

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
  exports.Set("IoQueue", DefineIoQueueClass(env));

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
  // True when the IoQueue's io_uring backend was compiled in (liburing found at npm install); false:
  // every IoQueue runs on threads, whatever backend it is asked for.
  exports.Set("IO_URING_BUILT", Napi::Boolean::New(env, kIoUringBuilt));
  return exports;
}

}  // namespace

NODE_API_MODULE(pflex_io, Init)
