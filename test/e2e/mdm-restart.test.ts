/**
 * The MDM is not on the data path (DESIGN §4, §6): kill -9 it in the middle of verified writes,
 * bring it back a few seconds later, and IO carries on meanwhile on the tokens the SDC holds;
 * renewals resume, state persists, and nothing the client wrote is lost.
 */
import t from 'tap';
import { run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';
import { waitForHealth } from '../../src/launcher/process-cluster.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 512 * MiB, provisioning: 'thick' }]);
});
t.teardown(async () => {
  await e2e?.stop();
});

t.test('kill -9 of the MDM during verified writes: no client error', async (t) => {
  const fio = run(
    'fio',
    ['--name=mdm-away', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=256M',
      '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'],
    { timeoutMs: 120_000 },
  );
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await e2e.cluster.kill9('mdm');
  await new Promise((resolve) => setTimeout(resolve, 5000));
  e2e.cluster.restart('mdm');
  await waitForHealth(e2e.cluster.mdmUrl, 20_000);
  const result = await fio;
  t.equal(result.code, 0, `fio succeeded: ${result.stderr}`);
  const job = (JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] }).jobs[0]!;
  t.equal(job.error, 0, 'no IO error while the MDM was away');
  t.equal(job.write.io_bytes, 256 * MiB, 'every write completed');
  t.equal(job.read.io_bytes, 256 * MiB, 'every block read back and verified');

  // After the restart: the SDC renews its tokens and new placements work; the volume verifies.
  const after = await run('qemu-io', ['-f', 'raw', e2e.uri('vol1'), '-c', 'write -P 0x5c 300M 8M', '-c', 'read -P 0x5c 300M 8M']);
  t.equal(after.code, 0, after.stderr);
  t.notMatch(after.stdout, /failed|error/i);
  const verify = await e2e.pflex('--json', 'vol', 'verify', 'vol1');
  t.equal(verify.code, 0, verify.stderr);
  t.equal((JSON.parse(verify.stdout) as { clean: boolean }).clean, true);
});
