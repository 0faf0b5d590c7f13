#include "promise_workers.h"

#include <cstdint>

#include "args.h"
#include "errors.h"
#include "io_limits.h"
#include "syscalls.h"

namespace pflex_io {
namespace {

// Execute() runs on a threadpool thread; OnOK() settles the promise on the JS thread.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env)
      : Napi::AsyncWorker(env, "pflex_io"), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise QueueForPromise() {
    Napi::Promise promise = deferred_.Promise();
    Queue();  // The worker deletes itself after OnOK().
    return promise;
  }

 protected:
  // Execute() never calls SetError(): errors travel in result_ so rejections carry .code and .errno.
  void OnOK() override {
    if (result_.error != 0) {
      deferred_.Reject(ErrnoError(Env(), result_.error, kSyscallNames[result_.syscall]).Value());
    } else {
      deferred_.Resolve(Result());
    }
  }

  virtual Napi::Value Result() { return Env().Undefined(); }

  Napi::Promise::Deferred deferred_;
  IoResult result_;
};

class ReadWriteWorker final : public PromiseWorker {
 public:
  ReadWriteWorker(Napi::Env env, bool write, int fd, const Bytes& bytes, uint64_t offset)
      : PromiseWorker(env),
        write_(write),
        fd_(fd),
        data_(bytes.data),
        length_(bytes.length),
        offset_(offset),
        // The reference keeps the buffer (and its memory) alive until the worker is deleted on the JS
        // thread, after OnOK(): the GC cannot free memory a worker thread is still reading or writing.
        buffer_reference_(Napi::Persistent(bytes.object)) {}

 private:
  void Execute() override { ExecuteReadWrite(write_, fd_, data_, length_, offset_, &result_); }

  Napi::Value Result() override {
    return Napi::Number::New(Env(), static_cast<double>(result_.done));
  }

  const bool write_;
  const int fd_;
  uint8_t* const data_;
  const size_t length_;
  const uint64_t offset_;
  Napi::ObjectReference buffer_reference_;
};

class FdatasyncWorker final : public PromiseWorker {
 public:
  FdatasyncWorker(Napi::Env env, int fd) : PromiseWorker(env), fd_(fd) {}

 private:
  void Execute() override { ExecuteFdatasync(fd_, &result_); }
  const int fd_;
};

class RangeWorker final : public PromiseWorker {
 public:
  RangeWorker(Napi::Env env, RangeKind kind, int fd, uint64_t offset, uint64_t length)
      : PromiseWorker(env), kind_(kind), fd_(fd), offset_(offset), length_(length) {}

 private:
  void Execute() override { ExecuteRange(kind_, fd_, offset_, length_, &result_); }

  const RangeKind kind_;
  const int fd_;
  const uint64_t offset_;
  const uint64_t length_;
};

Napi::Value ReadOrWrite(const Napi::CallbackInfo& info, bool write) {
  const int fd = ArgFd(info, 0);
  const Bytes bytes = ArgIoBuffer(info, 1);
  const uint64_t offset = static_cast<uint64_t>(ArgInteger(info, 2, "offsetBytes", 0, kSafeIntegerMax));
  return (new ReadWriteWorker(info.Env(), write, fd, bytes, offset))->QueueForPromise();
}

Napi::Value Range(const Napi::CallbackInfo& info, RangeKind kind) {
  const int fd = ArgFd(info, 0);
  const ByteRange range = ArgByteRange(info, 1);
  return (new RangeWorker(info.Env(), kind, fd, range.offset, range.length))->QueueForPromise();
}

}  // namespace

Napi::Value Pread(const Napi::CallbackInfo& info) { return ReadOrWrite(info, false); }
Napi::Value Pwrite(const Napi::CallbackInfo& info) { return ReadOrWrite(info, true); }

Napi::Value Fdatasync(const Napi::CallbackInfo& info) {
  const int fd = ArgFd(info, 0);
  return (new FdatasyncWorker(info.Env(), fd))->QueueForPromise();
}

Napi::Value PunchHole(const Napi::CallbackInfo& info) {
  return Range(info, RangeKind::kPunchHole);
}
Napi::Value ZeroRange(const Napi::CallbackInfo& info) {
  return Range(info, RangeKind::kZeroRange);
}

}  // namespace pflex_io
