/** pflex scenario run b: the seeds' scenario B (failover and rebuild) on a cluster of its own. */
import { Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { contextOf, parseIntegerArgument } from '../context.js';
import { print, renderTable } from '../output.js';
import { runScenarioB } from '../../launcher/scenario-b.js';
import { MiB } from '../../common/units.js';

export function registerScenarioCommands(program: Command): void {
  const scenario = program.command('scenario').description('run a scripted failure scenario of the seeds on a private cluster of real processes');
  scenario
    .command('run')
    .description(
      'scenario b (failover and rebuild): 4 SDS, 2 thick volumes on 2 SDCs under fio load, kill -9 of sds-2, ' +
        'then checks DEGRADED → rebuild → OK, reads never failing, no chunk ever lost, the rebuild rate, vol verify clean',
    )
    .argument('<name>', 'which scenario: b')
    .option('--volume-size-mib <n>', "each volume's size (the seeds' 1.5 GB volumes would not fit back on 3 SDS after the failure)", parseIntegerArgument(16, 64 * 1024), 1024)
    .option('--sds-device-mib <n>', "each SDS's device size", parseIntegerArgument(64, 256 * 1024), 2048)
    .option('--rebuild-rate-mbps <n>', "the pool's rebuild rate limit in MB/s", parseIntegerArgument(1, 100_000), 50)
    .option('--fail-at-s <n>', 'kill sds-2 this many seconds after the start', parseIntegerArgument(1, 3600), 10)
    .option('--data-dir <dir>', 'where the cluster lives (default: a new directory under /var/tmp, removed afterwards)')
    .option('--keep', 'keep the data directory and logs afterwards', false)
    .action(
      async (
        name: string,
        options: { volumeSizeMib: number; sdsDeviceMib: number; rebuildRateMbps: number; failAtS: number; dataDir?: string; keep: boolean },
        command: Command,
      ) => {
        const { output } = contextOf(command);
        if (name.toLowerCase() !== 'b') throw new Error(`unknown scenario "${name}"; this build has: b`);
        if (spawnSync('fio', ['--version'], { stdio: 'ignore' }).status !== 0) throw new Error('scenario b drives IO with fio: install it (apt-get install fio)');
        const result = await runScenarioB({
          dataDir: options.dataDir,
          keep: options.keep,
          volumeSizeBytes: options.volumeSizeMib * MiB,
          sdsDeviceBytes: options.sdsDeviceMib * MiB,
          rebuildRateMbps: options.rebuildRateMbps,
          failAtS: options.failAtS,
          log: (line) => process.stderr.write(`${line}\n`),
        });
        print(output, result, () =>
          [
            renderTable(result.assertions, [
              { header: 'RESULT', value: (a) => (a.ok ? 'PASS' : 'FAIL') },
              { header: 'ASSERTION', value: (a) => a.name },
              { header: 'DETAIL', value: (a) => a.detail },
            ]),
            `scenario b ${result.passed ? 'PASSED' : 'FAILED'}${options.keep || options.dataDir !== undefined ? ` (data and logs in ${result.dataDir})` : ''}`,
          ].join('\n'),
        );
        if (!result.passed) process.exitCode = 1;
      },
    );
}
