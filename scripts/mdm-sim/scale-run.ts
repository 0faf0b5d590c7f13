/**
 * One run of the benchmark at one size: a fresh MDM, the simulator hosts, the topology made
 * through the API, then the phases, each measured from every side (the MDM's probe, its RSS,
 * database and CPU, the /health lag probe, both simulator hosts, the MDM's events):
 *
 *   setup-sds      SDS records (pflex sds add), registration, heartbeats and acks from then on
 *   setup-volumes  thick volumes (placed at creation), then thin ones
 *   setup-map      SDC records and one mapping per volume
 *   setup-sdc      SDCs register and lease every window of their volumes; SDS get their records
 *   steady         nothing changes: renewals, heartbeats, mapping pulls, acks
 *   placement      first writes to thin chunks from every SDC
 *   failure        one SDS fails; detection, fence, planning and rebuild are timed
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Prng } from '../../src/common/prng.js';
import { GiB, TiB } from '../../src/common/units.js';
import type { BenchConfig } from './config.js';
import { JsonHttp, JsonHttpError } from './http-json.js';
import { forkHost, stopChild, type RpcChannel } from './ipc.js';
import { LagProbe, type LagReport } from './lag-probe.js';
import { MdmProcess, type MdmDbBytes } from './mdm-process.js';
import type { ProbeReport } from './mdm-probe.js';
import { MdmQueries } from './mdm-queries.js';
import { addSdcs, addSdsRecords, createDomain, createVolumes, mapVolumes, planDomain, POOL_NAME, type CreationReport, type MappingReport } from './topology.js';
import { failOneSds, type FailureReport } from './failure.js';
import type { HostPhaseResult } from './host-load.js';
import type { SdsHostInit, SdsPorts } from './sds-host.js';
import type { Holdings, SdcHostInit } from './sdc-host.js';
import type { SdsPhaseReport } from './sim-sds.js';
import type { SdcPhaseReport } from './sim-sdc.js';
import { sleep, type Summary } from './stats.js';
import { MachineLoadMeter, type MachineLoad } from './machine-load.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const SDS_HOST_MODULE = resolve(HERE, 'sds-host.js');
const SDC_HOST_MODULE = resolve(HERE, 'sdc-host.js');
const RPC_TIMEOUT_MS = 120_000;
const LONG_RPC_TIMEOUT_MS = 30 * 60_000;
/** SDS whose replica records one seeding call carries (75k each at 64 TiB: a call stays well under a heartbeat interval). */
const SEED_SDS_PER_CALL = 2;
const SDS_HOST_SOCKETS_MAX = 256;
const SDC_HOST_SOCKETS_MAX = 512;
const REGISTER_CONCURRENCY = 8;
const BASELINE_SETTLE_MS = 1000;
/** SDC start: after the spread, this long for registration and first leases. */
const SDC_START_TIMEOUT_MS = 5 * 60_000;
const HOST_STOP_GRACE_MS = 10_000;

export interface RunProfile {
  readonly label: string;
  readonly kind: 'scale' | 'sweep';
  readonly sdsCount: number;
  readonly deviceBytes: number;
  readonly sdcCount: number;
  readonly volumeCount: number;
  readonly thinVolumePercent: number;
  readonly idleS: number;
  readonly steadyS: number;
  readonly placementS: number;
}

export interface PhaseResult {
  readonly name: string;
  readonly seconds: number;
  readonly mdm: { readonly rss_bytes: number | null; readonly peak_rss_bytes: number | null; readonly cpu_percent: number | null };
  readonly db: MdmDbBytes;
  readonly events: Record<string, number>;
  /** CPU of the whole machine against the benchmark's own processes: `shared` when others took a share. */
  readonly machine: MachineLoad;
  readonly lag: LagReport;
  readonly probe: ProbeReport | null;
  readonly sds: HostPhaseResult<SdsPhaseReport> | null;
  readonly sdc: HostPhaseResult<SdcPhaseReport> | null;
}

