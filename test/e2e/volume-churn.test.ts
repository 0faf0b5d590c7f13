/**
 * Deleting a volume frees its slots on the SDS (issue 10, item 7): on a pool of about 1.3 GiB
 * usable, rounds of create a 512 MiB thin volume, map it, write it full through NBD, unmap,
 * delete, until more than the pool holds has been written in total. No round meets ENOSPC, and
 * afterwards every SDS device has all its slots free again (nothing live holds any).
 */
import t from 'tap';
import { run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/api.js';

const MiB = 1024 * 1024;
const ROUNDS = 4;
const VOLUME_MIB = 512;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 64 * MiB, provisioning: 'thin' }], { sdsDeviceBytes: 1024 * MiB });
});
t.teardown(async () => {
  await e2e?.stop();
});

interface DeviceReport {
  devices: { slots: number; slots_free: number }[];
}

t.test(`${ROUNDS} rounds of create, fill, delete: never ENOSPC, every slot free at the end`, async (t) => {
  const pool = await e2e.pflexJson<{ capacity: { usable_bytes: number } }>('pool', 'show', 'pool1');
  t.comment(`pool1 usable: ${(pool.capacity.usable_bytes / MiB).toFixed(0)} MiB; writing ${ROUNDS} x ${VOLUME_MIB} MiB`);
  t.ok(ROUNDS * VOLUME_MIB * MiB > pool.capacity.usable_bytes, 'the rounds write more than the pool holds');
  for (let round = 1; round <= ROUNDS; round += 1) {
    const name = `churn${round}`;
    t.equal((await e2e.pflex('vol', 'create', 'pool1', name, `${VOLUME_MIB}MiB`, '--thin')).code, 0, `round ${round}: created`);
    t.equal((await e2e.pflex('vol', 'map', name, 'sdc1')).code, 0, `round ${round}: mapped`);
    await waitFor(async () => ((await fetch(`http://127.0.0.1:${e2e.cluster.spec.sdc.mgmt}/mappings`).then((r) => r.json())) as { mappings: { name: string }[] }).mappings.some((m) => m.name === name) ? true : undefined, 30_000, 100);
    const fill = await run('fio', ['--name=fill', '--ioengine=nbd', `--uri=${e2e.uri(name)}`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${VOLUME_MIB}M`, '--end_fsync=1'], { timeoutMs: 240_000 });
    t.equal(fill.code, 0, `round ${round}: ${VOLUME_MIB} MiB written: ${fill.stderr.slice(-300)}`);
    t.equal((await e2e.pflex('vol', 'unmap', name, 'sdc1')).code, 0, `round ${round}: unmapped`);
    const deleted = await e2e.pflex('vol', 'delete', name);
    t.equal(deleted.code, 0, `round ${round}: deleted ${deleted.stderr}`);
  }
  const free = await waitFor(
    async () => {
      const reports = await Promise.all(e2e.cluster.spec.sds.map((ports) => fetch(`http://127.0.0.1:${ports.mgmt}/devices`).then((r) => r.json() as Promise<DeviceReport>)));
      return reports.every((report) => report.devices.every((device) => device.slots_free === device.slots)) ? reports : undefined;
    },
    30_000,
    250,
  );
  t.ok(free !== undefined, 'every SDS device has every slot free again');
  const after = await e2e.pflexJson<{ capacity: { used_bytes: number } }>('pool', 'show', 'pool1');
  t.equal(after.capacity.used_bytes, 0, 'and the MDM counts nothing used');
});
