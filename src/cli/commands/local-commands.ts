/**
 * pflex local status | start | stop | kill: the children of a running `npm start`, through its
 * control socket (<data dir>/local-cluster.sock; src/launcher/local-control-protocol.ts).
 */
import { Command } from 'commander';
import { resolve } from 'node:path';
import pc from 'picocolors';
import { HttpClientError } from '../../common/http-client.js';
import {
  ControlReplyError,
  NoLocalClusterError,
  controlRequest,
  localCommandHint,
  localControlSocketPath,
  type ChildStatus,
} from '../../launcher/local-control-protocol.js';
import { contextOf } from '../context.js';
import { print, renderTable } from '../output.js';

const STATE_COLOURS: Record<ChildStatus['state'], (text: string) => string> = { running: pc.green, exited: pc.red, stopped: pc.yellow };

function dataDirOf(options: { dataDir?: string }): string {
  return resolve(options.dataDir ?? process.env.PFLEX_DATA_DIR ?? 'data');
}

/** A request to the launcher owning `dataDir`; its refusals and its absence become CLI errors with codes. */
async function ask<T>(dataDir: string, send: (socketPath: string) => Promise<T>): Promise<T> {
  const socketPath = localControlSocketPath(dataDir);
  try {
    return await send(socketPath);
  } catch (error) {
    if (error instanceof NoLocalClusterError) {
      throw new HttpClientError(
        `no local cluster is running with data dir ${dataDir} (nothing answers at ${socketPath}); ` +
          'start one with `npm start` (PFLEX_DATA_DIR sets its data dir), or name the data dir of a running one with --data-dir',
        'PFLEX_ERR_UNAVAILABLE',
      );
    }
    if (error instanceof ControlReplyError) throw new HttpClientError(error.message, error.code);
    throw error;
  }
}

function age(since: string): string {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(since)) / 1000));
  if (seconds < 120) return `${seconds} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function stateText(child: ChildStatus): string {
  const state = STATE_COLOURS[child.state](child.state);
  if (child.restart_at !== null) return `${state} (restart in ${Math.max(0, Math.ceil((Date.parse(child.restart_at) - Date.now()) / 1000))} s)`;
  if (child.restart_given_up) return `${state} (auto-restart gave up)`;
  return state;
}

function childLine(child: ChildStatus): string {
  const exit = child.exit === null ? '' : `; last exit: ${child.exit.reason}`;
  return `${child.name}: ${stateText(child)}, pid ${child.pid ?? '-'}, restarts ${child.restarts}${exit}\nlog: ${child.log}`;
}

function withDataDir(command: Command): Command {
  return command.option('--data-dir <dir>', "the local cluster's data dir (default: $PFLEX_DATA_DIR, else ./data)");
}

export function registerLocalCommands(program: Command): void {
  const local = program
    .command('local')
    .description('the children of a running `npm start` (MDM, sds-1..sds-3, sdc1): status, start, stop, kill')
    .addHelpText(
      'after',
      `
These talk to the launcher of \`npm start\` through <data dir>/local-cluster.sock, so they work on
the machine it runs on, as the user who started it. The others keep serving while one child is down.

Examples:
  pflex local status                 every child: role, PID, state, since, last exit, restarts, log
  pflex local kill sds-2             SIGKILL sds-2, as in a crash (the launcher reports it)
  pflex local start sds-2            start it again, the same command line as before
  pflex local stop sdc1              SIGTERM, and no automatic restart
  pflex local status --data-dir /var/tmp/lab     a local cluster started with PFLEX_DATA_DIR=/var/tmp/lab

The data dir is --data-dir, else $PFLEX_DATA_DIR, else ./data (where \`npm start\` keeps it).
With PFLEX_LOCAL_RESTART_DELAY_S=5 npm start, a child that dies is started again after 5 s, at
most 5 times a minute.`,
    );

  withDataDir(local.command('status'))
    .description('each child: name, role, PID, state (running | exited | stopped), since, last exit, restarts, log file')
    .action(async (options: { dataDir?: string }, command: Command) => {
      const { output } = contextOf(command);
      const reply = await ask(dataDirOf(options), (socketPath) => controlRequest(socketPath, { op: 'status' }));
      const { launcher, children } = reply;
      print(output, { launcher, children }, () => {
        const restart = launcher.restart_delay_s === null ? 'off' : `after ${launcher.restart_delay_s} s (at most ${launcher.restarts_per_minute_max} a minute)`;
        const down = children.filter((child) => child.state !== 'running');
        return [
          `${pc.bold('local cluster')} ${launcher.data_dir}  ${pc.bold('launcher pid')} ${launcher.pid}  ${pc.bold('auto-restart')} ${restart}`,
          renderTable(children, [
            { header: 'NAME', value: (c) => c.name },
            { header: 'ROLE', value: (c) => c.role },
            { header: 'PID', value: (c) => c.pid, align: 'right' },
            { header: 'STATE', value: stateText },
            { header: 'SINCE', value: (c) => `${new Date(c.since).toTimeString().slice(0, 8)} (${age(c.since)})` },
            { header: 'LAST EXIT', value: (c) => c.exit?.reason },
            { header: 'RESTARTS', value: (c) => c.restarts, align: 'right' },
            { header: 'LOG', value: (c) => c.log },
          ]),
          ...(down.length === 0 ? [] : [`bring one back: ${localCommandHint(launcher.data_dir, 'start', down[0]!.name)}`]),
        ].join('\n');
      });
    });

  for (const [op, description] of [
    ['start', 'start a child that exited or was stopped, with the same command line and environment; waits until it answers /health'],
    ['stop', 'stop a running child with SIGTERM (SIGKILL after 10 s); it is not restarted by itself'],
    ['kill', 'kill a running child with SIGKILL, for failure demos: the launcher handles it as a crash'],
  ] as const) {
    withDataDir(local.command(op))
      .description(description)
      .argument('<name>', 'mdm, sds-1, sds-2, sds-3 or sdc1 (see pflex local status)')
      .action(async (name: string, options: { dataDir?: string }, command: Command) => {
        const { output } = contextOf(command);
        const { child } = await ask(dataDirOf(options), (socketPath) => controlRequest(socketPath, { op, name }));
        print(output, child, () => childLine(child));
      });
  }
}
