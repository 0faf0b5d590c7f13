/**
 * A lost device or a lost data dir never serves zeros (issue 10, item 5), through the SDC under
 * fio with verification: an SDS whose device file is gone when it restarts reports it MISSING,
 * and one whose whole data dir was wiped comes back as a new incarnation; either way its
 * replicas are lost, rebuilt from their peers on the other SDS, and every block fio wrote reads
 * back: nothing reads as zeros.
 */
import t from 'tap';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { run, startE2eCluster, waitWhole, type E2eCluster } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/api.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 128 * MiB, provisioning: 'thin' }], { heartbeatIntervalMs: 500 });
});
t.teardown(async () => {
  await e2e?.stop();
});

function fio(verifyOnly: boolean) {
  return run(
    'fio',
    ['--name=loss', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=16k', '--iodepth=16', '--size=96M', '--randseed=11',
      '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', ...(verifyOnly ? ['--verify_only'] : ['--do_verify=1'])],
    { timeoutMs: 240_000 },
  );
}

t.test('setup: 96 MiB written and verified', async (t) => {
  const job = await fio(false);
  t.equal(job.code, 0, job.stderr.slice(-300));
});

t.test('a device file gone at restart: MISSING, never recreated, its replicas rebuilt elsewhere', async (t) => {
  const device = join(e2e.dataDir, 'sds-2', 'device0.img');
  await e2e.cluster.stopProcess('sds-2');
  rmSync(device);
  e2e.cluster.restart('sds-2');
  const missing = await waitFor(
    async () => {
      const view = await e2e.cluster.admin.get<{ devices: { state: string }[] }>('/sds/sds-2');
      return view.devices.some((d) => d.state === 'MISSING') ? true : undefined;
    },
    30_000,
    200,
  );
  t.ok(missing, 'the MDM shows the device MISSING');
  t.notOk(existsSync(device), 'the device file was not recreated');
  t.ok(await waitWhole(e2e), 'every chunk has two current replicas again (on sds-1 and sds-3)');
  const { chunks } = await e2e.cluster.admin.get<{ chunks: { replicas: { sds: string; state: string }[] }[] }>('/vol/vol1/chunks');
  t.notOk(chunks.some((chunk) => chunk.replicas.some((r) => r.sds === 'sds-2' && r.state === 'CURRENT')), 'no current replica is left on sds-2');
  const job = await fio(true);
  t.equal(job.code, 0, `every block fio wrote verifies: no zeros (${job.stderr.slice(-300)})`);
  const verify = await e2e.pflexJson<{ clean: boolean }>('vol', 'verify', 'vol1');
  t.equal(verify.clean, true, 'pflex vol verify is clean');
});

t.test('a wiped data dir: a new incarnation, its replicas lost and rebuilt, never zeros', async (t) => {
  await e2e.cluster.stopProcess('sds-3');
  rmSync(join(e2e.dataDir, 'sds-3'), { recursive: true, force: true });
  e2e.cluster.restart('sds-3');
  const lost = await waitFor(
    async () => {
      const events = await e2e.pflexJson<{ type: string; message: string }[]>('event', 'list', '--type', 'SDS_STATE_LOST');
      return events.some((event) => event.message.includes('sds-3')) ? true : undefined;
    },
    30_000,
    200,
  );
  t.ok(lost, 'an SDS_STATE_LOST event names sds-3');
  const job = await fio(true);
  t.equal(job.code, 0, `every block fio wrote verifies while sds-3 is rebuilt: no zeros (${job.stderr.slice(-300)})`);
  t.ok(await waitWhole(e2e), 'every chunk has two current replicas again');
  const verify = await e2e.pflexJson<{ clean: boolean }>('vol', 'verify', 'vol1');
  t.equal(verify.clean, true, 'pflex vol verify is clean');
});
