/**
 * Honest loss (DESIGN §6): when every replica of a chunk is gone, IO to it fails with EIO and the
 * volume shows FAILED — never zeros; when the SDS that held the last current replica returns, the
 * data is served again, byte for byte.
 */
import t from 'tap';
import { qemuIo, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 256 * MiB, provisioning: 'thin' }], { heartbeatIntervalMs: 500 });
});
t.teardown(async () => {
  await e2e?.stop();
});

const vol1 = (...commands: string[]) => qemuIo(e2e, 'vol1', commands);

interface Status {
  sds: { name: string; state: string }[];
  volumes: { name: string; health: string }[];
}

function status(): Promise<Status> {
  return e2e.pflexJson<Status>('cluster', 'status');
}

async function waitFor(check: (s: Status) => boolean, what: string, timeoutMs = 20_000): Promise<Status> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const current = await status();
    if (check(current)) return current;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(current)}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

t.test('all replicas lost: EIO, FAILED; the freshest returns: data back', async (t) => {
  const first = await vol1('write -P 0x61 0 64M', 'flush');
  t.equal(first.code, 0, first.stderr);
  // Slow the rebuild right down: two SDS must be gone before it can give the chunks new replicas.
  const slow = await e2e.pflex('pool', 'modify', 'pool1', '--rebuild-rate-mbps', '1');
  t.equal(slow.code, 0, slow.stderr);

  await e2e.cluster.kill9('sds-2');
  await waitFor((s) => s.sds.some((sds) => sds.name === 'sds-2' && sds.state === 'DOWN'), 'sds-2 DOWN');
  // Written while sds-2 is away: only sds-1 and sds-3 have it.
  const second = await vol1('write -P 0x62 0 64M', 'flush');
  t.equal(second.code, 0, `writes carry on with one SDS down: ${second.stderr}`);

  await e2e.cluster.kill9('sds-3');
  const lost = await waitFor((s) => s.volumes[0]?.health === 'FAILED', 'vol1 FAILED');
  t.equal(lost.volumes[0]?.health, 'FAILED', 'chunks whose replicas were on sds-2 and sds-3 have none left');
  const read = await vol1('read -P 0x62 0 64M');
  t.match(read.stdout + read.stderr, /Input\/output error|failed/i, 'reading the lost range fails with an error, never zeros');
  t.notMatch(read.stdout, /^read 67108864\/67108864/m);

  e2e.cluster.startSds(2);
  await waitFor((s) => s.volumes[0]?.health !== 'FAILED', 'vol1 served again', 30_000);
  const back = await vol1('read -P 0x62 0 64M');
  t.equal(back.code, 0, back.stderr);
  t.notMatch(back.stdout, /Pattern verification failed|error/i, 'the returning SDS serves the latest data');
  // sds-3 held the last current replica of the lost chunks: it was never fenced, only unavailable.
  const { chunks } = await e2e.cluster.admin.get<{ chunks: { replicas: { sds: string; state: string }[] }[] }>('/vol/vol1/chunks');
  t.ok(
    chunks.every((chunk) => chunk.replicas.some((replica) => replica.state === 'CURRENT' && replica.sds !== 'sds-2')),
    'every chunk has a current replica off sds-2 (which missed the second write)',
  );
});
