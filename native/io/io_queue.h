// IoQueue: batched data-plane IO for the hot path (DESIGN §7, §10); see io_queue.cc.
#ifndef PFLEX_IO_IO_QUEUE_H_
#define PFLEX_IO_IO_QUEUE_H_

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace pflex_io {

// Exported as IO_QUEUE_THREADS_DEFAULT, IO_QUEUE_THREADS_MAX and IO_QUEUE_BATCH_MAX.
constexpr uint32_t kQueueThreadsDefault = 8;
constexpr uint32_t kQueueThreadsMax = 64;
// Completions delivered per onComplete call; a larger batch is delivered in several calls.
constexpr size_t kBatchMax = 1024;

// The IoQueue class, for the module's exports.
Napi::Function DefineIoQueueClass(Napi::Env env);

// Called by allocAligned's finalizer, on the JS thread, before it frees [data, data + size): waits
// until no request of a queue of `env` is still using that memory. The GC never finalizes a buffer
// in flight (the queue holds a reference to it), but environment teardown (a worker thread ending
// with IO in flight) frees external buffers before any cleanup hook can stop the queues. Memory that
// V8 allocates is freed only after the hooks have run.
void WaitUntilMemoryUnusedByQueues(napi_env env, const uint8_t* data, size_t size);

}  // namespace pflex_io

#endif  // PFLEX_IO_IO_QUEUE_H_
