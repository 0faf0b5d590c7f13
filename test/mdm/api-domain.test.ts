/**
 * MDM API: the domain objects end to end over real HTTP — protection domain → fault sets →
 * pool → SDS with devices → SDC → volumes → mappings, lookups by id and by name, extend,
 * rename, the 409 conflicts, 404s, capacity given back on delete, and the event log.
 */
import t from 'tap';
import { startTestMdm } from '../helpers/mdm.js';
import { Api, assertApiError, listEvents, GiB, MiB } from '../helpers/api.js';

const mdm = await startTestMdm();
t.teardown(() => mdm.stop());
const api = new Api(mdm.url, mdm.adminToken);

const ids: Record<string, number> = {};

t.test('protection domains: create, list, show by id and by name, duplicate name', async (t) => {
  const created = await api.post('/pd/create', { name: 'pd1', description: 'lab domain' });
  t.equal(created.status, 201, 'create answers 201');
  t.equal(created.body.name, 'pd1');
  t.equal(created.body.description, 'lab domain');
  t.type(created.body.id, 'number');
  t.same({ pools: created.body.pools, fault_sets: created.body.fault_sets, sds: created.body.sds }, { pools: 0, fault_sets: 0, sds: 0 });
  ids.pd1 = created.body.id;

  const second = await api.post('/pd/create', { name: 'pd2' });
  t.equal(second.status, 201);
  ids.pd2 = second.body.id;
  t.not(ids.pd2, ids.pd1, 'ids are distinct');

  const list = await api.get('/pd/list');
  t.equal(list.status, 200);
  t.same(
    list.body.map((pd: { name: string }) => pd.name),
    ['pd1', 'pd2'],
    'list shows both, by name',
  );

  const byId = await api.get(`/pd/${ids.pd1}`);
  const byName = await api.get('/pd/pd1');
  t.equal(byId.status, 200);
  t.equal(byName.status, 200);
  t.same(byId.body, byName.body, '/pd/<id> and /pd/<name> show the same domain');
  t.equal(byId.body.name, 'pd1');

  const duplicate = await api.post('/pd/create', { name: 'pd1' });
  assertApiError(t, duplicate, { status: 409, code: 'PFLEX_ERR_NAME_TAKEN', message: /pd1/ }, 'duplicate pd');
  t.equal((await api.ok('/pd/list')).length, 2, 'the refused duplicate created nothing');
});

t.test('fault sets: create in a domain, list filtered by domain, duplicates refused', async (t) => {
  for (const name of ['fs1', 'fs2']) {
    const created = await api.post('/fault_set/create', { pd: 'pd1', name });
    t.equal(created.status, 201, `${name} created`);
    t.equal(created.body.pd, 'pd1');
    t.equal(created.body.pd_id, ids.pd1);
    ids[name] = created.body.id;
  }
  assertApiError(t, await api.post('/fault_set/create', { pd: 'pd1', name: 'fs1' }), { status: 409, code: 'PFLEX_ERR_NAME_TAKEN' }, 'duplicate fault set');
  assertApiError(t, await api.post('/fault_set/create', { pd: 'nope', name: 'fs3' }), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'unknown pd');

  const inPd1 = await api.get('/fault_set/list?pd=pd1');
  t.equal(inPd1.status, 200);
  t.same(inPd1.body.map((fs: { name: string }) => fs.name), ['fs1', 'fs2']);
  t.same(await api.ok('/fault_set/list?pd=pd2'), [], 'no fault sets in pd2');
  t.same(await api.ok(`/fault_set/${ids.fs1}`), await api.ok('/fault_set/fs1'), 'by id equals by name');
  t.equal((await api.ok('/pd/pd1')).fault_sets, 2, 'the domain counts its fault sets');
});

