/** pflex sdc (no subcommand): run a storage data client (NBD server) in the foreground. */
import { Command, InvalidArgumentError, Option } from 'commander';
import { join, resolve } from 'node:path';
import { parseIntegerArgument } from '../context.js';
import { stopOnSignals } from '../foreground.js';
import { LOG_LEVELS } from '../../common/logger.js';
import { NAME_PATTERN } from '../../common/names.js';

interface SdcFlags {
  nodeId: string;
  dataDir?: string;
  host: string;
  listen: string;
  nbdPort: number;
  devicePort: number;
  controlPort: number;
  mgmtPort: number;
  logLevel: (typeof LOG_LEVELS)[number];
  logFile?: string;
}

/** Adds the foreground-run action to the `pflex sdc` command (which also holds the admin subcommands). */
export function attachRunSdcAction(sdc: Command): void {
  sdc
    .addOption(new Option('--node-id <name>', "this SDC's name").env('POWERFLEX_SDC_NODE_ID').default('sdc1'))
    .addOption(new Option('--data-dir <dir>', 'sdc_chunks.db and node credential (default $PFLEX_DATA_DIR/<node-id>)').env('POWERFLEX_SDC_DATA_DIR'))
    .addOption(new Option('--host <address>', 'address the MDM reaches this SDC at').env('POWERFLEX_SDC_HOST').default('127.0.0.1'))
    .addOption(new Option('--listen <address>', 'address to listen on (0.0.0.0 for other hosts or a VM)').env('POWERFLEX_SDC_LISTEN').default('127.0.0.1'))
    .addOption(new Option('--nbd-port <port>', 'NBD port').env('POWERFLEX_SDC_NBD_PORT').default(10809).argParser(parseIntegerArgument(0, 65535)))
    .addOption(new Option('--device-port <port>', 'JSON device frames port').env('POWERFLEX_SDC_DEVICE_PORT').default(8005).argParser(parseIntegerArgument(0, 65535)))
    .addOption(new Option('--control-port <port>', 'control port').env('POWERFLEX_SDC_CONTROL_PORT').default(8003).argParser(parseIntegerArgument(0, 65535)))
    .addOption(new Option('--mgmt-port <port>', 'management port').env('POWERFLEX_SDC_MGMT_PORT').default(8004).argParser(parseIntegerArgument(0, 65535)))
    .addOption(new Option('--log-level <level>', 'log level').env('POWERFLEX_LOG_LEVEL').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--log-file <file>', 'write JSON logs here instead of stdout').env('POWERFLEX_SDC_LOG_FILE'))
    .addHelpText(
      'after',
      '\nWithout a subcommand, `pflex sdc` runs an SDC in the foreground: every volume mapped to it is an NBD\n' +
        'export named after the volume (nbd://HOST:10809/VOLUME). The first start needs a join token\n' +
        '(PFLEX_JOIN_TOKEN, from `pflex cluster join-token --roles sdc`); the credential is kept in the data dir.',
    )
    .action(async (flags: SdcFlags, command: Command) => {
      const globals = command.optsWithGlobals() as { mdm: string };
      if (!NAME_PATTERN.test(flags.nodeId)) throw new InvalidArgumentError(`--node-id "${flags.nodeId}" is not a valid name`);
      const { createLogger } = await import('../../common/logger.js');
      const { startSdc } = await import('../../sdc/sdc-service.js');
      const log = createLogger(`sdc:${flags.nodeId}`, flags.logLevel, flags.logFile);
      const dataDir = resolve(flags.dataDir ?? join(process.env.PFLEX_DATA_DIR ?? 'data', flags.nodeId));
      const sdc = await startSdc({
        nodeId: flags.nodeId,
        dataDir,
        mdmUrl: /^https?:\/\//.test(globals.mdm) ? globals.mdm : `http://${globals.mdm}`,
        joinToken: process.env.PFLEX_JOIN_TOKEN || undefined,
        advertiseHost: flags.host,
        listenHost: flags.listen,
        nbdPort: flags.nbdPort,
        devicePort: flags.devicePort,
        controlPort: flags.controlPort,
        mgmtPort: flags.mgmtPort,
        log,
      });
      process.stderr.write(`pflex sdc ${flags.nodeId}: NBD :${sdc.nbdPort}, JSON device :${sdc.devicePort}, control :${sdc.controlPort}, mgmt :${sdc.mgmtPort}\n`);
      stopOnSignals(log, sdc);
    });
}
