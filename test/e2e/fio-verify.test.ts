/**
 * fio's nbd engine through the SDC with verify=crc32c: 4k random writes at queue depth 32 and
 * 1 MiB sequential writes, each read back and checked by fio; then `pflex vol verify` clean.
 */
import t from 'tap';
import { run, startE2eCluster, type E2eCluster } from '../helpers/e2e-cluster.js';

const MiB = 1024 * 1024;
let e2e: E2eCluster;

t.before(async () => {
  e2e = await startE2eCluster([{ name: 'vol1', sizeBytes: 1024 * MiB, provisioning: 'thin' }]);
});
t.teardown(async () => {
  await e2e?.stop();
});

interface FioJob {
  error: number;
  read: { io_bytes: number };
  write: { io_bytes: number };
}

async function fio(...args: string[]): Promise<FioJob> {
  const result = await run('fio', ['--name=verify', '--ioengine=nbd', `--uri=${e2e.uri('vol1')}`, '--output-format=json', '--verify_fatal=1', '--verify_state_save=0', ...args], {
    timeoutMs: 240_000,
  });
  if (result.code !== 0) throw new Error(`fio exited ${result.code}: ${result.stderr}\n${result.stdout.slice(-2000)}`);
  return (JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as { jobs: FioJob[] }).jobs[0]!;
}

t.test('4k random writes at QD32, verified with crc32c', async (t) => {
  const job = await fio('--rw=randwrite', '--bs=4k', '--iodepth=32', '--size=64M', '--offset=0', '--verify=crc32c', '--do_verify=1');
  t.equal(job.error, 0);
  t.equal(job.write.io_bytes, 64 * MiB, 'every block written');
  t.equal(job.read.io_bytes, 64 * MiB, 'every block read back and verified');
});

t.test('1 MiB sequential writes, verified with crc32c', async (t) => {
  const job = await fio('--rw=write', '--bs=1M', '--iodepth=8', '--size=256M', '--offset=256M', '--verify=crc32c', '--do_verify=1');
  t.equal(job.error, 0);
  t.equal(job.write.io_bytes, 256 * MiB);
  t.equal(job.read.io_bytes, 256 * MiB);
});

t.test('mixed random read/write with unaligned-to-chunk offsets keeps replicas identical', async (t) => {
  const job = await fio('--rw=randrw', '--bs=16k', '--iodepth=16', '--size=48M', '--offset=600M', '--verify=crc32c', '--do_verify=1');
  t.equal(job.error, 0);
  const report = await e2e.pflex('--json', 'vol', 'verify', 'vol1');
  t.equal(report.code, 0, report.stderr);
  const parsed = JSON.parse(report.stdout) as { clean: boolean; chunks_checked: number };
  t.equal(parsed.clean, true);
  t.ok(parsed.chunks_checked >= 64 + 16, 'the written chunks were all compared');
});
