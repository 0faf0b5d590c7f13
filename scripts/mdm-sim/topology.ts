/**
 * The cluster's shape, made through the MDM's admin API only (the calls `pflex pd create`,
 * `fault-set create`, `pool create`, `sds add`, `vol create`, `sdc add` and `vol map` make):
 * a protection domain, fault sets, one pool, N SDS with one device each, thick volumes filling a
 * share of the pool, thin volumes, SDCs and one mapping per volume. Bulk steps run in parallel
 * batches; volume creation is timed as it goes (its cost grows with what is placed already).
 */
import { Prng } from '../../src/common/prng.js';
import { GiB, MiB } from '../../src/common/units.js';
import { errorCode, forEachLimited, type JsonHttp } from './http-json.js';
import { Counters, Samples, type Summary } from './stats.js';

export const PD_NAME = 'bench-pd';
export const POOL_NAME = 'bench-pool';
const VOLUME_BYTES_MAX = 64 * 1024 * GiB;
const PROGRESS_STEPS = 10;

export interface VolumePlan {
  readonly name: string;
  readonly sizeBytes: number;
  readonly provisioning: 'thick' | 'thin';
  readonly sdc: string;
}

export interface DomainPlan {
  readonly sdsNames: readonly string[];
  readonly faultSetNames: readonly string[];
  readonly deviceBytes: number;
  readonly chunkBytes: number;
  readonly sparePercent: number;
  readonly rebuildRateMbps: number;
  readonly sdcNames: readonly string[];
  readonly volumes: readonly VolumePlan[];
}

export interface PlanInput {
  readonly sdsCount: number;
  readonly deviceBytes: number;
  readonly faultSetCount: number;
  readonly chunkMib: number;
  readonly sparePercent: number;
  readonly rebuildRateMbps: number;
  readonly sdcCount: number;
  readonly volumeCount: number;
  readonly thinVolumePercent: number;
  readonly thickFillPercent: number;
  readonly thinVolumeBytes: number;
  readonly seed: number;
}

function numbered(prefix: string, index: number, count: number): string {
  return `${prefix}-${String(index + 1).padStart(Math.max(3, String(count).length), '0')}`;
}

/**
 * Thick volumes share `thickFillPercent` of the usable volume capacity, each a whole number of
 * chunks drawn around the mean (0.5× to 1.5×, seeded); thin volumes are all the same size.
 * Volumes alternate over the SDCs, so each SDC maps thick and thin ones.
 */
export function planDomain(input: PlanInput): DomainPlan {
  const prng = new Prng(input.seed);
  const chunkBytes = input.chunkMib * MiB;
  const rawBytes = input.deviceBytes * input.sdsCount;
  const usableVolumeBytes = (rawBytes * (100 - input.sparePercent)) / 100 / 2; // two copies
  const thinCount = Math.round((input.volumeCount * input.thinVolumePercent) / 100);
  const thickCount = input.volumeCount - thinCount;
  const thickChunksTotal = Math.floor((usableVolumeBytes * input.thickFillPercent) / 100 / chunkBytes);
  const meanChunks = thickCount === 0 ? 0 : thickChunksTotal / thickCount;
  const volumes: VolumePlan[] = [];
  const sdcNames = Array.from({ length: input.sdcCount }, (_, i) => numbered('sdc', i, input.sdcCount));
  let thickChunksLeft = thickChunksTotal;
  let thick = 0;
  let thin = 0;
  const thinEvery = thinCount === 0 ? Infinity : input.volumeCount / thinCount;
  for (let i = 0; i < input.volumeCount; i += 1) {
    const sdc = sdcNames[i % sdcNames.length]!;
    const wantThin = thin < thinCount && (thick >= thickCount || Math.floor((i + 1) / thinEvery) > thin);
    if (wantThin) {
      volumes.push({ name: numbered('thin', thin, thinCount), sizeBytes: Math.min(VOLUME_BYTES_MAX, Math.max(chunkBytes, Math.ceil(input.thinVolumeBytes / chunkBytes) * chunkBytes)), provisioning: 'thin', sdc });
      thin += 1;
      continue;
    }
    const low = Math.max(1, Math.ceil(meanChunks * 0.5));
    const high = Math.max(low, Math.floor(meanChunks * 1.5));
    const remainingVolumes = thickCount - thick;
    let chunks = remainingVolumes === 1 ? thickChunksLeft : prng.int(low, high);
    chunks = Math.max(1, Math.min(chunks, Math.max(1, thickChunksLeft - (remainingVolumes - 1))));
    thickChunksLeft -= chunks;
    volumes.push({ name: numbered('thick', thick, thickCount), sizeBytes: Math.min(VOLUME_BYTES_MAX, chunks * chunkBytes), provisioning: 'thick', sdc });
    thick += 1;
  }
  return {
    sdsNames: Array.from({ length: input.sdsCount }, (_, i) => numbered('sds', i, input.sdsCount)),
    faultSetNames: Array.from({ length: Math.min(input.faultSetCount, input.sdsCount) }, (_, i) => numbered('fs', i, input.faultSetCount)),
    deviceBytes: input.deviceBytes,
    chunkBytes,
    sparePercent: input.sparePercent,
    rebuildRateMbps: input.rebuildRateMbps,
    sdcNames,
    volumes,
  };
}

