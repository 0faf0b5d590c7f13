// Compiled only where binding.gyp found liburing (see io_uring_backend.h).
#include "io_uring_backend.h"

#if !PFLEX_HAVE_LIBURING
#error "io_uring_backend.cc is compiled only with liburing (binding.gyp adds it when PFLEX_HAVE_LIBURING=1)"
#endif

#include <liburing.h>
#include <uv.h>

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cassert>
#include <cstdint>
#include <deque>

namespace pflex_io {
namespace {

// Ring entries, which also bound the IO the kernel holds at once (more waits in user space).
constexpr unsigned kRingEntries = 256;

class IoUringBackend;

// The libuv handles of a ring: freed in the last close callback, which may run after the backend is
// gone.
struct RingHandles {
  uv_poll_t poll;
  uv_prepare_t prepare;
  uv_check_t check;
  IoUringBackend* backend;
  int eventfd;
  int open;  // Handles not closed yet.
  napi_async_cleanup_hook_handle hook;  // Removed once all are closed (teardown), or null.
};

class IoUringBackend final : public RingBackend {
 public:
  IoUringBackend(napi_env env, RingClient* client) : env_(env), client_(client) {}

  ~IoUringBackend() override {
    if (ring_open_) {
      DrainBlocking();  // Only at environment teardown can IO still be in flight here.
      TearDown(false);
    }
    // Left only at environment teardown, which frees the references itself.
    for (QueueRequest* request : ring_done_) delete request;
    for (QueueRequest* request : ring_overflow_) delete request;
  }

  bool Init(Napi::Env env, Napi::Function callback) {
    if (io_uring_queue_init(kRingEntries, &ring_, 0) != 0) return false;
    const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
      io_uring_queue_exit(&ring_);
      return false;
    }
    if (io_uring_register_eventfd(&ring_, efd) != 0) {
      io_uring_queue_exit(&ring_);
      close(efd);
      return false;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      io_uring_queue_exit(&ring_);
      close(efd);
      return false;
    }
    auto* handles = new RingHandles{};
    handles->backend = this;
    handles->eventfd = efd;
    if (uv_poll_init(loop, &handles->poll, efd) != 0) {
      delete handles;
      io_uring_queue_exit(&ring_);
      close(efd);
      return false;
    }
    uv_prepare_init(loop, &handles->prepare);
    uv_check_init(loop, &handles->check);
    handles->open = 3;
    handles->poll.data = handles;
    handles->prepare.data = handles;
    handles->check.data = handles;
    uv_poll_start(&handles->poll, UV_READABLE, &IoUringBackend::OnPoll);
    uv_prepare_start(&handles->prepare, &IoUringBackend::OnTick<uv_prepare_t>);
    uv_check_start(&handles->check, &IoUringBackend::OnTick<uv_check_t>);
    // None of them keeps the loop alive when idle; the poll handle is ref'd while IO is in flight.
    uv_unref(reinterpret_cast<uv_handle_t*>(&handles->poll));
    uv_unref(reinterpret_cast<uv_handle_t*>(&handles->prepare));
    uv_unref(reinterpret_cast<uv_handle_t*>(&handles->check));
    handles_ = handles;
    ring_open_ = true;

    napi_create_reference(env, callback, 1, &callback_ref_);
    napi_async_init(env, Napi::Object::New(env), Napi::String::New(env, "pflex_io.IoQueue"),
                    &async_context_);
    napi_add_async_cleanup_hook(env, &IoUringBackend::EnvCleanup, this, &async_hook_);
    return true;
  }

  bool open() const override { return ring_open_; }

  void Queue(QueueRequest* request) override {
    io_uring_sqe* sqe = ring_in_flight_ < kRingEntries ? io_uring_get_sqe(&ring_) : nullptr;
    if (sqe == nullptr) {
      ring_overflow_.push_back(request);
      return;
    }
    const uint64_t done = request->result.done;
    switch (request->op) {
      case kOpRead:
        io_uring_prep_read(sqe, request->fd, request->data + done,
                           static_cast<unsigned>(request->length - done), request->offset + done);
        break;
      case kOpWrite:
        io_uring_prep_write(sqe, request->fd, request->data + done,
                            static_cast<unsigned>(request->length - done), request->offset + done);
        break;
      case kOpFdatasync:
        io_uring_prep_fsync(sqe, request->fd, IORING_FSYNC_DATASYNC);
        break;
      default:
        assert(false);
    }
    io_uring_sqe_set_data(sqe, request);
    ring_in_flight_++;
    ring_unsubmitted_++;
  }

