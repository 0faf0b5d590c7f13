/**
 * The health monitor holds its judgement while most nodes are heard late at once (issue 11):
 * the 4 TiB bench run fenced 89 of 100 healthy SDS in cascade because their heartbeats waited
 * behind the MDM's own work while its event loop's typical turn stayed short. A real MDM over
 * HTTP, heartbeat interval 500 ms, 3 misses (a 1.5 s window, a 7.5 s grace):
 *
 *  - one silent SDS of five goes DOWN within about a window (a failure is judged as before);
 *  - four of five silent at once are held: none goes DOWN within two windows, an MDM_OVERLOADED
 *    event says why, and after the grace (5 windows) they are judged all the same.
 */
import t, { type Test } from 'tap';
import { startTestMdm } from '../helpers/mdm.js';
import { Api, addSds, listEvents, sleep, waitFor, GiB } from '../helpers/api.js';

const INTERVAL_MS = 500;
const WINDOW_MS = 3 * INTERVAL_MS;
const GRACE_MS = 5 * WINDOW_MS;
const SDS_COUNT = 5;

async function startCluster(t: Test) {
  const mdm = await startTestMdm({ heartbeatIntervalMs: INTERVAL_MS });
  t.teardown(() => mdm.stop());
  const api = new Api(mdm.url, mdm.adminToken);
  await api.must('/pd/create', { name: 'pd-hold' });
  await api.must('/pool/create', { pd: 'pd-hold', name: 'pool-hold' });
  const token = await api.must('/cluster/join-token', { roles: ['sds'] });
  const nodes: { name: string; api: Api }[] = [];
  for (let index = 0; index < SDS_COUNT; index += 1) {
    const name = `sds-h${index + 1}`;
    await addSds(api, { name, pd: 'pd-hold', pool: 'pool-hold', capacityBytes: GiB, portIndex: index });
    const registered = await new Api(mdm.url).post('/discovery/register', { join_token: token.join_token, node_id: name, roles: ['sds'], host: '127.0.0.1' });
    t.equal(registered.status, 201, `${name} registered`);
    nodes.push({ name, api: new Api(mdm.url, registered.body.credential) });
  }
  const states = async (): Promise<Map<string, string>> =>
    new Map(((await api.ok('/sds/list')) as { name: string; state: string }[]).map((sds) => [sds.name, sds.state]));
  return { api, nodes, states };
}

/** Heartbeats from `nodes` twice an interval until `stop()`. */
function heartbeating(nodes: readonly { api: Api }[]): { stop: () => Promise<void> } {
  let running = true;
  const loop = (async () => {
    while (running) {
      await Promise.all(nodes.map((node) => node.api.post('/discovery/heartbeat', {})));
      await sleep(INTERVAL_MS / 2);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

t.test('one silent SDS of five is judged within about a window', async (t) => {
  const { api, nodes, states } = await startCluster(t);
  const beats = heartbeating(nodes.slice(1));
  t.teardown(() => beats.stop());
  const startedMs = Date.now();
  const down = await waitFor(async () => ((await states()).get('sds-h1') === 'DOWN' ? true : undefined), WINDOW_MS * 4, 50);
  t.equal(down, true, 'the silent SDS is DOWN', { afterMs: Date.now() - startedMs });
  t.ok(Date.now() - startedMs < GRACE_MS, `before the grace of a saturated MDM would end (${Date.now() - startedMs} ms)`);
  const now = await states();
  t.same([...now.entries()].filter(([name]) => name !== 'sds-h1').map(([, state]) => state), ['UP', 'UP', 'UP', 'UP'], 'the others stay UP');
  t.equal((await listEvents(api, 'type=MDM_OVERLOADED')).length, 0, 'no hold: one late node of five is a failure, not the MDM');
});

t.test('four of five silent at once are held for the grace, then judged', async (t) => {
  const { api, nodes, states } = await startCluster(t);
  const beats = heartbeating(nodes.slice(0, 1));
  t.teardown(() => beats.stop());
  const startedMs = Date.now();
  await sleep(WINDOW_MS * 2);
  const held = await states();
  t.same([...held.values()], ['UP', 'UP', 'UP', 'UP', 'UP'], 'two windows on, nobody is DOWN: most nodes late at once is the MDM not hearing');
  // One event for the nodes heard late (a loop saturated meanwhile, on a loaded host, has its
  // own). It counts the late ones when it first sees most of them: on a loaded host the four
  // registered one after another may not all be late yet (3 of 5 is most, too).
  const overloaded = (await listEvents(api, 'type=MDM_OVERLOADED')).filter((event) => /[34] of 5 nodes were last heard/.test(event.message));
  t.equal(overloaded.length, 1, 'one MDM_OVERLOADED event that says why: most of the 5 nodes heard late at once');
  const judged = await waitFor(async () => {
    const now = await states();
    return ['sds-h2', 'sds-h3', 'sds-h4', 'sds-h5'].every((name) => now.get(name) === 'DOWN') ? now : undefined;
  }, GRACE_MS + WINDOW_MS * 4, 100);
  const elapsedMs = Date.now() - startedMs;
  t.ok(judged !== undefined, `after the grace the silent ones are DOWN all the same (${elapsedMs} ms)`);
  t.ok(elapsedMs >= GRACE_MS, `not before the grace (${GRACE_MS} ms)`);
  t.equal(judged?.get('sds-h1'), 'UP', 'the one that heartbeats stays UP');
});
