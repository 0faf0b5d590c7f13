/**
 * The real Linux kernel NBD client writing ext4 across a kill -9 of an SDS. The qemu guest of
 * kernel-client.test.ts runs in soak mode: mkfs.ext4 on /dev/nbd0, then files written, partly
 * overwritten and synced in a loop for SOAK_S seconds. A few seconds into that loop the SDS
 * holding the most replicas of the volume is killed. The guest must not notice beyond a stall:
 * every step ok, every file verifies after a remount, e2fsck -fn is clean, no IO error in its
 * dmesg. The host checks that the MDM reports the SDS DOWN and fenced, that the SDC failed no
 * read or write, and that `pflex vol verify` finds the current replicas identical. The SDS is then
 * started again, comes back UP, and every process stops cleanly.
 */
import t, { type Test } from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { withBuiltGuest } from '../helpers/guest.js';
import { startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { runGuest, REQUIRED_STEPS, type GuestArtifacts, type RunGuestResult } from '../../scripts/vm/run-guest.js';

const MiB = 1024 * 1024;
const VOLUME = 'vol1';
const SOAK_S = 40;
// A run takes about SOAK_S + 20 s (boot, mkfs, the soak, verification); the rest is headroom for
// TCG on a busy 2-core machine.
const GUEST_TIMEOUT_MS = 170_000;
// The first soak progress line comes 5 s into the write loop: chunks are placed on every SDS by
// then, and the writes go on for SOAK_S - 5 s after the kill.
const PROGRESS_TIMEOUT_MS = 120_000;
const SDS_DOWN_TIMEOUT_MS = 20_000;
const SDS_UP_TIMEOUT_MS = 30_000;
const STATS_INTERVAL_MS = 100;

withBuiltGuest(t, main);

interface SdsView {
  name: string;
  state: string;
}

interface ChunkView {
  index: number;
  replicas: { sds: string; state: string; sds_state: string }[];
}

interface SdcVolumeStats {
  volume: string;
  writes: number;
  replans: number;
  failovers: number;
  errors: number;
}

/** One sample of the SDC's completed-write counter. */
interface WriteSample {
  atMs: number;
  writes: number;
}

/** `key=value` from a PFLEX-RESULT/PFLEX-INFO line's rest. */
function field(text: string | undefined, key: string): string | undefined {
  return new RegExp(`(?:^|\\s)${key}=(\\S+)`).exec(text ?? '')?.[1];
}

/** The longest time within [fromMs, toMs] in which the SDC completed no write, and when it began. */
function longestWriteGap(samples: readonly WriteSample[], fromMs: number, toMs: number): { gapMs: number; startMs: number } {
  let lastProgressMs = fromMs;
  let longest = { gapMs: 0, startMs: fromMs };
  for (let index = 1; index < samples.length; index += 1) {
    const sample = samples[index]!;
    if (sample.atMs < fromMs || sample.atMs > toMs) continue;
    if (sample.writes > samples[index - 1]!.writes) {
      if (sample.atMs - lastProgressMs > longest.gapMs) longest = { gapMs: sample.atMs - lastProgressMs, startMs: lastProgressMs };
      lastProgressMs = sample.atMs;
    }
  }
  return toMs - lastProgressMs > longest.gapMs ? { gapMs: toMs - lastProgressMs, startMs: lastProgressMs } : longest;
}

/** How long after `atMs` the SDC's write counter first moved (undefined: it never did). */
function firstWriteAfterMs(samples: readonly WriteSample[], atMs: number): number | undefined {
  const before = samples.filter((sample) => sample.atMs <= atMs).at(-1);
  const next = samples.find((sample) => sample.atMs > atMs && before !== undefined && sample.writes > before.writes);
  return next === undefined ? undefined : next.atMs - atMs;
}

/** Resolves after `ms`, or at once (and without a pending timer) when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function main(artifacts: GuestArtifacts): void {
  let e2e: E2eCluster;
  // A test cut short (tap's timeout) must not leave the guest running until its own deadline.
  const guestAbort = new AbortController();

  t.before(async () => {
    e2e = await startE2eCluster([{ name: VOLUME, sizeBytes: 1024 * MiB, provisioning: 'thin' }]);
  });
  t.teardown(async () => {
    guestAbort.abort();
    await e2e?.stop();
  });

  function logTail(name: string, lines = 60): string {
    const file = join(e2e.dataDir, 'logs', `${name}.log`);
    return existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n') : `(no ${name}.log)`;
  }

  async function sdsState(name: string): Promise<string | undefined> {
    return (await e2e.pflexJson<SdsView[]>('sds', 'list')).find((sds) => sds.name === name)?.state;
  }

  /** Polls the MDM until `name` is in `state`; the ms it took, or undefined past the timeout. */
  async function waitForSdsState(name: string, state: string, sinceMs: number, timeoutMs: number): Promise<number | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await sdsState(name).catch(() => undefined)) === state) return Date.now() - sinceMs;
      await sleep(250);
    }
    return undefined;
  }

  async function sdcVolumeStats(): Promise<SdcVolumeStats | undefined> {
    const response = await fetch(`http://127.0.0.1:${e2e.cluster.spec.sdc.mgmt}/stats`, { signal: AbortSignal.timeout(2000) });
    return ((await response.json()) as { volumes: SdcVolumeStats[] }).volumes.find((entry) => entry.volume === VOLUME);
  }

  function dumpDiagnostics(t: Test, run: RunGuestResult | undefined, victim: string | undefined): void {
    if (run !== undefined) t.comment(`guest serial log:\n${run.serialLog}`);
    t.comment(`SDC log (tail):\n${logTail('sdc1')}`);
    t.comment(`MDM log (tail):\n${logTail('mdm')}`);
    if (victim !== undefined) t.comment(`${victim} log (tail):\n${logTail(victim, 20)}`);
  }

  t.test('kill -9 of an SDS while the kernel client writes ext4: a stall, no error, files and replicas intact', async (t) => {
    let writingHostMs: number | undefined;
    // The guest's clock at a host instant, from the last soak line that carried t=.
    let guestClock: { hostMs: number; guestS: number } | undefined;
    let writeDoneHostMs: number | undefined;
    let resolveProgress: () => void = () => undefined;
    const progress = new Promise<void>((resolve) => (resolveProgress = resolve));
    const onLine = (line: string): void => {
      const guestS = Number(field(line, 't'));
      if (line.includes('PFLEX-INFO soak writing')) writingHostMs = Date.now();
      if (line.includes('PFLEX-INFO soak ')) {
        if (Number.isFinite(guestS)) guestClock = { hostMs: Date.now(), guestS };
        if (line.includes('files_written=')) resolveProgress();
      }
      if (/PFLEX-RESULT write /.test(line)) writeDoneHostMs = Date.now();
    };

    const writeSamples: WriteSample[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const stats = await sdcVolumeStats().catch(() => undefined);
        if (stats !== undefined) writeSamples.push({ atMs: Date.now(), writes: stats.writes });
        await sleep(STATS_INTERVAL_MS);
      }
    })();

    const guest = runGuest({
      nbdPort: e2e.cluster.spec.sdc.nbd,
      exportName: VOLUME,
      mode: 'soak',
      soakSeconds: SOAK_S,
      timeoutMs: GUEST_TIMEOUT_MS,
      artifacts,
      onLine,
      signal: guestAbort.signal,
    });
    let guestEnded = false;
    void guest.finally(() => (guestEnded = true)).catch(() => undefined);

    let victim: string | undefined;
    let killHostMs = 0;
    let killGuestS: number | undefined;
    let downAfterMs: number | undefined;
    let run: RunGuestResult | undefined;
    try {
      // Cancelled once the race is decided: a pending timer would keep the process alive for minutes.
      const progressTimeout = new AbortController();
      await Promise.race([progress, guest, sleep(PROGRESS_TIMEOUT_MS, progressTimeout.signal)]);
      progressTimeout.abort();
      if (guestEnded || guestClock === undefined || writingHostMs === undefined) {
        t.fail('the guest did not start its soak writes');
        return;
      }

      const chunks = (await e2e.pflexJson<{ chunks: ChunkView[] }>('vol', 'chunks', VOLUME)).chunks;
      const replicasBySds = new Map<string, number>();
      for (const chunk of chunks) {
        for (const replica of chunk.replicas) if (replica.state === 'CURRENT') replicasBySds.set(replica.sds, (replicasBySds.get(replica.sds) ?? 0) + 1);
      }
      const [name, replicaCount] = [...replicasBySds.entries()].sort((a, b) => b[1] - a[1])[0] ?? [undefined, 0];
      t.ok(name !== undefined && replicaCount > 0, `an SDS holds replicas of ${VOLUME}: ${JSON.stringify(Object.fromEntries(replicasBySds))} in ${chunks.length} chunks`);
      if (name === undefined) return;
      victim = name;

      killHostMs = Date.now();
      await e2e.cluster.kill9(victim);
      killGuestS = guestClock.guestS + (killHostMs - guestClock.hostMs) / 1000;
      t.comment(
        `killed ${victim} (${replicaCount} replicas) at ${new Date(killHostMs).toISOString()}, ` +
          `${((killHostMs - writingHostMs) / 1000).toFixed(1)} s into the soak writes, guest t≈${killGuestS.toFixed(1)}`,
      );

      downAfterMs = await waitForSdsState(victim, 'DOWN', killHostMs, SDS_DOWN_TIMEOUT_MS);
      t.ok(downAfterMs !== undefined, `the MDM reports ${victim} DOWN (${downAfterMs ?? '-'} ms after the kill, polled)`);

      run = await guest;
    } finally {
      // Never leave qemu behind: wait for the guest whatever failed above (it has a deadline).
      run ??= await guest.catch(() => undefined);
      sampling = false;
      await sampler;
      if (run === undefined || !run.ok || t.passing() === false) dumpDiagnostics(t, run, victim);
    }
    if (victim === undefined || run === undefined) return;

    t.comment(`guest: ${JSON.stringify(run.results)} in ${run.durationMs} ms`);
    t.notOk(run.timedOut, `the guest powered off by itself (${run.durationMs} ms)`);
    for (const step of REQUIRED_STEPS) t.match(run.results[step] ?? 'missing', /^ok\b/, `guest step ${step}: ${run.results[step] ?? 'missing'}`);
    t.same(Object.entries(run.results).filter(([, value]) => !value.startsWith('ok')), [], 'no step failed (dmesg holds no IO error)');
    const live = Number(field(run.results.write, 'live'));
    t.ok(live > 0, `the soak left files to verify (live=${field(run.results.write, 'live')})`);
    t.equal(field(run.results.verify, 'files'), String(live), `all ${live} live files verified after the remount`);
    const writeEndGuestS = Number(field(run.results.write, 't'));
    t.ok(killGuestS !== undefined && killGuestS < writeEndGuestS, `the kill (guest t≈${killGuestS?.toFixed(1)}) came before the writes ended (t=${writeEndGuestS})`);

    // How long the writes stalled: the guest's slowest loop iteration against its mean, and the
    // SDC's longest time without a completed write after the kill against the time before it.
    const iterMaxAtS = Number(field(run.results.write, 'iter_max_at'));
    const iterMaxS = Number(field(run.results.write, 'iter_max_s'));
    const writeEndMs = writeDoneHostMs ?? Date.now();
    const iterStartAfterKillS = iterMaxAtS - iterMaxS - (killGuestS ?? 0);
    t.comment(
      `stall, guest view: slowest iteration ${iterMaxS} s ending at t=${iterMaxAtS} ` +
        `(began ${Math.abs(iterStartAfterKillS).toFixed(1)} s ${iterStartAfterKillS < 0 ? 'before' : 'after'} the kill), ` +
        `mean ${field(run.results.write, 'iter_mean_s')} s, slowest sync ${field(run.results.write, 'sync_max_s')} s`,
    );
    const gapAfter = longestWriteGap(writeSamples, killHostMs, writeEndMs);
    const gapBefore = longestWriteGap(writeSamples, writingHostMs!, killHostMs);
    t.comment(
      `stall, SDC view (sampled every ${STATS_INTERVAL_MS} ms): first completed write ${firstWriteAfterMs(writeSamples, killHostMs) ?? '-'} ms after the kill; ` +
        `longest time without one ${gapAfter.gapMs} ms after the kill (from +${gapAfter.startMs - killHostMs} ms), ${gapBefore.gapMs} ms before it; ` +
        `the MDM reported DOWN after ${downAfterMs} ms`,
    );

    const stats = await sdcVolumeStats();
    t.comment(`SDC counters for ${VOLUME}: ${JSON.stringify(stats)}`);
    // The counter covers reads and writes; a failed FLUSH shows up as an IO error in the guest's dmesg.
    t.equal(stats?.errors, 0, 'the SDC failed no read or write');

    const events = await e2e.pflexJson<{ at: string; type: string; message: string }[]>('event', 'list', '--limit', '1000');
    const fenced = events.find((event) => event.type === 'SDS_FENCED' && event.message.includes(victim!));
    t.ok(fenced !== undefined, `${victim} was fenced ${fenced === undefined ? '' : `${Date.parse(fenced.at) - killHostMs} ms after the kill`}`);
    const verify = await e2e.pflex('--json', 'vol', 'verify', VOLUME);
    t.equal(verify.code, 0, `pflex vol verify ${VOLUME} exits 0 ${verify.stderr}`);
    const report = JSON.parse(verify.stdout || '{}') as { clean?: boolean; chunks_checked?: number; mismatches?: unknown[] };
    t.equal(report.clean, true, `the current replicas agree (${report.chunks_checked} chunks, mismatches ${JSON.stringify(report.mismatches)})`);

    e2e.cluster.restart(victim);
    const upAfterMs = await waitForSdsState(victim, 'UP', Date.now(), SDS_UP_TIMEOUT_MS);
    t.ok(upAfterMs !== undefined, `${victim} is UP again after its restart (${upAfterMs ?? '-'} ms)`);
  });

  t.test('every process stops cleanly', async (t) => {
    // A process that died earlier (a failed run left the SDS down) has been reported already.
    const running = [...e2e.cluster.processes.values()].filter((entry) => entry.child.exitCode === null && entry.child.signalCode === null);
    t.equal(running.length, 5, 'the MDM, three SDS and the SDC are running');
    await e2e.cluster.stop();
    for (const entry of running) {
      t.same({ code: entry.child.exitCode, signal: entry.child.signalCode }, { code: 0, signal: null }, `${entry.name} exited 0 on SIGTERM`);
    }
  });
}
