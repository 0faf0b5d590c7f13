/** The qemu guest for kernel-client tests, built once per test file (scripts/vm/build-guest.sh). */
import type { Test } from 'tap';
import { buildGuest, type GuestArtifacts } from '../../scripts/vm/run-guest.js';

/**
 * Builds the guest (idempotent: a couple of seconds when it is current), then runs `main`. Skips
 * only when it cannot be built for want of the package mirror (offline machine) or of root to
 * install qemu: anything else is a failure.
 */
export function withBuiltGuest(t: Test, main: (artifacts: GuestArtifacts) => void): void {
  const build = buildGuest();
  const unbuildable = /Temporary failure resolving|Could not resolve|Failed to fetch|Unable to fetch|missing host packages/.test(build.output);
  if (!build.ok && unbuildable) {
    t.comment(build.output);
    t.plan(0, 'the qemu guest cannot be built here (no package mirror or not root)');
    return;
  }
  t.ok(build.ok, 'scripts/vm/build-guest.sh builds the guest', { output: build.ok ? undefined : build.output });
  if (build.ok) main(build.artifacts!);
}
