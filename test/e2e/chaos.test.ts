/**
 * Chaos (issue 6): for about a minute, kill -9 a random SDS while fio writes with verification
 * through NBD, restart it a few seconds later, and wait for the pool to be whole again before
 * the next kill (two copies survive one failure at a time; a rebalance may still be moving
 * replicas back onto the restarted SDS when the next kill comes). fio must never see an error; at the
 * end every pool is OK, every chunk has its full replica count, `pflex vol verify` is clean, and
 * every region fio wrote verifies again.
 */
import t from 'tap';
import { run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { Prng } from '../helpers/sds.js';

const MiB = 1024 * 1024;
const CHAOS_MS = Number(process.env.PFLEX_CHAOS_MS ?? 60_000);
const REGION_BYTES = 16 * MiB;
const REGIONS = 8;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: REGION_BYTES * REGIONS, provisioning: 'thin' }], { heartbeatIntervalMs: 500 });
});
t.teardown(async () => {
  await e2e?.stop();
});

interface Status {
  health: string;
  pools: { name: string; health: string }[];
  sds: { name: string; state: string }[];
  replicas: { chunks: number; expected: number; available: number; degraded_chunks: number; failed_chunks: number };
  rebuild: { pool: string; state: string; last: { chunks: number; bytes: number; seconds: number; rate_bytes_per_s: number } | null }[];
}

function status(): Promise<Status> {
  return e2e.pflexJson<Status>('cluster', 'status');
}

/**
 * Waits until every pool is OK with every replica in place and every SDS UP; `settled`: and no
 * rebuild or rebalance is running (between kills a rebalance may go on: the next kill hits it).
 */
async function waitWhole(timeoutMs: number, settled: boolean): Promise<Status> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const current = await status();
    const whole =
      current.pools.every((pool) => pool.health === 'OK') &&
      (!settled || current.rebuild.every((pool) => pool.state === 'idle')) &&
      current.sds.every((sds) => sds.state === 'UP') &&
      current.replicas.available === current.replicas.expected;
    if (whole) return current;
    if (Date.now() > deadline) throw new Error(`the cluster is not whole after ${timeoutMs} ms: ${JSON.stringify({ ...current, volumes: undefined })}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function fioArgs(region: number, verifyOnly: boolean): string[] {
  return [
    `--name=chaos${region}`, '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
    `--offset=${region * REGION_BYTES}`, `--size=${REGION_BYTES}`, '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0',
    ...(verifyOnly ? ['--verify_only'] : ['--do_verify=1']),
  ];
}

t.test('repeated kill -9 and restart of random SDS under verified writes', async (t) => {
  const failures: string[] = [];
  const written = new Set<number>();
  let stop = false;
  let runs = 0;
  // fio runs back to back over the regions, each writing then verifying its region.
  const writer = (async () => {
    for (let region = 0; !stop; region = (region + 1) % REGIONS) {
      const result = await run('fio', fioArgs(region, false), { timeoutMs: 120_000 });
      runs += 1;
      if (result.code !== 0) failures.push(`region ${region} at ${new Date().toISOString()}: ${result.stderr.slice(0, 1500)}`);
      written.add(region);
    }
  })();

  const kills: { sds: string; downMs: number; wholeAfterMs: number }[] = [];
  const started = Date.now();
  const seed = Number(process.env.PFLEX_CHAOS_SEED ?? 12345);
  t.comment(`seed ${seed} (PFLEX_CHAOS_SEED to change)`);
  const prng = new Prng(seed);
  const random = (n: number): number => prng.int(0, n - 1);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  while (Date.now() - started < CHAOS_MS && failures.length === 0) {
    const victim = `sds-${1 + random(3)}`;
    await e2e.cluster.kill9(victim);
    const downMs = 1500 + random(3000);
    await new Promise((resolve) => setTimeout(resolve, downMs));
    e2e.cluster.restart(victim);
    const before = Date.now();
    await waitWhole(90_000, false);
    kills.push({ sds: victim, downMs, wholeAfterMs: Date.now() - before });
  }
  stop = true;
  await writer;
  t.comment(`kills: ${JSON.stringify(kills)}; fio runs: ${runs}`);
  t.ok(kills.length >= 3, `at least three kill/restart cycles (${kills.length})`);
  for (const failure of failures) t.comment(failure);
  t.equal(failures.length, 0, 'fio saw no error and every verification passed');

  const final = await waitWhole(90_000, true);
  t.equal(final.health, 'OK', 'the cluster is OK');
  t.equal(final.replicas.failed_chunks, 0, 'no chunk failed');
  t.equal(final.replicas.degraded_chunks, 0, 'no chunk degraded');
  t.equal(final.replicas.available, final.replicas.expected, `every chunk at full replica count (${final.replicas.available}/${final.replicas.expected})`);
  const verify = await e2e.pflex('--json', 'vol', 'verify', 'vol1');
  t.equal(verify.code, 0, verify.stderr);
  const report = JSON.parse(verify.stdout) as { clean: boolean; mismatches?: unknown[] };
  t.equal(report.clean, true, `pflex vol verify is clean: ${JSON.stringify(report.mismatches ?? []).slice(0, 500)}`);
  const check = await e2e.pflex('--json', 'cluster', 'check');
  const invariants = JSON.parse(check.stdout) as { chunks_checked: number; violations: string[] };
  t.same(invariants.violations, [], `pflex cluster check: every chunk's metadata invariants hold (${invariants.chunks_checked} chunks)`);
  t.equal(check.code, 0, 'and it exits 0');
  for (const region of [...written].sort((a, b) => a - b)) {
    const result = await run('fio', fioArgs(region, true), { timeoutMs: 120_000 });
    t.equal(result.code, 0, `region ${region} verifies again after the chaos: ${result.stderr.slice(0, 300)}`);
  }
  const events = await e2e.pflexJson<{ type: string; message: string }[]>('event', 'list', '--limit', '1000');
  for (const event of events) if (/^(REBUILD_COMPLETED|RESYNC_WITHOUT_COPY|REBALANCE_STARTED)$/.test(event.type)) t.comment(`${event.type}: ${event.message}`);
  t.ok(events.some((event) => event.type === 'SDS_FENCED'), 'SDS were fenced');
  t.ok(events.some((event) => event.type === 'REBUILD_COMPLETED'), 'rebuilds completed');
});
