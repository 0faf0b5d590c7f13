/**
 * `npm start` with PFLEX_LOCAL_RESTART_DELAY_S=1: a child killed with kill -9 (by its PID, from
 * outside) comes back by itself; a child that keeps dying is restarted at most 5 times a minute,
 * then the launcher gives up and says so, and `pflex local start` brings it back once the cause is
 * gone. A socket left by a crashed launcher does not stop the next start; a second launcher on a
 * data dir in use is refused. Bad settings are refused before anything starts.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { existsSync, lstatSync } from 'node:fs';
import { waitFor } from '../helpers/api.js';
import { directTempDir } from '../helpers/sds.js';
import { exitWithin, pidAlive, removeDataDir, spawnLauncher, startLocalLauncher, type LocalLauncher } from '../helpers/local-launcher.js';
import { localControlSocketPath, sendControlLine, NoLocalClusterError } from '../../src/launcher/local-control-protocol.js';
import { LOCAL_PORT_SPAN, LOCAL_RESTARTS_PER_MINUTE_MAX, localPortsFromBase } from '../../src/launcher/local-config.js';
import { freePortRange, portFree } from '../../src/launcher/free-port.js';
import { waitForExports } from '../../src/launcher/process-cluster.js';

let launcher: LocalLauncher;
const dataDir = directTempDir('pflex-local-restart-');

/** A socket file with nothing behind it, as a launcher killed with SIGKILL leaves it. */
async function leaveStaleSocket(socketPath: string): Promise<void> {
  const holder = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('listening'))`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
  const gone = new Promise((resolve) => holder.once('exit', resolve));
  holder.kill('SIGKILL');
  await gone;
}

t.before(async () => {
  await leaveStaleSocket(localControlSocketPath(dataDir));
});
t.teardown(async () => {
  if (launcher?.running()) await launcher.stop();
  removeDataDir(dataDir);
});

t.test('bad settings are refused with the variable named, before anything starts', async (t) => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ PFLEX_LOCAL_RESTART_DELAY_S: 'soon' }, /PFLEX_LOCAL_RESTART_DELAY_S="soon" is not valid: .*1 to 3600/],
    [{ PFLEX_LOCAL_RESTART_DELAY_S: '0' }, /PFLEX_LOCAL_RESTART_DELAY_S="0" is not valid/],
    [{ PFLEX_LOCAL_PORT_BASE: '65504' }, /PFLEX_LOCAL_PORT_BASE="65504" is not valid: the first of 33 ports .*1024 to 65503/],
    [{ PFLEX_LOCAL_PORT_BASE: '20000', POWERFLEX_MDM_PORT: '8001x' }, /POWERFLEX_MDM_PORT="8001x" is not valid/],
  ];
  for (const [env, message] of cases) {
    const refused = spawnLauncher({ PFLEX_DATA_DIR: dataDir, ...env }, dataDir);
    const exit = await exitWithin(refused, 10_000);
    t.equal(exit?.code, 2, `${JSON.stringify(env)}: exit 2`);
    t.match(refused.stderr(), message);
  }
  t.ok(lstatSync(localControlSocketPath(dataDir)).isSocket(), 'the stale socket is still there: nothing was touched');
});

t.test('a child that cannot start fails the start at once, and nothing is left running', async (t) => {
  const elsewhere = directTempDir('pflex-local-fail-');
  const base = await freePortRange(LOCAL_PORT_SPAN);
  const nbd = localPortsFromBase(base).sdc.nbd;
  const blocker: Server = createServer();
  await new Promise<void>((resolve, reject) => blocker.once('error', reject).listen(nbd, '127.0.0.1', resolve));
  try {
    const failing = spawnLauncher({ PFLEX_DATA_DIR: elsewhere, PFLEX_LOCAL_PORT_BASE: String(base) }, elsewhere);
    const exit = await exitWithin(failing, 60_000);
    t.equal(exit?.code, 1, 'the launcher exits 1');
    t.match(failing.stderr(), /sdc1 exited while the cluster was starting \(exit code 1\); see .*logs\/sdc1\.log/);
    t.notMatch(failing.stdout(), /is up/);
    const ports = localPortsFromBase(base);
    for (const port of [ports.mdm, ...ports.sds.map((sds) => sds.data)]) t.ok(await portFree(port), `port ${port} is free again: no child left behind`);
    t.notOk(existsSync(localControlSocketPath(elsewhere)), 'the control socket is removed');
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
    removeDataDir(elsewhere);
  }
});

t.test('a socket left by a crashed launcher does not stop the next start', async (t) => {
  const socketPath = localControlSocketPath(dataDir);
  t.ok(lstatSync(socketPath).isSocket(), 'a stale socket is there');
  const refused = await sendControlLine(socketPath, '{"op":"status"}').catch((error: unknown) => error);
  t.ok(refused instanceof NoLocalClusterError, `and nothing answers at it (${String(refused)})`);
  launcher = await startLocalLauncher({ PFLEX_LOCAL_RESTART_DELAY_S: '1' }, dataDir);
  t.match(launcher.stdout(), /auto-restart\s+after 1 s \(PFLEX_LOCAL_RESTART_DELAY_S\), at most 5 times a minute per child/);
  const status = await launcher.status();
  t.equal(status.launcher.restart_delay_s, 1);
  t.ok(status.children.every((child) => child.state === 'running'));
});

t.test('a second launcher on the same data dir is refused and changes nothing', async (t) => {
  const before = (await launcher.status()).children.map((child) => `${child.name} ${child.pid} ${child.state}`);
  const second = spawnLauncher({ PFLEX_DATA_DIR: dataDir, PFLEX_LOCAL_PORT_BASE: String(launcher.ports.mdm + 100) }, dataDir);
  const exit = await exitWithin(second, 30_000);
  t.equal(exit?.code, 1, 'it exits 1');
  t.match(second.stderr(), /another local cluster is running with this data dir/);
  t.notMatch(second.stdout(), /is up/);
  t.same((await launcher.status()).children.map((child) => `${child.name} ${child.pid} ${child.state}`), before, 'the running cluster is untouched');
  t.ok(existsSync(launcher.socketPath), 'its socket is still there');
});

t.test('kill -9 of an SDS by its PID: it comes back by itself after the delay', async (t) => {
  const before = await launcher.childStatus('sds-1');
  process.kill(before.pid!, 'SIGKILL');
  const back = await waitFor(async () => {
    const child = await launcher.childStatus('sds-1');
    return child.state === 'running' && child.pid !== before.pid ? child : undefined;
  }, 30_000, 200);
  t.ok(back, 'sds-1 runs again');
  t.ok(back !== undefined && pidAlive(back.pid!), 'a live new process');
  t.equal(back?.restarts, 1);
  t.same(back?.exit, { code: null, signal: 'SIGKILL', reason: 'killed by SIGKILL' });
  const stderr = launcher.stderr();
  t.match(stderr, `sds-1 (pid ${before.pid}) died: killed by SIGKILL; the rest of the cluster keeps serving`);
  t.match(stderr, /restarting it in 1 s \(PFLEX_LOCAL_RESTART_DELAY_S; automatic restart 1 of at most 5 a minute\)/);
  t.match(stderr, `restarted sds-1 (pid ${back?.pid}) after 1 s`);
  const up = await waitFor(async () => {
    const sds = await launcher.adminJson<{ name: string; state: string }[]>('sds', 'list');
    return sds.every((entry) => entry.state === 'UP') ? true : undefined;
  }, 30_000, 500);
  t.ok(up, 'the MDM shows every SDS UP');
});

t.test('a child that keeps dying is restarted at most 5 times a minute, then given up on', async (t) => {
  const killed = await launcher.local('kill', 'sds-3');
  t.equal(killed.code, 0, killed.stderr);
  // Its data port taken: every restart of sds-3 fails at once.
  const blocker: Server = createServer();
  await new Promise<void>((resolve, reject) => blocker.once('error', reject).listen(launcher.ports.sds[2]!.data, '127.0.0.1', resolve));
  try {
    const gaveUp = await waitFor(async () => {
      const child = await launcher.childStatus('sds-3');
      return child.restart_given_up ? child : undefined;
    }, 60_000, 250);
    t.ok(gaveUp, 'the launcher gave up on sds-3');
    t.equal(gaveUp?.state, 'exited');
    t.equal(gaveUp?.restarts, LOCAL_RESTARTS_PER_MINUTE_MAX, `${LOCAL_RESTARTS_PER_MINUTE_MAX} automatic restarts, no more`);
    t.equal(gaveUp?.restart_at, null, 'no restart scheduled');
    t.match(launcher.stderr(), /giving up on sds-3: it died again after 5 automatic restarts within 60 s, so it is not restarted any more/);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    t.equal((await launcher.childStatus('sds-3')).restarts, LOCAL_RESTARTS_PER_MINUTE_MAX, 'and it stays down');

    const failing = await launcher.local('start', 'sds-3');
    t.equal(failing.code, 1, 'pflex local start while the cause remains: exit 1');
    t.match(failing.stderr, /sds-3 exited while starting \(exit code 1\); see .*sds-3\.log/);
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
  }
  // That failed start was a death like any other: with the port free, the next automatic restart works.
  const back = await waitFor(async () => {
    const child = await launcher.childStatus('sds-3');
    return child.state === 'running' ? child : undefined;
  }, 30_000, 250);
  t.ok(back, 'sds-3 runs again');
  t.equal(back?.restart_given_up, false, 'a manual start resets the give-up');
  t.ok(back !== undefined && pidAlive(back.pid!));
  const up = await waitFor(async () => {
    const sds = await launcher.adminJson<{ name: string; state: string }[]>('sds', 'list');
    return sds.find((entry) => entry.name === 'sds-3')?.state === 'UP' ? true : undefined;
  }, 30_000, 500);
  t.ok(up, 'the MDM shows sds-3 UP');
});

t.test('the MDM and the SDC die too: each comes back by itself and serves again', async (t) => {
  for (const name of ['mdm', 'sdc1']) {
    const before = await launcher.childStatus(name);
    const killed = await launcher.local('kill', name);
    t.equal(killed.code, 0, `pflex local kill ${name}: ${killed.stderr}`);
    t.ok(launcher.running(), `the launcher survives the loss of ${name}`);
    const back = await waitFor(async () => {
      const child = await launcher.childStatus(name);
      return child.state === 'running' && child.pid !== before.pid ? child : undefined;
    }, 30_000, 200);
    t.ok(back !== undefined && pidAlive(back.pid!), `${name} runs again (pid ${back?.pid})`);
  }
  t.ok(await launcher.adminJson('cluster', 'status'), 'the restarted MDM answers the CLI');
  await waitForExports(launcher.ports.sdc.mgmt, ['vol1'], 30_000);
  t.pass('the restarted SDC registered and exports vol1 again');
});

t.test('pflex local stop: no automatic restart; SIGTERM of the launcher stops everything', async (t) => {
  const stopped = await launcher.local('stop', 'sdc1');
  t.equal(stopped.code, 0, stopped.stderr);
  await new Promise((resolve) => setTimeout(resolve, 2500));
  const sdc = await launcher.childStatus('sdc1');
  t.equal(sdc.state, 'stopped', 'still stopped after more than the restart delay');
  t.notOk(pidAlive(sdc.pid!));

  const pids = (await launcher.status()).children.filter((child) => child.state === 'running').map((child) => child.pid!);
  t.equal(pids.length, 4);
  const exit = await launcher.stop();
  t.same(exit, { code: 0, signal: null });
  for (const pid of pids) t.notOk(pidAlive(pid), `child pid ${pid} is gone`);
  t.notOk(existsSync(launcher.socketPath), 'the control socket is removed');
});
