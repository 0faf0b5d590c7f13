#include "io_queue.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "args.h"
#include "build_config.h"
#include "errors.h"
#include "io_limits.h"
#include "io_uring_backend.h"
#include "queue_request.h"
#include "syscalls.h"

namespace pflex_io {
namespace {

// IoQueue: batched data-plane IO for the hot path (DESIGN §7, §10).
//
// Two backends, chosen at construction: the io_uring one (io_uring_backend.h: no threads for read,
// write and fdatasync; zeroRange and punchHole still run on a few worker threads started on first
// use), compiled in only where liburing was found at npm install, and the thread one described here.
// Both deliver through the same arrays and onComplete, with the same results and errors.
//
// The promise functions (promise_workers.h) cost one AsyncWorker, one promise and one callback scope
// per IO on the JS thread. An IoQueue has its own worker threads and hands completions back in
// batches:
//
//   submit(op, fd, buffer, offsetBytes, lengthBytes, tag)   JS thread; returns nothing
//     -> submission queue (mutex + condvar) -> worker thread runs the system calls
//     -> completion list (mutex); the first completion of a batch schedules ONE thread-safe-function
//        call (one uv_async wake-up); more completions join the list until the JS thread drains it
//     -> onComplete(count, tags, results, syscalls)          JS thread, once per batch (<= kBatchMax)
//
// `tags` (Int32Array), `results` (Float64Array) and `syscalls` (Uint8Array) are allocated once and
// reused for every batch; only their first `count` entries are meaningful and only during the call.
// results[i] >= 0: bytes read or written (0 for fdatasync, zeroRange, punchHole); < 0: -errno, and
// syscalls[i] is the index in SYSCALL_NAMES of the call that failed. No JS object is made per IO.
//
// Lifetime:
// - Each submitted buffer is held by a napi_ref from submit until its completion is delivered on the
//   JS thread, so the GC cannot free memory a worker is using.
// - While any IO is in flight the thread-safe function is ref'd (the process does not exit mid-IO)
//   and the queue object itself is held strongly; when idle both are released, so an idle queue
//   keeps neither the event loop nor itself alive.
// - close() stops new submissions (they throw ERR_IO_QUEUE_CLOSED), lets the workers finish what is
//   queued, delivers every completion, joins the threads and resolves its promise.
// - An idle queue collected by the GC without close(), and a queue alive at environment teardown,
//   stop and join their threads (teardown waits for IO in flight: the buffers must outlive it).
//   Teardown frees allocAligned buffers before any cleanup hook runs, so their finalizer first waits
//   for the requests using their memory (WaitUntilMemoryUnused).
// - A throw from onComplete does not stop the batch: the rest is delivered, then the first error is
//   rethrown to Node, which handles it by its N-API policy for thread-safe-function callbacks.
//
// Wake-ups: a submit wakes one idle worker only when no wake-up is already pending; a woken worker
// that leaves work in the queue wakes the next one. A burst of submits thus costs the JS thread at
// most one futex wake, and the workers fan out among themselves.

// With the io_uring backend: the worker threads started, on first use, for zeroRange and punchHole.
constexpr uint32_t kRingRangeThreadsMax = 2;
constexpr double kTagMax = 2147483647.0;  // INT32_MAX: tags travel in an Int32Array.

Napi::Error QueueClosedError(Napi::Env env) {
  Napi::Error error = Napi::Error::New(env, "the IoQueue is closed");
  error.Set("code", Napi::String::New(env, "ERR_IO_QUEUE_CLOSED"));
  return error;
}

// The value a raw napi_ref holds (a Napi::Reference built over it would delete it when destroyed).
template <typename T>
T RefValue(Napi::Env env, napi_ref ref) {
  napi_value value = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_get_reference_value(env, ref, &value), T());
  return Napi::Value(env, value).As<T>();
}

class IoQueue;

// Queues whose environment cleanup hook is registered, with their environment (any thread's).
struct QueueRegistry {
  std::mutex mutex;
  std::vector<std::pair<napi_env, IoQueue*>> queues;
};

QueueRegistry& Registry() {
  static QueueRegistry* registry = new QueueRegistry();  // Never destroyed: workers may outlive exit.
  return *registry;
}

class IoQueue final : public Napi::ObjectWrap<IoQueue>, private RingClient {
 public:
  // See WaitUntilMemoryUnusedByQueues (io_queue.h).
  static void WaitUntilMemoryUnused(napi_env env, const uint8_t* data, size_t size) {
    QueueRegistry& registry = Registry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    for (const auto& [queue_env, queue] : registry.queues) {
      if (queue_env == env) queue->WaitUntilUnused(data, size);
    }
  }

