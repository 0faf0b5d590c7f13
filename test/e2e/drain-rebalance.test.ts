/**
 * Growth and shrink (issue 6): adding an SDS rebalances replicas onto it in the background, and
 * `pflex sds remove` drains an SDS (every replica moves elsewhere first) before it goes. Both
 * while fio writes with verification through NBD: no client error, the data reads back, every
 * chunk keeps its two replicas, and `pflex vol verify` is clean.
 */
import t from 'tap';
import { run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { waitFor as poll } from '../helpers/api.js';
import { freePort } from '../../src/launcher/free-port.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 256 * MiB, provisioning: 'thin' }], { heartbeatIntervalMs: 500 });
});
t.teardown(async () => {
  await e2e?.stop();
});

interface Status {
  pools: { health: string }[];
  sds: { name: string; state: string }[];
  replicas: { expected: number; available: number; degraded_chunks: number };
  rebuild: { state: string }[];
}

interface Replica {
  sds: string;
  state: string;
}

function status(): Promise<Status> {
  return e2e.pflexJson<Status>('cluster', 'status');
}

/** Replicas per SDS name, from the MDM's chunk map of vol1. */
async function replicasBySds(): Promise<Map<string, number>> {
  const { chunks } = await e2e.cluster.admin.get<{ chunks: { replicas: Replica[] }[] }>('/vol/vol1/chunks');
  const counts = new Map<string, number>();
  for (const chunk of chunks) for (const replica of chunk.replicas) counts.set(replica.sds, (counts.get(replica.sds) ?? 0) + 1);
  return counts;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 90_000): Promise<void> {
  if ((await poll(async () => ((await check()) ? true : undefined), timeoutMs, 250)) === undefined) throw new Error(`timed out waiting for ${what}`);
}

function fio(verifyOnly = false) {
  return run(
    'fio',
    ['--name=grow', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=128M',
      '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', ...(verifyOnly ? ['--verify_only'] : ['--do_verify=1'])],
    { timeoutMs: 240_000 },
  );
}

t.test('a new SDS gets replicas by rebalancing; a removed SDS is drained first', async (t) => {
  const fill = await fio();
  t.equal(fill.code, 0, `fio fills 128 MiB: ${fill.stderr}`);
  const before = await replicasBySds();
  t.equal(before.get('sds-4'), undefined, 'sds-4 does not exist yet');

  const ports = await Promise.all([freePort(), freePort(), freePort()]);
  await e2e.cluster.addSds('sds-4', { data: ports[0]!, control: ports[1]!, mgmt: ports[2]! }, 2 * 1024 ** 3);
  const during = fio();
  await waitFor('rebalancing onto sds-4', async () => ((await replicasBySds()).get('sds-4') ?? 0) >= 8);
  const grown = await during;
  t.equal(grown.code, 0, `fio writing during the rebalance: ${grown.stderr}`);
  await waitFor('the rebalance to settle', async () => (await status()).rebuild.every((pool) => pool.state === 'idle'));
  const after = await replicasBySds();
  t.comment(`replicas per SDS before ${JSON.stringify([...before])}, after ${JSON.stringify([...after])}`);
  const counts = [...after.values()];
  t.ok(Math.max(...counts) - Math.min(...counts) <= Math.ceil(Math.max(...counts) * 0.2) + 2, 'replicas are spread evenly over the four SDS');
  const events = await e2e.pflexJson<{ type: string; message: string }[]>('event', 'list', '--limit', '1000');
  t.ok(events.some((event) => event.type === 'REBALANCE_STARTED'), 'a REBALANCE_STARTED event');

  const drainedFio = fio();
  const removal = await e2e.pflex('sds', 'remove', 'sds-1', '--wait', '--timeout', '180');
  t.equal(removal.code, 0, removal.stderr);
  t.match(removal.stdout, /drained and removed SDS sds-1/);
  const drained = await drainedFio;
  t.equal(drained.code, 0, `fio writing during the drain: ${drained.stderr}`);
  const final = await status();
  t.notOk(final.sds.some((sds) => sds.name === 'sds-1'), 'sds-1 is gone');
  t.equal((await replicasBySds()).get('sds-1'), undefined, 'no replica is left on sds-1');
  t.equal(final.pools[0]?.health, 'OK', 'the pool is OK');
  t.equal(final.replicas.available, final.replicas.expected, 'every chunk has its two replicas');
  const allEvents = await e2e.pflexJson<{ type: string; message: string }[]>('event', 'list', '--limit', '1000');
  t.ok(allEvents.some((event) => event.type === 'SDS_DRAIN_STARTED'), 'an SDS_DRAIN_STARTED event');
  t.ok(allEvents.some((event) => event.type === 'SDS_REMOVED' && event.message.includes('sds-1')), 'an SDS_REMOVED event');
  const verify = await e2e.pflex('--json', 'vol', 'verify', 'vol1');
  t.equal(verify.code, 0, verify.stderr);
  t.equal((JSON.parse(verify.stdout) as { clean: boolean }).clean, true, 'pflex vol verify is clean');
  const reread = await fio(true);
  t.equal(reread.code, 0, `every block fio wrote last verifies: ${reread.stderr}`);
  // The removed SDS's process is still running: stop it (its record is gone, it cannot rejoin).
  await e2e.cluster.stopProcess('sds-1');
});
