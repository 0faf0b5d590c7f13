/**
 * The SDC's IO engine when pieces and replicas fail (issue 10, items 2 and 3), with its SDS
 * connections and IO plans replaced by scripted fakes (a unit test: the e2e tests drive the same
 * paths through real processes):
 *
 * - a write over several chunks settles every piece before it completes or fails: the range
 *   stays held and the caller's buffer in use until no piece can still be sent;
 * - a replica that answers IO_ERROR is reported with its reason and epoch, and once the MDM has
 *   fenced it the write completes on the survivor, with no client error;
 * - NO_SPACE on every replica is a clear ENOSPC, and the MDM was told;
 * - a read that meets IO_ERROR fails over to the other replica and reports the failed one;
 * - a FLUSH fails with EIO when every replica that took writes it covers restarted (its
 *   connection was made again) before they were flushed, and succeeds when one did not.
 */
import t from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { Opcode, Status } from '../../src/common/sds-protocol.js';
import { VolumeEngine, VolumeIoError, type ReplicaFailure, type ReplicaFailureOutcome } from '../../src/sdc/volume-engine.js';
import type { ChunkRoute, Lease, VolumeLeases } from '../../src/sdc/token-leases.js';
import type { SdsPool } from '../../src/sdc/sds-pool.js';
import type { PlanReplica } from '../../src/common/io-plan.js';
import type { RequestFields, SdsReply } from '../../src/common/sds-client.js';

const CHUNK_BYTES = 1024 * 1024;
const log = createLogger('engine-test', 'silent');
const lease: Lease = {
  token: Buffer.alloc(8),
  tokenId: Buffer.alloc(16),
  tokenIdHex: '00'.repeat(16),
  sessionKey: undefined as never,
  issuedAtMs: Date.now(),
  expiresAtMs: Date.now() + 3_600_000,
  nextSeq: 1n,
};

function replica(sdsId: number): PlanReplica {
  return { sds_id: sdsId, sds_name: `sds-${sdsId}`, host: '127.0.0.1', data_port: 9000 + sdsId };
}

/** IO plans: per chunk its epoch and replica SDS ids; `fence` drops one and bumps the epoch. */
class FakeLeases {
  readonly plans = new Map<number, { epoch: number; sds: number[] }>();
  refreshes = 0;

  route(chunkIndex: number): Promise<ChunkRoute> {
    const plan = this.plans.get(chunkIndex)!;
    return Promise.resolve({ lease, chunk: { index: chunkIndex, placed: true, epoch: plan.epoch, replicas: plan.sds.map(replica) }, requestedAtMs: Date.now() });
  }

  allocate(chunkIndex: number): Promise<ChunkRoute> {
    return this.route(chunkIndex);
  }

  refresh(): Promise<void> {
    this.refreshes += 1;
    return Promise.resolve();
  }

  cachedRoutes(): ChunkRoute[] {
    return [...this.plans.entries()].map(([index, plan]) => ({ lease, chunk: { index, placed: true, epoch: plan.epoch, replicas: plan.sds.map(replica) }, requestedAtMs: Date.now() }));
  }

  fence(chunkIndex: number, sdsId: number): void {
    const plan = this.plans.get(chunkIndex)!;
    this.plans.set(chunkIndex, { epoch: plan.epoch + 1, sds: plan.sds.filter((id) => id !== sdsId) });
  }
}

type Answer = (fields: RequestFields, sdsId: number) => Promise<SdsReply>;

/** SDS connections that answer as the test script says, recording every request. */
class FakePool {
  readonly sent: { sdsId: number; opcode: number; chunkIndex: number; epoch: number }[] = [];
  /** Per SDS id, how many times its connection was made again (an SDS restart). */
  readonly generations = new Map<number, number>();
  constructor(private readonly answer: Answer) {}

  endpoint(host: string, port: number): { host: string; port: number; generation: number; send: (l: Lease, fields: RequestFields, payload: Buffer | undefined) => Promise<SdsReply> } {
    const sdsId = port - 9000;
    const generations = this.generations;
    return {
      host,
      port,
      get generation() {
        return generations.get(sdsId) ?? 1;
      },
      send: (_l, fields) => {
        this.sent.push({ sdsId, opcode: fields.opcode, chunkIndex: fields.chunkIndex, epoch: fields.epoch });
        return this.answer(fields, sdsId);
      },
    };
  }

  endpointByKey(key: string): { generation: number } | undefined {
    return this.endpoint('127.0.0.1', Number(key.split(':')[1]));
  }
}

