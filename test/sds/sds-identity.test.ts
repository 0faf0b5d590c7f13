/**
 * An SDS that lost its state never serves zeros as current data (issue 10, item 5), against real
 * `pflex sds` processes and the real MDM:
 *
 * - a device this SDS formatted and that is gone at restart is never recreated: it is reported
 *   MISSING, its replicas here are lost (fenced at a new epoch, the peer keeps serving), and a
 *   request with the old plan is refused instead of reading zeros;
 * - a device that holds another SDS's superblock is refused and left byte for byte as it was;
 * - a wiped data dir that rejoins under the same name is a new incarnation: the MDM declares
 *   every replica it had lost before it serves.
 */
import t from 'tap';
import { copyFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startSdsBed } from '../helpers/sds-bed.js';
import {
  controlAuthorization,
  httpCall,
  MiB,
  patternBytes,
  readSdsNodeFile,
  SdsDataClient,
  setupSdsCluster,
  sha256File,
  sleep,
  startSdsProcess,
  TokenSession,
  type SdsProcess,
} from '../helpers/sds.js';
import { Status, statusName } from '../../src/common/sds-protocol.js';

const CHUNK_BYTES = MiB;
const CHUNKS = 8;
const { dir, mdm, processes, clients } = await startSdsBed(t, 'pflex-sds-identity-');

const layout = await setupSdsCluster(mdm.admin, {
  baseDir: dir,
  sdsCount: 2,
  rebuildEnabled: false,
  chunkSizeBytes: CHUNK_BYTES,
  volumes: [{ name: 'idv', sizeBytes: CHUNKS * CHUNK_BYTES }],
});
const [record, peer] = layout.sds as [(typeof layout.sds)[0], (typeof layout.sds)[0]];
const startUnderTest = (joinToken?: string): Promise<SdsProcess> =>
  startSdsProcess({ nodeId: record.name, mdmUrl: mdm.url, joinToken, dataDir: record.dataDir, ports: record.ports, logFile: join(dir, `${record.name}.log`) });
processes.push(await startUnderTest(layout.joinToken));
processes.push(await startSdsProcess({ nodeId: peer.name, mdmUrl: mdm.url, joinToken: layout.joinToken, dataDir: peer.dataDir, ports: peer.ports }));
const node = readSdsNodeFile(record.dataDir);
const auth = controlAuthorization(node.signingKey);
const pattern = patternBytes(7, 64 * 1024);

/** Writes the pattern to every chunk on both replicas (as an SDC would) and flushes. */
async function writeEverywhere(session: TokenSession): Promise<void> {
  for (const port of [record.ports.data, peer.ports.data]) {
    const client = new SdsDataClient('127.0.0.1', port, 20_000);
    clients.push(client);
    if ((await session.install(client)).status !== Status.OK) throw new Error('token install failed');
    for (let chunk = 0; chunk < CHUNKS; chunk += 1) {
      if (!session.targetsOf(chunk).includes(port === record.ports.data ? node.sds_id : readSdsNodeFile(peer.dataDir).sds_id)) continue;
      const reply = await session.write(client, chunk, 0, pattern, { fua: true });
      if (reply.status !== Status.OK) throw new Error(`write chunk ${chunk}: ${statusName(reply.status)}`);
    }
  }
}

interface ChunkView {
  index: number;
  epoch: number;
  replicas: { sds: string; state: string; failed_reason?: string }[];
}

