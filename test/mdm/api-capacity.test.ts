/**
 * MDM API: capacity and placement over real HTTP — scenario D of the seeds (capacity
 * exhaustion fails whole and leaves nothing behind), placement that cannot keep enough
 * copies, thin chunks placed by the first write authorization, and fault-set-aware placement.
 */
import t from 'tap';
import { startTestMdm } from '../helpers/mdm.js';
import { Api, addSds, assertApiError, listEvents, GiB, MiB } from '../helpers/api.js';

interface ChunkView {
  index: number;
  epoch: number;
  replicas: { sds_id: number; sds: string; state: string }[];
}

const mdm = await startTestMdm();
t.teardown(() => mdm.stop());
const api = new Api(mdm.url, mdm.adminToken);
let nextPort = 0;

async function chunksOf(volume: string): Promise<ChunkView[]> {
  return ((await api.ok(`/vol/${volume}/chunks`)) as { chunks: ChunkView[] }).chunks;
}

t.test('scenario D: a thick volume that does not fit fails with 507 and leaves nothing behind', async (t) => {
  await api.must('/pd/create', { name: 'pd-d' });
  await api.must('/pool/create', { pd: 'pd-d', name: 'pool-d', protection_policy: 'two_copies', spare_percent: 0 });
  for (const name of ['sds-d1', 'sds-d2']) {
    await addSds(api, { name, pd: 'pd-d', pool: 'pool-d', capacityBytes: 2 * GiB, portIndex: nextPort++ });
  }
  const empty = await api.ok('/pool/pool-d');
  t.equal(empty.capacity.usable_bytes, 2 * GiB, '2 × 2 GiB raw, two copies, no spare: 2 GiB usable');

  const vol1 = await api.post('/vol/create', { name: 'vol1', pool: 'pool-d', size_bytes: 800 * MiB, provisioning: 'thick' });
  t.equal(vol1.status, 201, 'thick vol1 (800 MiB) is created');
  t.equal((await api.ok('/pool/pool-d')).capacity.used_bytes, 800 * MiB);
  const vol2 = await api.post('/vol/create', { name: 'vol2', pool: 'pool-d', size_bytes: 800 * MiB, provisioning: 'thick' });
  t.equal(vol2.status, 201, 'thick vol2 (800 MiB) is created');

  const replicasBefore = (await api.ok('/cluster/status')).replicas;
  const vol1ChunksBefore = await chunksOf('vol1');
  const sdsBefore = (await api.ok('/sds/list?pd=pd-d')).map((s: { name: string; replica_count: number }) => [s.name, s.replica_count]);
  const eventsBefore = await listEvents(api);
  t.equal(vol1ChunksBefore.length, 200, 'vol1 has 200 placed chunks');

  const vol3 = await api.post('/vol/create', { name: 'vol3', pool: 'pool-d', size_bytes: 800 * MiB, provisioning: 'thick' });
  assertApiError(
    t,
    vol3,
    { status: 507, code: 'PFLEX_ERR_INSUFFICIENT_CAPACITY', message: /pool-d/ },
    'thick vol3 (800 MiB)',
  );
  t.match(vol3.body?.error?.message, /insufficient capacity/i, 'the message says what is wrong');
  t.equal(vol3.body?.error?.details?.pool, 'pool-d', 'details name the pool');

  assertApiError(t, await api.get('/vol/vol3'), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'vol3 afterwards');
  t.same(
    (await api.ok('/vol/list?pool=pool-d')).map((v: { name: string }) => v.name),
    ['vol1', 'vol2'],
    'only vol1 and vol2 exist',
  );
  const pool = await api.ok('/pool/pool-d');
  t.equal(pool.capacity.used_bytes, 1600 * MiB, 'pool used bytes are exactly 1600 MiB');
  t.equal(pool.capacity.thick_provisioned_bytes, 1600 * MiB, 'no provisioned bytes for vol3');
  t.equal(pool.volumes, 2);
  t.same((await api.ok('/cluster/status')).replicas, replicasBefore, 'cluster replica counts unchanged');
  t.same(await chunksOf('vol1'), vol1ChunksBefore, 'vol1 chunks unchanged');
  t.same(
    (await api.ok('/sds/list?pd=pd-d')).map((s: { name: string; replica_count: number }) => [s.name, s.replica_count]),
    sdsBefore,
    'per-SDS replica counts unchanged',
  );
  const newEvents = (await listEvents(api, `since_id=${eventsBefore[eventsBefore.length - 1]!.id}`)).filter(
    (e) => e.type === 'VOLUME_CREATED',
  );
  t.same(newEvents, [], 'no VOLUME_CREATED event for vol3');

  const retry = await api.post('/vol/create', { name: 'vol3', pool: 'pool-d', size_bytes: 400 * MiB, provisioning: 'thick' });
  t.equal(retry.status, 201, 'the name vol3 is free and a volume that fits (400 MiB of 448 MiB free) is created');
  t.equal((await api.ok('/pool/pool-d')).capacity.used_bytes, 2000 * MiB);

  const grow = await api.post('/vol/extend', { volume: 'vol1', size_bytes: 900 * MiB });
  assertApiError(t, grow, { status: 507, code: 'PFLEX_ERR_INSUFFICIENT_CAPACITY', message: /pool-d/ }, 'thick growth that does not fit');
  const vol1After = await api.ok('/vol/vol1');
  t.equal(vol1After.size_bytes, 800 * MiB, 'vol1 keeps its size');
  t.equal(vol1After.chunk_health.chunks_placed, 200, 'vol1 keeps its 200 chunks, no half-grown tail');
  t.equal((await api.ok('/pool/pool-d')).capacity.used_bytes, 2000 * MiB, 'pool used unchanged by the refused growth');

  const thin = await api.post('/vol/create', { name: 'vol-thin-d', pool: 'pool-d', size_bytes: 800 * MiB, provisioning: 'thin' });
  t.equal(thin.status, 201, 'a thin volume over the free space is accepted (it reserves nothing)');
  t.equal((await api.ok('/pool/pool-d')).capacity.used_bytes, 2000 * MiB);
});