/** PD, fault sets and the pool. Returns the pool's id. */
export async function createDomain(admin: JsonHttp, credential: string, plan: DomainPlan): Promise<{ poolId: number }> {
  await admin.post('/pd/create', { name: PD_NAME }, credential);
  for (const name of plan.faultSetNames) await admin.post('/fault_set/create', { pd: PD_NAME, name }, credential);
  const pool = await admin.post<{ id: number }>(
    '/pool/create',
    {
      pd: PD_NAME,
      name: POOL_NAME,
      protection_policy: 'two_copies',
      chunk_size_bytes: plan.chunkBytes,
      spare_percent: plan.sparePercent,
      rebuild_rate_mbps: plan.rebuildRateMbps,
    },
    credential,
  );
  return { poolId: pool.body.id };
}

/** `pflex sds add` for every simulated SDS, at the ports its simulator listens on. */
export async function addSdsRecords(
  admin: JsonHttp,
  credential: string,
  plan: DomainPlan,
  ports: readonly { name: string; data: number; control: number; mgmt: number }[],
  concurrency: number,
): Promise<{ seconds: number; ms: Summary }> {
  const samples = new Samples(31);
  const startedMs = performance.now();
  await forEachLimited(ports, concurrency, async (entry, index) => {
    const faultSet = plan.faultSetNames.length === 0 ? undefined : plan.faultSetNames[index % plan.faultSetNames.length];
    const answer = await admin.post(
      '/sds/add',
      {
        name: entry.name,
        pd: PD_NAME,
        ...(faultSet !== undefined ? { fault_set: faultSet } : {}),
        host: '127.0.0.1',
        data_port: entry.data,
        control_port: entry.control,
        mgmt_port: entry.mgmt,
        devices: [{ path: `/dev/sim/${entry.name}`, capacity_bytes: plan.deviceBytes, pool: POOL_NAME }],
      },
      credential,
    );
    samples.add(answer.ms);
  });
  return { seconds: round1((performance.now() - startedMs) / 1000), ms: samples.summary() };
}

/** Volume creation as it went: per tenth of the thick volumes, how fast the MDM created them. */
export interface CreationStep {
  readonly created: number;
  readonly chunks_placed: number;
  readonly seconds: number;
  readonly volumes_per_s: number;
  readonly chunks_per_s: number;
  readonly ms_p50: number;
  readonly ms_max: number;
}

export interface CreationReport {
  readonly requested: number;
  readonly created: number;
  readonly chunks_placed: number;
  readonly seconds: number;
  readonly ms: Summary;
  readonly errors: Record<string, number>;
  readonly budget_exhausted: boolean;
  readonly steps: readonly CreationStep[];
}

