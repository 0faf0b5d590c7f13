// The data-plane calls that return a Promise: one Napi::AsyncWorker per call on the libuv
// threadpool (pread, pwrite, fdatasync, punchHole, zeroRange). Argument errors throw before any
// work is queued; syscall failures reject with an errno-coded Error (errors.h).
#ifndef PFLEX_IO_PROMISE_WORKERS_H_
#define PFLEX_IO_PROMISE_WORKERS_H_

#include <napi.h>

namespace pflex_io {

// pread(fd, buffer, offsetBytes) => Promise<bytes read>; the rest of buffer is zeroed at EOF.
Napi::Value Pread(const Napi::CallbackInfo& info);
// pwrite(fd, buffer, offsetBytes) => Promise<buffer.length>.
Napi::Value Pwrite(const Napi::CallbackInfo& info);
// fdatasync(fd) => Promise<void>.
Napi::Value Fdatasync(const Napi::CallbackInfo& info);
// punchHole(fd, offsetBytes, lengthBytes) => Promise<void>.
Napi::Value PunchHole(const Napi::CallbackInfo& info);
// zeroRange(fd, offsetBytes, lengthBytes) => Promise<void>.
Napi::Value ZeroRange(const Napi::CallbackInfo& info);

}  // namespace pflex_io

#endif  // PFLEX_IO_PROMISE_WORKERS_H_
