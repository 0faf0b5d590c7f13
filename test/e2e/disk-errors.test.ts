/**
 * Disk errors on one replica (issue 10, item 3), under fio with crc32c verification through NBD:
 *
 * - EIO on a share of one SDS's device writes: no client error; the replicas that failed are
 *   fenced alone (REPLICA_FENCED, STALE with their reason) and rebuilt from their peers;
 * - ENOSPC on every write and slot zeroing of another SDS: no client error either; its replicas
 *   move elsewhere;
 * - afterwards the pool is OK, `pflex vol verify` finds no replicas that differ, and every block
 *   fio wrote verifies again.
 */
import t from 'tap';
import { run, setSdsFaults, startE2eCluster, waitWhole, type E2eCluster } from '../helpers/e2e-cluster.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 256 * MiB, provisioning: 'thin' }], { env: { PFLEX_FAULT_INJECTION: '1' }, heartbeatIntervalMs: 500 });
});
t.teardown(async () => {
  await e2e?.stop();
});

function fio(name: string, offsetMiB: number, verifyOnly = false) {
  return run(
    'fio',
    [`--name=${name}`, '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=32M', `--offset=${offsetMiB}M`,
      '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--randseed=7', ...(verifyOnly ? ['--verify_only'] : ['--do_verify=1'])],
    { timeoutMs: 280_000 },
  );
}

async function fencedOn(sds: string, reason: RegExp): Promise<number> {
  const events = await e2e.pflexJson<{ type: string; message: string }[]>('event', 'list', '--type', 'REPLICA_FENCED', '--limit', '1000');
  return events.filter((event) => event.message.includes(`SDS ${sds}`) && reason.test(event.message)).length;
}

t.test('EIO on a fifth of one SDS device writes: no client error, its failed replicas fenced and rebuilt', async (t) => {
  await setSdsFaults(e2e, 1, { seed: 5, device_errors: [{ op: 'write', errno: 'EIO', probability: 0.2 }] });
  const job = await fio('eio', 0);
  t.equal(job.code, 0, `fio with verify exits 0: ${job.stderr.slice(-500)}`);
  const fenced = await fencedOn('sds-2', /IO_ERROR/);
  t.ok(fenced > 0, `replicas on sds-2 were fenced for IO_ERROR (${fenced})`);
  await setSdsFaults(e2e, 1, {});
  t.ok(await waitWhole(e2e), 'the pool is whole again: every chunk has two current replicas');
  const verify = await e2e.pflexJson<{ clean: boolean }>('vol', 'verify', 'vol1');
  t.equal(verify.clean, true, 'pflex vol verify: no replicas differ');
  const again = await fio('eio', 0, true);
  t.equal(again.code, 0, `every block verifies again: ${again.stderr.slice(-500)}`);
});

t.test('ENOSPC on one SDS: no client error, the chunks go elsewhere, replicas never differ', async (t) => {
  await setSdsFaults(e2e, 2, { device_errors: [{ op: 'write', errno: 'ENOSPC' }, { op: 'zero', errno: 'ENOSPC' }] });
  const job = await fio('enospc', 96);
  t.equal(job.code, 0, `fio with verify exits 0: ${job.stderr.slice(-500)}`);
  const fenced = await fencedOn('sds-3', /NO_SPACE/);
  t.ok(fenced > 0, `replicas on sds-3 were fenced for NO_SPACE (${fenced})`);
  await setSdsFaults(e2e, 2, {});
  t.ok(await waitWhole(e2e), 'the pool is whole again');
  const verify = await e2e.pflexJson<{ clean: boolean }>('vol', 'verify', 'vol1');
  t.equal(verify.clean, true, 'pflex vol verify: no replicas differ');
  const again = await fio('enospc', 96, true);
  t.equal(again.code, 0, `every block verifies again: ${again.stderr.slice(-500)}`);
});
