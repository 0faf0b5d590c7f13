/**
 * The MDM never fences for a delay it caused itself (issue 10, item 10): the MDM process is
 * stopped (SIGSTOP) for several times the heartbeat miss window, as a long pass or a paused VM
 * would stall it, then continued. No SDS is marked DOWN or fenced for the silence the MDM could
 * not hear; it logs an MDM_STALLED event; IO through the SDC goes on meanwhile (its tokens are
 * leases, the MDM is not in the IO path).
 */
import t from 'tap';
import { qemuIo, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';

const MiB = 1024 * 1024;
const HEARTBEAT_MS = 500;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 64 * MiB, provisioning: 'thin' }], { heartbeatIntervalMs: HEARTBEAT_MS });
});
t.teardown(async () => {
  const pid = e2e?.cluster.pid('mdm');
  if (pid !== undefined) process.kill(pid, 'SIGCONT');
  await e2e?.stop();
});

t.test('an MDM stopped for 8 miss windows fences nobody when it continues', async (t) => {
  const warm = await qemuIo(e2e, 'vol1', ['write -P 0x5a 0 8M']);
  t.equal(warm.code, 0, 'a first write places the chunks');
  const events = await e2e.pflexJson<{ id: number }[]>('event', 'list', '--limit', '1');
  const lastId = events[0]?.id ?? 0;
  const pid = e2e.cluster.pid('mdm')!;
  process.kill(pid, 'SIGSTOP');
  const stallMs = 8 * 3 * HEARTBEAT_MS;
  const during = await qemuIo(e2e, 'vol1', ['write -P 0xa5 0 4M', 'read -P 0xa5 0 4M']);
  await new Promise((resolve) => setTimeout(resolve, stallMs));
  process.kill(pid, 'SIGCONT');
  t.equal(during.code, 0, `IO through the SDC works while the MDM is stopped: ${during.stderr}`);
  await new Promise((resolve) => setTimeout(resolve, 6 * HEARTBEAT_MS));
  const after = await e2e.pflexJson<{ id: number; type: string; message: string }[]>('event', 'list', '--limit', '1000');
  const fresh = after.filter((event) => event.id > lastId);
  t.same(fresh.filter((event) => /_DOWN$|FENCED/.test(event.type)).map((event) => event.message), [], 'no node marked DOWN, nothing fenced');
  t.ok(fresh.some((event) => event.type === 'MDM_STALLED'), 'an MDM_STALLED event says why the deadlines restarted');
  const status = await e2e.pflexJson<{ sds: { state: string }[]; pools: { health: string }[] }>('cluster', 'status');
  t.ok(status.sds.every((sds) => sds.state === 'UP'), 'every SDS is UP');
  t.equal(status.pools[0]?.health, 'OK', 'the pool is OK');
  const read = await qemuIo(e2e, 'vol1', ['read -P 0xa5 0 4M', 'read -P 0x5a 4M 4M']);
  t.equal(read.code, 0, 'the data reads back');
});