t.test('storage pool: create two_copies, defaults, show by id and by name', async (t) => {
  const created = await api.post('/pool/create', { pd: 'pd1', name: 'pool1', protection_policy: 'two_copies' });
  t.equal(created.status, 201);
  ids.pool1 = created.body.id;
  t.equal(created.body.protection_policy, 'two_copies');
  t.equal(created.body.copies, 2);
  t.equal(created.body.chunk_size_bytes, 4 * MiB, 'chunk size defaults to 4 MiB');
  t.equal(created.body.pd, 'pd1');
  t.equal(created.body.capacity.raw_bytes, 0, 'no devices yet');
  t.equal(created.body.health, 'OK');

  assertApiError(t, await api.post('/pool/create', { pd: 'pd1', name: 'pool1' }), { status: 409, code: 'PFLEX_ERR_NAME_TAKEN' }, 'duplicate pool');
  assertApiError(t, await api.post('/pool/create', { pd: 'pd9', name: 'pool9' }), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'pool in unknown pd');
  t.same(await api.ok(`/pool/${ids.pool1}`), await api.ok('/pool/pool1'), 'by id equals by name');
  t.same((await api.ok('/pool/list?pd=pd1')).map((p: { name: string }) => p.name), ['pool1']);
  t.equal((await api.ok('/pd/pd1')).pools, 1);
});

t.test('SDS: add with devices in fault sets, distinct ports, conflicts, capacity shows in the pool', async (t) => {
  for (const [index, name] of ['sds1', 'sds2'].entries()) {
    const created = await api.post('/sds/add', {
      name,
      pd: 'pd1',
      fault_set: index === 0 ? 'fs1' : 'fs2',
      host: '127.0.0.1',
      data_port: 9700 + index,
      control_port: 9100 + index,
      mgmt_port: 9200 + index,
      devices: [{ path: `/dev/sd${'bc'[index]}`, capacity_bytes: 1 * GiB, pool: 'pool1' }],
    });
    t.equal(created.status, 201, `${name} added`);
    t.equal(created.body.name, name);
    t.equal(created.body.fault_set, index === 0 ? 'fs1' : 'fs2');
    t.equal(created.body.data_port, 9700 + index);
    t.equal(created.body.devices.length, 1);
    t.equal(created.body.devices[0].pool, 'pool1');
    t.equal(created.body.capacity_bytes, 1 * GiB);
    t.equal(created.body.state, 'NEW', 'an SDS added by the admin is NEW until it registers');
    ids[name] = created.body.id;
  }

  assertApiError(
    t,
    await api.post('/sds/add', { name: 'sds1', pd: 'pd1', data_port: 9750, control_port: 9150, mgmt_port: 9250 }),
    { status: 409, code: 'PFLEX_ERR_NAME_TAKEN' },
    'duplicate SDS name',
  );
  assertApiError(
    t,
    await api.post('/sds/add', { name: 'sds3', pd: 'pd1', host: '127.0.0.1', data_port: 9700, control_port: 9150, mgmt_port: 9250 }),
    { status: 409, code: 'PFLEX_ERR_CONFLICT' },
    'data port already used on the host',
  );
  assertApiError(
    t,
    await api.post('/sds/add', {
      name: 'sds3',
      pd: 'pd1',
      data_port: 9760,
      control_port: 9160,
      mgmt_port: 9260,
      devices: [{ path: '/dev/sdz', capacity_bytes: GiB, pool: 'no-such-pool' }],
    }),
    { status: 404, code: 'PFLEX_ERR_NOT_FOUND' },
    'device in an unknown pool',
  );
  assertApiError(
    t,
    await api.post('/sds/add', { name: 'sds3', pd: 'pd1', fault_set: 'fs9', data_port: 9761, control_port: 9161, mgmt_port: 9261 }),
    { status: 404, code: 'PFLEX_ERR_NOT_FOUND' },
    'unknown fault set',
  );
  const names = (await api.ok('/sds/list')).map((sds: { name: string }) => sds.name);
  t.same(names, ['sds1', 'sds2'], 'refused adds left no SDS behind (not even a half-made sds3)');

  t.same(await api.ok(`/sds/${ids.sds1}`), await api.ok('/sds/sds1'), 'by id equals by name');
  const pool = await api.ok('/pool/pool1');
  t.equal(pool.capacity.raw_bytes, 2 * GiB, 'pool raw capacity is the two devices');
  t.equal(pool.sds, 2);
  t.same((await api.ok('/fault_set/fs1')).sds, ['sds1'], 'fault set lists its SDS');
});

