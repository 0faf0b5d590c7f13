/**
 * Lease renewals and the mappings version (issue 11) on a real MDM over real HTTP: a token is
 * signed again, with the very same chunk records, only while nothing its plan shows changed
 * (epochs, replica states, the SDS named, the mapping); every change the MDM's own writes make
 * turns it into PLAN_CHANGED, and the writes that change nothing (heartbeats, tx-ack counters)
 * do not. An SDC's mappings_version changes exactly when its mappings answer does.
 */
import t from 'tap';
import { startTestMdm, type TestMdm } from '../helpers/mdm.js';
import { Api, addSds, assertApiError, GiB, MiB } from '../helpers/api.js';
import { decodeToken, deriveSessionKey, signToken, verifyTokenSignature } from '../../src/common/io-token.js';
import { RENEW_TOKENS_PER_CALL_MAX } from '../../src/mdm/lease-renewal.js';

const mdm: TestMdm = await startTestMdm({ heartbeatIntervalMs: 60_000 });
t.teardown(() => mdm.stop());
const admin = new Api(mdm.url, mdm.adminToken);
const anonymous = new Api(mdm.url);
const db = mdm.mdm.context.db;
const signingKey = mdm.mdm.context.signingKey;

async function registerSdc(name: string): Promise<{ api: Api; sdcId: number }> {
  const join = await admin.must('/cluster/join-token', { roles: ['sdc'] });
  const registered = await anonymous.post('/discovery/register', { join_token: join.join_token, node_id: name, roles: ['sdc'], host: '127.0.0.1', ports: {} });
  // Setup, not under test: no assertion at the top level (it would end the root test early).
  if (registered.status !== 201) throw new Error(`registering ${name}: HTTP ${registered.status}: ${registered.text}`);
  return { api: admin.withCredential(registered.body.credential), sdcId: registered.body.sdc_id };
}

await admin.must('/pd/create', { name: 'pd1' });
await admin.must('/pool/create', { pd: 'pd1', name: 'pool1' });
for (let i = 0; i < 3; i += 1) await addSds(admin, { name: `sds${i + 1}`, pd: 'pd1', pool: 'pool1', capacityBytes: 4 * GiB, portIndex: i });
// An SDS of another pool: it holds no replica of pool1's volumes, so no plan of theirs shows it.
await admin.must('/pool/create', { pd: 'pd1', name: 'pool2' });
await addSds(admin, { name: 'sds4', pd: 'pd1', pool: 'pool2', capacityBytes: 4 * GiB, portIndex: 3 });
const sdc = await registerSdc('sdc-a');
const other = await registerSdc('sdc-b');
for (const name of ['vol-a', 'vol-b']) {
  await admin.must('/vol/create', { name, pool: 'pool1', size_bytes: 64 * MiB, provisioning: 'thick' });
  await admin.must('/vol/map', { volume: name, sdc: 'sdc-a', access_mode: 'readWrite' });
}
const volA = (await admin.ok('/vol/vol-a')).id as number;
const volB = (await admin.ok('/vol/vol-b')).id as number;

async function lease(volume: string, api = sdc.api): Promise<any> {
  return api.must(`/vol/${volume}/io/authorize`, { operations: ['read', 'write', 'trim', 'flush'], chunk_first: 0, chunk_count: 16 });
}

async function renew(tokens: string[], api = sdc.api): Promise<any[]> {
  const answer = await api.post('/io/renew', { tokens });
  // 200 even when tokens are refused: each token has its own outcome.
  if (answer.status !== 200) throw new Error(`POST /io/renew: HTTP ${answer.status}: ${answer.text}`);
  return answer.body.leases;
}

