/**
 * `npm start`: a whole local cluster on loopback (DESIGN §1): the MDM, three SDS in three fault
 * sets and the SDC, each its own OS process (`pflex sds --node-id sds-2` …), a protection domain,
 * a two-copy pool and a 1 GiB thin `vol1` mapped to the SDC and exported over NBD. Data lives
 * under ./data (PFLEX_DATA_DIR), logs under ./data/logs; a restart finds everything where it was.
 *
 * Once it is up, a child that dies is reported and the others keep serving (local-supervisor.ts);
 * `pflex local status|start|stop|kill` reach this launcher through data/local-cluster.sock
 * (local-control.ts). PFLEX_LOCAL_RESTART_DELAY_S restarts a dead child by itself. Only Ctrl-C or
 * SIGTERM of the launcher stops every child (SDC first, MDM last).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ProcessCluster } from '../src/launcher/process-cluster.js';
import { LocalConfigError, localClusterConfig, type LocalClusterConfig } from '../src/launcher/local-config.js';
import { ControlSocketError, LocalControlServer } from '../src/launcher/local-control.js';
import { localCommandHint, localControlSocketPath, type ControlRequest } from '../src/launcher/local-control-protocol.js';
import { LocalSupervisor } from '../src/launcher/local-supervisor.js';
import { PflexError } from '../src/common/errors.js';

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

let cluster: ProcessCluster | undefined;
let supervisor: LocalSupervisor | undefined;
let control: LocalControlServer | undefined;
let stopping = false;
/** ProcessCluster.start() while it runs; aborting startAbort makes it stop what it started. */
let starting: Promise<ProcessCluster> | undefined;
const startAbort = new AbortController();

function say(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function stopAll(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  say('local-cluster: stopping…');
  supervisor?.shutdown();
  startAbort.abort();
  const started = await starting?.catch(() => undefined);
  await control?.close();
  await (cluster ?? started)?.stop();
  say('local-cluster: stopped');
  process.exit(exitCode);
}

async function answer(request: ControlRequest): Promise<Record<string, unknown>> {
  if (supervisor === undefined || stopping) throw new PflexError('UNAVAILABLE', stopping ? 'the local cluster is stopping' : 'the local cluster is still starting; try again in a few seconds');
  switch (request.op) {
    case 'status':
      return { launcher: launcherStatus, children: supervisor.status() };
    case 'start':
      return { child: await supervisor.start(request.name) };
    case 'stop':
      return { child: await supervisor.stop(request.name) };
    case 'kill':
      return { child: await supervisor.kill(request.name) };
  }
}

let launcherStatus: Record<string, unknown> = {};

function banner(config: LocalClusterConfig, started: ProcessCluster, socketPath: string): string {
  const children = [...started.processes.keys()].map((name) => `${name} ${started.pid(name)}`).join(', ');
  const restart =
    config.restartDelayS === undefined
      ? 'off: a child that dies stays down until `npx pflex local start <name>` (PFLEX_LOCAL_RESTART_DELAY_S=5 restarts it after 5 s)'
      : `after ${config.restartDelayS} s (PFLEX_LOCAL_RESTART_DELAY_S), at most ${config.restartsPerMinuteMax} times a minute per child`;
  return [
    '',
    `pflex local cluster is up (data in ${config.dataDir}, logs in ${join(config.dataDir, 'logs')})`,
    `  MDM API        ${started.mdmUrl}   (admin credential: ${started.adminTokenFile})`,
    '  topology       pd1 / fs1..fs3 / pool1 (two_copies) / sds-1..sds-3 / sdc1 / vol1 (1 GiB thin, mapped to sdc1)',
    `  NBD export     ${started.nbdUri}/vol1`,
    `  attach         nbd-client 127.0.0.1 ${config.ports.sdc.nbd} /dev/nbd0 -N vol1      (add -C 4 for four connections)`,
    `  inspect        nbdinfo ${started.nbdUri}/vol1   ·   npx pflex cluster status`,
    `  children       ${children}   (PIDs)`,
    `  control        ${localCommandHint(config.dataDir, 'status | start <name> | stop <name> | kill <name>')}   (socket ${socketPath})`,
    `  auto-restart   ${restart}`,
    '  stop           Ctrl-C (stops every child: SDC, SDS, MDM)',
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  // A closed terminal or pipe must not take the launcher down (and leave its children behind).
  process.stdout.on('error', () => undefined);
  process.stderr.on('error', () => undefined);
  let config: LocalClusterConfig;
  try {
    config = localClusterConfig();
  } catch (error) {
    if (!(error instanceof LocalConfigError)) throw error;
    say(`local-cluster: ${error.message}`);
    process.exit(EXIT_USAGE);
  }
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  process.on('exit', () => control?.removeSocketFile());
  const socketPath = localControlSocketPath(config.dataDir);
  launcherStatus = {
    pid: process.pid,
    data_dir: config.dataDir,
    socket: socketPath,
    restart_delay_s: config.restartDelayS ?? null,
    restarts_per_minute_max: config.restartsPerMinuteMax,
  };
  // First the socket: a second launcher on this data dir is refused before it touches anything.
  // A first start has no data dir yet: the socket lives in it.
  mkdirSync(config.dataDir, { recursive: true });
  try {
    control = await LocalControlServer.listen(socketPath, answer);
  } catch (error) {
    if (!(error instanceof ControlSocketError)) throw error;
    say(`local-cluster: ${error.message}`);
    process.exit(EXIT_FAILURE);
  }
  say(`local-cluster: starting MDM, 3 SDS and the SDC (data in ${config.dataDir})…`);
  starting = ProcessCluster.start({
    signal: startAbort.signal,
    dataDir: config.dataDir,
    mdmPort: config.ports.mdm,
    sds: config.ports.sds,
    sdc: config.ports.sdc,
    onUnexpectedExit: (name, code, signal) => {
      if (stopping) return;
      if (supervisor !== undefined) return supervisor.onExit(name, code, signal);
      // Still starting: nothing serves yet, so a child that cannot start fails the whole start.
      say(`local-cluster: ${name} exited while the cluster was starting (${code === null ? `signal ${signal}` : `exit code ${code}`}); see ${join(config.dataDir, 'logs', `${name}.log`)}`);
      void stopAll(EXIT_FAILURE);
    },
  });
  cluster = await starting;
  if (stopping) return;
  supervisor = new LocalSupervisor(cluster, {
    dataDir: config.dataDir,
    restartDelayS: config.restartDelayS,
    restartsPerMinuteMax: config.restartsPerMinuteMax,
    log: say,
  });
  process.stdout.write(banner(config, cluster, socketPath));
}

main().catch((error: unknown) => {
  if (!stopping) say(`local-cluster: ${(error as Error).message}`);
  void stopAll(EXIT_FAILURE);
});
