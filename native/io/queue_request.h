// One IoQueue request, shared by the queue (io_queue.cc) and its io_uring backend
// (io_uring_backend.cc).
#ifndef PFLEX_IO_QUEUE_REQUEST_H_
#define PFLEX_IO_QUEUE_REQUEST_H_

#include <node_api.h>

#include <cstdint>

#include "syscalls.h"

namespace pflex_io {

// submit()'s op argument; exported as IO_OP_*.
enum QueueOp : uint8_t {
  kOpRead = 0,
  kOpWrite,
  kOpFdatasync,
  kOpZeroRange,
  kOpPunchHole,
  kOpCount,
};

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

}  // namespace pflex_io

#endif  // PFLEX_IO_QUEUE_REQUEST_H_
