/**
 * A failed epoch install is retried until it lands (issue 10, item 6). An SDS that refuses the
 * new epochs of a fence (its control plane fails the next orders on purpose) would refuse every
 * token of the new epoch for the chunks it survives, so their writes would fail. The MDM keeps
 * the orders it owes (sds_orders) and sends them again: fio's verified writes see no error, the
 * owed orders drain, and the replicas are identical.
 */
import t from 'tap';
import { run, sdsControl, setSdsFaults, startE2eCluster, waitWhole, type E2eCluster } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/api.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 128 * MiB, provisioning: 'thin' }], { env: { PFLEX_FAULT_INJECTION: '1' }, heartbeatIntervalMs: 500 });
});
t.teardown(async () => {
  await e2e?.stop();
});

function fio(verifyOnly = false) {
  return run(
    'fio',
    ['--name=retry', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=32M', '--randseed=3',
      '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', ...(verifyOnly ? ['--verify_only'] : ['--do_verify=1'])],
    { timeoutMs: 240_000 },
  );
}

t.test('a survivor that refuses the new epochs at first gets them when it answers again', async (t) => {
  const fill = await fio();
  t.equal(fill.code, 0, `fio fills: ${fill.stderr.slice(-300)}`);
  await setSdsFaults(e2e, 2, { control: [{ path: '/chunks/epoch', count: 12, status: 503 }] });
  await e2e.cluster.kill9('sds-1');
  const pending = await waitFor(
    async () => {
      const status = await e2e.cluster.admin.get<{ sds_orders_pending: { sds_id: number; kind: string; count: number }[] }>('/cluster/status');
      return status.sds_orders_pending.some((order) => order.kind === 'epoch') ? status.sds_orders_pending : undefined;
    },
    30_000,
    100,
  );
  t.ok(pending !== undefined, 'the MDM owes sds-3 epoch installs it refused', { pending });
  const during = await fio();
  t.equal(during.code, 0, `fio with verify exits 0: the epochs reached sds-3 (${during.stderr.slice(-300)})`);
  const drained = await waitFor(
    async () => ((await e2e.pflexJson<{ sds_orders_pending: unknown[] }>('cluster', 'status')).sds_orders_pending.length === 0 ? true : undefined),
    30_000,
    200,
  );
  t.ok(drained, 'no order is owed any more');
  const faults = await sdsControl(e2e, 2, '/debug/faults');
  t.ok(faults.body.counters.control_failures >= 1, `sds-3 did refuse orders (${faults.body.counters.control_failures})`);
  e2e.cluster.restart('sds-1');
  const whole = await waitWhole(e2e);
  t.ok(whole, 'sds-1 back: the pool is OK');
  const verify = await e2e.pflex('--json', 'vol', 'verify', 'vol1');
  t.equal(verify.code, 0, `pflex vol verify: no replicas differ ${verify.stdout.slice(0, 2000)}`);
  const again = await fio(true);
  t.equal(again.code, 0, 'every block verifies');
});
