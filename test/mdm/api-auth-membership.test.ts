/**
 * MDM API: credentials and membership over real HTTP — admin endpoints refuse the anonymous
 * and the wrong, join tokens (valid, missing, garbage, expired, used up, wrong role),
 * registration handing out node credentials (and the signing key to SDS only), node
 * credentials kept off admin endpoints, the heartbeat health monitor, and the token authority.
 */
import t from 'tap';
import { startTestMdm, type TestMdm } from '../helpers/mdm.js';
import { Api, addSds, assertApiError, listEvents, sleep, waitFor, GiB, MiB } from '../helpers/api.js';
import { decodeToken, deriveSessionKey, TokenOp, verifyTokenSignature } from '../../src/common/io-token.js';

// A long heartbeat interval: nodes registered here must not go DOWN while the file runs.
const mdm: TestMdm = await startTestMdm({ heartbeatIntervalMs: 60_000 });
t.teardown(() => mdm.stop());
const admin = new Api(mdm.url, mdm.adminToken);
const anonymous = new Api(mdm.url);

/** Admin-only and admin-or-node endpoints, with a body that would be valid for an admin. */
const PROTECTED: [string, string, unknown?][] = [
  ['GET', '/pd/list'],
  ['POST', '/pd/create', { name: 'intruder-pd' }],
  ['GET', '/pd/1'],
  ['DELETE', '/pd/1'],
  ['POST', '/fault_set/create', { pd: 1, name: 'intruder-fs' }],
  ['POST', '/pool/create', { pd: 1, name: 'intruder-pool' }],
  ['GET', '/pool/list'],
  ['POST', '/pool/1/modify', { spare_percent: 20 }],
  ['POST', '/sds/add', { name: 'intruder-sds', pd: 1 }],
  ['GET', '/sds/list'],
  ['POST', '/sdc/add', { name: 'intruder-sdc' }],
  ['GET', '/sdc/list'],
  ['POST', '/vol/create', { name: 'intruder-vol', pool: 1, size_bytes: MiB }],
  ['GET', '/vol/list'],
  ['DELETE', '/vol/x'],
  ['POST', '/vol/map', { volume: 1, sdc: 1 }],
  ['POST', '/vol/unmap', { volume: 1, sdc: 1 }],
  ['POST', '/vol/extend', { volume: 1, size_bytes: GiB }],
  ['POST', '/vol/rename', { volume: 1, new_name: 'renamed' }],
  ['POST', '/vol/1/io/authorize', { operations: ['read'], chunk_first: 0, chunk_count: 1, sdc: 1 }],
  ['GET', '/cluster/status'],
  ['POST', '/cluster/join-token', {}],
  ['GET', '/event/list'],
  ['GET', '/discovery/topology'],
  ['GET', '/discovery/peers/sds'],
  ['POST', '/discovery/heartbeat', {}],
  ['POST', '/discovery/deregister', {}],
  ['POST', '/io/tx/ack', { acks: [] }],
];

async function nodeIds(): Promise<string[]> {
  return ((await admin.ok('/discovery/topology')).nodes as { node_id: string }[]).map((n) => n.node_id);
}