t.test('SDC: add, show by id and by name, duplicate refused', async (t) => {
  for (const name of ['sdc1', 'sdc2']) {
    const created = await api.post('/sdc/add', { name, host: '127.0.0.1' });
    t.equal(created.status, 201, `${name} added`);
    t.equal(created.body.name, name);
    t.same(created.body.mappings, []);
    ids[name] = created.body.id;
  }
  assertApiError(t, await api.post('/sdc/add', { name: 'sdc1' }), { status: 409, code: 'PFLEX_ERR_NAME_TAKEN' }, 'duplicate SDC');
  t.same(await api.ok(`/sdc/${ids.sdc1}`), await api.ok('/sdc/sdc1'));
  t.same((await api.ok('/sdc/list')).map((s: { name: string }) => s.name), ['sdc1', 'sdc2']);
});

t.test('volumes: thin and thick, show by id and by name, duplicate and unknown pool refused', async (t) => {
  const thin = await api.post('/vol/create', { name: 'vol-thin', pool: 'pool1', size_bytes: 1 * GiB, provisioning: 'thin' });
  t.equal(thin.status, 201);
  t.equal(thin.body.provisioning, 'thin');
  t.equal(thin.body.size_bytes, 1 * GiB);
  t.equal(thin.body.chunk_count, 256, '1 GiB in 4 MiB chunks');
  t.equal(thin.body.chunk_health.chunks_placed, 0, 'thin places nothing at creation');
  t.equal(thin.body.state, 'AVAILABLE');
  ids.volThin = thin.body.id;

  const thick = await api.post('/vol/create', { name: 'vol-thick', pool: 'pool1', size_bytes: 100 * MiB, provisioning: 'thick' });
  t.equal(thick.status, 201);
  t.equal(thick.body.provisioning, 'thick');
  t.equal(thick.body.chunk_health.chunks_placed, 25, 'thick places all 25 chunks at creation');
  t.equal(thick.body.chunk_health.replicas_available, 50, 'two replicas each');
  t.equal(thick.body.health, 'OK');
  t.equal(thick.body.allocated_bytes, 100 * MiB);
  ids.volThick = thick.body.id;

  const rounded = await api.post('/vol/create', { name: 'vol-round', pool: 'pool1', size_bytes: 1_000_001 });
  t.equal(rounded.status, 201);
  t.equal(rounded.body.size_bytes, 1 * MiB, 'sizes round up to whole MiB');
  t.equal(rounded.body.provisioning, 'thin', 'thin is the default');
  t.equal((await api.del('/vol/vol-round')).status, 200);

  t.equal((await api.ok('/pool/pool1')).capacity.used_bytes, 100 * MiB, 'pool used = the thick volume');

  assertApiError(
    t,
    await api.post('/vol/create', { name: 'vol-thin', pool: 'pool1', size_bytes: MiB }),
    { status: 409, code: 'PFLEX_ERR_NAME_TAKEN', message: /vol-thin/ },
    'duplicate volume',
  );
  assertApiError(
    t,
    await api.post('/vol/create', { name: 'vol-x', pool: 'pool-missing', size_bytes: MiB }),
    { status: 404, code: 'PFLEX_ERR_NOT_FOUND', message: /pool-missing/ },
    'unknown pool',
  );

  t.same(await api.ok(`/vol/${ids.volThick}`), await api.ok('/vol/vol-thick'), 'by id equals by name');
  const list = await api.ok('/vol/list?pool=pool1');
  t.same(list.map((v: { name: string }) => v.name), ['vol-thick', 'vol-thin']);
  const chunks = await api.ok('/vol/vol-thick/chunks');
  t.equal(chunks.chunks.length, 25);
  t.ok(
    chunks.chunks.every((c: { replicas: { sds_id: number }[] }) => c.replicas.length === 2 && c.replicas[0]!.sds_id !== c.replicas[1]!.sds_id),
    'every thick chunk has 2 replicas on distinct SDS',
  );
});

