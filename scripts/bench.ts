/**
 * `npm run bench` (DESIGN §10): fio's nbd engine through the pflex SDC (two copies on three SDS,
 * all on this machine) and, in the same run, against qemu-nbd serving a plain file on the same
 * file system. Prints MiB/s, IOPS, p99 latency and the pflex/qemu-nbd ratio per row, the peak RSS
 * of the SDC and each SDS, and writes the results as JSON (bench-results/latest.json).
 *
 *   BENCH_RUNTIME_S=20 npm run bench        seconds per row (default 15)
 *   BENCH_DIR=/var/tmp/x npm run bench      where the cluster and the qemu-nbd file live
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statfsSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { ProcessCluster } from '../src/launcher/process-cluster.js';
import { freePort } from '../src/launcher/free-port.js';
import { GiB } from '../src/common/units.js';

const RUNTIME_S = Number(process.env.BENCH_RUNTIME_S ?? 15);
const VOLUME_BYTES = GiB;
const QUEUE_DEPTH = 32;

interface Row {
  readonly name: string;
  readonly rw: 'write' | 'randread' | 'randwrite';
  readonly blockSize: string;
}

const ROWS: readonly Row[] = [
  { name: '1M sequential write QD32', rw: 'write', blockSize: '1M' },
  { name: '4k random read QD32', rw: 'randread', blockSize: '4k' },
  { name: '4k random write QD32', rw: 'randwrite', blockSize: '4k' },
];

interface Result {
  mibPerSecond: number;
  iops: number;
  p99Ms: number;
}

function runFio(uri: string, rw: string, blockSize: string, runtimeS: number, timeBased = true): Result {
  const args = [
    '--name=bench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${rw}`,
    `--bs=${blockSize}`,
    `--iodepth=${QUEUE_DEPTH}`,
    `--size=${VOLUME_BYTES}`,
    '--output-format=json',
    '--group_reporting',
    ...(timeBased ? ['--time_based', `--runtime=${runtimeS}`, '--ramp_time=2'] : []),
  ];
  const output = execFileSync('fio', args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: (runtimeS + 120) * 1000 });
  const job = (JSON.parse(output.slice(output.indexOf('{'))) as { jobs: { read: FioSide; write: FioSide }[] }).jobs[0]!;
  const side = rw.includes('read') ? job.read : job.write;
  const p99Ns = side.clat_ns.percentile?.['99.000000'] ?? 0;
  return { mibPerSecond: side.bw_bytes / (1024 * 1024), iops: side.iops, p99Ms: p99Ns / 1e6 };
}

interface FioSide {
  bw_bytes: number;
  iops: number;
  clat_ns: { percentile?: Record<string, number> };
}

/** Peak resident memory of a process (VmHWM), in MiB. */
function peakRssMib(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? undefined : Number(match[1]) / 1024;
  } catch {
    return undefined;
  }
}

async function startQemuNbd(file: string): Promise<{ uri: string; stop(): void }> {
  const port = await freePort();
  const child = spawn('qemu-nbd', ['--format=raw', '--persistent', '--shared=8', '--bind=127.0.0.1', `--port=${port}`, '--export-name=bench', file], {
    stdio: 'ignore',
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      execFileSync('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/bench`], { stdio: 'ignore' });
      break;
    } catch {
      if (Date.now() > deadline) throw new Error('qemu-nbd did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { uri: `nbd://127.0.0.1:${port}/bench`, stop: () => child.kill('SIGTERM') };
}

function pick(value: number, digits = 0): string {
  return value.toFixed(digits);
}

async function main(): Promise<void> {
  const base = process.env.BENCH_DIR ?? mkdtempSync('/var/tmp/pflex-bench-');
  mkdirSync(base, { recursive: true });
  const fsType = Number(statfsSync(base).type).toString(16);
  const ports = await Promise.all(Array.from({ length: 14 }, () => freePort()));
  process.stderr.write(`bench: cluster and qemu-nbd file under ${base}; ${RUNTIME_S} s per row\n`);
  const cluster = await ProcessCluster.start({
    dataDir: join(base, 'cluster'),
    mdmPort: ports[0]!,
    sds: [0, 1, 2].map((n) => ({ data: ports[1 + n * 3]!, control: ports[2 + n * 3]!, mgmt: ports[3 + n * 3]! })),
    sdc: { nbd: ports[10]!, device: ports[11]!, control: ports[12]!, mgmt: ports[13]! },
    volumes: [{ name: 'bench', sizeBytes: VOLUME_BYTES, provisioning: 'thick' }],
    logLevel: 'warn',
  });
  const qemuFile = join(base, 'qemu-nbd.img');
  execFileSync('truncate', ['-s', String(VOLUME_BYTES), qemuFile]);
  const qemu = await startQemuNbd(qemuFile);
  const pflexUri = `${cluster.nbdUri}/bench`;
  const results: { row: string; pflex: Result; qemuNbd: Result }[] = [];
  try {
    // Fill both once so reads read data, not holes.
    runFio(pflexUri, 'write', '1M', 0, false);
    runFio(qemu.uri, 'write', '1M', 0, false);
    for (const row of ROWS) {
      process.stderr.write(`bench: ${row.name}…\n`);
      const pflex = runFio(pflexUri, row.rw, row.blockSize, RUNTIME_S);
      const qemuNbd = runFio(qemu.uri, row.rw, row.blockSize, RUNTIME_S);
      results.push({ row: row.name, pflex, qemuNbd });
    }
  } finally {
    qemu.stop();
  }
  const rss = {
    sdc_mib: peakRssMib(cluster.pid('sdc1')),
    sds_mib: [0, 1, 2].map((n) => peakRssMib(cluster.pid(cluster.sdsName(n)))),
  };
  await cluster.stop();
  if (process.env.BENCH_DIR === undefined) rmSync(base, { recursive: true, force: true });

  const lines = [
    '',
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / GiB)} GiB, file system type 0x${fsType}, ${RUNTIME_S} s per row, fio nbd engine, QD${QUEUE_DEPTH}`,
    '',
    '| row | pflex MiB/s | pflex IOPS | pflex p99 ms | qemu-nbd MiB/s | qemu-nbd IOPS | qemu-nbd p99 ms | ratio |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...results.map(
      (r) =>
        `| ${r.row} | ${pick(r.pflex.mibPerSecond)} | ${pick(r.pflex.iops)} | ${pick(r.pflex.p99Ms, 2)} | ${pick(r.qemuNbd.mibPerSecond)} | ${pick(r.qemuNbd.iops)} | ${pick(r.qemuNbd.p99Ms, 2)} | ${pick(r.pflex.iops / r.qemuNbd.iops, 2)} |`,
    ),
    '',
    `peak RSS: SDC ${rss.sdc_mib?.toFixed(0) ?? '?'} MiB; SDS ${rss.sds_mib.map((m) => `${m?.toFixed(0) ?? '?'} MiB`).join(', ')}`,
    '',
  ];
  process.stdout.write(lines.join('\n'));
  const outDir = resolve('bench-results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'latest.json'), `${JSON.stringify({ at: new Date().toISOString(), runtime_s: RUNTIME_S, results, rss }, null, 2)}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