t.test('a token whose plan did not change is signed again with the same chunk records', async (t) => {
  const first = await lease('vol-a');
  const [renewed] = await renew([first.token]);
  t.equal(renewed.volume_id, volA);
  t.not(renewed.token_id, first.token_id, 'a new token id');
  t.equal(renewed.session_key, deriveSessionKey(signingKey, Buffer.from(renewed.token_id, 'hex')).toString('base64'), 'and its session key');
  t.ok(Date.parse(renewed.expires_at) >= Date.parse(first.expires_at), 'a new lifetime');
  const before = decodeToken(Buffer.from(first.token, 'base64'));
  const after = decodeToken(Buffer.from(renewed.token, 'base64'));
  t.ok(verifyTokenSignature(after, signingKey), 'signed by the cluster key');
  t.same(after.fields.chunks, before.fields.chunks, 'the same epochs and targets, chunk by chunk');
  t.same(
    { ops: after.fields.operations, volume: after.fields.volumeId, sdc: after.fields.sdcId, first: after.fields.chunkFirst, pool: after.fields.poolId },
    { ops: before.fields.operations, volume: before.fields.volumeId, sdc: before.fields.sdcId, first: before.fields.chunkFirst, pool: before.fields.poolId },
  );
  const [again] = await renew([renewed.token]);
  t.ok('token_id' in again, 'a renewed token renews again');
});

t.test('writes that change nothing a plan shows keep tokens renewable', async (t) => {
  const first = await lease('vol-a');
  // A heartbeat rewrites an UP SDS's state and time; tx acks add to a replica's counters.
  db.prepare(`UPDATE sds SET state = state, last_heartbeat_at_ms = ?`).run(Date.now());
  db.prepare(`UPDATE replicas SET generation = generation + 1, bytes_written = bytes_written + 4096`).run();
  db.prepare(`UPDATE chunks SET generation = generation + 1`).run();
  await sdc.api.post('/discovery/heartbeat', { status: 'UP' });
  const [renewed] = await renew([first.token]);
  t.ok('token_id' in renewed, 'renewed', { renewed });
});

t.test('replan: a token whose plan changed comes back with its window planned again, in the same request', async (t) => {
  const a = await lease('vol-a');
  const b = await lease('vol-b');
  const foreign = await lease('vol-b', other.api).catch(() => undefined); // vol-b is not mapped to sdc-b
  t.equal(foreign, undefined, 'sdc-b holds no lease of vol-b');
  db.prepare(`UPDATE chunks SET epoch = epoch + 1 WHERE volume_id = ? AND chunk_index = 5`).run(volA);
  const epochNow = (db.prepare(`SELECT epoch FROM chunks WHERE volume_id = ? AND chunk_index = 5`).get(volA) as { epoch: number }).epoch;
  // Never issued by this MDM (as a token from before a restart): planned again too.
  const unknown = signToken({ ...decodeToken(Buffer.from(b.token, 'base64')).fields, tokenId: Buffer.alloc(16, 3) }, signingKey).toString('base64');
  const before = (await admin.ok('/cluster/status')).lease_renewals;
  const answer = await sdc.api.post('/io/renew', { tokens: [a.token, b.token, unknown], replan: true });
  t.equal(answer.status, 200);
  const [outcomeA, outcomeB, outcomeUnknown] = answer.body.leases;
  t.equal(outcomeA.volume_id, volA, 'the changed window answers for its volume');
  const plan = outcomeA.replanned;
  t.ok(plan !== undefined, 'with its new plan', { outcomeA });
  t.same({ first: plan?.chunk_first, count: plan?.chunk_count, chunks: plan?.chunks.length }, { first: 0, count: 16, chunks: 16 }, 'the same window');
  t.equal(plan?.chunks[5].epoch, epochNow, 'planned at the new epoch');
  const token = decodeToken(Buffer.from(plan.token, 'base64'));
  t.ok(verifyTokenSignature(token, signingKey), 'a token signed by the cluster key');
  t.equal(token.fields.chunks[5]!.epoch, epochNow, 'that carries the new epoch');
  t.equal(plan.session_key, deriveSessionKey(signingKey, Buffer.from(plan.token_id, 'hex')).toString('base64'), 'and its session key');
  t.same(plan.chunks, (await lease('vol-a')).chunks, 'the plan an authorization makes now');
  t.ok('token_id' in outcomeB, 'the unchanged window is renewed as it is, no plan', { outcomeB });
  t.ok(outcomeUnknown.replanned !== undefined, 'a token this MDM did not issue is planned again');
  const after = (await admin.ok('/cluster/status')).lease_renewals;
  t.equal(after.replanned_total - before.replanned_total, 2, 'counted: replanned_total');
  t.equal(after.plan_changed_total - before.plan_changed_total, 2, 'each also a PLAN_CHANGED');
  t.ok('token_id' in (await renew([plan.token]))[0], 'the new lease renews like any other');
  // Another SDC's token is refused, replan or not.
  const theirs = await other.api.post('/io/renew', { tokens: [a.token], replan: true });
  t.equal(theirs.body.leases[0].error?.code, 'PFLEX_ERR_FORBIDDEN', 'another SDC\'s token: refused, never planned');
  assertApiError(t, await sdc.api.post('/io/renew', { tokens: [a.token], replan: 'yes' }), { status: 400, code: 'PFLEX_ERR_VALIDATION' }, 'replan must be a boolean');
});

