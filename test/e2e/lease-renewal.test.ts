/**
 * Lease renewals with real processes (issue 11): tokens live 4 s, so under a verifying fio load
 * through NBD the SDC renews every window many times, in batched POST /io/renew requests that
 * carry no plan. Then, with the volume idle, a kill -9 of an SDS fences its replicas: the next
 * renewal is answered PLAN_CHANGED and that window is authorized afresh, with no IO error to
 * prompt it. No client error, every byte fio wrote reads back under the new plan, replicas agree.
 */
import t from 'tap';
import { qemuIo, run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { sleep, waitFor } from '../helpers/api.js';

const MiB = 1024 * 1024;
const TOKEN_TTL_MS = 4000;
let e2e: E2eCluster;

interface Renewals {
  renewed_total: number;
  plan_changed_total: number;
  refused_total: number;
}

async function renewals(): Promise<Renewals> {
  return (await e2e.pflexJson<{ lease_renewals: Renewals }>('cluster', 'status')).lease_renewals;
}

t.before(async () => {
  e2e = await startE2eCluster(
    [
      { name: 'vol1', sizeBytes: 256 * MiB, provisioning: 'thick' },
      { name: 'vol2', sizeBytes: 256 * MiB, provisioning: 'thin' },
    ],
    { env: { POWERFLEX_TOKEN_TTL_MS: String(TOKEN_TTL_MS) } },
  );
});
t.teardown(async () => {
  await e2e?.stop();
});

t.test('windows renew without a plan while idle and under IO; a fence makes them plan again', async (t) => {
  const start = await renewals();
  // Two volumes, one window each: in 3 half-lives at least 2 renewals each.
  await sleep(3 * (TOKEN_TTL_MS / 2) + 1500);
  const idle = await renewals();
  t.ok(idle.renewed_total - start.renewed_total >= 4, 'the SDC renewed its leases while idle', { start, idle });
  t.equal(idle.refused_total, 0, 'no renewal refused');

  const fioArgs = ['--name=renewals', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=8', '--size=48M', '--rate_iops=1500',
    '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'];
  const fio = run('fio', fioArgs, { timeoutMs: 240_000 });
  await sleep(TOKEN_TTL_MS + 1000);
  const underIo = await renewals();
  t.ok(underIo.renewed_total > idle.renewed_total, 'renewed under IO', { underIo });
  const result = await fio;
  t.equal(result.code, 0, `fio succeeded: ${result.stderr}`);
  const job = (JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] }).jobs[0]!;
  t.equal(job.error, 0, 'no IO error at the client');
  t.equal(job.read.io_bytes, 48 * MiB, 'every block read back and verified');

  // The kill comes while vol1 is idle: no IO error can make the SDC plan its window again, so
  // only the next renewal can tell it that sds-3's replicas were fenced (a kill under IO races
  // the data path's own re-authorization, which the SDS failure tests cover).
  const beforeKill = await renewals();
  await e2e.cluster.kill9('sds-3');
  const replanned = await waitFor(async () => {
    const now = await renewals();
    return now.plan_changed_total > beforeKill.plan_changed_total ? now : undefined;
  }, 30_000);
  t.ok(replanned !== undefined, 'after the fence, a renewal was answered PLAN_CHANGED (the window planned again)', { beforeKill, replanned });
  const later = await waitFor(async () => {
    const now = await renewals();
    return now.renewed_total > (replanned?.renewed_total ?? Infinity) ? now : undefined;
  }, 3 * TOKEN_TTL_MS);
  t.ok(later !== undefined, 'and the new leases renew again');
  t.equal(later?.refused_total, 0, 'no renewal refused');
  const reread = await run('fio', [...fioArgs, '--verify_only'], { timeoutMs: 120_000 });
  t.equal(reread.code, 0, `under the new plan every block fio wrote reads back and verifies: ${reread.stderr}`);

  // vol2 (thin) is written for the first time with leases that were only ever renewed.
  const write = await qemuIo(e2e, 'vol2', ['write -P 0x5a 0 1M', 'read -P 0x5a 0 1M']);
  t.equal(write.code, 0, `a first write to the thin volume and its read-back: ${write.stderr}${write.stdout}`);
  t.notMatch(write.stdout, /Pattern verification failed|error/i);
  await waitFor(async () => ((await e2e.pflexJson<{ pools: { health: string }[] }>('cluster', 'status')).pools[0]?.health === 'OK' ? true : undefined), 60_000);
  const verify = await e2e.pflex('--json', 'vol', 'verify', 'vol1');
  t.equal(verify.code, 0, verify.stderr);
  t.equal((JSON.parse(verify.stdout) as { clean: boolean }).clean, true, 'the current replicas agree');
});