t.test('three_copies pool with only 2 SDS: thick create is PLACEMENT_IMPOSSIBLE and leaves nothing', async (t) => {
  await api.must('/pd/create', { name: 'pd-3c' });
  await api.must('/pool/create', { pd: 'pd-3c', name: 'pool-3c', protection_policy: 'three_copies' });
  for (const name of ['sds-3c1', 'sds-3c2']) {
    await addSds(api, { name, pd: 'pd-3c', pool: 'pool-3c', capacityBytes: 4 * GiB, portIndex: nextPort++ });
  }
  const replicasBefore = (await api.ok('/cluster/status')).replicas;

  const thick = await api.post('/vol/create', { name: 'vol-3c', pool: 'pool-3c', size_bytes: 40 * MiB, provisioning: 'thick' });
  assertApiError(t, thick, { status: 507, code: 'PFLEX_ERR_PLACEMENT_IMPOSSIBLE', message: /pool-3c/ }, 'thick in three_copies');
  t.match(thick.body?.error?.message, /3 copies/, 'the message says how many copies are needed');
  assertApiError(t, await api.get('/vol/vol-3c'), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'the volume afterwards');
  const pool = await api.ok('/pool/pool-3c');
  t.equal(pool.volumes, 0);
  t.equal(pool.capacity.used_bytes, 0);
  t.equal(pool.chunk_health.chunks_placed, 0);
  t.same((await api.ok('/cluster/status')).replicas, replicasBefore, 'no replica anywhere');

  await api.must('/sdc/add', { name: 'sdc-3c' });
  const thin = await api.post('/vol/create', { name: 'vol-3c-thin', pool: 'pool-3c', size_bytes: 40 * MiB, provisioning: 'thin' });
  t.equal(thin.status, 201, 'thin creation reserves nothing and succeeds');
  await api.must('/vol/map', { volume: 'vol-3c-thin', sdc: 'sdc-3c' });
  const write = await api.post('/vol/vol-3c-thin/io/authorize', { operations: ['write'], chunk_first: 0, chunk_count: 2, sdc: 'sdc-3c', allocate: true });
  assertApiError(t, write, { status: 507, code: 'PFLEX_ERR_PLACEMENT_IMPOSSIBLE' }, 'first write to the thin volume');
  t.equal((await api.ok('/vol/vol-3c-thin')).chunk_health.chunks_placed, 0, 'the refused write placed nothing');
});

