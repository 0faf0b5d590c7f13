#!/usr/bin/env node
// Prints 1 when liburing can be built against here (its header compiles AND -luring links into a
// shared object, as the pflex_io addon will), else 0. binding.gyp runs it at configure time
// (`node-gyp rebuild`, from `npm install`) to decide whether to compile the IoQueue's io_uring
// backend (native/io/io_uring_backend.cc, -luring, PFLEX_HAVE_LIBURING=1) or to build without it
// (threads only). A header without the library, the library without the header, or either one
// unusable (empty, wrong architecture) all mean absent. The reason goes to stderr, which node-gyp
// shows (npm shows it with --foreground-scripts, or when the install fails).
//
// Uses $CXX (default g++, as node-gyp's Makefiles do), plus $CPPFLAGS, $CXXFLAGS and $LDFLAGS
// where set. Exits 0 either way: a missing liburing is no error.
'use strict';

const { spawnSync } = require('node:child_process');
const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const COMPILE_TIMEOUT_MS = 60_000;

// Uses what the backend uses: if these compile and link, so does io_uring_backend.cc.
const PROBE = `
#include <liburing.h>
extern "C" int pflex_liburing_probe(void) {
  struct io_uring ring;
  if (io_uring_queue_init(1, &ring, 0) != 0) return -1;
  io_uring_prep_fsync(io_uring_get_sqe(&ring), 0, IORING_FSYNC_DATASYNC);
  io_uring_queue_exit(&ring);
  return 0;
}
`;

function words(text) {
  return (text ?? '').split(/\s+/).filter((word) => word !== '');
}

/** '' when liburing builds, else why not. */
function probe() {
  const [cxx, ...cxxArgs] = words(process.env.CXX).length > 0 ? words(process.env.CXX) : ['g++'];
  const dir = mkdtempSync(join(tmpdir(), 'pflex-detect-liburing-'));
  try {
    const args = [
      ...cxxArgs,
      ...words(process.env.CPPFLAGS),
      ...words(process.env.CXXFLAGS),
      '-std=c++17', '-fPIC', '-shared', '-x', 'c++', '-', '-o', join(dir, 'probe.so'),
      ...words(process.env.LDFLAGS),
      // Every symbol resolved now: a library that does not define them is no liburing.
      '-Wl,-z,defs', '-luring',
    ];
    const result = spawnSync(cxx, args, { input: PROBE, encoding: 'utf8', timeout: COMPILE_TIMEOUT_MS });
    if (result.error !== undefined) return `${cxx} did not run: ${result.error.message}`;
    if (result.status !== 0) {
      const lines = result.stderr.split('\n').map((line) => line.trim());
      const cause =
        lines.find((line) => /fatal error|undefined reference|cannot find|not recognized|error:/i.test(line) && !/collect2/.test(line)) ??
        lines.find((line) => line !== '') ??
        `exit status ${result.status ?? result.signal}`;
      return `${cxx} failed: ${cause}`;
    }
    return '';
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const why = probe();
if (why === '') {
  process.stderr.write('pflex_io: liburing found: building the IoQueue io_uring backend\n');
  process.stdout.write('1\n');
} else {
  process.stderr.write(
    `pflex_io: liburing not usable (${why}): building without the io_uring backend, IoQueues run on threads ` +
      '(for io_uring: install liburing-dev, then `npx node-gyp rebuild`)\n',
  );
  process.stdout.write('0\n');
}
