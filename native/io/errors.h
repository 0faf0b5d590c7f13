// Errno-coded errors: syscall failures become an Error with .code (errno name, e.g. "EIO"), .errno
// (the positive C errno, as in os.constants.errno), .syscall and a message like
// "pwrite: Input/output error (EIO)".
#ifndef PFLEX_IO_ERRORS_H_
#define PFLEX_IO_ERRORS_H_

#include <napi.h>

#include <errno.h>

#include <string>

namespace pflex_io {

// The errno's name ("EIO"), or "EUNKNOWN".
const char* ErrnoName(int err);

// Must run on the JS thread (strerror's buffer and the Napi calls); workers carry the errno over.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& path = "");

template <typename Call>
auto RetryOnEintr(Call call) -> decltype(call()) {
  decltype(call()) result;
  do {
    result = call();
  } while (result == -1 && errno == EINTR);
  return result;
}

inline bool IsUnsupported(int err) { return err == EOPNOTSUPP || err == ENOSYS || err == ENOTTY; }

}  // namespace pflex_io

#endif  // PFLEX_IO_ERRORS_H_
