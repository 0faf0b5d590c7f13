// The IoQueue's io_uring backend: reads, writes and fdatasync on an io_uring driven from the event
// loop, no threads. The interface is here for every build; the backend itself
// (io_uring_backend.cc) is compiled, and CreateIoUringBackend declared, only where liburing was
// found at configure time (PFLEX_HAVE_LIBURING, build_config.h).
//
// Everything runs on the JS thread. Queue() fills an SQE (or, with the ring's entries all in the
// kernel, waits in an overflow list); a uv_check and a uv_prepare handle call io_uring_submit once
// per event-loop phase when SQEs are pending, so a burst of submits costs one io_uring_enter.
// Completions signal an eventfd registered with the ring, watched by a uv_poll handle: on wake-up
// the CQ is drained fully (short IO and EINTR/EAGAIN resubmitted), pending SQEs are submitted, and
// the finished requests go to the queue's DeliverBatches in one batch, through onComplete called
// inside a callback scope (napi_make_callback) so promise reactions run right after it. The poll
// handle is ref'd only while the queue is busy. Environment teardown uses an async cleanup hook:
// wait for the ring's IO, close the handles, then let Node go on.
#ifndef PFLEX_IO_IO_URING_BACKEND_H_
#define PFLEX_IO_IO_URING_BACKEND_H_

#include <napi.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "build_config.h"
#include "queue_request.h"

namespace pflex_io {

// Calls onComplete once for entries [0, count) of the queue's arrays.
using BatchCall = std::function<void(size_t count, Napi::Int32Array tags, Napi::Float64Array results,
                                     Napi::Uint8Array syscalls)>;

// What the backend needs of its queue (JS thread only).
class RingClient {
 public:
  // Hands the finished requests in `done` to onComplete through `call`, a batch at a time; frees
  // them, clears the list, and may finish a close() (which tears the ring down). Returns the first
  // error a call threw; the rest of the batch is still delivered.
  virtual std::unique_ptr<Napi::Error> DeliverBatches(Napi::Env env, std::vector<QueueRequest*>* done,
                                                      const BatchCall& call) = 0;

 protected:
  ~RingClient() = default;
};

class RingBackend {
 public:
  virtual ~RingBackend() = default;

  // Until TearDown(): reads, writes and fdatasync go to the ring.
  virtual bool open() const = 0;
  // Hands `request` (a read, write or fdatasync) to the ring, or queues it while the ring is full.
  virtual void Queue(QueueRequest* request) = 0;
  // Busy (IO in flight): the poll handle keeps the event loop alive. Idle: it does not.
  virtual void SetBusy(bool busy) = 0;
  // Waits for at least one completion without delivering it (teardown, WaitUntilUnused); false when
  // nothing is in the ring (or it is closed).
  virtual bool WaitOne() = 0;
  // Waits until nothing is in the ring.
  virtual void DrainBlocking() = 0;
  // Closes the ring (nothing may be in it) and its handles. Idempotent.
  virtual void TearDown() = 0;
};

#if PFLEX_HAVE_LIBURING
// A ring of the queue's (`client`), delivering through `on_complete`; null where io_uring cannot
// be set up here (io_uring_setup refused by the kernel or a seccomp filter, no eventfd, ...).
std::unique_ptr<RingBackend> CreateIoUringBackend(Napi::Env env, Napi::Function on_complete,
                                                  RingClient* client);
#endif

}  // namespace pflex_io

#endif  // PFLEX_IO_IO_URING_BACKEND_H_
