/**
 * One replica unreachable from the SDC but alive to the MDM (issue 10): the SDS's data port
 * swallows every request of the SDC (fault injection: read, never executed, never answered),
 * while its heartbeats, control plane and the MDM's PING probe work. The SDC's timeout decides:
 * the replicas it cannot reach are fenced alone (TIMEOUT) and rebuilt on the other SDS, fio's
 * verified writes see no error, the SDS stays UP, and no replicas differ.
 */
import t from 'tap';
import { run, setSdsFaults, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/api.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 128 * MiB, provisioning: 'thin' }], { env: { PFLEX_FAULT_INJECTION: '1' }, heartbeatIntervalMs: 500 });
});
t.teardown(async () => {
  await e2e?.stop();
});

t.test('an SDS the SDC cannot reach: its replicas fenced and moved, no client error', async (t) => {
  const fill = await run('fio', ['--name=fill', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=write', '--bs=1M', '--iodepth=4', '--size=32M', '--verify=crc32c', '--verify_state_save=0', '--do_verify=1'], { timeoutMs: 120_000 });
  t.equal(fill.code, 0, `fio fills 32 MiB: ${fill.stderr.slice(-300)}`);
  await setSdsFaults(e2e, 1, { data: [{ kind: 'blackhole', opcodes: ['hello', 'token', 'read', 'write', 'flush', 'trim', 'write_zeroes'] }] });
  const job = await run(
    'fio',
    ['--name=cut', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=32M', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--do_verify=1'],
    { timeoutMs: 280_000 },
  );
  t.equal(job.code, 0, `fio with verify exits 0 while sds-2 swallows the SDC's requests: ${job.stderr.slice(-500)}`);
  const status = await e2e.pflexJson<{ sds: { name: string; state: string }[] }>('cluster', 'status');
  t.equal(status.sds.find((sds) => sds.name === 'sds-2')?.state, 'UP', 'sds-2 stayed UP: the MDM reaches it');
  const events = await e2e.pflexJson<{ type: string; message: string }[]>('event', 'list', '--type', 'REPLICA_FENCED', '--limit', '1000');
  t.ok(events.some((event) => event.message.includes('SDS sds-2') && /TIMEOUT/.test(event.message)), 'replicas on sds-2 were fenced: the SDC timed out');
  const moved = await waitFor(
    async () => {
      const { chunks } = await e2e.cluster.admin.get<{ chunks: { replicas: { sds: string; state: string }[] }[] }>('/vol/vol1/chunks');
      const whole = chunks.every((chunk) => chunk.replicas.filter((r) => r.state === 'CURRENT').length === 2);
      return whole ? chunks : undefined;
    },
    120_000,
    500,
  );
  t.ok(moved !== undefined, 'every chunk has two current replicas again');
  await setSdsFaults(e2e, 1, {});
  const verify = await e2e.pflexJson<{ clean: boolean }>('vol', 'verify', 'vol1');
  t.equal(verify.clean, true, 'pflex vol verify: no replicas differ');
});