t.test('thin volumes place chunks only on the first write authorization, exactly those chunks', async (t) => {
  await api.must('/pd/create', { name: 'pd-thin' });
  await api.must('/pool/create', { pd: 'pd-thin', name: 'pool-thin' });
  for (const name of ['sds-t1', 'sds-t2', 'sds-t3']) {
    await addSds(api, { name, pd: 'pd-thin', pool: 'pool-thin', capacityBytes: 1 * GiB, portIndex: nextPort++ });
  }
  await api.must('/sdc/add', { name: 'sdc-thin' });
  const created = await api.post('/vol/create', { name: 'vol-t', pool: 'pool-thin', size_bytes: 100 * MiB, provisioning: 'thin' });
  t.equal(created.status, 201);
  t.equal(created.body.chunk_count, 25);
  t.equal(created.body.chunk_health.chunks_placed, 0, 'chunks_placed is 0 at creation');
  t.same(await chunksOf('vol-t'), [], 'no chunk rows');
  t.equal((await api.ok('/pool/pool-thin')).capacity.used_bytes, 0);
  await api.must('/vol/map', { volume: 'vol-t', sdc: 'sdc-thin' });

  const read = await api.post('/vol/vol-t/io/authorize', { operations: ['read'], chunk_first: 0, chunk_count: 4, sdc: 'sdc-thin' });
  t.equal(read.status, 200, 'a read authorization is granted');
  t.same(
    read.body.chunks.map((c: { index: number; placed: boolean; replicas: unknown[] }) => [c.index, c.placed, c.replicas.length]),
    [
      [0, false, 0],
      [1, false, 0],
      [2, false, 0],
      [3, false, 0],
    ],
    'reads of never-written chunks are planned as unplaced (zeros), with no replicas',
  );
  t.equal((await api.ok('/vol/vol-t')).chunk_health.chunks_placed, 0, 'a read places nothing');

  const write = await api.post('/vol/vol-t/io/authorize', { operations: ['write'], chunk_first: 5, chunk_count: 3, sdc: 'sdc-thin', allocate: true });
  t.equal(write.status, 200, 'the first write authorization is granted');
  t.same(
    write.body.chunks.map((c: { index: number }) => c.index),
    [5, 6, 7],
  );
  for (const chunk of write.body.chunks as { index: number; placed: boolean; epoch: number; replicas: { sds_id: number }[] }[]) {
    t.equal(chunk.placed, true, `chunk ${chunk.index} is placed`);
    t.equal(chunk.replicas.length, 2, `chunk ${chunk.index} has 2 replicas in the plan`);
    t.not(chunk.replicas[0]?.sds_id, chunk.replicas[1]?.sds_id, `chunk ${chunk.index}: replicas on distinct SDS`);
    t.ok(chunk.epoch >= 1, `chunk ${chunk.index} has an epoch`);
  }
  const placed = await chunksOf('vol-t');
  t.same(
    placed.map((c) => c.index),
    [5, 6, 7],
    'exactly chunks 5, 6 and 7 exist',
  );
  for (const chunk of placed) {
    t.equal(chunk.replicas.length, 2, `stored chunk ${chunk.index} has 2 replicas`);
    t.equal(new Set(chunk.replicas.map((r) => r.sds_id)).size, 2, `stored chunk ${chunk.index}: distinct SDS`);
    t.ok(chunk.replicas.every((r) => r.state === 'CURRENT'), `stored chunk ${chunk.index}: replicas CURRENT`);
  }
  t.same(
    placed.map((c) => c.replicas.map((r) => r.sds_id)),
    write.body.chunks.map((c: { replicas: { sds_id: number }[] }) => c.replicas.map((r) => r.sds_id)),
    'the plan names the stored replicas',
  );
  const pool = await api.ok('/pool/pool-thin');
  t.equal(pool.chunk_health.chunks_placed, 3);
  t.equal(pool.capacity.used_bytes, 3 * 4 * MiB, 'pool used = 3 chunks');

  const again = await api.post('/vol/vol-t/io/authorize', { operations: ['write'], chunk_first: 5, chunk_count: 3, sdc: 'sdc-thin', allocate: true });
  t.equal(again.status, 200);
  t.same(await chunksOf('vol-t'), placed, 'a second write authorization of the same range places nothing new');

  const overlap = await api.post('/vol/vol-t/io/authorize', { operations: ['write'], chunk_first: 6, chunk_count: 4, sdc: 'sdc-thin', allocate: true });
  t.equal(overlap.status, 200);
  t.same(
    (await chunksOf('vol-t')).map((c) => c.index),
    [5, 6, 7, 8, 9],
    'an overlapping range places only its missing chunks',
  );
  t.equal((await api.ok('/vol/vol-t')).chunk_health.chunks_placed, 5);
});

