/** pflex mdm: run the metadata manager in the foreground until SIGINT/SIGTERM. */
import { Command, Option } from 'commander';
import { join, resolve } from 'node:path';
import { parseIntegerArgument } from '../context.js';
import { stopOnSignals } from '../foreground.js';
import { LOG_LEVELS } from '../../common/logger.js';

interface MdmFlags {
  host: string;
  port: number;
  dataDir?: string;
  heartbeatIntervalMs: number;
  heartbeatMisses: number;
  tokenTtlMs: number;
  logLevel: (typeof LOG_LEVELS)[number];
  logFile?: string;
}

export function registerRunMdmCommand(program: Command): void {
  program
    .command('mdm')
    .description('run the MDM (metadata manager, token authority) in the foreground')
    .addOption(new Option('--host <address>', 'address to listen on').env('POWERFLEX_MDM_HOST').default('127.0.0.1'))
    .addOption(new Option('--port <port>', 'HTTP API port').env('POWERFLEX_MDM_PORT').default(8001).argParser(parseIntegerArgument(0, 65535)))
    .addOption(new Option('--data-dir <dir>', 'where powerflex.db and admin.token live (default $PFLEX_DATA_DIR/mdm or ./data/mdm)').env('POWERFLEX_MDM_DATA_DIR'))
    .addOption(
      new Option('--heartbeat-interval-ms <ms>', 'interval nodes heartbeat at')
        .env('POWERFLEX_HEARTBEAT_INTERVAL_MS')
        .default(2000)
        .argParser(parseIntegerArgument(100, 60_000)),
    )
    .addOption(new Option('--heartbeat-misses <n>', 'missed heartbeats before a node is DOWN').default(3).argParser(parseIntegerArgument(1, 100)))
    .addOption(
      new Option('--token-ttl-ms <ms>', 'IO token lifetime').env('POWERFLEX_TOKEN_TTL_MS').default(30_000).argParser(parseIntegerArgument(1000, 3_600_000)),
    )
    .addOption(new Option('--log-level <level>', 'log level').env('POWERFLEX_LOG_LEVEL').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--log-file <file>', 'write JSON logs here instead of stdout').env('POWERFLEX_MDM_LOG_FILE'))
    .addHelpText(
      'after',
      '\nThe admin credential is created at first start in <data-dir>/admin.token (mode 0600);\n' +
        'PFLEX_ADMIN_TOKEN (16+ characters) is accepted as well. Logs are JSON lines (pino).',
    )
    .action(async (flags: MdmFlags) => {
      const { createLogger } = await import('../../common/logger.js');
      const { startMdm } = await import('../../mdm/mdm-service.js');
      const log = createLogger('mdm', flags.logLevel, flags.logFile);
      const dataDir = resolve(flags.dataDir ?? join(process.env.PFLEX_DATA_DIR ?? 'data', 'mdm'));
      const mdm = await startMdm({
        host: flags.host,
        port: flags.port,
        dataDir,
        adminToken: process.env.PFLEX_ADMIN_TOKEN,
        log,
        settings: {
          heartbeatIntervalMs: flags.heartbeatIntervalMs,
          heartbeatMissesMax: flags.heartbeatMisses,
          tokenTtlMs: flags.tokenTtlMs,
        },
      });
      process.stderr.write(`pflex mdm listening on ${mdm.url} (data ${dataDir}, admin credential ${mdm.adminTokenFile})\n`);
      stopOnSignals(log, mdm);
    });
}
