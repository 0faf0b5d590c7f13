/**
 * kill -9 of one SDS under a verifying fio write load through NBD: the SDC reports it, the MDM
 * probes, marks it DOWN and fences its replicas (new epochs on the survivors), and IO carries on
 * with zero errors at the client; every byte fio wrote reads back. The rebuild then puts a
 * second replica of every chunk on the remaining SDS: the pool is OK again, replicas agree.
 */
import t from 'tap';
import { run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { CMD, RawNbdClient } from '../helpers/nbd-raw-client.js';
import { waitFor } from '../helpers/api.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 1024 * MiB, provisioning: 'thin' }]);
});
t.teardown(async () => {
  await e2e?.stop();
});

t.test('kill -9 of an SDS during verified writes: no client error, data intact, SDS fenced', async (t) => {
  const fio = run(
    'fio',
    ['--name=failover', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=64M',
      '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'],
    { timeoutMs: 240_000 },
  );
  await new Promise((resolve) => setTimeout(resolve, 2500));
  await e2e.cluster.kill9('sds-2');
  const result = await fio;
  t.equal(result.code, 0, `fio succeeded: ${result.stderr}`);
  const job = (JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] }).jobs[0]!;
  t.equal(job.error, 0, 'no IO error at the client');
  t.equal(job.write.io_bytes, 64 * MiB);
  t.equal(job.read.io_bytes, 64 * MiB, 'every block read back and verified');

  const status = JSON.parse((await e2e.pflex('--json', 'cluster', 'status')).stdout) as {
    pools: { name: string; health: string }[];
    sds: { name: string; state: string }[];
  };
  t.same(status.sds.find((sds) => sds.name === 'sds-2')?.state, 'DOWN');
  t.not(status.pools[0]?.health, 'FAILED', 'no chunk lost every replica');

  // The rebuild puts a second replica of every chunk sds-2 held on the remaining SDS.
  const healthy = await waitForPoolOk(60_000);
  t.ok(healthy, 'the pool is OK again after the rebuild');
  const events = await e2e.pflexJson<{ type: string; message: string }[]>('event', 'list', '--limit', '1000');
  t.ok(events.some((event) => event.type === 'SDS_FENCED' && event.message.includes('sds-2')), 'sds-2 was fenced');
  t.ok(events.some((event) => event.type === 'REBUILD_STARTED'), 'a REBUILD_STARTED event');
  t.ok(events.some((event) => event.type === 'REBUILD_COMPLETED'), 'a REBUILD_COMPLETED event');
  const rebuild = JSON.parse((await e2e.pflex('--json', 'rebuild', 'status')).stdout) as { pools: { state: string; last: { chunks: number; bytes: number } | null }[] };
  t.equal(rebuild.pools[0]?.state, 'idle', 'pflex rebuild status: idle');
  t.ok((rebuild.pools[0]?.last?.chunks ?? 0) > 0, 'pflex rebuild status shows the last run');
  const verify = await e2e.pflex('--json', 'vol', 'verify', 'vol1');
  t.equal(verify.code, 0, verify.stderr);
  const report = JSON.parse(verify.stdout) as { clean: boolean };
  t.equal(report.clean, true, 'the current replicas agree, the rebuilt ones included');

  // Every byte still reads back as fio wrote it, now from either replica.
  const reread = await run(
    'fio',
    ['--name=failover', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=64M',
      '--verify=crc32c', '--verify_only', '--verify_fatal=1', '--verify_state_save=0'],
    { timeoutMs: 120_000 },
  );
  t.equal(reread.code, 0, `fio --verify_only after the rebuild: ${reread.stderr}`);
});

t.test('a FLUSH that is the first request after an SDS dies succeeds on the survivors', async (t) => {
  e2e.cluster.restart('sds-2');
  t.ok(await waitForPoolOk(60_000), 'whole again with sds-2 back');
  const port = Number(new URL(e2e.uri('vol1')).port);
  const client = await RawNbdClient.negotiate(port);
  await client.go('vol1');
  // What the first test's fio left unflushed is flushed first: its replicas were killed and
  // rebuilt since, and a FLUSH after losing the last of the SDS that took those writes reports
  // them as possibly lost (EIO) rather than promise them. This test is about its own write.
  client.sendRequest({ type: CMD.FLUSH, handle: 9n });
  t.equal((await client.readSimpleReply()).error, 0, 'the earlier writes flushed');
  // A write first, so the SDC has the plan (and connections) of every SDS holding vol1.
  client.sendRequest({ type: CMD.WRITE, handle: 1n, offsetBytes: 0, lengthBytes: 4096 }, Buffer.alloc(4096, 0x5a));
  t.equal((await client.readSimpleReply()).error, 0, 'write ok');
  await e2e.cluster.kill9('sds-1');
  const startedMs = Date.now();
  client.sendRequest({ type: CMD.FLUSH, handle: 2n });
  const flushed = await client.readSimpleReply();
  t.equal(flushed.error, 0, `FLUSH succeeded (${Date.now() - startedMs} ms after the kill)`);
  client.sendRequest({ type: CMD.READ, handle: 3n, offsetBytes: 0, lengthBytes: 4096 });
  const read = await client.readSimpleReply(4096);
  t.ok(read.data.equals(Buffer.alloc(4096, 0x5a)), 'the write reads back');
  client.socket.destroy();
  e2e.cluster.restart('sds-1');
});

async function waitForPoolOk(timeoutMs: number): Promise<boolean> {
  const ok = await waitFor(async () => {
    const status = await e2e.pflexJson<{ pools: { health: string }[]; rebuild: { state: string }[] }>('cluster', 'status');
    return status.pools[0]?.health === 'OK' && status.rebuild.every((pool) => pool.state === 'idle') ? true : undefined;
  }, timeoutMs, 500);
  return ok === true;
}