t.test('every protected endpoint answers 401 without credentials and with wrong ones', async (t) => {
  const eventsBefore = await listEvents(admin);
  const wrong: [string, Record<string, string>][] = [
    ['no Authorization header', {}],
    ['an unknown bearer token', { authorization: 'Bearer pfa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }],
    ['the admin token with a suffix', { authorization: `Bearer ${mdm.adminToken}x` }],
    ['the admin token truncated', { authorization: `Bearer ${mdm.adminToken.slice(0, -1)}` }],
    ['the admin token as Basic auth', { authorization: `Basic ${Buffer.from(`admin:${mdm.adminToken}`).toString('base64')}` }],
    ['the admin token without a scheme', { authorization: mdm.adminToken }],
    ['an empty bearer', { authorization: 'Bearer ' }],
    ['an over-long bearer', { authorization: `Bearer ${'A'.repeat(4000)}` }],
  ];
  for (const [what, headers] of wrong) {
    for (const [method, path, body] of PROTECTED) {
      const response = await anonymous.request(method, path, {
        ...(body === undefined ? {} : { json: body }),
        headers,
      });
      assertApiError(t, response, { status: 401, code: 'PFLEX_ERR_UNAUTHORIZED' }, `${what}: ${method} ${path}`);
    }
  }
  const status = await admin.ok('/cluster/status');
  t.same([status.protection_domains, status.pools, status.sds, status.sdc, status.volumes], [[], [], [], [], []], 'nothing was created');
  t.same(await listEvents(admin), eventsBefore, 'no event was recorded (no join token made, nothing changed)');
});

t.test('/health and /metrics are public', async (t) => {
  const health = await anonymous.get('/health');
  t.equal(health.status, 200);
  t.equal(health.body.status, 'ok');
  t.equal(health.body.role, 'mdm');
  t.type(health.body.cluster_id, 'string');
  const withGarbage = await anonymous.get('/health', { headers: { authorization: 'Bearer garbage' } });
  t.equal(withGarbage.status, 200, 'a wrong credential does not break a public endpoint');
  t.equal((await anonymous.get('/metrics')).status, 200);
});

const sdcNode: { credential: string; sdcId: number } = { credential: '', sdcId: 0 };
const sdsNode: { credential: string; sdsId: number; signingKey: Buffer } = { credential: '', sdsId: 0, signingKey: Buffer.alloc(0) };

t.test('join token: created by the admin, registers an SDC that gets a node credential and no signing key', async (t) => {
  const made = await admin.post('/cluster/join-token', { roles: ['sdc'], ttl_s: 600, uses_max: 5 });
  t.equal(made.status, 201);
  t.match(made.body.join_token, /^pfj_[A-Za-z0-9_-]{20,}$/);
  t.same(made.body.roles, ['sdc']);
  t.equal(made.body.uses_max, 5);
  const expiresInMs = Date.parse(made.body.expires_at) - Date.now();
  t.ok(expiresInMs > 590_000 && expiresInMs <= 600_000, 'expires about ttl_s from now', { expiresInMs });

  const registered = await anonymous.post('/discovery/register', {
    join_token: made.body.join_token,
    node_id: 'sdc-node1',
    roles: ['sdc'],
    host: '127.0.0.1',
    ports: { nbd: 10809, control: 8003, mgmt: 8004 },
  });
  t.equal(registered.status, 201);
  t.equal(registered.body.node_id, 'sdc-node1');
  t.match(registered.body.credential, /^pfn_[A-Za-z0-9_-]{20,}$/, 'a node credential');
  t.type(registered.body.sdc_id, 'number');
  t.notOk('signing_key' in registered.body, 'an SDC never receives the signing key');
  t.notOk('sds_id' in registered.body);
  t.equal(registered.body.cluster_id, (await anonymous.get('/health')).body.cluster_id);
  sdcNode.credential = registered.body.credential;
  sdcNode.sdcId = registered.body.sdc_id;

  const sdc = await admin.ok('/sdc/sdc-node1');
  t.equal(sdc.id, sdcNode.sdcId, 'registration created the SDC record');
  t.equal(sdc.state, 'UP');
  t.equal(sdc.nbd_port, 10809);
  t.ok(await nodeIds().then((n) => n.includes('sdc-node1')), 'the node is in the topology');
});

t.test('registration refused: no token, garbage, expired, used up, other roles — nothing registered', async (t) => {
  const register = (token: string | undefined, nodeId: string, roles: string[] = ['sdc']) =>
    anonymous.post('/discovery/register', {
      ...(token === undefined ? {} : { join_token: token }),
      node_id: nodeId,
      roles,
      host: '127.0.0.1',
    });
  const sdcBefore = (await admin.ok('/sdc/list')).map((s: { name: string }) => s.name);
  const nodesBefore = await nodeIds();

  assertApiError(t, await register(undefined, 'bad-none'), { status: 401, code: 'PFLEX_ERR_UNAUTHORIZED' }, 'no token');
  assertApiError(t, await register('pfj_garbage', 'bad-garbage'), { status: 401, code: 'PFLEX_ERR_JOIN_TOKEN_INVALID' }, 'garbage token');
  assertApiError(t, await register('', 'bad-empty'), { status: 401, code: 'PFLEX_ERR_JOIN_TOKEN_INVALID' }, 'empty token');
  assertApiError(t, await register(mdm.adminToken, 'bad-admin-as-join'), { status: 401, code: 'PFLEX_ERR_JOIN_TOKEN_INVALID' }, 'the admin token is no join token');

  const expiring = await admin.must('/cluster/join-token', { roles: ['sdc'], ttl_s: 1 });
  await sleep(1200);
  assertApiError(t, await register(expiring.join_token, 'bad-expired'), { status: 401, code: 'PFLEX_ERR_JOIN_TOKEN_INVALID' }, 'expired token');

  const once = await admin.must('/cluster/join-token', { roles: ['sdc'], uses_max: 1 });
  const first = await register(once.join_token, 'sdc-once');
  t.equal(first.status, 201, 'a single-use token works once');
  assertApiError(t, await register(once.join_token, 'bad-used-up'), { status: 401, code: 'PFLEX_ERR_JOIN_TOKEN_INVALID' }, 'used-up token');

  const sdsOnly = await admin.must('/cluster/join-token', { roles: ['sds'] });
  assertApiError(t, await register(sdsOnly.join_token, 'bad-role'), { status: 401, code: 'PFLEX_ERR_JOIN_TOKEN_INVALID' }, 'sds token used by an sdc');
  const sdcOnly = await admin.must('/cluster/join-token', { roles: ['sdc'] });
  assertApiError(
    t,
    await register(sdcOnly.join_token, 'bad-extra-role', ['sdc', 'sds']),
    { status: 401, code: 'PFLEX_ERR_JOIN_TOKEN_INVALID' },
    'sdc token asking for sdc+sds',
  );
  assertApiError(t, await register(sdcOnly.join_token, 'bad-mgmt', ['mgmt']), { status: 401, code: 'PFLEX_ERR_JOIN_TOKEN_INVALID' }, 'sdc token used for mgmt');

  const sdcAfter = (await admin.ok('/sdc/list')).map((s: { name: string }) => s.name);
  t.same(sdcAfter, [...sdcBefore, 'sdc-once'].sort(), 'only the one valid registration made an SDC');
  const nodesAfter = await nodeIds();
  t.same(nodesAfter, [...nodesBefore, 'sdc-once'].sort(), 'no refused node is in the topology');
  t.notOk(nodesAfter.some((n) => n.startsWith('bad-')), 'no bad-* node');
});

t.test('a registration that fails after the token check does not use the token up', async (t) => {
  const once = await admin.must('/cluster/join-token', { roles: ['sds'], uses_max: 1 });
  const ghost = await anonymous.post('/discovery/register', { join_token: once.join_token, node_id: 'sds-ghost', roles: ['sds'], host: '127.0.0.1' });
  assertApiError(t, ghost, { status: 404, code: 'PFLEX_ERR_NOT_FOUND' }, 'SDS without a record and without a pd');
  t.notOk((await nodeIds()).includes('sds-ghost'), 'the failed node is not registered');

  await admin.must('/pd/create', { name: 'pd1' });
  await admin.must('/pool/create', { pd: 'pd1', name: 'pool1' });
  await addSds(admin, { name: 'sds1', pd: 'pd1', pool: 'pool1', capacityBytes: 4 * GiB, portIndex: 0 });
  await addSds(admin, { name: 'sds2', pd: 'pd1', pool: 'pool1', capacityBytes: 4 * GiB, portIndex: 1 });
  t.equal((await admin.ok('/sds/sds1')).state, 'NEW', 'an added SDS is NEW before it registers');

  const registered = await anonymous.post('/discovery/register', {
    join_token: once.join_token,
    node_id: 'sds1',
    roles: ['sds'],
    host: '127.0.0.1',
    ports: { data: 9700, control: 9100, mgmt: 9200 },
  });
  t.equal(registered.status, 201, 'the single-use token still works');
  t.match(registered.body.credential, /^pfn_/);
  t.type(registered.body.signing_key, 'string', 'an SDS receives the signing key');
  const signingKey = Buffer.from(registered.body.signing_key, 'base64');
  t.equal(signingKey.length, 32, 'the signing key is 32 bytes');
  t.equal(registered.body.sds_id, (await admin.ok('/sds/sds1')).id, 'bound to the existing SDS record');
  t.equal((await admin.ok('/sds/sds1')).state, 'UP', 'the SDS is UP after registering');
  sdsNode.credential = registered.body.credential;
  sdsNode.sdsId = registered.body.sds_id;
  sdsNode.signingKey = signingKey;
});

t.test('node credentials: heartbeat, topology and status work; admin endpoints answer 403', async (t) => {
  const sdc = admin.withCredential(sdcNode.credential);
  const sds = admin.withCredential(sdsNode.credential);

  const beat = await sdc.post('/discovery/heartbeat', { status: 'ok', volumes: 0 });
  t.equal(beat.status, 200);
  t.equal(beat.body.ok, true);
  t.equal(beat.body.heartbeat_interval_ms, 60_000);
  const topology = await sdc.get('/discovery/topology');
  t.equal(topology.status, 200);
  t.ok(topology.body.nodes.some((n: { node_id: string }) => n.node_id === 'sds1'), 'an SDC sees the SDS in the topology');
  t.equal((await sds.get('/discovery/peers/sdc')).status, 200);
  t.equal((await sds.get('/cluster/status')).status, 200, 'status is admin-or-node');
  const ack = await sds.post('/io/tx/ack', { acks: [] });
  t.equal(ack.status, 200, 'an SDS acks transactions');

  const adminOnly: [string, string, unknown?][] = [
    ['POST', '/pd/create', { name: 'node-pd' }],
    ['GET', '/pd/list'],
    ['DELETE', '/pd/pd1'],
    ['POST', '/pool/create', { pd: 'pd1', name: 'node-pool' }],
    ['POST', '/sds/add', { name: 'node-sds', pd: 'pd1', data_port: 9799, control_port: 9199, mgmt_port: 9299 }],
    ['POST', '/vol/create', { name: 'node-vol', pool: 'pool1', size_bytes: MiB }],
    ['POST', '/vol/map', { volume: 1, sdc: 'sdc-node1' }],
    ['POST', '/cluster/join-token', { roles: ['sds'] }],
    ['GET', '/event/list'],
    ['DELETE', '/sds/sds2'],
  ];
  for (const [who, client] of [
    ['SDC node', sdc],
    ['SDS node', sds],
  ] as const) {
    for (const [method, path, body] of adminOnly) {
      const response = await client.request(method, path, body === undefined ? {} : { json: body });
      assertApiError(t, response, { status: 403, code: 'PFLEX_ERR_FORBIDDEN' }, `${who}: ${method} ${path}`);
    }
  }
  assertApiError(t, await sdc.post('/io/tx/ack', { acks: [] }), { status: 403, code: 'PFLEX_ERR_FORBIDDEN' }, 'an SDC cannot ack SDS transactions');
  assertApiError(
    t,
    await sds.post('/vol/1/io/authorize', { operations: ['read'], chunk_first: 0, chunk_count: 1 }),
    { status: 403, code: 'PFLEX_ERR_FORBIDDEN' },
    'an SDS cannot ask for IO tokens',
  );
  const status = await admin.ok('/cluster/status');
  t.same(status.protection_domains.map((pd: { name: string }) => pd.name), ['pd1'], 'no node-made PD');
  t.same(status.volumes, [], 'no node-made volume');
  t.same(status.sds.map((s: { name: string }) => s.name), ['sds1', 'sds2'], 'no node-made or node-removed SDS');
});

t.test('token authority: an SDC node gets a signed token, session key and IO plan for a mapped volume', async (t) => {
  const sdc = admin.withCredential(sdcNode.credential);
  const vol = await admin.must('/vol/create', { name: 'vol-rw', pool: 'pool1', size_bytes: 64 * MiB, provisioning: 'thick' });
  await admin.must('/vol/create', { name: 'vol-ro', pool: 'pool1', size_bytes: 64 * MiB, provisioning: 'thin' });
  await admin.must('/vol/create', { name: 'vol-unmapped', pool: 'pool1', size_bytes: 64 * MiB, provisioning: 'thick' });
  await admin.must('/vol/map', { volume: 'vol-rw', sdc: 'sdc-node1', access_mode: 'readWrite' });
  await admin.must('/vol/map', { volume: 'vol-ro', sdc: 'sdc-node1', access_mode: 'readOnly' });

  const granted = await sdc.post(`/vol/${vol.id}/io/authorize`, { operations: ['read', 'write'], chunk_first: 2, chunk_count: 4 });
  t.equal(granted.status, 200);
  const body = granted.body;
  t.type(body.token, 'string');
  t.match(body.token_id, /^[0-9a-f]{32}$/);
  t.equal(Buffer.from(body.session_key, 'base64').length, 32, 'a 32-byte session key');
  t.equal(body.sdc_id, sdcNode.sdcId);
  t.equal(body.access_mode, 'readWrite');
  t.same(body.operations, ['read', 'write']);
  t.equal(body.volume.id, vol.id);
  t.equal(body.volume.chunk_count, 16);
  t.same(
    body.chunks.map((c: { index: number }) => c.index),
    [2, 3, 4, 5],
  );
  for (const chunk of body.chunks as { index: number; placed: boolean; epoch: number; replicas: { sds_id: number; host: string; data_port: number }[] }[]) {
    t.equal(chunk.placed, true);
    t.ok(Number.isInteger(chunk.epoch) && chunk.epoch >= 1, `chunk ${chunk.index} has an epoch`);
    t.equal(chunk.replicas.length, 2, `chunk ${chunk.index} has two replica endpoints`);
    t.ok(chunk.replicas.every((r) => r.host === '127.0.0.1' && [9700, 9701].includes(r.data_port)), 'endpoints are the SDS data ports');
  }
  const chunksView = (await admin.ok('/vol/vol-rw/chunks')).chunks as { index: number; epoch: number; replicas: { sds_id: number }[] }[];

  const decoded = decodeToken(Buffer.from(body.token, 'base64'));
  t.equal(decoded.fields.tokenId.toString('hex'), body.token_id, 'token id inside the token');
  t.equal(decoded.fields.volumeId, vol.id);
  t.equal(decoded.fields.sdcId, sdcNode.sdcId);
  t.equal(decoded.fields.chunkFirst, 2);
  t.equal(decoded.fields.operations, TokenOp.READ | TokenOp.WRITE);
  t.equal(decoded.fields.expiresAtMs - decoded.fields.issuedAtMs, 30_000, 'default 30 s lifetime');
  t.equal(decoded.fields.expiresAtMs, Date.parse(body.expires_at));
  t.same(
    decoded.fields.chunks.map((c) => ({ epoch: c.epoch, targets: [...c.targetSdsIds].sort((a, b) => a - b) })),
    chunksView
      .filter((c) => c.index >= 2 && c.index < 6)
      .map((c) => ({ epoch: c.epoch, targets: c.replicas.map((r) => r.sds_id).sort((a, b) => a - b) })),
    'per-chunk epochs and targets in the token match the stored replicas',
  );
  t.equal(verifyTokenSignature(decoded, sdsNode.signingKey), true, 'the token verifies with the key the SDS received');
  t.equal(verifyTokenSignature(decoded, Buffer.alloc(32, 7)), false, 'and not with another key');
  const tampered = Buffer.from(body.token, 'base64');
  tampered.writeUInt32BE(tampered.readUInt32BE(24) + 1, 24); // another volume id
  t.equal(verifyTokenSignature(decodeToken(tampered), sdsNode.signingKey), false, 'a tampered token fails verification');
  t.equal(
    deriveSessionKey(sdsNode.signingKey, decoded.fields.tokenId).toString('base64'),
    body.session_key,
    'session_key = deriveSessionKey(signing key, token id)',
  );

  const second = await sdc.post('/vol/vol-rw/io/authorize', { operations: ['read'], chunk_first: 0, chunk_count: 1, sdc: 'sdc-node1' });
  t.equal(second.status, 200, 'an SDC may name itself');
  t.not(second.body.token_id, body.token_id, 'every authorization is a new token');
  t.not(second.body.session_key, body.session_key, 'with its own session key');
});

t.test('token authority refusals: unmapped 403, write on readOnly 403, range beyond the volume 416', async (t) => {
  const sdc = admin.withCredential(sdcNode.credential);
  assertApiError(
    t,
    await sdc.post('/vol/vol-unmapped/io/authorize', { operations: ['read'], chunk_first: 0, chunk_count: 1 }),
    { status: 403, code: 'PFLEX_ERR_FORBIDDEN', message: /not mapped/ },
    'unmapped volume',
  );
  const roRead = await sdc.post('/vol/vol-ro/io/authorize', { operations: ['read'], chunk_first: 0, chunk_count: 2 });
  t.equal(roRead.status, 200, 'read on a readOnly mapping is granted');
  t.equal(roRead.body.access_mode, 'readOnly');
  for (const operations of [['write'], ['read', 'write'], ['trim']]) {
    assertApiError(
      t,
      await sdc.post('/vol/vol-ro/io/authorize', { operations, chunk_first: 0, chunk_count: 2 }),
      { status: 403, code: 'PFLEX_ERR_FORBIDDEN', message: /readOnly/ },
      `${operations.join('+')} on a readOnly mapping`,
    );
  }
  t.equal((await admin.ok('/vol/vol-ro')).chunk_health.chunks_placed, 0, 'refused writes placed no thin chunk');

  for (const [first, count] of [
    [15, 2],
    [16, 1],
    [0, 17],
    [4294967295, 1],
  ] as const) {
    assertApiError(
      t,
      await sdc.post('/vol/vol-rw/io/authorize', { operations: ['read'], chunk_first: first, chunk_count: count }),
      { status: 416, code: 'PFLEX_ERR_RANGE' },
      `chunks ${first}+${count} of a 16-chunk volume`,
    );
  }
  const edge = await sdc.post('/vol/vol-rw/io/authorize', { operations: ['read'], chunk_first: 15, chunk_count: 1 });
  t.equal(edge.status, 200, 'the last chunk alone is in range');

  const other = await admin.must('/sdc/add', { name: 'sdc-other' });
  await admin.must('/vol/map', { volume: 'vol-unmapped', sdc: 'sdc-other' });
  assertApiError(
    t,
    await sdc.post('/vol/vol-unmapped/io/authorize', { operations: ['read'], chunk_first: 0, chunk_count: 1, sdc: other.id }),
    { status: 403, code: 'PFLEX_ERR_FORBIDDEN' },
    'an SDC asking on behalf of another SDC',
  );
  assertApiError(
    t,
    await sdc.post('/vol/no-such-vol/io/authorize', { operations: ['read'], chunk_first: 0, chunk_count: 1 }),
    { status: 404, code: 'PFLEX_ERR_NOT_FOUND' },
    'unknown volume',
  );
});

t.test('a join token for another role cannot take over a registered node identity', async (t) => {
  // Registering node_id "sds1" with an sdc-only join token must not replace the SDS's
  // credential and roles: that would lock the real SDS out and detach it from health checks.
  const sdcToken = await admin.must('/cluster/join-token', { roles: ['sdc'] });
  const takeover = await anonymous.post('/discovery/register', {
    join_token: sdcToken.join_token,
    node_id: 'sds1',
    roles: ['sdc'],
    host: '10.66.66.66',
  });
  t.ok(takeover.status >= 400 && takeover.status < 500, `registering as sds1 with an sdc token is refused (got ${takeover.status})`, {
    body: takeover.text,
  });
  const beat = await admin.withCredential(sdsNode.credential).post('/discovery/heartbeat', {});
  t.equal(beat.status, 200, "the real SDS's credential still works");
  const node = ((await admin.ok('/discovery/topology')).nodes as { node_id: string; roles: string[]; host: string }[]).find(
    (n) => n.node_id === 'sds1',
  );
  t.same(node?.roles, ['sds'], 'sds1 keeps its roles');
  t.equal(node?.host, '127.0.0.1', 'sds1 keeps its host');
});

t.test('health monitor: a silent SDS goes DOWN with an SDS_DOWN event; a heartbeat brings it back UP', async (t) => {
  const fast = await startTestMdm({ heartbeatIntervalMs: 200 });
  t.teardown(() => fast.stop());
  const api = new Api(fast.url, fast.adminToken);
  await api.must('/pd/create', { name: 'pd-hb' });
  await api.must('/pool/create', { pd: 'pd-hb', name: 'pool-hb' });
  const token = await api.must('/cluster/join-token', { roles: ['sds'] });
  const credentials: Record<string, string> = {};
  for (const [index, name] of ['sds-quiet', 'sds-chatty'].entries()) {
    await addSds(api, { name, pd: 'pd-hb', pool: 'pool-hb', capacityBytes: GiB, portIndex: index });
    const registered = await new Api(fast.url).post('/discovery/register', {
      join_token: token.join_token,
      node_id: name,
      roles: ['sds'],
      host: '127.0.0.1',
    });
    t.equal(registered.status, 201, `${name} registered`);
    t.equal(registered.body.heartbeat_interval_ms, 200, 'the interval is handed to the node');
    credentials[name] = registered.body.credential;
  }
  const quiet = new Api(fast.url, credentials['sds-quiet']);
  const chatty = new Api(fast.url, credentials['sds-chatty']);
  t.equal((await quiet.post('/discovery/heartbeat', {})).status, 200);

  const stateOf = async (name: string): Promise<string> =>
    ((await api.ok('/sds/list')) as { name: string; state: string }[]).find((s) => s.name === name)!.state;
  t.equal(await stateOf('sds-quiet'), 'UP');

  const startedMs = Date.now();
  let chattyAlwaysUp = true;
  const down = await waitFor(async () => {
    await chatty.post('/discovery/heartbeat', {});
    if ((await stateOf('sds-chatty')) !== 'UP') chattyAlwaysUp = false;
    return (await stateOf('sds-quiet')) === 'DOWN' ? true : undefined;
  }, 2500, 100);
  t.equal(down, true, 'the silent SDS is DOWN', { afterMs: Date.now() - startedMs });
  t.ok(Date.now() - startedMs < 2500, 'within ~2 s');
  t.ok(chattyAlwaysUp, 'the heartbeating SDS stayed UP all along');
  t.equal(await stateOf('sds-chatty'), 'UP');

  const sdsId = ((await api.ok('/sds/sds-quiet')) as { id: number }).id;
  const downEvents = await listEvents(api, 'type=SDS_DOWN');
  t.equal(downEvents.length, 1, 'exactly one SDS_DOWN event');
  t.equal(downEvents[0]?.sds_id, sdsId, 'it names the silent SDS');
  t.equal(downEvents[0]?.severity, 'error');
  const node = ((await api.ok('/discovery/topology')).nodes as { node_id: string; status: string }[]).find((n) => n.node_id === 'sds-quiet');
  t.equal(node?.status, 'DOWN', 'the node is DOWN in the topology too');

  const back = await quiet.post('/discovery/heartbeat', {});
  t.equal(back.status, 200, 'a DOWN node may still heartbeat');
  t.equal(await stateOf('sds-quiet'), 'UP', 'one heartbeat brings it back UP');
  const upEvents = await listEvents(api, 'type=SDS_UP');
  t.equal(upEvents.length, 1, 'an SDS_UP event');
  t.equal(upEvents[0]?.sds_id, sdsId);
});