t.test('extend: new total size grows; shrink and same size refused with 400', async (t) => {
  const grown = await api.post('/vol/extend', { volume: 'vol-thick', size_bytes: 200 * MiB });
  t.equal(grown.status, 200);
  t.equal(grown.body.size_bytes, 200 * MiB, 'size_bytes is the new total, not a delta');
  t.equal(grown.body.chunk_health.chunks_placed, 50, 'thick growth places the new chunks');
  t.equal((await api.ok('/pool/pool1')).capacity.used_bytes, 200 * MiB);

  const thinGrown = await api.post('/vol/extend', { volume: ids.volThin, size_gb: 2 });
  t.equal(thinGrown.status, 200, 'extend by id with size_gb');
  t.equal(thinGrown.body.size_bytes, 2 * GiB);
  t.equal(thinGrown.body.chunk_health.chunks_placed, 0, 'thin growth places nothing');

  assertApiError(
    t,
    await api.post('/vol/extend', { volume: 'vol-thick', size_bytes: 100 * MiB }),
    { status: 400, code: 'PFLEX_ERR_VALIDATION', field: 'size_bytes' },
    'shrink',
  );
  assertApiError(
    t,
    await api.post('/vol/extend', { volume: 'vol-thick', size_bytes: 200 * MiB }),
    { status: 400, code: 'PFLEX_ERR_VALIDATION' },
    'same size',
  );
  assertApiError(
    t,
    await api.post('/vol/extend', { volume: 'vol-nope', size_bytes: 300 * MiB }),
    { status: 404, code: 'PFLEX_ERR_NOT_FOUND' },
    'unknown volume',
  );
  const after = await api.ok('/vol/vol-thick');
  t.equal(after.size_bytes, 200 * MiB, 'refused extends changed nothing');
  t.equal(after.chunk_health.chunks_placed, 50);
});

t.test('rename: new name resolves, old name is gone, taken name refused with 409', async (t) => {
  const renamed = await api.post('/vol/rename', { volume: 'vol-thin', new_name: 'vol-a' });
  t.equal(renamed.status, 200);
  t.equal(renamed.body.name, 'vol-a');
  t.equal(renamed.body.id, ids.volThin, 'same volume, new name');
  assertApiError(t, await api.get('/vol/vol-thin'), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'old name');
  t.equal((await api.ok('/vol/vol-a')).id, ids.volThin);

  assertApiError(
    t,
    await api.post('/vol/rename', { volume: 'vol-a', new_name: 'vol-thick' }),
    { status: 409, code: 'PFLEX_ERR_NAME_TAKEN', message: /vol-thick/ },
    'rename onto a taken name',
  );
  t.equal((await api.ok('/vol/vol-a')).id, ids.volThin, 'vol-a kept its name');
  t.equal((await api.ok('/vol/vol-thick')).id, ids.volThick, 'vol-thick kept its name');
});