const ok = (payload?: Buffer): SdsReply => ({ status: Status.OK, aux: 0, payload });
const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function engine(leases: FakeLeases, pool: FakePool, report: (failures: ReplicaFailure[]) => Promise<ReplicaFailureOutcome[] | undefined>): VolumeEngine {
  return new VolumeEngine(
    { id: 7, name: 'v', sizeBytes: 4 * CHUNK_BYTES, chunkSizeBytes: CHUNK_BYTES, readOnly: false },
    leases as unknown as VolumeLeases,
    pool as unknown as SdsPool,
    log,
    () => undefined,
    report,
  );
}

t.test('a write over two chunks fails only after its slow piece has settled', async (t) => {
  const leases = new FakeLeases();
  leases.plans.set(0, { epoch: 1, sds: [1, 2] });
  leases.plans.set(1, { epoch: 1, sds: [1, 2] });
  let slowSettled = 0;
  const pool = new FakePool(async (fields) => {
    if (fields.chunkIndex === 0) {
      await delay(300);
      slowSettled += 1;
      return ok();
    }
    return { status: Status.NO_SPACE, aux: 28, payload: undefined };
  });
  const reports: ReplicaFailure[][] = [];
  const e = engine(leases, pool, async (failures) => {
    reports.push(failures);
    return failures.map((f) => ({ sds_id: f.sds_id, chunk_index: f.chunk_index, fenced: false, epoch: 1, why: 'the last current replica is never fenced' }));
  });
  const data = Buffer.alloc(8192, 0xab);
  let error: unknown;
  try {
    await e.write(CHUNK_BYTES - 4096, data, false);
  } catch (caught) {
    error = caught;
  }
  t.ok(error instanceof VolumeIoError && error.errno === 'ENOSPC', 'the write fails with ENOSPC', { error: String(error) });
  t.equal(slowSettled, 2, 'but only once both replicas of the slow piece had answered');
  t.same(
    reports.flat().map((f) => [f.sds_id, f.chunk_index, f.reason, f.op]),
    [
      [1, 1, 'NO_SPACE', 'write'],
      [2, 1, 'NO_SPACE', 'write'],
    ],
    'the MDM was told of both replicas without space',
  );
});

t.test('IO_ERROR on one replica: reported, fenced, and the write completes on the survivor', async (t) => {
  const leases = new FakeLeases();
  leases.plans.set(2, { epoch: 5, sds: [1, 2] });
  const pool = new FakePool(async (_fields, sdsId) => (sdsId === 1 ? { status: Status.IO_ERROR, aux: 5, payload: undefined } : ok()));
  const reports: ReplicaFailure[] = [];
  const e = engine(leases, pool, async (failures) => {
    reports.push(...failures);
    for (const failure of failures) leases.fence(failure.chunk_index, failure.sds_id);
    return failures.map((f) => ({ sds_id: f.sds_id, chunk_index: f.chunk_index, fenced: true, epoch: 6, why: 'fenced' }));
  });
  await e.write(2 * CHUNK_BYTES, Buffer.alloc(4096, 1), true);
  t.same(reports.map((f) => [f.sds_id, f.chunk_index, f.epoch, f.reason]), [[1, 2, 5, 'IO_ERROR']], 'the failed replica reported with the epoch of its plan');
  t.same(
    pool.sent.map((s) => [s.sdsId, s.epoch]),
    [
      [1, 5],
      [2, 5],
      [2, 6],
    ],
    'the write went to both at epoch 5, then to the survivor alone at the new epoch',
  );
  t.equal(e.counters.errors, 0, 'no client error');
});

t.test('the MDM unreachable: the write retries (it never completes on one replica alone)', async (t) => {
  const leases = new FakeLeases();
  leases.plans.set(0, { epoch: 1, sds: [1, 2] });
  let failing = true;
  const pool = new FakePool(async (_fields, sdsId) => (sdsId === 1 && failing ? { status: Status.IO_ERROR, aux: 5, payload: undefined } : ok()));
  let calls = 0;
  const e = engine(leases, pool, async () => {
    calls += 1;
    if (calls >= 3) failing = false; // the replica recovers before the MDM is reachable
    return undefined;
  });
  await e.write(0, Buffer.alloc(4096, 2), false);
  t.ok(calls >= 3, `the report was tried on every attempt (${calls})`);
  const last = pool.sent.slice(-2).map((s) => s.sdsId).sort();
  t.same(last, [1, 2], 'the attempt that succeeded went to both replicas');
});