  void SetBusy(bool busy) override {
    if (handles_ == nullptr) return;
    uv_handle_t* poll = reinterpret_cast<uv_handle_t*>(&handles_->poll);
    if (busy) {
      uv_ref(poll);
    } else {
      uv_unref(poll);
    }
  }

  bool WaitOne() override {
    if (!ring_open_ || ring_in_flight_ == 0) return false;
    int ret;
    do {
      ret = io_uring_submit_and_wait(&ring_, 1);
    } while (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY);
    ring_unsubmitted_ = io_uring_sq_ready(&ring_);
    if (ret < 0) return false;
    Reap();
    return true;
  }

  void DrainBlocking() override {
    while (WaitOne()) {
    }
  }

  void TearDown() override { TearDown(false); }

 private:
  void Submit() {
    if (ring_unsubmitted_ == 0) return;
    // Failures (EAGAIN, EBUSY, EINTR) leave the SQEs in the ring: the next phase tries again.
    io_uring_submit(&ring_);
    ring_unsubmitted_ = io_uring_sq_ready(&ring_);
  }

  // Applies one CQE to its request; returns true when the request is finished.
  static bool Apply(QueueRequest* request, int res) {
    IoResult* result = &request->result;
    if (res == -EINTR || res == -EAGAIN) return false;  // Again, as the thread path retries EINTR.
    if (request->op == kOpFdatasync) {
      if (res < 0) result->Fail(kSyscallFdatasync, -res);
      return true;
    }
    const bool write = request->op == kOpWrite;
    if (res < 0) {
      result->Fail(write ? kSyscallPwrite : kSyscallPread, -res);
      return true;
    }
    if (res == 0) {
      if (write) {  // Never returned for a length > 0; refuse to spin if it ever is.
        result->Fail(kSyscallPwrite, EIO);
        return true;
      }
    } else {
      result->done += static_cast<uint64_t>(res);
      assert(result->done <= request->length);
      if (result->done == request->length) return true;
      // A short O_DIRECT read ends at the (possibly unaligned) end of a file; a further read from
      // there would fail with EINVAL instead of returning 0. Anything else: read the rest.
      if (write || !AtEndOfRegularFile(request->fd, request->offset + result->done)) return false;
    }
    // End of file or device: zero the rest of the buffer.
    memset(request->data + result->done, 0, request->length - result->done);
    return true;
  }

  // Takes every CQE: finished requests go to ring_done_, the others back to the ring; then moves
  // queued requests into the freed entries.
  void Reap() {
    for (;;) {
      unsigned head;
      unsigned seen = 0;
      io_uring_cqe* cqe;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        seen++;
        auto* request = static_cast<QueueRequest*>(io_uring_cqe_get_data(cqe));
        ring_in_flight_--;
        if (Apply(request, cqe->res)) {
          request->executed = true;
          ring_done_.push_back(request);
        } else {
          ring_again_.push_back(request);
        }
      }
      if (seen == 0) break;
      io_uring_cq_advance(&ring_, seen);
    }
    for (QueueRequest* request : ring_again_) Queue(request);
    ring_again_.clear();
    while (!ring_overflow_.empty() && ring_in_flight_ < kRingEntries) {
      QueueRequest* request = ring_overflow_.front();
      ring_overflow_.pop_front();
      Queue(request);
    }
  }

  template <typename Handle>
  static void OnTick(Handle* handle) {
    IoUringBackend* backend = static_cast<RingHandles*>(handle->data)->backend;
    if (backend != nullptr) backend->Submit();
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    IoUringBackend* backend = static_cast<RingHandles*>(handle->data)->backend;
    if (backend != nullptr) backend->OnReadable();
  }