/**
 * Creates volumes `concurrency` at a time until done or `budgetMs` is spent (then the rest is
 * skipped and the report says so). `log` gets a line per tenth.
 */
export async function createVolumes(
  admin: JsonHttp,
  credential: string,
  volumes: readonly VolumePlan[],
  chunkBytes: number,
  concurrency: number,
  budgetMs: number,
  log: (line: string) => void,
): Promise<{ report: CreationReport; created: VolumePlan[] }> {
  const samples = new Samples(37);
  const errors = new Counters();
  const created: VolumePlan[] = [];
  const steps: CreationStep[] = [];
  const startedMs = performance.now();
  const stepSize = Math.max(1, Math.ceil(volumes.length / PROGRESS_STEPS));
  let chunks = 0;
  let step = { startedMs, created: 0, chunks: 0, samples: new Samples(41) };
  const stop = (): boolean => performance.now() - startedMs > budgetMs;
  await forEachLimited(
    volumes,
    concurrency,
    async (volume) => {
      try {
        const answer = await admin.post('/vol/create', { name: volume.name, pool: POOL_NAME, size_bytes: volume.sizeBytes, provisioning: volume.provisioning }, credential);
        samples.add(answer.ms);
        step.samples.add(answer.ms);
        created.push(volume);
        if (volume.provisioning === 'thick') {
          const placed = Math.ceil(volume.sizeBytes / chunkBytes);
          chunks += placed;
          step.chunks += placed;
        }
        step.created += 1;
      } catch (error) {
        errors.add(errorCode(error));
      }
      if (step.created >= stepSize || created.length === volumes.length) {
        const nowMs = performance.now();
        const seconds = Math.max(0.001, (nowMs - step.startedMs) / 1000);
        const summary = step.samples.summary();
        steps.push({
          created: created.length,
          chunks_placed: chunks,
          seconds: round1(seconds),
          volumes_per_s: round1(step.created / seconds),
          chunks_per_s: round1(step.chunks / seconds),
          ms_p50: summary.p50,
          ms_max: summary.max,
        });
        log(`${created.length}/${volumes.length} volumes (${chunks} chunks placed), ${round1(step.created / seconds)} volumes/s now, ${round1((nowMs - startedMs) / 1000)} s so far`);
        step = { startedMs: nowMs, created: 0, chunks: 0, samples: new Samples(41 + steps.length) };
      }
    },
    stop,
  );
  return {
    created,
    report: {
      requested: volumes.length,
      created: created.length,
      chunks_placed: chunks,
      seconds: round1((performance.now() - startedMs) / 1000),
      ms: samples.summary(),
      errors: errors.toJSON(),
      budget_exhausted: created.length + Object.values(errors.toJSON()).reduce((a, b) => a + b, 0) < volumes.length,
      steps,
    },
  };
}

/** `pflex sdc add` for every SDC (before they start, so mapping pushes find nobody to push to). */
export async function addSdcs(admin: JsonHttp, credential: string, names: readonly string[], concurrency: number): Promise<void> {
  await forEachLimited(names, concurrency, async (name) => {
    await admin.post('/sdc/add', { name, host: '127.0.0.1' }, credential);
  });
}

export interface MappingReport {
  readonly mapped: number;
  readonly seconds: number;
  readonly ms: Summary;
  readonly errors: Record<string, number>;
}

/** `pflex vol map` for every volume that exists, to its SDC, readWrite. */
export async function mapVolumes(admin: JsonHttp, credential: string, volumes: readonly VolumePlan[], concurrency: number): Promise<MappingReport> {
  const samples = new Samples(43);
  const errors = new Counters();
  const startedMs = performance.now();
  await forEachLimited(volumes, concurrency, async (volume) => {
    try {
      const answer = await admin.post('/vol/map', { volume: volume.name, sdc: volume.sdc, access_mode: 'readWrite' }, credential);
      samples.add(answer.ms);
    } catch (error) {
      errors.add(errorCode(error));
    }
  });
  return { mapped: samples.count, seconds: round1((performance.now() - startedMs) / 1000), ms: samples.summary(), errors: errors.toJSON() };
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