  static Napi::Function DefineClass(Napi::Env env) {
    return Napi::ObjectWrap<IoQueue>::DefineClass(
        env, "IoQueue",
        {
            InstanceMethod<&IoQueue::Submit>("submit"),
            InstanceMethod<&IoQueue::Close>("close"),
            InstanceAccessor<&IoQueue::InFlight>("inFlight"),
            InstanceAccessor<&IoQueue::Threads>("threads"),
            InstanceAccessor<&IoQueue::Closed>("closed"),
            InstanceAccessor<&IoQueue::BackendName>("backend"),
        });
  }

  // new IoQueue(onComplete, threads = 8, backend = "auto")
  //   backend "auto": io_uring where the kernel allows it, else threads; "io_uring": the same (it still
  //   falls back to threads where io_uring_setup fails, or where the addon was built without liburing:
  //   `backend` tells which one runs, IO_URING_BUILT whether it could have been io_uring); "threads".
  explicit IoQueue(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IoQueue>(info) {
    Napi::Env env = info.Env();
    env_ = env;
    if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "onComplete must be a function");
    uint32_t threads = kQueueThreadsDefault;
    if (!info[1].IsUndefined()) {
      threads = static_cast<uint32_t>(ArgInteger(info, 1, "threads", 1, kQueueThreadsMax));
    }
    std::string backend = "auto";
    if (!IsNullish(info[2])) {
      if (!info[2].IsString()) throw Napi::TypeError::New(env, "backend must be a string");
      backend = info[2].As<Napi::String>().Utf8Value();
      if (backend != "auto" && backend != "threads" && backend != "io_uring") {
        throw Napi::RangeError::New(env, "backend must be 'auto', 'threads' or 'io_uring' (got '" +
                                             backend + "')");
      }
    }
    CreateArrays(env);

    tsfn_finalized_ = std::make_shared<std::atomic<bool>>(false);
    auto* finalized = new std::shared_ptr<std::atomic<bool>>(tsfn_finalized_);
    napi_status status = napi_create_threadsafe_function(
        env, info[0], nullptr, Napi::String::New(env, "pflex_io.IoQueue"), 0, 1, finalized,
        [](napi_env, void* data, void*) {
          auto* flag = static_cast<std::shared_ptr<std::atomic<bool>>*>(data);
          (*flag)->store(true);
          delete flag;
        },
        this, &IoQueue::CallJs, &tsfn_);
    if (status != napi_ok) {
      delete finalized;
      ReleaseArrays();
      throw Napi::Error::New(env, "napi_create_threadsafe_function failed");
    }
    // Idle: the async handle must not keep the event loop alive.
    napi_unref_threadsafe_function(env, tsfn_);

    int spawn_error = 0;
#if PFLEX_HAVE_LIBURING
    if (backend != "threads") ring_ = CreateIoUringBackend(env, info[0].As<Napi::Function>(), this);
#endif
    if (ring_ != nullptr) {
      // Reads, writes and fdatasync go to the ring; zeroRange and punchHole start a few threads
      // when first used.
      range_threads_ = std::min(threads, kRingRangeThreadsMax);
    } else {
      spawn_error = SpawnThreads(threads);
    }
    if (spawn_error != 0) {
      StopThreads();
      napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
      tsfn_released_ = true;
      ReleaseArrays();
      state_ = State::kClosed;
      throw ErrnoError(env, spawn_error, "pthread_create");
    }
    AddCleanupHook();
  }

