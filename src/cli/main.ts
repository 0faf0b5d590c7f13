#!/usr/bin/env -S UV_THREADPOOL_SIZE=16 node
/**
 * pflex: the one command-line entry point. `pflex mdm` runs a component in the foreground;
 * every other command is an admin operation against the MDM's HTTP API.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { HttpClientError } from '../common/http-client.js';
import { registerRunMdmCommand } from './commands/run-mdm.js';
import { registerTopologyCommands } from './commands/topology-commands.js';
import { registerNodeCommands } from './commands/node-commands.js';
import { registerVolumeCommands } from './commands/volume-commands.js';
import { registerClusterCommands } from './commands/cluster-commands.js';
import { registerScenarioCommands } from './commands/scenario-commands.js';
import { registerLocalCommands } from './commands/local-commands.js';
import { parseIntegerArgument } from './context.js';

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

function buildProgram(): Command {
  const program = new Command('pflex')
    .description('pflex: a PowerFlex-style replicated block storage cluster (MDM, SDS, SDC over NBD)')
    .version('0.1.0')
    .addOption(new Option('--mdm <url>', 'MDM API address').env('POWERFLEX_MDM_ADDRESS').default('http://127.0.0.1:8001'))
    .addOption(new Option('--token <token>', 'admin credential (default: PFLEX_ADMIN_TOKEN, then the MDM data dir admin.token)'))
    .addOption(new Option('--token-file <file>', 'file holding the admin credential').env('PFLEX_ADMIN_TOKEN_FILE'))
    .option('--json', 'print machine-readable JSON', false)
    .addOption(new Option('--timeout-ms <ms>', 'give up on the MDM after this long').default(10_000).argParser(parseIntegerArgument(100, 600_000)))
    .option('--no-color', 'no colours (also NO_COLOR=1)')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: false, showGlobalOptions: true })
    .addHelpText(
      'after',
      `
Examples:
  pflex mdm --data-dir ./data/mdm              run the MDM
  pflex cluster status                         pools, SDS, SDC, volumes at a glance
  pflex pd create pd1
  pflex fault-set create pd1 fs1
  pflex pool create pd1 pool1 --policy two_copies
  pflex sds add pd1 sds1 --fault-set fs1 --device /dev/sdb:100GiB:pool1
  pflex sdc add sdc1
  pflex vol create pool1 vol1 8GiB --thin
  pflex vol map vol1 sdc1
  pflex cluster join-token --roles sds,sdc
  pflex rebuild status                         rebuild/resync/drain progress, rate, ETA
  pflex scenario run b                         failover and rebuild on a private cluster

The admin credential is read from --token, PFLEX_ADMIN_TOKEN, --token-file, or
$PFLEX_DATA_DIR/mdm/admin.token (default ./data/mdm/admin.token).`,
    )
    .exitOverride();
  registerRunMdmCommand(program);
  registerClusterCommands(program);
  registerTopologyCommands(program);
  registerNodeCommands(program);
  registerVolumeCommands(program);
  registerScenarioCommands(program);
  registerLocalCommands(program);
  // `pflex sds --data-port …` (run) and `pflex sds add --data-port …` share flag names, so a
  // command's options only count before its subcommand. --json still works anywhere: every leaf
  // command accepts it too.
  positionalOptionsEverywhere(program);
  return program;
}

function positionalOptionsEverywhere(command: Command): void {
  command.enablePositionalOptions();
  for (const sub of command.commands) {
    if (sub.commands.length === 0) sub.addOption(new Option('--json', 'print machine-readable JSON').hideHelp());
    else positionalOptionsEverywhere(sub);
  }
}

function reportError(error: unknown, json: boolean): number {
  if (error instanceof InvalidArgumentError) {
    // Thrown by our own checks inside an action: commander has not printed it.
    process.stderr.write(`pflex: error: ${error.message}\n`);
    return EXIT_USAGE;
  }
  if (error instanceof CommanderError) {
    // Commander already printed its message (or the help/version text).
    return error.exitCode === 0 ? 0 : EXIT_USAGE;
  }
  const code = error instanceof HttpClientError ? error.code : 'PFLEX_ERR_CLI';
  const message = error instanceof Error ? error.message : String(error);
  if (json) {
    process.stderr.write(`${JSON.stringify({ error: { code, message, ...(error instanceof HttpClientError ? { status: error.status } : {}) } })}\n`);
  } else {
    const hint = error instanceof HttpClientError && error.status === 401 ? '\nhint: pass --token, set PFLEX_ADMIN_TOKEN, or run where ./data/mdm/admin.token is readable' : '';
    process.stderr.write(`pflex: error: ${message} (${code})${hint}\n`);
  }
  return EXIT_FAILURE;
}

// `pflex … | head` closes the pipe early: that is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const program = buildProgram();
try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.exitCode = reportError(error, process.argv.includes('--json'));
}
