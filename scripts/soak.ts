/**
 * `npm run soak`: the power-cut workload of test/e2e/power-cut.test.ts at length, on a private
 * cluster of real processes (free ports, a temp data dir). SOAK_CUTS (default 200) power cuts of
 * one SDS or two at once under four NBD writers, then the durability check and `pflex vol
 * verify`. SOAK_SEED replays a run. Prints a JSON report; exits 1 on any lost durable write.
 */
import { FAULT_ENV, startE2eCluster } from '../test/helpers/e2e-cluster.js';
import { runPowerCuts } from '../test/helpers/power-cuts.js';

const MiB = 1024 * 1024;
const seed = Number(process.env.SOAK_SEED ?? Date.now() % 1_000_000);
const cuts = Number(process.env.SOAK_CUTS ?? 200);
if (!Number.isInteger(cuts) || cuts < 1 || cuts > 100_000) {
  process.stderr.write('SOAK_CUTS must be an integer in 1..100000\n');
  process.exit(2);
}

const startedMs = Date.now();
process.stderr.write(`soak: seed ${seed}, ${cuts} power cuts (SOAK_SEED / SOAK_CUTS)\n`);
const e2e = await startE2eCluster([{ name: 'soak', sizeBytes: 32 * MiB, provisioning: 'thin' }], { env: FAULT_ENV, heartbeatIntervalMs: 500 });
let failed = true;
try {
  const report = await runPowerCuts(e2e, {
    seed,
    cuts,
    volume: 'soak',
    volumeBytes: 32 * MiB,
    connections: 4,
    inFlightPerConnection: 4,
    writeMsBetweenCuts: Number(process.env.SOAK_WRITE_MS ?? 1500),
    log: (line) => process.stderr.write(`soak: ${line}\n`),
  });
  const verify = await e2e.pflexJson<{ clean: boolean; chunks_checked: number }>('vol', 'verify', 'soak');
  const check = await e2e.pflex('--json', 'cluster', 'check'); // exits 1 on a violation, with the report
  const invariants = JSON.parse(check.stdout) as { chunks_checked: number; violation_count: number; violations: string[] };
  failed = report.bad.length > 0 || report.epochsWentBack.length > 0 || !verify.clean || invariants.violation_count > 0;
  process.stdout.write(`${JSON.stringify({ ...report, bad: report.bad.slice(0, 20), bad_blocks: report.bad.length, verify, invariants, seconds: Math.round((Date.now() - startedMs) / 1000) }, null, 2)}\n`);
} finally {
  if (failed) {
    await e2e.cluster.stop();
    process.stderr.write(`soak: FAILED; data and logs kept in ${e2e.dataDir}\n`);
  } else await e2e.stop();
}
process.exit(failed ? 1 : 0);