export interface RunResult {
  readonly label: string;
  readonly kind: 'scale' | 'sweep';
  readonly raw_bytes: number;
  readonly raw_tib: number;
  readonly sds_count: number;
  readonly sdc_count: number;
  readonly device_bytes: number;
  readonly volumes_planned: { readonly thick: number; readonly thin: number; readonly thick_chunks: number };
  readonly baseline: { readonly rss_bytes: number | null; readonly db: MdmDbBytes } | null;
  readonly setup: {
    sds_add?: { seconds: number; ms: Summary };
    sds_register?: { registered: number; failures: string[] };
    thick?: CreationReport;
    thin?: CreationReport;
    mappings?: MappingReport;
    sdc_start?: { started: number; failures: string[]; seconds: number; volumes: number; unplaced_thin_chunks: number };
    settle_after_sdc_start?: SettleResult;
    settle_before_failure?: SettleResult;
    seeded_chunks?: number;
    seed_s?: number;
  };
  readonly cluster: { replicas: number; chunks: number; utilization_percent: number; allocated_raw_bytes: number } | null;
  readonly phases: PhaseResult[];
  readonly placement: { readonly placed: number; readonly seconds: number; readonly per_s: number; readonly pool_full: boolean; readonly thin_chunks_left: number } | null;
  readonly failure: FailureReport | null;
  /** GET /cluster/invariants after the failure phase, where the MDM has it. */
  readonly invariants: InvariantsResult | null;
  readonly error: string | null;
  readonly mdm_exit: string | null;
  /** The end of the MDM's log when the run failed (the data dir is removed afterwards). */
  readonly mdm_log_tail: string | null;
  readonly wall_s: number;
}

const LOG_TAIL_BYTES = 6000;

export interface InvariantsResult {
  readonly available: boolean;
  readonly seconds: number;
  readonly chunks_checked: number;
  readonly violation_count: number;
  readonly violations: readonly string[];
  readonly error: string | null;
}

export interface SettleResult {
  readonly settled: boolean;
  readonly seconds: number;
  readonly sds_down_at_end: number;
  readonly rebuild_state_at_end: string;
}

/** Healthy this long without a break counts as settled: a whole miss window, so no flapping hides. */
function settleHoldMs(config: BenchConfig): number {
  return config.heartbeatIntervalMs * config.heartbeatMisses;
}

/**
 * Waits until every SDS node is UP and the pool has nothing pending or active, and stays so for
 * a heartbeat miss window; gives up after `timeoutS` (the run goes on, the report says so).
 */
async function settle(queries: MdmQueries, config: BenchConfig, timeoutS: number, alive: () => boolean): Promise<SettleResult> {
  const startedMs = Date.now();
  let healthySinceMs: number | undefined;
  let down = 0;
  let state = 'unknown';
  while (alive() && Date.now() - startedMs <= timeoutS * 1000) {
    try {
      const nodes = await queries.sdsNodes();
      const pool = (await queries.rebuildStatus()).find((entry) => entry.pool === POOL_NAME);
      down = nodes.filter((node) => node.status !== 'UP').length;
      state = pool === undefined ? 'unknown' : `${pool.state} (${pool.chunks_pending} pending, ${pool.chunks_active} active)`;
      const healthy = down === 0 && pool !== undefined && pool.chunks_pending === 0 && pool.chunks_active === 0;
      if (!healthy) healthySinceMs = undefined;
      else {
        healthySinceMs ??= Date.now();
        if (Date.now() - healthySinceMs >= settleHoldMs(config)) return { settled: true, seconds: Math.round((Date.now() - startedMs) / 100) / 10, sds_down_at_end: 0, rebuild_state_at_end: state };
      }
    } catch {
      healthySinceMs = undefined;
    }
    await sleep(1000);
  }
  return { settled: false, seconds: Math.round((Date.now() - startedMs) / 100) / 10, sds_down_at_end: down, rebuild_state_at_end: state };
}