t.test('map: readWrite and readOnly; already mapped; multi-map needs allow_multi_map and readOnly everywhere', async (t) => {
  const rw = await api.post('/vol/map', { volume: 'vol-thick', sdc: 'sdc1', access_mode: 'readWrite' });
  t.equal(rw.status, 201);
  t.equal(rw.body.access_mode, 'readWrite');
  t.equal(rw.body.volume_id, ids.volThick);
  t.equal(rw.body.sdc_id, ids.sdc1);

  const ro = await api.post('/vol/map', { volume: ids.volThin, sdc: ids.sdc1, access_mode: 'readOnly' });
  t.equal(ro.status, 201, 'map by ids');
  t.equal(ro.body.access_mode, 'readOnly');

  const volume = await api.ok('/vol/vol-thick');
  t.equal(volume.state, 'IN_USE');
  t.same(volume.mappings.map((m: { sdc: string; access_mode: string }) => [m.sdc, m.access_mode]), [['sdc1', 'readWrite']]);
  const sdc = await api.ok('/sdc/sdc1');
  t.same(
    sdc.mappings.map((m: { volume: string; access_mode: string }) => [m.volume, m.access_mode]),
    [
      ['vol-a', 'readOnly'],
      ['vol-thick', 'readWrite'],
    ],
    'the SDC lists both mappings',
  );

  assertApiError(t, await api.post('/vol/map', { volume: 'vol-thick', sdc: 'sdc1' }), { status: 409, code: 'PFLEX_ERR_ALREADY_MAPPED' }, 'map twice');
  assertApiError(
    t,
    await api.post('/vol/map', { volume: 'vol-thick', sdc: 'sdc2' }),
    { status: 409, code: 'PFLEX_ERR_MULTI_MAP_NOT_ALLOWED', message: /allow_multi_map/ },
    'second SDC without allow_multi_map',
  );
  t.equal((await api.ok('/vol/vol-thick')).mappings.length, 1, 'the refused map added nothing');

  // A volume mapped readWrite has exactly one SDC (overlapping writes are ordered within one SDC).
  for (const mode of ['readOnly', 'readWrite']) {
    assertApiError(
      t,
      await api.post('/vol/map', { volume: 'vol-thick', sdc: 'sdc2', access_mode: mode, allow_multi_map: true }),
      { status: 409, code: 'PFLEX_ERR_MULTI_WRITER', message: /mapped readWrite to SDC sdc1/ },
      `a second SDC (${mode}) beside a readWrite mapping`,
    );
  }
  t.equal((await api.ok('/vol/vol-thick')).mappings.length, 1, 'the refused maps added nothing');
  assertApiError(
    t,
    await api.post('/vol/map', { volume: 'vol-a', sdc: 'sdc2', access_mode: 'readWrite', allow_multi_map: true }),
    { status: 409, code: 'PFLEX_ERR_MULTI_WRITER' },
    'readWrite beside a readOnly mapping',
  );
  const multi = await api.post('/vol/map', { volume: 'vol-a', sdc: 'sdc2', access_mode: 'readOnly', allow_multi_map: true });
  t.equal(multi.status, 201, 'a second SDC with allow_multi_map when every mapping is readOnly');
  t.same(
    (await api.ok('/vol/vol-a')).mappings.map((m: { sdc: string }) => m.sdc),
    ['sdc1', 'sdc2'],
  );

  assertApiError(t, await api.post('/vol/map', { volume: 'vol-nope', sdc: 'sdc1' }), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'unknown volume');
  assertApiError(t, await api.post('/vol/map', { volume: 'vol-a', sdc: 'sdc-nope' }), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'unknown SDC');
});

t.test('deletes that would orphan something are refused with 409 and change nothing', async (t) => {
  assertApiError(
    t,
    await api.del('/vol/vol-thick'),
    { status: 409, code: 'PFLEX_ERR_VOLUME_MAPPED', message: /sdc1/ },
    'delete a mapped volume',
  );
  t.equal((await api.ok('/vol/vol-thick')).chunk_health.chunks_placed, 50, 'the mapped volume and its chunks are still there');

  const pdDelete = await api.del('/pd/pd1');
  assertApiError(t, pdDelete, { status: 409, code: 'PFLEX_ERR_NOT_EMPTY' }, 'delete a PD with pools');
  t.equal(pdDelete.body?.error?.details?.pools, 1, 'details count the pools');
  t.equal((await api.ok('/pd/pd1')).pools, 1);

  assertApiError(t, await api.del('/pool/pool1'), { status: 409, code: 'PFLEX_ERR_NOT_EMPTY' }, 'delete a pool with volumes');
  assertApiError(t, await api.del('/sdc/sdc1'), { status: 409, code: 'PFLEX_ERR_VOLUME_MAPPED' }, 'remove an SDC with mappings');
  assertApiError(t, await api.del('/sds/sds1'), { status: 409, code: 'PFLEX_ERR_NOT_EMPTY' }, 'remove an SDS holding replicas');
  assertApiError(t, await api.del('/fault_set/fs1'), { status: 409, code: 'PFLEX_ERR_NOT_EMPTY' }, 'delete a fault set with SDS');
  t.equal((await api.ok('/sds/list')).length, 2);
  t.equal((await api.ok('/sdc/list')).length, 2);
});

