/**
 * Power cuts under load (issue 10): four NBD connections write, FUA-write and FLUSH a volume at
 * random while SDS lose power (the fault layer's volatile cache model drops, or tears at 4 KiB,
 * every write no completed fdatasync covered) and start again: one SDS at a time, or two at once,
 * which takes both replicas of a third of the chunks. Then: every write acknowledged with FUA,
 * and every write acknowledged before an acknowledged FLUSH, reads back exactly (a block holds
 * its last durable write or one issued after it, nothing older); after the resync `pflex vol
 * verify` finds no difference; epochs at the MDM never went back.
 *
 * A short run here (PFLEX_POWER_CUTS, default 4; PFLEX_POWER_CUT_SEED replays); `npm run soak`
 * runs hundreds.
 */
import t from 'tap';
import { FAULT_ENV, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { runPowerCuts } from '../helpers/power-cuts.js';

const MiB = 1024 * 1024;
const SEED = Number(process.env.PFLEX_POWER_CUT_SEED ?? Date.now() % 1_000_000);
const CUTS = Number(process.env.PFLEX_POWER_CUTS ?? 4);
t.comment(`seed ${SEED}, ${CUTS} cuts (PFLEX_POWER_CUT_SEED / PFLEX_POWER_CUTS to replay)`);

let e2e: E2eCluster;
t.before(async () => {
  e2e = await startE2eCluster([{ name: 'pc', sizeBytes: 32 * MiB, provisioning: 'thin' }], { env: FAULT_ENV, heartbeatIntervalMs: 500 });
});
t.teardown(async () => {
  await e2e?.stop();
});

t.test('acknowledged writes survive power cuts of one SDS and of both replicas', async (t) => {
  const report = await runPowerCuts(e2e, {
    seed: SEED,
    cuts: CUTS,
    volume: 'pc',
    volumeBytes: 32 * MiB,
    connections: 4,
    inFlightPerConnection: 4,
    writeMsBetweenCuts: 1500,
    log: (line) => t.comment(line),
  });
  t.comment(JSON.stringify({ ...report, bad: report.bad.length }));
  t.equal(report.cuts, CUTS, 'every cut happened');
  t.ok(report.acked > 100, `writes were acknowledged between the cuts (${report.acked})`);
  t.ok(report.durable > 0, `some blocks had durable writes (${report.durable})`);
  t.same(report.bad.slice(0, 10), [], 'every block holds its last durable write or a later one');
  t.equal(report.bad.length, 0, `no durable write lost (${report.bad.length} bad blocks)`);
  t.same(report.epochsWentBack, [], 'epochs only grew');
  const verify = await e2e.pflexJson<{ clean: boolean; chunks_checked: number }>('vol', 'verify', 'pc');
  t.equal(verify.clean, true, 'pflex vol verify: the replicas are identical');
  t.ok(verify.chunks_checked > 0, 'chunks were compared');
});
