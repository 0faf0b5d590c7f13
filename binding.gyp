{
  # pflex_io: the SDS's O_DIRECT IO addon (DESIGN §7). Built by `node-gyp rebuild` from the package's
  # "install" script into build/Release/pflex_io.node; loaded by src/sds/native-io.ts.
  # pflex_mac: the data-plane request MAC (HMAC-SHA256 over OpenSSL's SHA-256, which Node exports),
  # into build/Release/pflex_mac.node; loaded by src/common/request-mac.ts.
  "targets": [
    {
      "target_name": "pflex_io",
      "sources": ["native/pflex_io.cc"],
      # liburing (Debian: liburing-dev, in .ci/run's OS_PACKAGES) for the IoQueue's io_uring backend.
      "libraries": ["-luring"],
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
