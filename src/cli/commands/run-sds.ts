/** pflex sds (no subcommand): run a storage data server in the foreground until SIGINT/SIGTERM. */
import { Command, InvalidArgumentError, Option } from 'commander';
import { join, resolve } from 'node:path';
import { parseIntegerArgument } from '../context.js';
import { stopOnSignals } from '../foreground.js';
import { LOG_LEVELS } from '../../common/logger.js';
import { parseSizeBytes } from '../../common/units.js';
import { NAME_PATTERN } from '../../common/names.js';

interface SdsFlags {
  nodeId?: string;
  index: number;
  dataDir?: string;
  mdm: string;
  host: string;
  listen: string;
  dataPort?: number;
  controlPort?: number;
  mgmtPort?: number;
  pd?: string;
  faultSet?: string;
  device?: { path: string; capacity_bytes: number; pool: string }[];
  logLevel: (typeof LOG_LEVELS)[number];
  logFile?: string;
}

function parseDevice(text: string, previous: SdsFlags['device'] = []): NonNullable<SdsFlags['device']> {
  const parts = text.split(':');
  const pool = parts.pop();
  const size = parts.length >= 2 ? parseSizeBytes(parts.pop()!) : undefined;
  const path = parts.join(':');
  if (pool === undefined || !NAME_PATTERN.test(pool) || size === undefined || !path.startsWith('/')) {
    throw new InvalidArgumentError(`"${text}" is not PATH:SIZE:POOL, e.g. /var/lib/pflex/d0.img:8GiB:pool1`);
  }
  return [...previous, { path, capacity_bytes: size, pool }];
}

/** Adds the foreground-run action to the `pflex sds` command (which also holds the admin subcommands). */
export function attachRunSdsAction(sds: Command): void {
  sds
    .addOption(new Option('--node-id <name>', 'this SDS\'s name; matches its SDS record (default sds-<index+1>)').env('POWERFLEX_SDS_NODE_ID'))
    .addOption(new Option('--index <n>', 'n of the default ports 9700+n, 9100+n, 9200+n').env('POWERFLEX_SDS_INDEX').default(0).argParser(parseIntegerArgument(0, 99)))
    .addOption(new Option('--data-dir <dir>', 'sds_local.db and node credential (default $PFLEX_DATA_DIR/<node-id>)').env('POWERFLEX_SDS_DATA_DIR'))
    .addOption(new Option('--host <address>', 'address the MDM, SDC and peers reach this SDS at').env('POWERFLEX_SDS_HOST').default('127.0.0.1'))
    .addOption(new Option('--listen <address>', 'address to listen on').env('POWERFLEX_SDS_LISTEN').default('127.0.0.1'))
    .addOption(new Option('--data-port <port>', 'data port (default 9700+index)').env('POWERFLEX_SDS_DATA_PORT').argParser(parseIntegerArgument(0, 65535)))
    .addOption(new Option('--control-port <port>', 'control port (default 9100+index)').env('POWERFLEX_SDS_CONTROL_PORT').argParser(parseIntegerArgument(0, 65535)))
    .addOption(new Option('--mgmt-port <port>', 'management port (default 9200+index)').env('POWERFLEX_SDS_MGMT_PORT').argParser(parseIntegerArgument(0, 65535)))
    .addOption(new Option('--pd <pd>', 'protection domain, when registering without an SDS record'))
    .addOption(new Option('--fault-set <fault-set>', 'fault set, when registering without an SDS record'))
    .addOption(new Option('--device <PATH:SIZE:POOL>', 'a device to bring, when registering without an SDS record; repeatable').argParser(parseDevice))
    .addOption(new Option('--log-level <level>', 'log level').env('POWERFLEX_LOG_LEVEL').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--log-file <file>', 'write JSON logs here instead of stdout').env('POWERFLEX_SDS_LOG_FILE'))
    .addHelpText(
      'after',
      '\nWithout a subcommand, `pflex sds` runs an SDS in the foreground. The first start needs a join token\n' +
        '(PFLEX_JOIN_TOKEN, from `pflex cluster join-token --roles sds`); the node credential it receives is\n' +
        'kept (0600) in the data dir for later starts. The MDM address comes from --mdm / POWERFLEX_MDM_ADDRESS.',
    )
    .action(async (flags: SdsFlags, command: Command) => {
      const globals = command.optsWithGlobals() as { mdm: string };
      const { createLogger } = await import('../../common/logger.js');
      const { startSds } = await import('../../sds/sds-service.js');
      const nodeId = flags.nodeId ?? `sds-${flags.index + 1}`;
      if (!NAME_PATTERN.test(nodeId)) throw new InvalidArgumentError(`--node-id "${nodeId}" is not a valid name`);
      const log = createLogger(`sds:${nodeId}`, flags.logLevel, flags.logFile);
      const dataDir = resolve(flags.dataDir ?? join(process.env.PFLEX_DATA_DIR ?? 'data', nodeId));
      const mdmUrl = /^https?:\/\//.test(globals.mdm) ? globals.mdm : `http://${globals.mdm}`;
      const sds = await startSds({
        nodeId,
        dataDir,
        mdmUrl,
        joinToken: process.env.PFLEX_JOIN_TOKEN || undefined,
        advertiseHost: flags.host,
        listenHost: flags.listen,
        dataPort: flags.dataPort ?? 9700 + flags.index,
        controlPort: flags.controlPort ?? 9100 + flags.index,
        mgmtPort: flags.mgmtPort ?? 9200 + flags.index,
        pd: flags.pd,
        faultSet: flags.faultSet,
        devices: flags.device,
        log,
      });
      process.stderr.write(
        `pflex sds ${nodeId}: data :${sds.dataPort}, control :${sds.controlPort}, mgmt :${sds.mgmtPort} (data dir ${dataDir})\n`,
      );
      stopOnSignals(log, sds);
    });
}
