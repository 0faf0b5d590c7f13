/**
 * A returning SDS resyncs only what changed while it was away (DESIGN §6): stop sds-3 cleanly
 * (it is fenced like a failed one), write to two chunks only, start it again (rebuild switched
 * off meanwhile, so no copy starts before it is back). Its stale replicas of chunks nobody wrote come back without a copy; the
 * written ones are copied; the data reads back and the replicas agree.
 */
import t from 'tap';
import { qemuIo, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/api.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 256 * MiB, provisioning: 'thin' }], { heartbeatIntervalMs: 500 });
});
t.teardown(async () => {
  await e2e?.stop();
});

const vol1 = (...commands: string[]) => qemuIo(e2e, 'vol1', commands);

t.test('a returning SDS: unchanged chunks without a copy, changed ones copied', async (t) => {
  const first = await vol1('write -P 0x71 0 64M', 'flush');
  t.equal(first.code, 0, first.stderr);
  // No copy starts while sds-3 is away (the pool's rebuild switch): what comes back clean is then
  // decided by the data alone, not by how far a rebuild got on a loaded machine.
  t.equal((await e2e.pflex('pool', 'modify', 'pool1', '--rebuild', 'off')).code, 0);

  await e2e.cluster.stopProcess('sds-3'); // SIGTERM: a clean stop, no write intents left
  const down = await waitFor(async () => {
    const status = await e2e.pflexJson<{ sds: { name: string; state: string }[] }>('cluster', 'status');
    return status.sds.find((sds) => sds.name === 'sds-3')?.state === 'DOWN' ? true : undefined;
  }, 20_000, 200);
  if (down === undefined) throw new Error('sds-3 never went DOWN');
  // Written while sds-3 is away: chunks 0 and 1 only.
  const second = await vol1('write -P 0x72 0 8M', 'flush');
  t.equal(second.code, 0, second.stderr);
  e2e.cluster.restart('sds-3');
  await waitFor(async () => ((await e2e.pflexJson<{ sds: { name: string; state: string }[] }>('cluster', 'status')).sds.find((sds) => sds.name === 'sds-3')?.state === 'UP' ? true : undefined), 30_000, 200);
  t.equal((await e2e.pflex('pool', 'modify', 'pool1', '--rebuild', 'on')).code, 0);

  const settleBy = Date.now() + 60_000;
  let status = await e2e.pflexJson<{ pools: { health: string }[]; rebuild: { state: string }[] }>('cluster', 'status');
  while (!(status.pools[0]?.health === 'OK' && status.rebuild[0]?.state === 'idle')) {
    if (Date.now() > settleBy) throw new Error(`not settled: ${JSON.stringify(status.rebuild)}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
    status = await e2e.pflexJson('cluster', 'status');
  }
  const events = await e2e.pflexJson<{ type: string; message: string }[]>('event', 'list', '--limit', '1000');
  const clean = events.filter((event) => event.type === 'RESYNC_WITHOUT_COPY');
  t.ok(clean.length > 0, `stale replicas of unwritten chunks came back without a copy: ${clean.map((event) => event.message).join(' | ')}`);
  const returned = clean.reduce((sum, event) => sum + Number(/^(\d+) chunk/.exec(event.message)?.[1] ?? 0), 0);
  t.ok(returned >= 3, `several chunks returned without a copy (${returned})`);

  const read = await vol1('read -P 0x72 0 8M', 'read -P 0x71 8M 56M');
  t.equal(read.code, 0, read.stderr);
  t.notMatch(read.stdout, /failed|error/i, 'what was written before and while sds-3 was away reads back');
  const verify = await e2e.pflexJson<{ clean: boolean }>('vol', 'verify', 'vol1');
  t.equal(verify.clean, true, 'pflex vol verify: the returned replicas agree with their peers');
});