  ~IoQueue() override {
    // Closed: nothing left. Otherwise the GC found the queue idle and unreachable (it is held strongly
    // while IO is in flight), or the environment is going away.
    if (state_ == State::kClosed) return;
    StopThreads();
    ring_.reset();  // Waits for the ring's IO: only at environment teardown can some be in flight.
    RemoveCleanupHook();
    if (!tsfn_released_ && !tsfn_finalized_->load()) {
      napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
    }
    tsfn_released_ = true;
    // Left only at environment teardown, which frees the references itself.
    for (QueueRequest* request : submitted_) delete request;
    for (QueueRequest* request : completed_) delete request;
    for (QueueRequest* request : draining_) delete request;
    ReleaseArrays();
  }

 private:
  enum class State { kOpen, kClosing, kClosed };

  // submit(op, fd, buffer, offsetBytes, lengthBytes, tag)
  //   read/write:         buffer (1 .. IO_BYTES_MAX bytes), offsetBytes; lengthBytes undefined or
  //                       buffer.length.
  //   zeroRange/punchHole: buffer undefined or null; offsetBytes; lengthBytes >= 1.
  //   fdatasync:          buffer undefined or null; offsetBytes and lengthBytes undefined or 0.
  //   tag:                an integer in [0, 2^31 - 1], handed back with the completion.
  Napi::Value Submit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_ != State::kOpen) throw QueueClosedError(env);
    const auto op = static_cast<QueueOp>(ArgInteger(info, 0, "op", 0, kOpCount - 1));
    const int fd = ArgFd(info, 1);
    QueueRequest request{};
    request.op = op;
    request.fd = fd;
    Napi::Object buffer;
    switch (op) {
      case kOpRead:
      case kOpWrite: {
        const Bytes bytes = ArgIoBuffer(info, 2);
        request.offset = static_cast<uint64_t>(ArgInteger(info, 3, "offsetBytes", 0, kSafeIntegerMax));
        if (!info[4].IsUndefined()) {
          const double length = static_cast<double>(bytes.length);
          ArgInteger(info, 4, "lengthBytes (the buffer's length)", length, length);
        }
        request.data = bytes.data;
        request.length = bytes.length;
        buffer = bytes.object;
        break;
      }
      case kOpZeroRange:
      case kOpPunchHole: {
        if (!IsNullish(info[2])) throw Napi::TypeError::New(env, "buffer must be undefined or null");
        const ByteRange range = ArgByteRange(info, 3);
        request.offset = range.offset;
        request.length = range.length;
        break;
      }
      case kOpFdatasync: {
        if (!IsNullish(info[2])) throw Napi::TypeError::New(env, "buffer must be undefined or null");
        if (!info[3].IsUndefined()) ArgInteger(info, 3, "offsetBytes", 0, 0);
        if (!info[4].IsUndefined()) ArgInteger(info, 4, "lengthBytes", 0, 0);
        break;
      }
      default:
        assert(false);
    }
    request.tag = static_cast<int32_t>(ArgInteger(info, 5, "tag", 0, kTagMax));
    request.on_ring = ring_ != nullptr && ring_->open() && (op == kOpRead || op == kOpWrite || op == kOpFdatasync);
    if (!request.on_ring && threads_.empty()) {
      // The io_uring backend runs zeroRange and punchHole on threads started on first use.
      const int spawn_error = SpawnThreads(range_threads_);
      if (threads_.empty()) throw ErrnoError(env, spawn_error != 0 ? spawn_error : EAGAIN, "pthread_create");
    }