t.test('placement honors fault sets: every chunk has its replicas in distinct fault sets', async (t) => {
  await api.must('/pd/create', { name: 'pd-fs' });
  await api.must('/pool/create', { pd: 'pd-fs', name: 'pool-fs' });
  await api.must('/pool/create', { pd: 'pd-fs', name: 'pool-fs3', protection_policy: 'three_copies' });
  const faultSetOf = new Map<number, string>();
  for (const fs of ['fs-a', 'fs-b', 'fs-c']) {
    await api.must('/fault_set/create', { pd: 'pd-fs', name: fs });
    for (const n of [1, 2]) {
      const name = `sds-${fs}-${n}`;
      const sds = await api.must('/sds/add', {
        name,
        pd: 'pd-fs',
        fault_set: fs,
        host: '127.0.0.1',
        data_port: 9700 + nextPort,
        control_port: 9100 + nextPort,
        mgmt_port: 9200 + nextPort,
        devices: [
          { path: '/dev/sdb', capacity_bytes: 2 * GiB, pool: 'pool-fs' },
          { path: '/dev/sdc', capacity_bytes: 2 * GiB, pool: 'pool-fs3' },
        ],
      });
      nextPort += 1;
      faultSetOf.set(sds.id, fs);
    }
  }

  const thick = await api.post('/vol/create', { name: 'vol-fs', pool: 'pool-fs', size_bytes: 200 * MiB, provisioning: 'thick' });
  t.equal(thick.status, 201);
  const chunks = await chunksOf('vol-fs');
  t.equal(chunks.length, 50);
  const badChunks = chunks.filter((c) => new Set(c.replicas.map((r) => faultSetOf.get(r.sds_id))).size !== c.replicas.length);
  t.same(badChunks, [], 'no two_copies chunk has two replicas in one fault set');
  t.ok(chunks.every((c) => c.replicas.length === 2 && c.replicas.every((r) => faultSetOf.has(r.sds_id))), 'replicas only on SDS of the pool');
  const perSds = new Map<number, number>();
  for (const chunk of chunks) for (const r of chunk.replicas) perSds.set(r.sds_id, (perSds.get(r.sds_id) ?? 0) + 1);
  t.equal(perSds.size, 6, 'every SDS received replicas (balanced by free capacity)');
  t.ok(Math.max(...perSds.values()) - Math.min(...perSds.values()) <= 2, 'replica counts per SDS within 2 of each other', {
    perSds: Object.fromEntries(perSds),
  });

  await api.must('/sdc/add', { name: 'sdc-fs' });
  await api.must('/vol/create', { name: 'vol-fs-thin', pool: 'pool-fs', size_bytes: 100 * MiB });
  await api.must('/vol/map', { volume: 'vol-fs-thin', sdc: 'sdc-fs' });
  const write = await api.post('/vol/vol-fs-thin/io/authorize', { operations: ['write'], chunk_first: 0, chunk_count: 25, sdc: 'sdc-fs', allocate: true });
  t.equal(write.status, 200);
  const thinChunks = await chunksOf('vol-fs-thin');
  t.equal(thinChunks.length, 25);
  t.ok(
    thinChunks.every((c) => new Set(c.replicas.map((r) => faultSetOf.get(r.sds_id))).size === 2),
    'thin chunks placed on write are in distinct fault sets too',
  );

  const three = await api.post('/vol/create', { name: 'vol-fs3', pool: 'pool-fs3', size_bytes: 100 * MiB, provisioning: 'thick' });
  t.equal(three.status, 201);
  const threeChunks = await chunksOf('vol-fs3');
  t.equal(threeChunks.length, 25);
  t.ok(
    threeChunks.every((c) => c.replicas.length === 3 && new Set(c.replicas.map((r) => faultSetOf.get(r.sds_id))).size === 3),
    'three_copies chunks: one replica in each of the 3 fault sets',
  );
});