/** The MDM's own metadata check (fcb39a8 and later); 404 on older MDMs. */
async function checkInvariants(admin: JsonHttp, credential: string): Promise<InvariantsResult> {
  const startedMs = performance.now();
  try {
    const answer = await admin.get<{ chunks_checked: number; violation_count: number; violations: string[] }>('/cluster/invariants', credential);
    return { available: true, seconds: Math.round(answer.ms / 10) / 100, chunks_checked: answer.body.chunks_checked, violation_count: answer.body.violation_count, violations: answer.body.violations.slice(0, 10), error: null };
  } catch (error) {
    const notThere = error instanceof JsonHttpError && error.status === 404;
    return { available: !notThere, seconds: Math.round((performance.now() - startedMs) / 10) / 100, chunks_checked: 0, violation_count: 0, violations: [], error: notThere ? null : (error as Error).message };
  }
}

function logTail(file: string): string | null {
  if (!existsSync(file)) return null;
  const text = readFileSync(file, 'utf8');
  return text.slice(-LOG_TAIL_BYTES);
}

function slug(label: string): string {
  return label.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').toLowerCase();
}

/** Everything one run holds: the MDM, the hosts, the probes, and the phase bookkeeping. */
class Run {
  readonly phases: PhaseResult[] = [];
  private phaseName = 'startup';
  private phaseStartedMs = Date.now();
  private phaseEventId = 0;
  private phaseCpuMs: number | undefined;
  private readonly machine: MachineLoadMeter;

  constructor(
    readonly mdm: MdmProcess,
    readonly admin: JsonHttp,
    readonly queries: MdmQueries,
    readonly lag: LagProbe,
    readonly sdsHost: RpcChannel,
    readonly sdcHost: RpcChannel,
    private readonly log: (line: string) => void,
    private readonly onPhase: (phases: readonly PhaseResult[]) => void,
  ) {
    this.phaseCpuMs = mdm.cpuMs();
    this.machine = new MachineLoadMeter(() => [mdm.pid, sdsHost.child.pid, sdcHost.child.pid].filter((pid): pid is number => pid !== undefined));
  }

  get credential(): string {
    return this.mdm.adminToken;
  }

  /** Ends the current phase (everyone's figures for it) and starts `next`. */
  async phase(next: string): Promise<PhaseResult> {
    const nowMs = Date.now();
    const cpuMs = this.mdm.cpuMs();
    const seconds = Math.max(0.001, (nowMs - this.phaseStartedMs) / 1000);
    const settled = async <T>(promise: Promise<T>, what: string): Promise<T | null> => {
      try {
        return await promise;
      } catch (error) {
        this.log(`${what} for phase ${this.phaseName} failed: ${(error as Error).message.split('\n')[0]}`);
        return null;
      }
    };
    const [probe, sds, sdc, events] = await Promise.all([
      settled(this.mdm.probePhase(next).then((report) => report ?? null), 'the MDM probe'),
      settled(this.sdsHost.call<HostPhaseResult<SdsPhaseReport>>('phase', { name: next }, RPC_TIMEOUT_MS), 'the SDS host'),
      settled(this.sdcHost.call<HostPhaseResult<SdcPhaseReport>>('phase', { name: next }, RPC_TIMEOUT_MS), 'the SDC host'),
      this.mdm.exited ? Promise.resolve({}) : settled(this.queries.countEventsSince(this.phaseEventId), 'event counts').then((counts) => counts ?? {}),
    ]);
    const memory = this.mdm.memory();
    const result: PhaseResult = {
      name: this.phaseName,
      seconds: Math.round(seconds * 10) / 10,
      mdm: {
        rss_bytes: memory?.rss_bytes ?? null,
        peak_rss_bytes: memory?.peak_rss_bytes ?? null,
        cpu_percent: cpuMs === undefined || this.phaseCpuMs === undefined ? null : Math.round(((cpuMs - this.phaseCpuMs) / (seconds * 1000)) * 1000) / 10,
      },
      db: this.mdm.dbBytes(),
      events,
      machine: this.machine.take(),
      lag: this.lag.take(),
      probe,
      sds,
      sdc,
    };
    this.phases.push(result);
    this.onPhase(this.phases);
    this.phaseName = next;
    this.phaseStartedMs = Date.now();
    this.phaseCpuMs = this.mdm.cpuMs();
    if (!this.mdm.exited) this.phaseEventId = await this.queries.lastEventId().catch(() => this.phaseEventId);
    return result;
  }
}