    // Arguments are valid: nothing below throws a JavaScript exception.
    auto* queued = new QueueRequest(request);
    if (!buffer.IsEmpty()) {
      if (napi_create_reference(env, buffer, 1, &queued->buffer) != napi_ok) {
        delete queued;
        throw Napi::Error::New(env, "napi_create_reference failed");
      }
    }
    LinkInFlight(queued);
    in_flight_++;
    if (!active_) {
      // Busy: keep the event loop alive, and this object, until the last completion is delivered.
      active_ = true;
      napi_ref_threadsafe_function(env, tsfn_);
      if (ring_ != nullptr) ring_->SetBusy(true);
      Ref();
    }
    if (queued->on_ring) {
      ring_->Queue(queued);  // Submitted to the kernel at the end of this event-loop phase.
      return env.Undefined();
    }
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(submit_mutex_);
      submitted_.push_back(queued);
      if (idle_ > 0 && !wake_pending_) {
        wake_pending_ = true;
        wake = true;
      }
    }
    if (wake) submit_cv_.notify_one();
    return env.Undefined();
  }

  // close() => Promise<void>: resolves once every submitted IO has completed and been delivered and
  // the threads are joined. Idempotent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_ == State::kClosed) {
      Napi::Promise::Deferred done = Napi::Promise::Deferred::New(env);
      done.Resolve(env.Undefined());
      return done.Promise();
    }
    if (state_ == State::kOpen) {
      state_ = State::kClosing;
      close_deferred_ = std::make_unique<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
      {
        // Workers finish the queue, then exit.
        std::lock_guard<std::mutex> lock(submit_mutex_);
        stopping_ = true;
      }
      submit_cv_.notify_all();
    }
    Napi::Promise promise = close_deferred_->Promise();
    if (in_flight_ == 0) FinishClose(env);
    return promise;
  }

  Napi::Value InFlight(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(in_flight_));
  }
  Napi::Value Threads(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(threads_.size()));
  }
  Napi::Value Closed(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), state_ != State::kOpen);
  }
  Napi::Value BackendName(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), ring_ != nullptr ? "io_uring" : "threads");
  }

  // Starts `count` workers; returns 0 or the errno of the first thread that could not start (the
  // ones started before it keep running).
  int SpawnThreads(uint32_t count) {
    // Workers block every signal, so signals go to Node's own threads and IO rarely sees EINTR.
    sigset_t all;
    sigset_t previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int spawn_error = 0;
    try {
      threads_.reserve(threads_.size() + count);
      for (uint32_t i = 0; i < count; i++) threads_.emplace_back(&IoQueue::WorkerLoop, this);
    } catch (const std::system_error& error) {
      spawn_error = error.code().value() > 0 ? error.code().value() : EAGAIN;
    } catch (const std::bad_alloc&) {
      spawn_error = ENOMEM;
    }
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return spawn_error;
  }

  // ------------------------------------------------------------------ worker threads

  void WorkerLoop() {
    std::unique_lock<std::mutex> lock(submit_mutex_);
    for (;;) {
      while (submitted_.empty() && !stopping_) {
        idle_++;
        submit_cv_.wait(lock);
        idle_--;
        wake_pending_ = false;
      }
      if (submitted_.empty()) return;  // Stopping, and the queue is drained.
      QueueRequest* request = submitted_.front();
      submitted_.pop_front();
      const bool wake_next = !submitted_.empty() && idle_ > 0 && !wake_pending_;
      if (wake_next) wake_pending_ = true;
      lock.unlock();
      if (wake_next) submit_cv_.notify_one();

      Execute(request);

      bool schedule = false;
      bool memory_waiter = false;
      {
        std::lock_guard<std::mutex> completion_lock(completion_mutex_);
        request->executed = true;
        completed_.push_back(request);
        if (!drain_scheduled_) {
          drain_scheduled_ = true;
          schedule = true;
        }
        memory_waiter = memory_waiters_ > 0;
      }
      if (memory_waiter) executed_cv_.notify_all();
      // One call per batch. The thread-safe function outlives the workers: it is released only after
      // they are joined.
      if (schedule) napi_call_threadsafe_function(tsfn_, nullptr, napi_tsfn_nonblocking);
      lock.lock();
    }
  }

  static void Execute(QueueRequest* request) {
    IoResult* result = &request->result;
    switch (request->op) {
      case kOpRead:
      case kOpWrite:
        ExecuteReadWrite(request->op == kOpWrite, request->fd, request->data,
                         static_cast<size_t>(request->length), request->offset, result);
        break;
      case kOpFdatasync:
        ExecuteFdatasync(request->fd, result);
        break;
      case kOpZeroRange:
        ExecuteRange(RangeKind::kZeroRange, request->fd, request->offset, request->length, result);
        break;
      case kOpPunchHole:
        ExecuteRange(RangeKind::kPunchHole, request->fd, request->offset, request->length, result);
        break;
      default:
        assert(false);
    }
  }

  // Sets stopping and joins the workers; they finish the queue first. Idempotent.
  void StopThreads() {
    {
      std::lock_guard<std::mutex> lock(submit_mutex_);
      stopping_ = true;
    }
    submit_cv_.notify_all();
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

  // ------------------------------------------------------------------ the JS thread

  static void CallJs(napi_env env, napi_value callback, void* context, void*) {
    if (env == nullptr || callback == nullptr) return;  // The thread-safe function is going away.
    IoQueue* queue = static_cast<IoQueue*>(context);
    try {
      queue->Drain(Napi::Env(env), Napi::Function(env, callback));
    } catch (const Napi::Error& error) {
      // Becomes an uncaught exception, as a throw from any other callback would. napi_throw fails
      // only where JavaScript cannot run any more (a worker thread being terminated).
      napi_throw(env, error.Value());
    } catch (...) {
      // Nothing may escape into Node (std::terminate); Drain has already settled its state.
    }
  }

  // Delivers every completion that is ready, kBatchMax per call of onComplete.
  void Drain(Napi::Env env, Napi::Function callback) {
    {
      std::lock_guard<std::mutex> lock(completion_mutex_);
      assert(draining_.empty());
      draining_.swap(completed_);
      drain_scheduled_ = false;
    }
    std::unique_ptr<Napi::Error> first_error = DeliverBatches(env, &draining_, [&](size_t count, Napi::Int32Array tags, Napi::Float64Array results, Napi::Uint8Array syscalls) {
      callback.Call({Napi::Number::New(env, static_cast<double>(count)), tags, results, syscalls});
    });
    if (first_error) throw *first_error;
  }

  // Hands `list` to onComplete through `invoke`, kBatchMax per call, frees the requests and clears
  // the list; returns the first error a call threw (the rest of the batch is still delivered). The
  // worker threads' completions come through Drain, the ring's straight from the ring.
  std::unique_ptr<Napi::Error> DeliverBatches(Napi::Env env, std::vector<QueueRequest*>* list,
                                              const BatchCall& invoke) override {
    std::vector<QueueRequest*>& draining = *list;
    std::unique_ptr<Napi::Error> first_error;
    size_t next = 0;
    while (next < draining.size()) {
      const size_t count = std::min(kBatchMax, draining.size() - next);
      EnsureArrays(env);
      Napi::Int32Array tags = RefValue<Napi::Int32Array>(env, tags_ref_);
      Napi::Float64Array results = RefValue<Napi::Float64Array>(env, results_ref_);
      Napi::Uint8Array syscalls = RefValue<Napi::Uint8Array>(env, syscalls_ref_);
      int32_t* tag_data = tags.Data();
      double* result_data = results.Data();
      uint8_t* syscall_data = syscalls.Data();
      for (size_t i = 0; i < count; i++) {
        QueueRequest* request = draining[next + i];
        tag_data[i] = request->tag;
        if (request->result.error != 0) {
          result_data[i] = -static_cast<double>(request->result.error);
          syscall_data[i] = request->result.syscall;
        } else {
          result_data[i] = static_cast<double>(request->result.done);
          syscall_data[i] = kSyscallNone;
        }
        if (request->buffer != nullptr) napi_delete_reference(env, request->buffer);
        UnlinkInFlight(request);
        delete request;
      }
      next += count;
      in_flight_ -= count;
      try {
        invoke(count, tags, results, syscalls);
      } catch (const Napi::Error& error) {
        // The rest of the batch is still delivered; the first error is rethrown at the end.
        if (!first_error) first_error = std::make_unique<Napi::Error>(error);
      }
    }
    draining.clear();
    if (in_flight_ == 0) Deactivate(env);
    if (in_flight_ == 0 && state_ == State::kClosing) FinishClose(env);
    return first_error;
  }

  // Idle: neither the event loop nor this object is held any more.
  void Deactivate(Napi::Env env) {
    if (!active_) return;
    active_ = false;
    napi_unref_threadsafe_function(env, tsfn_);
    if (ring_ != nullptr) ring_->SetBusy(false);
    Unref();
  }

  void FinishClose(Napi::Env env) {
    assert(state_ == State::kClosing && in_flight_ == 0);
    Deactivate(env);  // close() may be called from onComplete, before Drain deactivates.
    StopThreads();
    if (ring_ != nullptr) ring_->TearDown();
    RemoveCleanupHook();
    if (!tsfn_released_) {
      napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
      tsfn_released_ = true;
    }
    ReleaseArrays();
    state_ = State::kClosed;
    std::unique_ptr<Napi::Promise::Deferred> deferred = std::move(close_deferred_);
    deferred->Resolve(env.Undefined());
  }

  void LinkInFlight(QueueRequest* request) {
    request->prev = in_flight_tail_;
    request->next = nullptr;
    if (in_flight_tail_ != nullptr) {
      in_flight_tail_->next = request;
    } else {
      in_flight_head_ = request;
    }
    in_flight_tail_ = request;
  }

  void UnlinkInFlight(QueueRequest* request) {
    (request->prev != nullptr ? request->prev->next : in_flight_head_) = request->next;
    (request->next != nullptr ? request->next->prev : in_flight_tail_) = request->prev;
  }

  // JS thread. A worker runs every queued request, even when stopping, so the wait ends.
  void WaitUntilUnused(const uint8_t* data, size_t size) {
    const uint8_t* end = data + size;
    for (QueueRequest* request = in_flight_head_; request != nullptr; request = request->next) {
      if (request->data == nullptr) continue;
      if (!(request->data < end && data < request->data + request->length)) continue;
      if (request->on_ring) {
        while (!request->executed && ring_->WaitOne()) {
        }
        continue;
      }
      std::unique_lock<std::mutex> lock(completion_mutex_);
      memory_waiters_++;
      executed_cv_.wait(lock, [request] { return request->executed; });
      memory_waiters_--;
    }
  }

  static void EnvCleanup(void* arg) {
    IoQueue* queue = static_cast<IoQueue*>(arg);
    queue->Unregister();  // A hook runs once.
    queue->StopThreads();
  }

  void AddCleanupHook() {
    QueueRegistry& registry = Registry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    napi_add_env_cleanup_hook(env_, &IoQueue::EnvCleanup, this);
    registry.queues.emplace_back(env_, this);
    cleanup_hook_added_ = true;
  }

  void RemoveCleanupHook() {
    if (!cleanup_hook_added_) return;
    napi_remove_env_cleanup_hook(env_, &IoQueue::EnvCleanup, this);
    Unregister();
  }

  void Unregister() {
    QueueRegistry& registry = Registry();
    std::lock_guard<std::mutex> lock(registry.mutex);
    auto& queues = registry.queues;
    queues.erase(std::remove_if(queues.begin(), queues.end(),
                                [this](const auto& entry) { return entry.second == this; }),
                 queues.end());
    cleanup_hook_added_ = false;
  }

  // The arrays handed to onComplete. JS could detach their buffers (transfer them to a worker), so
  // they are checked before each batch and made again if so.
  void CreateArrays(Napi::Env env) {
    ReleaseArrays();
    napi_create_reference(env, Napi::Int32Array::New(env, kBatchMax), 1, &tags_ref_);
    napi_create_reference(env, Napi::Float64Array::New(env, kBatchMax), 1, &results_ref_);
    napi_create_reference(env, Napi::Uint8Array::New(env, kBatchMax), 1, &syscalls_ref_);
  }

  void EnsureArrays(Napi::Env env) {
    const bool intact =
        RefValue<Napi::Int32Array>(env, tags_ref_).ElementLength() == kBatchMax &&
        RefValue<Napi::Float64Array>(env, results_ref_).ElementLength() == kBatchMax &&
        RefValue<Napi::Uint8Array>(env, syscalls_ref_).ElementLength() == kBatchMax;
    if (!intact) CreateArrays(env);
  }

  void ReleaseArrays() {
    for (napi_ref* ref : {&tags_ref_, &results_ref_, &syscalls_ref_}) {
      if (*ref != nullptr) napi_delete_reference(env_, *ref);
      *ref = nullptr;
    }
  }

  napi_env env_ = nullptr;
  napi_threadsafe_function tsfn_ = nullptr;
  // Set by the thread-safe function's finalizer (environment teardown may run it before the GC
  // finalizes this object); shared because either may go first.
  std::shared_ptr<std::atomic<bool>> tsfn_finalized_;
  bool tsfn_released_ = false;
  bool cleanup_hook_added_ = false;
  std::vector<std::thread> threads_;

  // Submission queue: guarded by submit_mutex_.
  std::mutex submit_mutex_;
  std::condition_variable submit_cv_;
  std::deque<QueueRequest*> submitted_;
  uint32_t idle_ = 0;          // Workers waiting on submit_cv_.
  bool wake_pending_ = false;  // A worker has been notified and has not woken yet.
  bool stopping_ = false;

  // Completion list: guarded by completion_mutex_.
  std::mutex completion_mutex_;
  std::vector<QueueRequest*> completed_;
  bool drain_scheduled_ = false;  // A thread-safe-function call is pending.
  std::condition_variable executed_cv_;  // Signalled for WaitUntilUnused.
  uint32_t memory_waiters_ = 0;

  // JS thread only.
  std::vector<QueueRequest*> draining_;
  QueueRequest* in_flight_head_ = nullptr;
  QueueRequest* in_flight_tail_ = nullptr;
  size_t in_flight_ = 0;  // Submitted and not yet delivered.
  bool active_ = false;   // The thread-safe function and this object are ref'd.
  State state_ = State::kOpen;
  std::unique_ptr<Napi::Promise::Deferred> close_deferred_;
  napi_ref tags_ref_ = nullptr;
  napi_ref results_ref_ = nullptr;
  napi_ref syscalls_ref_ = nullptr;

  // The io_uring backend (JS thread only): chosen at construction and kept until the queue is
  // destroyed (`backend` reports it); torn down by close().
  std::unique_ptr<RingBackend> ring_;
  uint32_t range_threads_ = 0;  // Workers started on the first zeroRange or punchHole.
};

}  // namespace

Napi::Function DefineIoQueueClass(Napi::Env env) { return IoQueue::DefineClass(env); }

void WaitUntilMemoryUnusedByQueues(napi_env env, const uint8_t* data, size_t size) {
  IoQueue::WaitUntilMemoryUnused(env, data, size);
}

}  // namespace pflex_io