t.test('a read that meets IO_ERROR fails over and reports the replica', async (t) => {
  const leases = new FakeLeases();
  leases.plans.set(3, { epoch: 2, sds: [1, 2] });
  const good = Buffer.alloc(4096, 7);
  const pool = new FakePool(async (_fields, sdsId) => (sdsId === 1 ? { status: Status.IO_ERROR, aux: 5, payload: undefined } : ok(good)));
  const reports: ReplicaFailure[] = [];
  const e = engine(leases, pool, async (failures) => {
    reports.push(...failures);
    return [];
  });
  let allOk = true;
  for (let i = 0; i < 4; i += 1) allOk &&= (await e.read(3 * CHUNK_BYTES, 4096)).equals(good);
  t.ok(allOk, 'every read returns the good replica’s bytes');
  t.ok(reports.length >= 1 && reports.every((f) => f.sds_id === 1 && f.reason === 'IO_ERROR' && f.op === 'read'), 'the failing replica is reported', { reports });
});

t.test('a FLUSH never promises writes every replica of which restarted before they were flushed', async (t) => {
  const leases = new FakeLeases();
  leases.plans.set(0, { epoch: 1, sds: [1, 2] });
  leases.plans.set(1, { epoch: 1, sds: [2, 3] });
  const pool = new FakePool(async () => ok());
  const e = engine(leases, pool, async () => []);
  await e.write(0, Buffer.alloc(4096, 1), false);
  await e.flush();
  t.pass('a FLUSH after a write on healthy replicas succeeds');

  await e.write(0, Buffer.alloc(4096, 2), false); // chunk 0, on SDS 1 and 2
  pool.generations.set(1, 2); // SDS 1 restarted: its connection was made again
  await e.flush();
  t.pass('one replica that took the write restarted, the other did not: the FLUSH succeeds');

  await e.write(0, Buffer.alloc(4096, 3), false);
  pool.generations.set(1, 3);
  pool.generations.set(2, 2); // both replicas of chunk 0 restarted before the FLUSH
  leases.plans.set(0, { epoch: 2, sds: [] }); // and the MDM has no current replica left
  const failed = await e.flush().then(
    () => undefined,
    (error: unknown) => error,
  );
  t.ok(failed instanceof VolumeIoError && failed.errno === 'EIO' && /chunk\(s\) 0 may be lost/.test(failed.message), 'the FLUSH fails with EIO naming the chunk', { error: String(failed) });
  await e.flush();
  t.pass('reported once: the next FLUSH (nothing new written) succeeds');
});

t.test('FLUSHes running at the same time all report a possible loss, not only the first one', async (t) => {
  const leases = new FakeLeases();
  leases.plans.set(0, { epoch: 1, sds: [1, 2] });
  leases.plans.set(1, { epoch: 1, sds: [2, 3] });
  // FLUSHes are slow here, so two overlap; everything else answers at once.
  const pool = new FakePool(async (fields) => {
    if (fields.opcode === Opcode.FLUSH) await delay(30);
    return ok();
  });
  const e = engine(leases, pool, async () => []);
  await e.write(0, Buffer.alloc(4096, 1), false); // chunk 0, on SDS 1 and 2, not yet flushed
  pool.generations.set(1, 2);
  pool.generations.set(2, 2); // both restarted before any FLUSH
  leases.plans.set(0, { epoch: 2, sds: [] });
  const outcome = (promise: Promise<void>): Promise<string> => promise.then(() => 'ok', (error: unknown) => (error instanceof VolumeIoError ? error.errno : String(error)));
  const first = outcome(e.flush());
  await delay(5);
  const second = outcome(e.flush()); // sent while the first runs: it covers the same write
  t.same(await Promise.all([first, second]), ['EIO', 'EIO'], 'both fail');
  t.equal(await outcome(e.flush()), 'ok', 'a FLUSH that starts after they reported it succeeds (reported once, as fsync does)');

  leases.plans.set(0, { epoch: 3, sds: [1, 2] }); // the replicas are back
  await e.write(0, Buffer.alloc(4096, 2), false);
  const slow = outcome(e.flush());
  await delay(5);
  await e.write(0, Buffer.alloc(4096, 3), false); // after the FLUSH began: not covered by it
  pool.generations.set(1, 3);
  pool.generations.set(2, 3);
  t.equal(await slow, 'EIO', 'the running FLUSH sees its write lost');
  t.equal(await outcome(e.flush()), 'EIO', 'and the write that came after it is still owed: the next FLUSH reports it');
});