  void OnReadable() {
    uint64_t count;
    // Cleared before the CQ is read: a completion posted after this signals again.
    while (read(handles_->eventfd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    Reap();
    Submit();  // Resubmissions and queued requests, before JavaScript runs.
    if (ring_done_.empty()) return;
    std::vector<QueueRequest*> done;
    done.swap(ring_done_);
    Napi::Env env(env_);
    std::unique_ptr<Napi::Error> first_error;
    try {
      Napi::HandleScope scope(env);
      first_error = client_->DeliverBatches(env, &done, [&](size_t count, Napi::Int32Array tags, Napi::Float64Array results, Napi::Uint8Array syscalls) {
        Napi::Function callback = Napi::Value(env, CallbackValue()).As<Napi::Function>();
        napi_value argv[] = {Napi::Number::New(env, static_cast<double>(count)), tags, results, syscalls};
        napi_value returned = nullptr;
        if (napi_make_callback(env, async_context_, env.Global(), callback, 4, argv, &returned) == napi_ok) {
          return;
        }
        // A throw, or JavaScript cannot run any more (a worker thread being terminated: no exception
        // is pending then, and nothing is left to tell).
        napi_value exception = nullptr;
        if (napi_get_and_clear_last_exception(env, &exception) != napi_ok || exception == nullptr) return;
        napi_valuetype type = napi_undefined;
        napi_typeof(env, exception, &type);
        if (type == napi_object || type == napi_function) throw Napi::Error(env, exception);
        if (type != napi_undefined) napi_fatal_exception(env, exception);
      });
    } catch (const Napi::Error& error) {
      first_error = std::make_unique<Napi::Error>(error);
    } catch (...) {
    }
    // As for any other callback: an uncaught exception.
    if (first_error) {
      Napi::HandleScope scope(env);
      napi_fatal_exception(env, first_error->Value());
    }
  }

  napi_value CallbackValue() {
    napi_value value = nullptr;
    NAPI_THROW_IF_FAILED(env_, napi_get_reference_value(env_, callback_ref_, &value), nullptr);
    return value;
  }

  // Environment teardown: wait for the ring's IO (its buffers are about to go), then close.
  static void EnvCleanup(napi_async_cleanup_hook_handle handle, void* arg) {
    IoUringBackend* backend = static_cast<IoUringBackend*>(arg);
    backend->DrainBlocking();
    backend->TearDown(true);
  }

  void TearDown(bool from_cleanup_hook) {
    if (!ring_open_) return;
    ring_open_ = false;
    io_uring_queue_exit(&ring_);
    RingHandles* handles = handles_;
    handles_ = nullptr;
    handles->backend = nullptr;
    if (from_cleanup_hook) {
      handles->hook = async_hook_;  // Node waits for the handles to close.
    } else if (async_hook_ != nullptr) {
      napi_remove_async_cleanup_hook(async_hook_);
    }
    async_hook_ = nullptr;
    auto closed = [](uv_handle_t* closed_handle) {
      auto* owner = static_cast<RingHandles*>(closed_handle->data);
      if (--owner->open > 0) return;
      close(owner->eventfd);
      if (owner->hook != nullptr) napi_remove_async_cleanup_hook(owner->hook);
      delete owner;
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&handles->poll), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&handles->prepare), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&handles->check), closed);
    if (async_context_ != nullptr) napi_async_destroy(env_, async_context_);
    async_context_ = nullptr;
    if (callback_ref_ != nullptr) napi_delete_reference(env_, callback_ref_);
    callback_ref_ = nullptr;
  }

  const napi_env env_;
  RingClient* const client_;
  bool ring_open_ = false;  // From Init until torn down.
  io_uring ring_{};
  RingHandles* handles_ = nullptr;
  unsigned ring_in_flight_ = 0;    // Requests holding an SQE or in the kernel, CQE not yet reaped.
  unsigned ring_unsubmitted_ = 0;  // SQEs filled and not yet consumed by the kernel.
  std::deque<QueueRequest*> ring_overflow_;  // Waiting for a free ring entry.
  std::vector<QueueRequest*> ring_done_;     // Finished, not yet delivered.
  std::vector<QueueRequest*> ring_again_;    // Scratch: to resubmit after a reap.
  napi_ref callback_ref_ = nullptr;
  napi_async_context async_context_ = nullptr;
  napi_async_cleanup_hook_handle async_hook_ = nullptr;
};

}  // namespace

std::unique_ptr<RingBackend> CreateIoUringBackend(Napi::Env env, Napi::Function on_complete,
                                                  RingClient* client) {
  auto backend = std::make_unique<IoUringBackend>(env, client);
  if (!backend->Init(env, on_complete)) return nullptr;
  return backend;
}

}  // namespace pflex_io
