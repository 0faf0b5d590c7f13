/**
 * The CLI alone, against a real `pflex mdm` process: PD → fault sets → pool → SDS → SDC →
 * volumes → mappings, cluster status --json, scenario D's capacity error, 401 without a
 * credential, usage errors, and a clean stop on SIGTERM.
 */
import t from 'tap';
import { rmSync, statSync } from 'node:fs';
import { cleanEnv, runPflex, startMdmProcess, type MdmProcess } from '../helpers/cli.js';

let mdm: MdmProcess;

t.before(async () => {
  mdm = await startMdmProcess();
});
t.teardown(async () => {
  await mdm.stop();
});

/** Runs pflex as the admin of this MDM, through the token file. */
async function admin(...args: string[]) {
  return runPflex(args, { env: cleanEnv({ POWERFLEX_MDM_ADDRESS: mdm.url, PFLEX_ADMIN_TOKEN_FILE: mdm.tokenFile }) });
}

async function adminOk(...args: string[]): Promise<string> {
  const result = await admin(...args);
  if (result.code !== 0) throw new Error(`pflex ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

async function adminJson<T>(...args: string[]): Promise<T> {
  return JSON.parse(await adminOk('--json', ...args)) as T;
}

t.test('the admin credential file is created at first start with mode 0600', async (t) => {
  const mode = statSync(mdm.tokenFile).mode & 0o777;
  t.equal(mode, 0o600);
});

t.test('without a credential every admin command fails with 401 and a non-zero exit', async (t) => {
  for (const args of [['pd', 'list'], ['cluster', 'status'], ['pd', 'create', 'nope'], ['vol', 'list']]) {
    const result = await runPflex(args, { env: cleanEnv({ POWERFLEX_MDM_ADDRESS: mdm.url }) });
    t.equal(result.code, 1, `${args.join(' ')} exits 1`);
    t.match(result.stderr, /PFLEX_ERR_UNAUTHORIZED/, `${args.join(' ')} names the error`);
  }
  const wrong = await runPflex(['--token', 'pfa_wrong', 'pd', 'list'], { env: cleanEnv({ POWERFLEX_MDM_ADDRESS: mdm.url }) });
  t.equal(wrong.code, 1);
  t.match(wrong.stderr, /401|UNAUTHORIZED/);
  const created = await runPflex(['pd', 'create', 'nope'], { env: cleanEnv({ POWERFLEX_MDM_ADDRESS: mdm.url }) });
  t.equal(created.code, 1);
  const pds = await adminJson<{ name: string }[]>('pd', 'list');
  t.notOk(pds.some((pd) => pd.name === 'nope'), 'nothing was created without a credential');
});

t.test('a user builds the cluster through the CLI alone and sees it in cluster status', async (t) => {
  await adminOk('pd', 'create', 'pd1', '-d', 'lab domain');
  for (const fs of ['fs1', 'fs2', 'fs3']) await adminOk('fault-set', 'create', 'pd1', fs);
  await adminOk('pool', 'create', 'pd1', 'pool1', '--policy', 'two_copies', '--spare-percent', '10');
  for (const [i, fs] of ['fs1', 'fs2', 'fs3'].entries()) {
    await adminOk(
      'sds', 'add', 'pd1', `sds${i + 1}`, '--fault-set', fs,
      '--data-port', String(19700 + i), '--control-port', String(19100 + i), '--mgmt-port', String(19200 + i),
      '--device', `/var/lib/pflex/sds${i + 1}.img:4GiB:pool1`,
    );
  }
  await adminOk('sdc', 'add', 'sdc1');
  await adminOk('sdc', 'add', 'sdc2');
  const thin = await adminJson<{ name: string; provisioning: string; size_bytes: number }>('vol', 'create', 'pool1', 'vol1', '1GiB', '--thin');
  t.equal(thin.provisioning, 'thin');
  t.equal(thin.size_bytes, 1024 ** 3);
  await adminOk('vol', 'create', 'pool1', 'vol2', '512MiB', '--thick');
  await adminOk('vol', 'map', 'vol1', 'sdc1');
  await adminOk('vol', 'map', 'vol2', 'sdc2', '--read-only');

  const status = await adminJson<{
    health: string;
    pools: { name: string; health: string; chunk_health: { chunks_placed: number } }[];
    sds: { name: string; state: string; fault_set: string }[];
    sdc: { name: string; state: string }[];
    volumes: { name: string; mappings: { sdc: string; access_mode: string }[]; chunk_health: { chunks_placed: number } }[];
    replicas: { expected: number; available: number };
  }>('cluster', 'status');
  t.same(status.pools.map((p) => [p.name, p.health]), [['pool1', 'OK']]);
  t.same(status.sds.map((s) => [s.name, s.state, s.fault_set]), [['sds1', 'NEW', 'fs1'], ['sds2', 'NEW', 'fs2'], ['sds3', 'NEW', 'fs3']]);
  t.same(status.sdc.map((s) => s.name), ['sdc1', 'sdc2']);
  const vol1 = status.volumes.find((v) => v.name === 'vol1')!;
  const vol2 = status.volumes.find((v) => v.name === 'vol2')!;
  t.same(vol1.mappings.map((m) => [m.sdc, m.access_mode]), [['sdc1', 'readWrite']]);
  t.same(vol2.mappings.map((m) => [m.sdc, m.access_mode]), [['sdc2', 'readOnly']]);
  t.equal(vol1.chunk_health.chunks_placed, 0, 'a thin volume places nothing at creation');
  t.equal(vol2.chunk_health.chunks_placed, 128, 'a thick 512 MiB volume places 128 chunks of 4 MiB');
  t.equal(status.replicas.expected, 256);
  t.equal(status.replicas.available, 256);

  const human = await adminOk('cluster', 'status');
  t.match(human, /Storage pools/);
  t.match(human, /pool1/);
  t.match(human, /sds3/);
  t.match(human, /vol2/);

  const chunks = await adminJson<{ chunks: { replicas: { sds: string }[] }[] }>('vol', 'chunks', 'vol2');
  for (const chunk of chunks.chunks) {
    t.equal(new Set(chunk.replicas.map((r) => r.sds)).size, 2);
  }
});

t.test('conflicts and unknown names give the server message and exit 1', async (t) => {
  const duplicate = await admin('pd', 'create', 'pd1');
  t.equal(duplicate.code, 1);
  t.match(duplicate.stderr, /already exists.*PFLEX_ERR_NAME_TAKEN/);
  const mapped = await admin('vol', 'delete', 'vol1');
  t.equal(mapped.code, 1);
  t.match(mapped.stderr, /mapped to sdc1/);
  const notMapped = await admin('vol', 'unmap', 'vol1', 'sdc2');
  t.equal(notMapped.code, 1);
  t.match(notMapped.stderr, /PFLEX_ERR_NOT_MAPPED/);
  const pdBusy = await admin('pd', 'delete', 'pd1');
  t.equal(pdBusy.code, 1);
  t.match(pdBusy.stderr, /PFLEX_ERR_NOT_EMPTY/);
  const missing = await admin('vol', 'show', 'no-such-volume');
  t.equal(missing.code, 1);
  t.match(missing.stderr, /not found.*PFLEX_ERR_NOT_FOUND/);
  const json = await admin('--json', 'vol', 'show', 'no-such-volume');
  t.equal(json.code, 1);
  t.equal(JSON.parse(json.stderr).error.code, 'PFLEX_ERR_NOT_FOUND');
});

t.test('volume lifecycle: extend, rename, unmap, delete', async (t) => {
  const extended = await adminJson<{ size_bytes: number }>('vol', 'extend', 'vol1', '+1GiB');
  t.equal(extended.size_bytes, 2 * 1024 ** 3);
  const shrink = await admin('vol', 'extend', 'vol1', '1GiB');
  t.equal(shrink.code, 1);
  t.match(shrink.stderr, /never shrink/);
  const renamed = await adminJson<{ name: string }>('vol', 'rename', 'vol1', 'data1');
  t.equal(renamed.name, 'data1');
  await adminOk('vol', 'unmap', 'data1', 'sdc1');
  await adminOk('vol', 'delete', 'data1');
  const volumes = await adminJson<{ name: string }[]>('vol', 'list');
  t.same(volumes.map((v) => v.name), ['vol2']);
});

t.test('scenario D: the third thick volume does not fit and nothing of it stays', async (t) => {
  await adminOk('pool', 'create', 'pd1', 'small', '--spare-percent', '0');
  await adminOk('sds', 'add', 'pd1', 'sdsA', '--data-port', '19801', '--control-port', '19802', '--mgmt-port', '19803', '--device', '/d/a:2GiB:small');
  await adminOk('sds', 'add', 'pd1', 'sdsB', '--data-port', '19811', '--control-port', '19812', '--mgmt-port', '19813', '--device', '/d/b:2GiB:small');
  await adminOk('vol', 'create', 'small', 'd1', '800MiB', '--thick');
  await adminOk('vol', 'create', 'small', 'd2', '800MiB', '--thick');
  const before = await adminJson<{ capacity: { used_bytes: number } }>('pool', 'show', 'small');
  const third = await admin('vol', 'create', 'small', 'd3', '800MiB', '--thick');
  t.equal(third.code, 1);
  t.match(third.stderr, /Insufficient capacity in pool small/);
  t.match(third.stderr, /PFLEX_ERR_INSUFFICIENT_CAPACITY/);
  const after = await adminJson<{ capacity: { used_bytes: number } }>('pool', 'show', 'small');
  t.equal(after.capacity.used_bytes, before.capacity.used_bytes);
  t.equal(after.capacity.used_bytes, 1600 * 1024 ** 2);
  const show = await admin('vol', 'show', 'd3');
  t.equal(show.code, 1, 'the failed volume does not exist');
});

t.test('pool modify switches rebuild and rebalance off and on', async (t) => {
  const off = await adminJson<{ rebuild_enabled: boolean; rebalance_enabled: boolean }>('pool', 'modify', 'small', '--rebuild', 'off', '--rebalance', 'off');
  t.same([off.rebuild_enabled, off.rebalance_enabled], [false, false], 'both off');
  t.match(await adminOk('pool', 'show', 'small'), /rebuild \/ rebalance\s+OFF \/ OFF/, 'pool show says so');
  const on = await adminJson<{ rebuild_enabled: boolean; rebalance_enabled: boolean }>('pool', 'modify', 'small', '--rebuild', 'on');
  t.same([on.rebuild_enabled, on.rebalance_enabled], [true, false], 'rebuild on again, rebalance still off');
  const bad = await admin('pool', 'modify', 'small', '--rebuild', 'maybe');
  t.equal(bad.code, 2, 'a value other than on or off is a usage error');
  t.match(bad.stderr, /on, off/);
});

t.test('join tokens and topology from the CLI', async (t) => {
  const token = (await adminOk('cluster', 'join-token', '--roles', 'sdc', '--uses', '1')).trim();
  t.match(token, /^pfj_[A-Za-z0-9_-]{20,}$/);
  const response = await fetch(`${mdm.url}/discovery/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ join_token: token, node_id: 'sdc9', roles: ['sdc'], host: '127.0.0.1', ports: { nbd: 10809 } }),
  });
  t.equal(response.status, 201);
  const nodes = await adminJson<{ node_id: string; status: string }[]>('cluster', 'topology');
  t.same(nodes.map((n) => [n.node_id, n.status]), [['sdc9', 'UP']]);
  const again = await fetch(`${mdm.url}/discovery/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ join_token: token, node_id: 'sdc10', roles: ['sdc'], host: '127.0.0.1' }),
  });
  t.equal(again.status, 401, 'a one-use token is spent');
});

t.test('usage errors exit 2 with a helpful message; --help explains', async (t) => {
  const missing = await admin('vol', 'create', 'pool1', 'x');
  t.equal(missing.code, 2);
  t.match(missing.stderr, /missing required argument 'size'/);
  const badSize = await admin('vol', 'create', 'pool1', 'x', 'lots');
  t.equal(badSize.code, 2);
  t.match(badSize.stderr, /not a size/);
  const badPolicy = await admin('pool', 'create', 'pd1', 'p9', '--policy', 'raid5');
  t.equal(badPolicy.code, 2);
  t.match(badPolicy.stderr, /two_copies/);
  const help = await runPflex(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /Examples:/);
  t.match(help.stdout, /cluster status/);
  const volHelp = await runPflex(['vol', 'create', '--help']);
  t.match(volHelp.stdout, /--thick/);
});

t.test('events record what happened', async (t) => {
  const events = await adminJson<{ type: string }[]>('event', 'list', '--limit', '1000');
  const types = new Set(events.map((e) => e.type));
  for (const type of ['PD_CREATED', 'POOL_CREATED', 'SDS_ADDED', 'VOLUME_CREATED', 'VOLUME_MAPPED', 'VOLUME_DELETED', 'NODE_REGISTERED']) {
    t.ok(types.has(type), `event ${type} recorded`);
  }
});

t.test('the MDM keeps its data across a restart', async (t) => {
  const dataDir = mdm.dataDir;
  t.equal(await mdm.stop('SIGTERM', true), 0, 'exits 0 on SIGTERM');
  mdm = await startMdmProcess([], dataDir);
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const volumes = await adminJson<{ name: string }[]>('vol', 'list');
  t.same(volumes.map((v) => v.name).sort(), ['d1', 'd2', 'vol2']);
});
