/**
 * The SDC keeps no data (DESIGN §6): kill -9 it, start it again, and a client that reattaches
 * sees everything it wrote — the mappings come back from sdc_chunks.db and the MDM, the plan
 * and tokens from the MDM.
 */
import t from 'tap';
import { run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 256 * MiB, provisioning: 'thin' }]);
});
t.teardown(async () => {
  await e2e?.stop();
});

t.test('kill -9 of the SDC, restart, reattach: every byte is there', async (t) => {
  const written = await run('qemu-io', ['-f', 'raw', e2e.uri('vol1'), '-c', 'write -P 0x3c 0 24M', '-c', 'write -P 0x3d 100M 4M', '-c', 'flush']);
  t.equal(written.code, 0, written.stderr);
  await e2e.cluster.kill9('sdc1');
  e2e.cluster.restart('sdc1');
  await e2e.cluster.waitForSdc();
  const read = await run('qemu-io', ['-f', 'raw', e2e.uri('vol1'), '-c', 'read -P 0x3c 0 24M', '-c', 'read -P 0x3d 100M 4M', '-c', 'read -P 0 24M 76M']);
  t.equal(read.code, 0, read.stderr);
  t.notMatch(read.stdout, /failed|error/i, read.stdout);
  t.equal((read.stdout.match(/^read /gm) ?? []).length, 3, 'all three ranges verified');
});

t.test('kill -9 of the SDC in the middle of writes: the chunks it was writing are resynced, replicas agree', async (t) => {
  // Many writes in flight when the SDC dies: some reach one replica and not the other.
  const load = run(
    'fio',
    ['--name=inflight', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=64k', '--iodepth=32', '--size=128M', '--time_based', '--runtime=30'],
    { timeoutMs: 60_000 },
  );
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await e2e.cluster.kill9('sdc1');
  await load; // fio fails: its server died
  e2e.cluster.restart('sdc1');
  await e2e.cluster.waitForSdc();
  const deadline = Date.now() + 60_000;
  let resynced = false;
  let idle = false;
  while (Date.now() < deadline && !(resynced && idle)) {
    const events = await e2e.pflexJson<{ message: string }[]>('event', 'list', '--type', 'RESYNC_AFTER_SDC');
    resynced = events.length > 0;
    const rebuild = JSON.parse((await e2e.pflex('--json', 'rebuild', 'status')).stdout) as { pools: { state: string }[] };
    idle = rebuild.pools.every((pool) => pool.state === 'idle');
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  t.ok(resynced, 'the MDM resynced the chunks the SDC was writing (RESYNC_AFTER_SDC)');
  t.ok(idle, 'the resync finished');
  const verify = await e2e.pflex('--json', 'vol', 'verify', 'vol1');
  t.equal(verify.code, 0, verify.stderr);
  t.equal((JSON.parse(verify.stdout) as { clean: boolean }).clean, true, 'pflex vol verify: the replicas agree');
});
