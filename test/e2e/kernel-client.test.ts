/**
 * The real Linux kernel NBD client against a real cluster (MDM, 3 SDS, SDC as processes). This
 * machine's kernel has no nbd module, so a tiny qemu guest (TCG; Debian's kernel, a busybox
 * initramfs with nbd.ko, nbd-client, mkfs.ext4 and e2fsck; built by scripts/vm/build-guest.sh)
 * reaches the SDC on the host's loopback as 10.0.2.2 through qemu's user network, attaches
 * /dev/nbd0 (one connection, then `nbd-client -C 4`), makes ext4, mounts, writes files, remounts
 * after a reconnect, verifies every checksum, runs e2fsck -fn and checks dmesg for IO errors.
 * Then `pflex vol verify` compares the replicas byte for byte.
 */
import t, { type Test } from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { withBuiltGuest } from '../helpers/guest.js';
import { startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { runGuest, REQUIRED_STEPS, type GuestArtifacts, type RunGuestResult } from '../../scripts/vm/run-guest.js';

const MiB = 1024 * 1024;

/** ESTABLISHED TCP connections whose local port is `port` (the SDC's side of each client's). */
function establishedTo(port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let count = 0;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(file)) continue;
    for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length > 3 && fields[1]!.endsWith(hex) && fields[3] === '01') count += 1;
    }
  }
  return count;
}

/** Runs `body` while sampling the connections to `port`; returns its result and the peak count. */
async function withConnectionPeak<T>(port: number, body: () => Promise<T>): Promise<{ value: T; peak: number }> {
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, establishedTo(port))), 100);
  try {
    const value = await body();
    return { value, peak };
  } finally {
    clearInterval(timer);
  }
}
const GUEST_TIMEOUT_MS = 150_000;

withBuiltGuest(t, main);

function main(artifacts: GuestArtifacts): void {
  let e2e: E2eCluster;

  t.before(async () => {
    e2e = await startE2eCluster([
      { name: 'vol1', sizeBytes: 1024 * MiB, provisioning: 'thin' },
      { name: 'vol4', sizeBytes: 1024 * MiB, provisioning: 'thin' },
    ]);
  });
  t.teardown(async () => {
    await e2e?.stop();
  });

  function sdcLogTail(lines = 80): string {
    const file = join(e2e.dataDir, 'logs', 'sdc1.log');
    return existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n') : '(no sdc1.log)';
  }

  function checkRun(t: Test, run: RunGuestResult, expectedFiles: number): void {
    if (!run.ok) {
      t.comment(`guest serial log:\n${run.serialLog}`);
      t.comment(`SDC log (tail):\n${sdcLogTail()}`);
    }
    t.notOk(run.timedOut, `the guest powered off by itself (${run.durationMs} ms)`);
    for (const step of REQUIRED_STEPS) t.match(run.results[step] ?? 'missing', /^ok\b/, `guest step ${step}: ${run.results[step] ?? 'missing'}`);
    const failed = Object.entries(run.results).filter(([, value]) => !value.startsWith('ok'));
    t.same(failed, [], 'no step failed');
    t.match(run.results.verify ?? '', new RegExp(`\\bfiles=${expectedFiles}\\b`), `all ${expectedFiles} files verified after the reconnect`);
    t.match(run.results.connect ?? '', /\bsize=1073741824\b/, 'the kernel sees the 1 GiB volume');
    t.ok(run.ok, 'the guest reports done ok');
  }

  t.test('kernel client, one connection: mkfs.ext4, write, reconnect, verify, e2fsck on vol1', async (t) => {
    const port = e2e.cluster.spec.sdc.nbd;
    const { value: run, peak } = await withConnectionPeak(port, () =>
      runGuest({ nbdPort: port, exportName: 'vol1', connections: 1, timeoutMs: GUEST_TIMEOUT_MS, artifacts }),
    );
    t.comment(`vol1: ${JSON.stringify(run.results)} in ${run.durationMs} ms, peak ${peak} NBD connection(s)`);
    checkRun(t, run, 21);
    t.match(run.results.connect ?? '', /\bconnections=1\b/);
    t.equal(peak, 1, 'the SDC served one kernel connection at a time');
  });

  t.test('kernel client, four connections (nbd-client -C 4): the same on vol4', async (t) => {
    const port = e2e.cluster.spec.sdc.nbd;
    const { value: run, peak } = await withConnectionPeak(port, () =>
      runGuest({ nbdPort: port, exportName: 'vol4', connections: 4, timeoutMs: GUEST_TIMEOUT_MS, artifacts }),
    );
    t.comment(`vol4: ${JSON.stringify(run.results)} in ${run.durationMs} ms, peak ${peak} NBD connections`);
    checkRun(t, run, 21);
    t.match(run.results.connect ?? '', /\bconnections=4\b/);
    t.ok(peak >= 4, `the SDC served four kernel connections at once (peak ${peak})`);
  });

  t.test('pflex vol verify: both replicas of vol1 and vol4 are identical', async (t) => {
    for (const volume of ['vol1', 'vol4']) {
      const result = await e2e.pflex('vol', 'verify', volume);
      t.equal(result.code, 0, `pflex vol verify ${volume} exits 0: ${result.stdout.trim()} ${result.stderr.trim()}`);
    }
  });
}