/**
 * One run. `onPhase` hears of every phase as it ends (the benchmark saves them, so a run that is
 * stopped half way still leaves what it measured).
 */
export async function runProfile(
  config: BenchConfig,
  profile: RunProfile,
  runDir: string,
  seed: number,
  logLine: (line: string) => void,
  onPhase: (phases: readonly PhaseResult[]) => void = () => undefined,
): Promise<RunResult> {
  const log = (line: string): void => logLine(`[${profile.label}] ${line}`);
  const startedMs = Date.now();
  const dataDir = join(runDir, slug(profile.label));
  mkdirSync(dataDir, { recursive: true });
  const plan = planDomain({
    sdsCount: profile.sdsCount,
    deviceBytes: profile.deviceBytes,
    faultSetCount: config.faultSetCount,
    chunkMib: config.chunkMib,
    sparePercent: config.sparePercent,
    rebuildRateMbps: config.rebuildRateMbps,
    sdcCount: profile.sdcCount,
    volumeCount: profile.volumeCount,
    thinVolumePercent: profile.thinVolumePercent,
    thickFillPercent: config.thickFillPercent,
    thinVolumeBytes: config.thinVolumeGib * GiB,
    seed,
  });
  const thick = plan.volumes.filter((volume) => volume.provisioning === 'thick');
  const thin = plan.volumes.filter((volume) => volume.provisioning === 'thin');
  const rawBytes = profile.deviceBytes * profile.sdsCount;
  const setup: RunResult['setup'] = {};
  let baseline: RunResult['baseline'] = null;
  let cluster: RunResult['cluster'] = null;
  let placement: RunResult['placement'] = null;
  let failure: FailureReport | null = null;
  let invariants: InvariantsResult | null = null;
  let error: string | null = null;
  const thickChunks = thick.reduce((sum, volume) => sum + volume.sizeBytes / plan.chunkBytes, 0);
  log(`${profile.sdsCount} SDS × ${(profile.deviceBytes / GiB).toFixed(1)} GiB, ${profile.sdcCount} SDC, ${thick.length} thick volumes (${thickChunks} chunks) + ${thin.length} thin; data in ${dataDir}`);

  const mdm = await MdmProcess.start({
    dataDir,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    heartbeatMisses: config.heartbeatMisses,
    tokenTtlMs: config.tokenTtlMs,
    logLevel: config.mdmLogLevel,
    probe: config.probe,
    maxOldSpaceMib: config.mdmMaxOldSpaceMib,
  });
  log(`MDM pid ${mdm.pid} at ${mdm.url}`);
  const admin = new JsonHttp({ baseUrl: mdm.url, socketsMax: config.setupConcurrency + 8, timeoutMs: config.adminTimeoutMs });
  const queries = new MdmQueries(admin, mdm.adminToken);
  const lag = new LagProbe(mdm.url, config.lagProbeMs);
  const sdsHost = forkHost('sds-host', SDS_HOST_MODULE);
  const sdcHost = forkHost('sdc-host', SDC_HOST_MODULE);
  const run = new Run(mdm, admin, queries, lag, sdsHost, sdcHost, log, onPhase);
  const alive = (): boolean => !mdm.exited;
  const prng = new Prng(seed ^ 0x5eed);
  try {
    await sdsHost.call('init', {
      mdmUrl: mdm.url,
      seed: seed + 1,
      socketsMax: SDS_HOST_SOCKETS_MAX,
      requestTimeoutMs: config.requestTimeoutMs,
      heartbeatMisses: config.heartbeatMisses,
      copyMbps: config.simCopyMbps,
      txAckChunksPerS: config.txAckChunksPerSPerSds,
    } satisfies SdsHostInit, RPC_TIMEOUT_MS);
    await sdcHost.call('init', { mdmUrl: mdm.url, seed: seed + 2, socketsMax: SDC_HOST_SOCKETS_MAX, requestTimeoutMs: config.requestTimeoutMs, heartbeatMisses: config.heartbeatMisses } satisfies SdcHostInit, RPC_TIMEOUT_MS);
    lag.start();
    await sleep(BASELINE_SETTLE_MS);
    baseline = { rss_bytes: mdm.memory()?.rss_bytes ?? null, db: mdm.dbBytes() };

    // ---------------------------------------------------------------- SDS
    await run.phase('setup-sds');
    const { poolId } = await createDomain(admin, run.credential, plan);
    const ports = await sdsHost.call<SdsPorts[]>('bind', { names: plan.sdsNames }, RPC_TIMEOUT_MS);
    setup.sds_add = await addSdsRecords(admin, run.credential, plan, ports, config.setupConcurrency);
    const joinToken = (await admin.post<{ join_token: string }>('/cluster/join-token', { roles: ['sds', 'sdc'], ttl_s: 7 * 24 * 3600, uses_max: 10_000 }, run.credential)).body.join_token;
    const registered = await sdsHost.call<{ registered: number; failures: string[]; sds_ids: Record<string, number> }>('register', { joinToken, concurrency: REGISTER_CONCURRENCY }, LONG_RPC_TIMEOUT_MS);
    setup.sds_register = { registered: registered.registered, failures: registered.failures };
    if (registered.registered < plan.sdsNames.length) throw new Error(`only ${registered.registered} of ${plan.sdsNames.length} SDS registered: ${registered.failures.join('; ')}`);
    await sdsHost.call('start', { heartbeatIntervalMs: config.heartbeatIntervalMs }, RPC_TIMEOUT_MS);
    log(`${registered.registered} SDS registered (pool #${poolId}); heartbeats and acks running`);

    // ---------------------------------------------------------------- volumes
    await run.phase('setup-volumes');
    const budgetMs = config.setupBudgetS * 1000;
    const thickResult = await createVolumes(admin, run.credential, thick, plan.chunkBytes, config.setupConcurrency, budgetMs, (line) => log(`thick: ${line}`));
    setup.thick = thickResult.report;
    if (thickResult.report.budget_exhausted) log(`thick volume creation stopped at the budget (BENCH_MDM_SETUP_BUDGET_S=${config.setupBudgetS}): ${thickResult.report.created} of ${thick.length}`);
    const thinResult = await createVolumes(admin, run.credential, thin, plan.chunkBytes, config.setupConcurrency, budgetMs, (line) => log(`thin: ${line}`));
    setup.thin = thinResult.report;

    // ---------------------------------------------------------------- mappings
    await run.phase('setup-map');
    await addSdcs(admin, run.credential, plan.sdcNames, config.setupConcurrency);
    setup.mappings = await mapVolumes(admin, run.credential, [...thickResult.created, ...thinResult.created], config.setupConcurrency);
    log(`${setup.mappings.mapped} mappings in ${setup.mappings.seconds} s`);
    const capacity = await queries.poolCapacity(POOL_NAME);
    const replicas = Math.round(capacity.allocated_raw_bytes / plan.chunkBytes);
    cluster = { replicas, chunks: Math.round(replicas / 2), utilization_percent: capacity.utilization_percent, allocated_raw_bytes: capacity.allocated_raw_bytes };

    // ---------------------------------------------------------------- idle: the MDM's own passes
    if (profile.idleS > 0) {
      await run.phase('idle');
      log(`idle for ${profile.idleS} s (no SDC yet: passes with nothing to do)`);
      await sleep(profile.idleS * 1000);
    }

    // ---------------------------------------------------------------- SDCs
    await run.phase('setup-sdc');
    await sdcHost.call('bind', { names: plan.sdcNames }, RPC_TIMEOUT_MS);
    setup.sdc_start = await sdcHost.call(
      'start',
      { joinToken, spreadMs: config.sdcStartSpreadMs, collectHoldings: config.seedWritten, timeoutMs: config.sdcStartSpreadMs + SDC_START_TIMEOUT_MS },
      config.sdcStartSpreadMs + SDC_START_TIMEOUT_MS + RPC_TIMEOUT_MS,
    );
    log(`${setup.sdc_start!.started} SDC started, ${setup.sdc_start!.volumes} volumes leased, in ${setup.sdc_start!.seconds} s${setup.sdc_start!.failures.length > 0 ? ` (${setup.sdc_start!.failures.join('; ')})` : ''}`);
    setup.settle_after_sdc_start = await settle(queries, config, config.settleTimeoutS, alive);
    log(setup.settle_after_sdc_start.settled ? `settled in ${setup.settle_after_sdc_start.seconds} s` : `not settled after ${setup.settle_after_sdc_start.seconds} s: ${setup.settle_after_sdc_start.sds_down_at_end} SDS not UP, rebuild ${setup.settle_after_sdc_start.rebuild_state_at_end}`);
    const idByName = registered.sds_ids;
    const nameById = new Map(Object.entries(idByName).map(([name, id]) => [String(id), name]));
    const seedHoldings = async (holdings: Holdings): Promise<number> => {
      const byName: Record<string, Int32Array> = {};
      for (const [id, flat] of Object.entries(holdings)) {
        const name = nameById.get(id);
        if (name !== undefined) byName[name] = flat;
      }
      return (await sdsHost.call<{ chunks: number }>('seed', { byName }, LONG_RPC_TIMEOUT_MS)).chunks;
    };
    if (config.seedWritten) {
      const seedStartedMs = Date.now();
      let seeded = 0;
      for (let left = 1; left > 0; ) {
        const page = await sdcHost.call<{ holdings: Holdings; left: number }>('holdings', { sdsCountMax: SEED_SDS_PER_CALL }, LONG_RPC_TIMEOUT_MS);
        seeded += await seedHoldings(page.holdings);
        left = page.left;
      }
      setup.seeded_chunks = seeded;
      setup.seed_s = Math.round((Date.now() - seedStartedMs) / 100) / 10;
      log(`simulated SDS hold ${setup.seeded_chunks} replica records`);
    }

    // ---------------------------------------------------------------- steady
    await run.phase('steady');
    log(`steady for ${profile.steadyS} s`);
    await sleep(profile.steadyS * 1000);

    // ---------------------------------------------------------------- thin placements
    if (profile.placementS > 0 && thinResult.created.length > 0 && alive()) {
      await run.phase('placement');
      log(`first writes to thin chunks for ${profile.placementS} s, ${config.placementConcurrencyPerSdc} per SDC`);
      const placed = await sdcHost.call<{ seconds: number; placed: number; pool_full: boolean; thin_chunks_left: number; holdings: Holdings }>(
        'place',
        { durationMs: profile.placementS * 1000, concurrencyPerSdc: config.placementConcurrencyPerSdc, collectHoldings: config.seedWritten },
        profile.placementS * 1000 + LONG_RPC_TIMEOUT_MS,
      );
      placement = { placed: placed.placed, seconds: placed.seconds, per_s: Math.round((placed.placed / Math.max(0.001, placed.seconds)) * 10) / 10, pool_full: placed.pool_full, thin_chunks_left: placed.thin_chunks_left };
      log(`${placed.placed} thin chunks placed in ${placed.seconds} s (${placement.per_s}/s)`);
      if (config.seedWritten) await seedHoldings(placed.holdings);
    }

    // ---------------------------------------------------------------- failure
    if (alive()) {
      setup.settle_before_failure = await settle(queries, config, config.settleTimeoutS, alive);
      if (!setup.settle_before_failure.settled) log(`not settled before the failure (${setup.settle_before_failure.sds_down_at_end} SDS not UP, rebuild ${setup.settle_before_failure.rebuild_state_at_end}): its figures are of an unsettled cluster`);
      const up = new Set((await queries.sdsNodes()).filter((node) => node.status === 'UP').map((node) => node.node_id));
      const candidates = plan.sdsNames.filter((name) => up.has(name));
      const pool = candidates.length > 0 ? candidates : plan.sdsNames;
      await run.phase('failure');
      const victim = pool[prng.int(0, pool.length - 1)]!;
      failure = await failOneSds({
        queries,
        sdsHost,
        sdcHost,
        victim,
        pool: POOL_NAME,
        detect: config.failDetect,
        pollMs: config.pollMs,
        timeoutS: config.rebuildTimeoutS,
        chunkBytes: plan.chunkBytes,
        mdmAlive: alive,
        log,
      });
      log(
        `failure of ${victim}: down ${failure.down_s ?? '-'} s, fenced ${failure.fenced_s ?? '-'} s, planned ${failure.planned_s ?? '-'} s, ` +
          `rebuilt ${failure.rebuilt_s ?? (failure.timed_out ? `not within ${config.rebuildTimeoutS} s` : '-')} (${failure.rebuild.chunks_done}/${failure.affected_chunks} chunks, ${failure.rebuild.chunks_per_s} chunks/s)`,
      );
    }
    if (alive()) {
      invariants = await checkInvariants(admin, run.credential);
      if (invariants.available) log(`invariants: ${invariants.violation_count} violation(s) over ${invariants.chunks_checked} chunks (${invariants.seconds} s)${invariants.error === null ? '' : `; ${invariants.error}`}`);
    }
    await run.phase('end');
  } catch (caught) {
    error = (caught as Error).message.split('\n')[0]!;
    log(`run failed: ${error}`);
    if (mdm.exited) log(mdm.exitReason());
    await run.phase('aborted').catch(() => undefined);
  } finally {
    await lag.stop().catch(() => undefined);
    await Promise.all(
      [sdcHost, sdsHost].map(async (host) => {
        await host.call('stop', {}, 30_000).catch(() => undefined);
        await stopChild(host.child, HOST_STOP_GRACE_MS);
      }),
    );
    admin.close();
  }
  const exitedOnItsOwn = mdm.exited;
  await mdm.stop();
  const mdmLogTail = error === null ? null : logTail(mdm.logFile);
  if (!config.keep) rmSync(dataDir, { recursive: true, force: true });
  return {
    label: profile.label,
    kind: profile.kind,
    raw_bytes: rawBytes,
    raw_tib: Math.round((rawBytes / TiB) * 1000) / 1000,
    sds_count: profile.sdsCount,
    sdc_count: profile.sdcCount,
    device_bytes: profile.deviceBytes,
    volumes_planned: { thick: thick.length, thin: thin.length, thick_chunks: thickChunks },
    baseline,
    setup,
    cluster,
    phases: run.phases,
    placement,
    failure,
    invariants,
    error,
    mdm_exit: exitedOnItsOwn ? mdm.exitReason() : null,
    mdm_log_tail: mdmLogTail,
    wall_s: Math.round((Date.now() - startedMs) / 1000),
  };
}