async function chunksAtMdm(): Promise<ChunkView[]> {
  return (await mdm.admin.get<{ chunks: ChunkView[] }>('/vol/idv/chunks')).chunks;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

let oldSession: TokenSession;

t.test('setup: every chunk written on both replicas', async (t) => {
  oldSession = await TokenSession.authorize(mdm.admin, 'idv', layout.sdc, ['read', 'write'], 0, CHUNKS);
  await writeEverywhere(oldSession);
  const chunks = await chunksAtMdm();
  t.equal(chunks.length, CHUNKS, 'every chunk placed');
  t.ok(chunks.every((chunk) => chunk.replicas.length === 2 && chunk.replicas.every((r) => r.state === 'CURRENT')), 'two current replicas each');
});

t.test('a device that is gone at restart is never recreated: its replicas are lost, never zeros', async (t) => {
  await processes[0]!.stop();
  rmSync(record.devicePath);
  processes[0] = await startUnderTest();
  t.notOk(existsSync(record.devicePath), 'the device file was not recreated');
  const device = await waitFor('the MDM to see the device MISSING', async () => {
    const view = await mdm.admin.get<{ devices: { path: string; state: string; state_reason: string | null }[] }>(`/sds/${record.name}`);
    return view.devices.find((d) => d.path === record.devicePath && d.state === 'MISSING');
  });
  t.match(device.state_reason ?? '', /never recreated/, 'with the reason');
  const lost = await waitFor('its replicas to be lost at the MDM', async () => {
    const chunks = await chunksAtMdm();
    const mine = chunks.flatMap((chunk) => chunk.replicas.filter((r) => r.sds === record.name));
    return mine.length > 0 && mine.every((r) => r.state === 'STALE' && /lost/.test(r.failed_reason ?? '')) ? mine : undefined;
  });
  t.ok(lost.length > 0, `every replica on the missing device is STALE, lost (${lost.length})`);
  const client = new SdsDataClient('127.0.0.1', record.ports.data, 20_000);
  clients.push(client);
  t.equal((await oldSession.install(client)).status, Status.OK, 'the old token still installs');
  for (let chunk = 0; chunk < CHUNKS; chunk += 1) {
    if (!oldSession.targetsOf(chunk).includes(node.sds_id)) continue;
    const reply = await oldSession.read(client, chunk, 0, pattern.length);
    t.not(statusName(reply.status), 'OK', `chunk ${chunk} with the old plan: refused (${statusName(reply.status)}), never zeros`);
  }
  const fresh = await TokenSession.authorize(mdm.admin, 'idv', layout.sdc, ['read'], 0, CHUNKS);
  t.ok([...Array(CHUNKS).keys()].every((chunk) => !fresh.targetsOf(chunk).includes(node.sds_id)), 'a new plan names only the peer');
  const events = await mdm.admin.get<{ type: string; message: string }[]>('/event/list?type=REPLICAS_LOST');
  t.ok(events.some((event) => event.message.includes(record.name)), 'a REPLICAS_LOST event');
});

t.test('a device holding another SDS superblock is refused and left as it was', async (t) => {
  await processes[0]!.stop();
  copyFileSync(peer.devicePath, record.devicePath);
  const before = await sha256File(record.devicePath);
  processes[0] = await startUnderTest();
  const answer = await httpCall(`${processes[0]!.controlUrl}/chunks`, { authorization: auth });
  t.equal(answer.status, 200);
  const view = await mdm.admin.get<{ devices: { path: string; state: string; state_reason: string | null }[] }>(`/sds/${record.name}`);
  const device = view.devices.find((d) => d.path === record.devicePath);
  t.equal(device?.state, 'FOREIGN', 'the MDM sees it FOREIGN');
  t.match(device?.state_reason ?? '', /another device/, 'with the reason');
  t.equal(await sha256File(record.devicePath), before, 'not a byte of it was written');
  rmSync(record.devicePath);
});

t.test('a wiped data dir rejoins as a new incarnation: every replica it had is lost first', async (t) => {
  // Put the replicas back on the SDS under test: a fresh chunk record on the peer's plan is not
  // needed; the MDM only has to know replicas of this SDS (stale ones count too).
  await processes[0]!.stop();
  rmSync(record.dataDir, { recursive: true, force: true });
  const { join_token: joinToken } = await mdm.admin.post<{ join_token: string }>('/cluster/join-token', { roles: ['sds'] });
  processes[0] = await startUnderTest(joinToken);
  const events = await waitFor('an SDS_STATE_LOST event', async () => {
    const list = await mdm.admin.get<{ type: string; message: string }[]>('/event/list?type=SDS_STATE_LOST');
    return list.length > 0 ? list : undefined;
  });
  t.match(events[0]!.message, new RegExp(record.name), 'the MDM names the SDS whose state was lost');
  const chunks = await chunksAtMdm();
  const mine = chunks.flatMap((chunk) => chunk.replicas.filter((r) => r.sds === record.name));
  t.ok(mine.every((r) => r.state === 'STALE' && /lost/.test(r.failed_reason ?? '')), 'every replica it had is STALE, lost', { mine });
  t.ok(existsSync(record.devicePath), 'its device was formatted afresh');
  t.not(readSdsNodeFile(record.dataDir).credential, node.credential, 'a new credential');
});
