{
  # pflex_io: the SDS's O_DIRECT IO addon (DESIGN §7). Built by `node-gyp rebuild` from the package's
  # "install" script into build/Release/pflex_io.node; loaded by src/sds/native-io.ts.
  # pflex_mac: the data-plane request MAC (HMAC-SHA256 over OpenSSL's SHA-256, which Node exports),
  # into build/Release/pflex_mac.node; loaded by src/common/request-mac.ts.
  "variables": {
    # 1 when liburing's header and library are both usable here (Debian: liburing-dev, in .ci/run's
    # OS_PACKAGES), else 0: decided once, at configure time. Without it pflex_io is built without the
    # IoQueue's io_uring backend (IO_URING_BUILT false; every IoQueue runs on threads).
    "pflex_have_liburing%": "<!(node scripts/native/detect-liburing.cjs)"
  },
  "targets": [
    {
      "target_name": "pflex_io",
      # One module per concern (native/io/*.h say what each holds); pflex_io.cc is the entry.
      "sources": [
        "native/pflex_io.cc",
        "native/io/args.cc",
        "native/io/errors.cc",
        "native/io/io_queue.cc",
        "native/io/promise_workers.cc",
        "native/io/sync_calls.cc",
        "native/io/syscalls.cc"
      ],
      "conditions": [
        ["pflex_have_liburing==1", {
          "sources": ["native/io/io_uring_backend.cc"],
          "defines": ["PFLEX_HAVE_LIBURING=1"],
          "libraries": ["-luring"]
        }, {
          "defines": ["PFLEX_HAVE_LIBURING=0"]
        }]
      ],
      # node-addon-api's header-only target with C++ exceptions on: argument errors are thrown as
      # Napi::TypeError / Napi::RangeError and surface in JavaScript as ordinary exceptions.
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      # NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS: an exception thrown while a worker thread is being
      # terminated (JavaScript can no longer run) is dropped instead of aborting the process.
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "pflex_mac",
      "sources": ["native/pflex_mac.cc"],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
