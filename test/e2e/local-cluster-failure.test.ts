/**
 * The failure demo every user tries first, on `npm start` itself (node dist/scripts/local-cluster.js
 * on free ports): fio writes with crc32c verification through NBD, `pflex local kill sds-2` kills an
 * SDS mid-run. fio finishes without an error, the launcher keeps running and says what died and where
 * its log is, `pflex local status` shows it exited, `pflex local start sds-2` brings it back, the MDM
 * sees it UP and the pool is OK again. Bad control requests get clear errors and change nothing.
 * SIGTERM of the launcher stops every child and removes the control socket.
 */
import t from 'tap';
import { connect } from 'node:net';
import { existsSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/api.js';
import { runPflex, cleanEnv } from '../helpers/cli.js';
import { directTempDir } from '../helpers/sds.js';
import { pidAlive, removeDataDir, startLocalLauncher, type LocalLauncher } from '../helpers/local-launcher.js';
import type { StatusReply } from '../../src/launcher/local-control-protocol.js';
import { CONTROL_REQUEST_BYTES_MAX } from '../../src/launcher/local-control-protocol.js';

const MiB = 1024 * 1024;
let launcher: LocalLauncher;

t.before(async () => {
  launcher = await startLocalLauncher();
});
t.teardown(async () => {
  if (launcher?.running()) await launcher.stop();
  if (launcher !== undefined) removeDataDir(launcher.dataDir);
});

/** What must not change when a request is refused: every child's PID and state. */
function snapshot(status: StatusReply): string[] {
  return status.children.map((child) => `${child.name} ${child.pid} ${child.state} ${child.restarts}`);
}

/** One raw line to the control socket and the raw reply line: for requests the CLI never sends. */
function rawRequest(socketPath: string, payload: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const socket = connect(socketPath);
    let reply = '';
    socket.setTimeout(10_000, () => socket.destroy(new Error('no reply within 10 s')));
    socket.on('error', reject);
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('utf8');
      const newline = reply.indexOf('\n');
      if (newline !== -1) {
        socket.destroy();
        resolvePromise(reply.slice(0, newline));
      }
    });
    socket.on('end', () => resolvePromise(reply));
  });
}

t.test('the banner says auto-restart is off and how to reach the children; the socket is 0600', async (t) => {
  t.match(launcher.stdout(), /auto-restart\s+off/);
  t.match(launcher.stdout(), /npx pflex local status \| start <name> \| stop <name> \| kill <name> --data-dir /);
  t.match(launcher.stdout(), /children\s+mdm \d+, sds-1 \d+, sds-2 \d+, sds-3 \d+, sdc1 \d+/);
  const socket = lstatSync(launcher.socketPath);
  t.ok(socket.isSocket(), `${launcher.socketPath} is a socket`);
  t.equal(socket.mode & 0o777, 0o600, 'mode 0600');
  const status = await launcher.status();
  t.same(status.children.map((child) => [child.name, child.role, child.state]), [
    ['mdm', 'mdm', 'running'], ['sds-1', 'sds', 'running'], ['sds-2', 'sds', 'running'], ['sds-3', 'sds', 'running'], ['sdc1', 'sdc', 'running'],
  ]);
  t.equal(status.launcher.pid, launcher.child.pid);
  t.equal(status.launcher.restart_delay_s, null);
  for (const child of status.children) {
    t.ok(child.pid !== null && pidAlive(child.pid), `${child.name}'s pid ${child.pid} is alive`);
    t.equal(child.log, join(launcher.dataDir, 'logs', `${child.name}.log`));
  }
});