t.test('unmap: mapped pairs unmap; unmapping what is not mapped is 409 NOT_MAPPED', async (t) => {
  const unmapped = await api.post('/vol/unmap', { volume: 'vol-a', sdc: 'sdc2' });
  t.equal(unmapped.status, 200);
  t.equal(unmapped.body.unmapped.sdc_id, ids.sdc2);
  assertApiError(t, await api.post('/vol/unmap', { volume: 'vol-a', sdc: 'sdc2' }), { status: 409, code: 'PFLEX_ERR_NOT_MAPPED' }, 'unmap twice');
  assertApiError(t, await api.post('/vol/unmap', { volume: 'vol-thick', sdc: 'sdc2' }), { status: 409, code: 'PFLEX_ERR_NOT_MAPPED' }, 'never mapped');
  assertApiError(t, await api.post('/vol/unmap', { volume: 'vol-nope', sdc: 'sdc2' }), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'unknown volume');

  t.equal((await api.post('/vol/unmap', { volume: 'vol-thick', sdc: 'sdc1' })).status, 200);
  t.equal((await api.post('/vol/unmap', { volume: 'vol-a', sdc: 'sdc1' })).status, 200);
  const volume = await api.ok('/vol/vol-thick');
  t.equal(volume.state, 'AVAILABLE');
  t.same(volume.mappings, []);
  t.same((await api.ok('/sdc/sdc1')).mappings, []);
});

t.test('deleting a volume frees its pool capacity and its replicas', async (t) => {
  const before = await api.ok('/pool/pool1');
  t.equal(before.capacity.used_bytes, 200 * MiB);
  const statusBefore = await api.ok('/cluster/status');
  t.equal(statusBefore.replicas.chunks, 50);

  const deleted = await api.del('/vol/vol-thick');
  t.equal(deleted.status, 200);
  t.equal(deleted.body.deleted.name, 'vol-thick');
  assertApiError(t, await api.get('/vol/vol-thick'), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'deleted volume');
  assertApiError(t, await api.get(`/vol/${ids.volThick}`), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'deleted volume by id');

  const after = await api.ok('/pool/pool1');
  t.equal(after.capacity.used_bytes, 0, 'used bytes back to 0');
  t.equal(after.capacity.free_bytes, after.capacity.usable_bytes, 'all usable capacity is free again');
  t.equal(after.chunk_health.chunks_placed, 0);
  const status = await api.ok('/cluster/status');
  t.same(
    { chunks: status.replicas.chunks, expected: status.replicas.expected, available: status.replicas.available },
    { chunks: 0, expected: 0, available: 0 },
  );
  for (const sds of status.sds) t.equal(sds.replica_count, 0, `${sds.name} holds no replica`);
  assertApiError(t, await api.del('/vol/vol-thick'), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'delete twice');
});

