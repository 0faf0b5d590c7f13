/**
 * Scenario B of the seeds, "failover and rebuild", on a real cluster of OS processes: a PD, a
 * two-copy pool on 4 SDS (each its own fault set), 2 thick volumes mapped to 2 SDCs, fio load at
 * 1000 and 500 IOPS through NBD; at T = fail-at, kill -9 of sds-2. The pool and volumes must go
 * DEGRADED, reads keep succeeding, the rebuild starts by itself and runs 0 → 100 % at about the
 * pool's rebuild rate, then pool and volumes are OK with every chunk at two current replicas,
 * no chunk ever without a replica, and the replicas agree byte for byte.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ProcessCluster, waitForExports, type SdcPorts } from './process-cluster.js';
import { freePort } from './free-port.js';
import { MiB } from '../common/units.js';
import type { PoolRebuildStatus } from '../common/rebuild-status.js';

export interface ScenarioBOptions {
  readonly dataDir: string | undefined;
  readonly keep: boolean;
  readonly volumeSizeBytes: number;
  readonly sdsDeviceBytes: number;
  readonly rebuildRateMbps: number;
  readonly failAtS: number;
  readonly log: (line: string) => void;
}

export interface Assertion {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface ScenarioBResult {
  readonly passed: boolean;
  readonly assertions: Assertion[];
  readonly rebuild: { bytes: number; seconds: number; rate_bytes_per_s: number; limit_bytes_per_s: number } | null;
  readonly io: { volume: string; reads: number; writes: number; errors: number }[];
  readonly dataDir: string;
}

interface Status {
  pools: { name: string; health: string }[];
  volumes: { name: string; health: string }[];
  sds: { name: string; state: string }[];
  replicas: { chunks: number; expected: number; available: number; degraded_chunks: number; failed_chunks: number };
  rebuild: PoolRebuildStatus[];
}

/** fio runs this long at a time, back to back, so the load lasts as long as the scenario. */
const FIO_SEGMENT_S = 5;
const REBUILD_TIMEOUT_MS = 15 * 60_000;
const SAMPLE_MS = 250;

