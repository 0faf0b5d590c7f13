/**
 * Reports of an unreachable SDS (POST /sds/report-unreachable): every SDC with IO to a dead SDS
 * reports it at once. A real MDM over HTTP; the SDS's data port is a listener that accepts and
 * never answers (a hung SDS), so each report's probe waits for its timeout and fails. However many reports race, it is marked DOWN once: one
 * SDS_DOWN event (the 64 TiB bench had 95 for one SDS, each report's probe answering after the
 * first report had marked it), and every report is answered fenced.
 */
import t from 'tap';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { startTestMdm } from '../helpers/mdm.js';
import { Api, addSds, listEvents, GiB } from '../helpers/api.js';

const REPORTS = 30;

t.test('thirty SDCs report one dead SDS at once: one SDS_DOWN', async (t) => {
  const mdm = await startTestMdm({});
  t.teardown(() => mdm.stop());
  const api = new Api(mdm.url, mdm.adminToken);
  await api.must('/pd/create', { name: 'pd-r' });
  await api.must('/pool/create', { pd: 'pd-r', name: 'pool-r' });
  const sds = await addSds(api, { name: 'sds-r1', pd: 'pd-r', pool: 'pool-r', capacityBytes: GiB, portIndex: 0 });
  const sockets = new Set<Socket>();
  const hung = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    hung.close();
  });
  const dataPort = (hung.address() as AddressInfo).port;
  const token = await api.must('/cluster/join-token', { roles: ['sds'] });
  const sdsNode = await new Api(mdm.url).post('/discovery/register', { join_token: token.join_token, node_id: 'sds-r1', roles: ['sds'], host: '127.0.0.1', ports: { data: dataPort } });
  t.equal(sdsNode.status, 201, 'the SDS registered, its data port hung');
  const sdcToken = await api.must('/cluster/join-token', { roles: ['sdc'] });
  const sdc = await new Api(mdm.url).post('/discovery/register', { join_token: sdcToken.join_token, node_id: 'sdc-r1', roles: ['sdc'], host: '127.0.0.1' });
  t.equal(sdc.status, 201, 'an SDC registered');
  const sdcApi = new Api(mdm.url, sdc.body.credential);
  const answers = await Promise.all(
    Array.from({ length: REPORTS }, (_, i) => sdcApi.post('/sds/report-unreachable', { sds_id: sds.id, problem: `connect ECONNREFUSED (report ${i})` })),
  );
  t.same(new Set(answers.map((answer) => answer.status)), new Set([200]), 'every report answered');
  t.ok(answers.every((answer) => answer.body.fenced === true), 'each says the SDS is fenced');
  t.equal((await api.ok(`/sds/${sds.id}`)).state, 'DOWN', 'the SDS is DOWN');
  t.equal((await listEvents(api, 'type=SDS_DOWN')).length, 1, 'one SDS_DOWN event for the thirty reports');
});