t.test('unknown ids and names answer 404 PFLEX_ERR_NOT_FOUND', async (t) => {
  const cases: [string, string, unknown?][] = [
    ['GET', '/pd/999'],
    ['GET', '/pd/no-such-pd'],
    ['DELETE', '/pd/no-such-pd'],
    ['GET', '/fault_set/999'],
    ['GET', '/pool/999'],
    ['GET', '/pool/no-such-pool'],
    ['GET', '/pool/no-such-pool/health'],
    ['GET', '/pool/list?pd=no-such-pd'],
    ['GET', '/sds/999'],
    ['GET', '/sds/no-such-sds'],
    ['GET', '/sdc/999'],
    ['GET', '/sdc/no-such-sdc'],
    ['GET', '/vol/999'],
    ['GET', '/vol/no-such-vol'],
    ['GET', '/vol/no-such-vol/chunks'],
    ['GET', '/vol/list?pool=no-such-pool'],
    ['DELETE', '/vol/no-such-vol'],
    ['DELETE', '/sdc/no-such-sdc'],
    ['POST', '/vol/rename', { volume: 'no-such-vol', new_name: 'x1' }],
    ['POST', '/vol/create', { name: 'x1', pool: 999, size_bytes: MiB }],
  ];
  for (const [method, path, body] of cases) {
    const response = await api.request(method, path, body === undefined ? {} : { json: body });
    assertApiError(t, response, { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, `${method} ${path}`);
  }
  t.equal((await api.ok('/vol/list')).length, 1, 'nothing created by the 404 cases');
});

t.test('the whole topology can be taken down in order', async (t) => {
  t.equal((await api.del('/pd/pd2')).status, 200, 'empty pd2 deletes');
  assertApiError(t, await api.get('/pd/pd2'), { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'deleted pd2');
  t.equal((await api.del('/vol/vol-a')).status, 200);
  t.equal((await api.del('/sdc/sdc1')).status, 200);
  t.equal((await api.del('/sdc/sdc2')).status, 200);
  t.equal((await api.del('/sds/sds1')).status, 200, 'an SDS without replicas is removed');
  t.equal((await api.post('/sds/remove', { sds: 'sds2' })).status, 200);
  t.equal((await api.del('/pool/pool1')).status, 200);
  t.equal((await api.del('/fault_set/fs1')).status, 200);
  t.equal((await api.del(`/fault_set/${ids.fs2}`)).status, 200);
  t.equal((await api.del('/pd/pd1')).status, 200, 'the emptied pd1 deletes');
  const status = await api.ok('/cluster/status');
  t.same(
    [status.protection_domains, status.pools, status.sds, status.sdc, status.volumes],
    [[], [], [], [], []],
    'cluster is empty',
  );
});

t.test('the event log recorded every change and none of the refusals', async (t) => {
  const events = await listEvents(api);
  const count = (type: string): number => events.filter((e) => e.type === type).length;
  const expected: Record<string, number> = {
    PD_CREATED: 2,
    PD_DELETED: 2,
    FAULT_SET_CREATED: 2,
    FAULT_SET_DELETED: 2,
    POOL_CREATED: 1,
    POOL_DELETED: 1,
    SDS_ADDED: 2,
    SDS_REMOVED: 2,
    SDC_ADDED: 2,
    SDC_REMOVED: 2,
    VOLUME_CREATED: 3,
    VOLUME_EXTENDED: 2,
    VOLUME_RENAMED: 1,
    VOLUME_MAPPED: 3,
    VOLUME_UNMAPPED: 3,
    VOLUME_DELETED: 3,
  };
  for (const [type, n] of Object.entries(expected)) t.equal(count(type), n, `${n} ${type} event(s)`);

  const mapped = events.filter((e) => e.type === 'VOLUME_MAPPED');
  t.ok(mapped.every((e) => e.volume_id !== null && e.sdc_id !== null), 'map events name their volume and SDC');
  t.match(events.find((e) => e.type === 'VOLUME_RENAMED')?.message, /vol-thin.*vol-a/, 'rename event names both names');

  const filtered = await api.ok('/event/list?type=VOLUME_MAPPED');
  t.same(
    filtered.map((e: { id: number }) => e.id),
    mapped.map((e) => e.id),
    '?type= filters the log',
  );
  const ids = events.map((e) => e.id);
  t.same(ids, [...ids].sort((a, b) => a - b), 'events come oldest first');
  const lastTwo = await api.ok(`/event/list?since_id=${ids[ids.length - 3]}`);
  t.equal(lastTwo.length, 2, '?since_id= returns only newer events');
});