t.test('pflex local kill sds-2 under a verifying fio load: no client error, the cluster keeps serving', async (t) => {
  const before = await launcher.childStatus('sds-2');
  let fioDone = false;
  const fio = run(
    'fio',
    ['--name=v', '--ioengine=nbd', `--uri=${launcher.nbdUri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=64M', '--rate_iops=2000',
      '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--time_based=0', '--output-format=json'],
    { timeoutMs: 240_000 },
  ).finally(() => (fioDone = true));
  await new Promise((resolve) => setTimeout(resolve, 2500));
  const kill = await launcher.local('kill', 'sds-2');
  t.equal(kill.code, 0, `pflex local kill exits 0: ${kill.stderr}`);
  t.notOk(fioDone, 'fio was still writing when sds-2 was killed');
  t.match(kill.stdout, /sds-2: exited/);
  t.notOk(pidAlive(before.pid!), `sds-2's pid ${before.pid} is gone`);

  const result = await fio;
  t.equal(result.code, 0, `fio exits 0: ${result.stderr}`);
  const report = JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as { jobs: unknown[] };
  t.match(report.jobs, [{ error: 0, write: { io_bytes: 64 * MiB }, read: { io_bytes: 64 * MiB } }], 'no IO error; every block written, read back and verified');

  t.ok(launcher.running(), 'the launcher is still running');
  const stderr = launcher.stderr();
  t.match(stderr, `sds-2 (pid ${before.pid}) died: killed by SIGKILL`, 'the launcher names what died, its PID and the signal');
  t.match(stderr, join(launcher.dataDir, 'logs', 'sds-2.log'), 'and where its log is');
  t.match(stderr, /bring it back: npx pflex local start sds-2 --data-dir /, 'and how to bring it back');
  t.notMatch(stderr, /stopping/, 'nothing else was stopped');

  const status = await launcher.status();
  const sds2 = status.children.find((child) => child.name === 'sds-2')!;
  t.equal(sds2.state, 'exited', 'pflex local status: sds-2 exited');
  t.same(sds2.exit, { code: null, signal: 'SIGKILL', reason: 'killed by SIGKILL (pflex local kill)' });
  for (const child of status.children.filter((entry) => entry.name !== 'sds-2')) {
    t.equal(child.state, 'running', `${child.name} still running`);
    t.ok(pidAlive(child.pid!), `${child.name}'s pid is alive`);
  }
  const human = await launcher.local('status');
  t.equal(human.code, 0);
  t.match(human.stdout, /sds-2\s+sds\s+\d+\s+exited/);
  const cluster = await launcher.adminJson<{ sds: { name: string; state: string }[] }>('cluster', 'status');
  t.equal(cluster.sds.find((sds) => sds.name === 'sds-2')?.state, 'DOWN', 'the MDM has sds-2 DOWN');

  const start = await launcher.local('start', 'sds-2');
  t.equal(start.code, 0, `pflex local start exits 0: ${start.stderr}`);
  const after = await launcher.childStatus('sds-2');
  t.equal(after.state, 'running');
  t.not(after.pid, before.pid, 'a new process');
  t.ok(pidAlive(after.pid!), 'which is alive');
  t.equal(after.restarts, 1);
  t.match(launcher.stderr(), `started sds-2 again (pid ${after.pid}`);

  const up = await waitFor(async () => {
    const sds = await launcher.adminJson<{ name: string; state: string }[]>('sds', 'list');
    return sds.find((entry) => entry.name === 'sds-2')?.state === 'UP' ? true : undefined;
  }, 30_000, 500);
  t.ok(up, 'the MDM shows sds-2 UP');
  const ok = await waitFor(async () => {
    const view = await launcher.adminJson<{ pools: { name: string; health: string }[]; rebuild: { state: string }[] }>('cluster', 'status');
    return view.pools[0]?.health === 'OK' && view.rebuild.every((pool) => pool.state === 'idle') ? true : undefined;
  }, 120_000, 500);
  t.ok(ok, 'pool1 is OK again');
});

t.test('bad control requests get a clear error, a non-zero exit, and change nothing', async (t) => {
  const before = snapshot(await launcher.status());

  const unknown = await launcher.local('start', 'sds-9');
  t.equal(unknown.code, 1, 'unknown name: exit 1');
  t.match(unknown.stderr, /no child named "sds-9" in this local cluster; its children are mdm, sds-1, sds-2, sds-3, sdc1 \(PFLEX_ERR_NOT_FOUND\)/);
  const running = await launcher.local('start', 'sds-1');
  t.equal(running.code, 1, 'starting a running child: exit 1');
  t.match(running.stderr, /sds-1 is already running \(pid \d+\).*PFLEX_ERR_CONFLICT/);
  const badName = await runPflex(['--json', 'local', 'kill', '../mdm', '--data-dir', launcher.dataDir]);
  t.equal(badName.code, 1);
  t.equal(JSON.parse(badName.stderr).error.code, 'PFLEX_ERR_VALIDATION', '--json: the error as JSON');
  const usage = await launcher.local('kill');
  t.equal(usage.code, 2, 'a missing name is a usage error');
  t.match(usage.stderr, /missing required argument 'name'/);

  const replies = {
    notJson: await rawRequest(launcher.socketPath, 'status please\n'),
    unknownOp: await rawRequest(launcher.socketPath, '{"op":"restart","name":"sds-1"}\n'),
    extraField: await rawRequest(launcher.socketPath, '{"op":"kill","name":"sds-1","signal":"SIGSEGV"}\n'),
    notObject: await rawRequest(launcher.socketPath, '[1,2]\n'),
    tooLong: await rawRequest(launcher.socketPath, `{"op":"status","x":"${'a'.repeat(CONTROL_REQUEST_BYTES_MAX)}"}\n`),
  };
  const errorOf = (line: string): { code: string; message: string } => {
    const reply = JSON.parse(line) as { ok: boolean; error: { code: string; message: string } };
    t.equal(reply.ok, false);
    return reply.error;
  };
  t.equal(errorOf(replies.notJson).code, 'PFLEX_ERR_BAD_JSON');
  t.match(errorOf(replies.unknownOp), { code: 'PFLEX_ERR_VALIDATION', message: /op: .*'status' \| 'start' \| 'stop' \| 'kill'/ });
  t.match(errorOf(replies.extraField), { code: 'PFLEX_ERR_VALIDATION', message: /Unrecognized key: "signal"/ });
  t.equal(errorOf(replies.notObject).code, 'PFLEX_ERR_VALIDATION');
  t.match(errorOf(replies.tooLong), { code: 'PFLEX_ERR_PAYLOAD_TOO_LARGE', message: new RegExp(`${CONTROL_REQUEST_BYTES_MAX} bytes`) });
  const twoInOne = await rawRequest(launcher.socketPath, '{"op":"status"}\n');
  t.match(JSON.parse(twoInOne), { ok: true }, 'a good request after the bad ones is answered');

  t.same(snapshot(await launcher.status()), before, 'no child was started, stopped or killed');
  t.ok(launcher.running(), 'the launcher is still running');

  const elsewhere = directTempDir('pflex-local-none-');
  const none = await runPflex(['local', 'status', '--data-dir', elsewhere]);
  t.equal(none.code, 1, 'no cluster there: exit 1');
  t.match(none.stderr, `no local cluster is running with data dir ${elsewhere}`);
  const viaEnv = await runPflex(['local', 'status'], { env: cleanEnv({ PFLEX_DATA_DIR: elsewhere }) });
  t.match(viaEnv.stderr, `no local cluster is running with data dir ${elsewhere}`, 'PFLEX_DATA_DIR names the data dir too');
  removeDataDir(elsewhere);
});

t.test('SIGTERM to the launcher stops every child and removes the socket', async (t) => {
  const pids = (await launcher.status()).children.map((child) => child.pid!);
  t.equal(pids.length, 5);
  const exit = await launcher.stop();
  t.same(exit, { code: 0, signal: null }, 'the launcher exits 0');
  for (const pid of pids) t.notOk(pidAlive(pid), `child pid ${pid} is gone`);
  t.notOk(existsSync(launcher.socketPath), 'the control socket is removed');
  t.match(launcher.stderr(), /local-cluster: stopped/);
});
