// What the build found: binding.gyp defines PFLEX_HAVE_LIBURING to 1 when liburing (header and
// library) was there at configure time (scripts/native/detect-liburing.cjs), else to 0.
#ifndef PFLEX_IO_BUILD_CONFIG_H_
#define PFLEX_IO_BUILD_CONFIG_H_

#ifndef PFLEX_HAVE_LIBURING
#error "PFLEX_HAVE_LIBURING must be defined to 0 or 1 (binding.gyp sets it from scripts/native/detect-liburing.cjs)"
#endif

namespace pflex_io {

// True when the IoQueue's io_uring backend is compiled in; exported as IO_URING_BUILT.
constexpr bool kIoUringBuilt = PFLEX_HAVE_LIBURING != 0;

}  // namespace pflex_io

#endif  // PFLEX_IO_BUILD_CONFIG_H_