t.test('every change of the plan makes a token PLAN_CHANGED, and only the tokens it touches', async (t) => {
  // First, while nothing else changes: the changes below start fences and rebuilds of vol-a in
  // the background (the health monitor sees sds3 DOWN), which plan it again at any moment.
  {
    const a = await lease('vol-a');
    db.prepare(`UPDATE sds SET state = 'DOWN' WHERE name = 'sds4'`).run();
    t.equal((await renew([a.token]))[0].volume_id, volA, 'an SDS holding none of its chunks changes nothing');
    db.prepare(`UPDATE sds SET state = 'UP' WHERE name = 'sds4'`).run();
  }
  const changes: [string, () => void][] = [
    ['an epoch of one chunk', () => db.prepare(`UPDATE chunks SET epoch = epoch + 1 WHERE volume_id = ? AND chunk_index = 7`).run(volA)],
    ['a replica marked STALE', () => db.prepare(`UPDATE replicas SET state = 'STALE' WHERE id = (SELECT r.id FROM replicas r JOIN chunks c ON c.id = r.chunk_id WHERE c.volume_id = ? AND c.chunk_index = 3 LIMIT 1)`).run(volA)],
    ['a replica removed', () => db.prepare(`DELETE FROM replicas WHERE id = (SELECT r.id FROM replicas r JOIN chunks c ON c.id = r.chunk_id WHERE c.volume_id = ? AND c.chunk_index = 4 LIMIT 1)`).run(volA)],
  ];
  for (const [what, change] of changes) {
    const a = await lease('vol-a');
    const b = await lease('vol-b');
    change();
    const [outcomeA, outcomeB] = await renew([a.token, b.token]);
    t.equal(outcomeA.error?.code, 'PFLEX_ERR_PLAN_CHANGED', `${what}: that volume's token must be planned again`);
    t.equal(outcomeB.volume_id, volB, `${what}: another volume's token still renews`);
    // The rebuilder repairs vol-a in the background (another change): of a few fresh tokens, one
    // planned after its last step renews.
    let renewedFresh = false;
    for (let attempt = 0; attempt < 5 && !renewedFresh; attempt += 1) renewedFresh = 'token_id' in (await renew([(await lease('vol-a')).token]))[0];
    t.ok(renewedFresh, `${what}: a token planned after the change renews`);
  }
  // An SDS that changes state (DOWN, or back) or address shows in the plans of the volumes it holds.
  for (const [what, change] of [
    ['an SDS of theirs going DOWN', `UPDATE sds SET state = 'DOWN' WHERE name = 'sds3'`],
    ['and back UP', `UPDATE sds SET state = 'UP' WHERE name = 'sds3'`],
    ['an SDS of theirs at a new data port', `UPDATE sds SET data_port = data_port + 100 WHERE name = 'sds2'`],
  ] as const) {
    const a = await lease('vol-a');
    const b = await lease('vol-b');
    db.prepare(change).run();
    const outcomes = await renew([a.token, b.token]);
    t.same(outcomes.map((o) => o.error?.code), ['PFLEX_ERR_PLAN_CHANGED', 'PFLEX_ERR_PLAN_CHANGED'], `${what}: both volumes planned again`);
  }
});