export async function runScenarioB(options: ScenarioBOptions): Promise<ScenarioBResult> {
  const dataDir = options.dataDir ?? mkdtempSync(join('/var/tmp', 'pflex-scenario-b-'));
  const started = Date.now();
  const log = (line: string): void => options.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${line}`);
  const assertions: Assertion[] = [];
  const check = (name: string, ok: boolean, detail = ''): void => {
    assertions.push({ name, ok, detail });
    log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
  };

  const ports = await Promise.all(Array.from({ length: 1 + 4 * 3 + 8 }, () => freePort()));
  const sdcPorts = (at: number): SdcPorts => ({ nbd: ports[at]!, device: ports[at + 1]!, control: ports[at + 2]!, mgmt: ports[at + 3]! });
  log(`1. setup: PD, two-copy pool (rebuild rate ${options.rebuildRateMbps} MB/s), 4 SDS × ${options.sdsDeviceBytes / MiB} MiB in 4 fault sets, under ${dataDir}`);
  const cluster = await ProcessCluster.start({
    dataDir,
    mdmPort: ports[0]!,
    sds: [0, 1, 2, 3].map((n) => ({ data: ports[1 + n * 3]!, control: ports[2 + n * 3]!, mgmt: ports[3 + n * 3]! })),
    sdc: sdcPorts(13),
    sdsDeviceBytes: options.sdsDeviceBytes,
    pool: { rebuildRateMbps: options.rebuildRateMbps },
    volumes: [
      { name: 'vol1', sizeBytes: options.volumeSizeBytes, provisioning: 'thick' },
      { name: 'vol2', sizeBytes: options.volumeSizeBytes, provisioning: 'thick', mapToSdc1: false },
    ],
    heartbeatIntervalMs: 500,
  });
  const writers: Promise<void>[] = [];
  let stopLoad = false;
  const io = [
    { volume: 'vol1', reads: 0, writes: 0, errors: 0, problems: [] as string[] },
    { volume: 'vol2', reads: 0, writes: 0, errors: 0, problems: [] as string[] },
  ];
  try {
    log(`2. two thick volumes of ${options.volumeSizeBytes / MiB} MiB: vol1 mapped to sdc1, vol2 to sdc2`);
    const sdc2 = sdcPorts(17);
    await cluster.startExtraSdc('sdc2', sdc2);
    await cluster.admin.post('/vol/map', { volume: 'vol2', sdc: 'sdc2', access_mode: 'readWrite' });
    await waitForExports(sdc2.mgmt, ['vol2']);
    const status = (): Promise<Status> => cluster.admin.get<Status>('/cluster/status');

    log('3. IO: fio randrw 4k, 1000 IOPS on vol1 (sdc1), 500 IOPS on vol2 (sdc2)');
    const load = (index: number, uri: string, iops: number): Promise<void> =>
      (async () => {
        while (!stopLoad) {
          const result = await fio(uri, iops, io[index]!.volume);
          io[index]!.reads += result.reads;
          io[index]!.writes += result.writes;
          io[index]!.errors += result.errors;
          if (result.problem !== undefined) io[index]!.problems.push(result.problem);
        }
      })();
    writers.push(load(0, `nbd://127.0.0.1:${ports[13]}/vol1`, 1000), load(1, `nbd://127.0.0.1:${sdc2.nbd}/vol2`, 500));

    const samples: { atMs: number; status: Status }[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        samples.push({ atMs: Date.now(), status: await status() });
        await delay(SAMPLE_MS);
      }
    })();
    await delay(Math.max(0, started + options.failAtS * 1000 - Date.now()));

    log('4. kill -9 sds-2');
    const failedAtMs = Date.now();
    await cluster.kill9('sds-2');

    log('5-8. watching: pool and volume health, rebuild progress');
    const deadline = Date.now() + REBUILD_TIMEOUT_MS;
    let lastPercent = -1;
    for (;;) {
      const latest = samples[samples.length - 1];
      const pool = latest?.status.rebuild[0];
      if (latest !== undefined && latest.atMs > failedAtMs + 2000 && pool !== undefined) {
        if (pool.state !== 'idle' && Math.floor(pool.percent / 10) !== Math.floor(lastPercent / 10)) {
          lastPercent = pool.percent;
          log(`   rebuild ${pool.percent}%: ${pool.chunks_pending + pool.chunks_active} chunk(s) left, ${(pool.rate_bytes_per_s / 1e6).toFixed(1)} MB/s, ETA ${pool.eta_s ?? '?'} s`);
        }
        const whole = latest.status.pools[0]?.health === 'OK' && pool.state === 'idle' && pool.last !== null;
        if (whole) break;
      }
      if (Date.now() > deadline) break;
      await delay(SAMPLE_MS);
    }
    sampling = false;
    await sampler;
    stopLoad = true;
    await Promise.all(writers);
    const after = samples.filter((sample) => sample.atMs > failedAtMs);
    const final = await status();

    log('9-10. result checks');
    check('pool → DEGRADED after the failure', after.some((s) => s.status.pools[0]?.health === 'DEGRADED'));
    check('volumes → DEGRADED after the failure', ['vol1', 'vol2'].every((name) => after.some((s) => s.status.volumes.find((v) => v.name === name)?.health === 'DEGRADED')));
    check('sds-2 marked DOWN', after.some((s) => s.status.sds.find((sds) => sds.name === 'sds-2')?.state === 'DOWN'));
    const percents = after.map((s) => s.status.rebuild[0]?.state !== 'idle' ? s.status.rebuild[0]?.percent : undefined).filter((p): p is number => p !== undefined);
    check('the rebuild started by itself and progressed', percents.length > 0, percents.length > 0 ? `${Math.min(...percents)}% … ${Math.max(...percents)}%` : 'never seen rebuilding');
    check('the rebuild completed', final.rebuild[0]?.state === 'idle' && final.rebuild[0]?.last !== null);
    check('pool → OK', final.pools[0]?.health === 'OK');
    check('volumes → OK (available)', final.volumes.every((volume) => volume.health === 'OK'), final.volumes.map((v) => `${v.name} ${v.health}`).join(', '));
    check('every chunk has 2 current replicas', final.replicas.available === final.replicas.expected && final.replicas.degraded_chunks === 0, `${final.replicas.available}/${final.replicas.expected} replicas`);
    const worstFailed = Math.max(0, ...samples.map((s) => s.status.replicas.failed_chunks));
    check('no data loss: every chunk kept a replica at all times', worstFailed === 0, `${samples.length} samples`);
    for (const entry of io) {
      check(`IO on ${entry.volume}: no error, reads succeeded throughout`, entry.errors === 0 && entry.reads > 0, `${entry.reads} reads, ${entry.writes} writes, ${entry.errors} errors${entry.problems.length > 0 ? `; ${entry.problems[0]}` : ''}`);
    }
    const last = final.rebuild[0]?.last ?? null;
    const limit = final.rebuild[0]?.rate_limit_bytes_per_s ?? 0;
    const rate = last?.rate_bytes_per_s ?? 0;
    check(
      "rebuild rate ≈ the pool's rebuild rate limit",
      last !== null && rate <= limit * 1.1 && rate >= limit * 0.5,
      `${(rate / 1e6).toFixed(1)} MB/s against a limit of ${(limit / 1e6).toFixed(0)} MB/s (${last?.bytes ?? 0} bytes in ${last?.seconds ?? 0} s)`,
    );
    for (const volume of ['vol1', 'vol2']) {
      const report = await cluster.admin.post<{ clean: boolean; mismatches?: unknown[] }>(`/vol/${volume}/verify`, {});
      check(`pflex vol verify ${volume}: replicas agree`, report.clean, report.clean ? '' : JSON.stringify(report.mismatches).slice(0, 200));
    }
    return {
      passed: assertions.every((assertion) => assertion.ok),
      assertions,
      rebuild: last === null ? null : { bytes: last.bytes, seconds: last.seconds, rate_bytes_per_s: rate, limit_bytes_per_s: limit },
      io: io.map(({ volume, reads, writes, errors }) => ({ volume, reads, writes, errors })),
      dataDir,
    };
  } finally {
    stopLoad = true;
    await Promise.allSettled(writers);
    await cluster.stop();
    if (!options.keep && options.dataDir === undefined) rmSync(dataDir, { recursive: true, force: true });
  }
}

/** One fio segment of rate-limited 4k random reads and writes; the counts come from its JSON report. */
function fio(uri: string, iops: number, name: string): Promise<{ reads: number; writes: number; errors: number; problem?: string }> {
  const args = [
    `--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, '--rw=randrw', '--rwmixread=50', '--bs=4k', '--iodepth=8',
    `--rate_iops=${Math.ceil(iops / 2)},${Math.ceil(iops / 2)}`, '--time_based', `--runtime=${FIO_SEGMENT_S}`, '--output-format=json',
  ];
  return new Promise((resolve) => {
    execFile('fio', args, { timeout: (FIO_SEGMENT_S + 60) * 1000, maxBuffer: 16 * MiB }, (error, stdout, stderr) => {
      try {
        const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: { error: number; read: { total_ios: number }; write: { total_ios: number } }[] }).jobs[0]!;
        const failed = error !== null || job.error !== 0;
        resolve({ reads: job.read.total_ios, writes: job.write.total_ios, errors: failed ? 1 : 0, ...(failed ? { problem: stderr.slice(0, 300) } : {}) });
      } catch {
        resolve({ reads: 0, writes: 0, errors: 1, problem: `fio: ${(error?.message ?? stderr).slice(0, 300)}` });
      }
    });
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