t.test('refusals: another SDC, a foreign or unknown token, garbage, an unmapped volume', async (t) => {
  const mine = await lease('vol-b');
  const theirs = await renew([mine.token], other.api);
  t.equal(theirs[0].error?.code, 'PFLEX_ERR_FORBIDDEN', 'an SDC cannot renew another SDC\'s token');

  const decoded = decodeToken(Buffer.from(mine.token, 'base64'));
  const foreign = signToken({ ...decoded.fields, tokenId: Buffer.alloc(16, 1) }, Buffer.alloc(32, 9)).toString('base64');
  // Signed with the cluster key but never issued (as a token from before an MDM restart).
  const unknown = signToken({ ...decoded.fields, tokenId: Buffer.alloc(16, 2) }, signingKey).toString('base64');
  const tampered = Buffer.from(mine.token, 'base64');
  tampered.writeUInt32BE(tampered.readUInt32BE(64) + 1, 64); // the first chunk's epoch
  const outcomes = await renew([foreign, unknown, 'not a token', tampered.toString('base64'), mine.token]);
  t.same(
    outcomes.map((o) => o.error?.code ?? 'renewed'),
    ['PFLEX_ERR_FORBIDDEN', 'PFLEX_ERR_PLAN_CHANGED', 'PFLEX_ERR_VALIDATION', 'PFLEX_ERR_FORBIDDEN', 'renewed'],
    'each token its own outcome, in order; a bad one fails nothing else',
  );

  assertApiError(t, await sdc.api.post('/io/renew', { tokens: [] }), { status: 400, code: 'PFLEX_ERR_VALIDATION' }, 'no tokens');
  assertApiError(t, await sdc.api.post('/io/renew', { tokens: Array.from({ length: RENEW_TOKENS_PER_CALL_MAX + 1 }, () => mine.token) }), { status: 400, code: 'PFLEX_ERR_VALIDATION' }, 'too many tokens');
  assertApiError(t, await sdc.api.post('/io/renew', { tokens: [mine.token], extra: 1 }), { status: 400, code: 'PFLEX_ERR_VALIDATION' }, 'unknown keys');
  assertApiError(t, await anonymous.post('/io/renew', { tokens: [mine.token] }), { status: 401, code: 'PFLEX_ERR_UNAUTHORIZED' }, 'no credential');

  const before = await lease('vol-b');
  await admin.must('/vol/unmap', { volume: 'vol-b', sdc: 'sdc-a' });
  t.equal((await renew([before.token]))[0].error?.code, 'PFLEX_ERR_FORBIDDEN', 'an unmapped volume renews nothing');
  await admin.must('/vol/map', { volume: 'vol-b', sdc: 'sdc-a', access_mode: 'readOnly' });
  t.equal((await renew([before.token]))[0].error?.code, 'PFLEX_ERR_FORBIDDEN', 'a write token of a volume mapped readOnly since');
});

t.test('mappings_version: the heartbeat answer says when GET /discovery/mappings changed', async (t) => {
  const version = async (api: Api): Promise<string> => {
    const beat = await api.post('/discovery/heartbeat', { status: 'UP' });
    const pulled = await api.ok('/discovery/mappings');
    t.equal(beat.body.mappings_version, pulled.mappings_version, 'the heartbeat and the pull agree');
    return beat.body.mappings_version as string;
  };
  const start = await version(sdc.api);
  const startOther = await version(other.api);
  t.match(start, /^[0-9a-f]{12}\.\d+$/);
  t.equal(await version(sdc.api), start, 'unchanged while nothing changes');
  const steps: [string, () => Promise<unknown>][] = [
    ['a volume mapped', () => admin.must('/vol/create', { name: 'vol-c', pool: 'pool1', size_bytes: 16 * MiB }).then(() => admin.must('/vol/map', { volume: 'vol-c', sdc: 'sdc-a' }))],
    ['a mapped volume renamed', () => admin.must('/vol/rename', { volume: 'vol-c', new_name: 'vol-c2' })],
    ['a mapped volume extended', () => admin.must('/vol/extend', { volume: 'vol-c2', size_bytes: 32 * MiB })],
    ['a volume unmapped', () => admin.must('/vol/unmap', { volume: 'vol-c2', sdc: 'sdc-a' })],
  ];
  let last = start;
  for (const [what, step] of steps) {
    await step();
    const now = await version(sdc.api);
    t.not(now, last, `${what}: a new version`);
    last = now;
  }
  t.equal(await version(other.api), startOther, 'another SDC\'s mappings did not change, nor its version');
  await admin.must('/vol/create', { name: 'vol-unmapped', pool: 'pool1', size_bytes: 16 * MiB });
  t.equal(await version(sdc.api), last, 'a volume mapped to nobody changes no SDC\'s version');
});
