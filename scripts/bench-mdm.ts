/**
 * `npm run bench:mdm` (issue 11): the metadata plane at scale. A real MDM (its own process) is
 * driven by simulated SDS and SDC (scripts/mdm-sim/) that speak the real control protocols
 * without data IO, at each raw capacity of BENCH_MDM_SCALES_TIB; then one SDS failure per SDS
 * count of BENCH_MDM_SWEEP_SDS_COUNTS at the same device size, to show how rebuild time follows
 * SDS count. Prints the tables (Markdown) and writes every figure as JSON (BENCH_MDM_OUT_JSON).
 *
 *   npm run bench:mdm -- --help                      every setting, its unit and default
 *   BENCH_MDM_SCALES_TIB=1,4,16,64 npm run bench:mdm the full run
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GiB, MiB, TiB } from '../src/common/units.js';
import { ConfigError, describeConfig, helpRequested, helpText, loadConfig, type BenchConfig } from './mdm-sim/config.js';
import { runProfile, type PhaseResult, type RunProfile, type RunResult } from './mdm-sim/scale-run.js';
import { hotSpots, scaleTable, sharedPhases, sweepTable } from './mdm-sim/report.js';
import { MachineLoadMeter } from './mdm-sim/machine-load.js';
import { sleep } from './mdm-sim/stats.js';
import { liveChildren } from './mdm-sim/ipc.js';

const DEVICE_BYTES_MIN = 64 * MiB;
const QUIET_WINDOW_MS = 5000;
const QUIET_CORES_MAX = 0.2;

/** Waits (at most `timeoutS`) until the machine is idle over a whole window; says how it went. */
async function waitForQuiet(timeoutS: number): Promise<void> {
  const deadlineMs = Date.now() + timeoutS * 1000;
  const meter = new MachineLoadMeter(() => []);
  for (let window = 0; ; window += 1) {
    await sleep(QUIET_WINDOW_MS);
    const load = meter.take();
    if (load.busy_cores < QUIET_CORES_MAX) return;
    if (Date.now() > deadlineMs) {
      log(`the machine is still busy (${load.busy_cores} cores used by others) after ${timeoutS} s: running anyway`);
      return;
    }
    if (window % 12 === 0) log(`waiting for the machine to be idle: ${load.busy_cores} cores busy`);
  }
}
const SWEEP_STEADY_S_MAX = 10;
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function log(line: string): void {
  process.stderr.write(`bench:mdm ${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

function gitCommit(): string | null {
  try {
    const quiet = { encoding: 'utf8' as const, stdio: ['ignore', 'pipe', 'ignore'] as ('ignore' | 'pipe')[] };
    const head = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], quiet).trim();
    const dirty = execFileSync('git', ['-C', REPO, 'status', '--porcelain', '--', 'src'], quiet).trim().length > 0;
    return dirty ? `${head} (src/ modified)` : head;
  } catch {
    return null;
  }
}

/** Device size per SDS for a raw capacity, in whole MiB. */
function deviceBytesFor(rawTib: number, sdsCount: number): number {
  const bytes = Math.floor((rawTib * TiB) / sdsCount / MiB) * MiB;
  if (bytes < DEVICE_BYTES_MIN) throw new ConfigError(`${rawTib} TiB over ${sdsCount} SDS is ${bytes} bytes per device, below the MDM's 64 MiB minimum`);
  return bytes;
}

function profiles(config: BenchConfig): RunProfile[] {
  const scale = config.scalesTib.map(
    (tib): RunProfile => ({
      label: `${tib} TiB`,
      kind: 'scale',
      sdsCount: config.sdsCount,
      deviceBytes: deviceBytesFor(tib, config.sdsCount),
      sdcCount: config.sdcCount,
      volumeCount: config.volumeCount,
      thinVolumePercent: config.thinVolumePercent,
      idleS: config.idleS,
      steadyS: config.steadyS,
      placementS: config.placementS,
    }),
  );
  const sweep = config.sweepSdsCounts.map(
    (count): RunProfile => ({
      label: `sweep ${count} SDS`,
      kind: 'sweep',
      sdsCount: count,
      deviceBytes: Math.max(DEVICE_BYTES_MIN, Math.floor((config.sweepDeviceGib * GiB) / MiB) * MiB),
      sdcCount: config.sweepSdcCount,
      volumeCount: config.sweepVolumeCount,
      thinVolumePercent: 0,
      idleS: Math.min(config.idleS, SWEEP_STEADY_S_MAX),
      steadyS: Math.min(config.steadyS, SWEEP_STEADY_S_MAX),
      placementS: 0,
    }),
  );
  return [...scale, ...sweep];
}

function render(runs: readonly RunResult[], command: string, label: string): string {
  const scale = runs.filter((run) => run.kind === 'scale');
  const sweep = runs.filter((run) => run.kind === 'sweep');
  const parts = [`Command: ${command}`, `Measured: ${label}`];
  const shared = sharedPhases(runs);
  if (shared.length > 0) parts.push('', `WARNING: other processes used the machine's CPU during ${shared.length} phase(s); their figures are not the MDM's alone: ${shared.join('; ')}`);
  if (scale.length > 0) parts.push('', '## The metadata plane by raw capacity', '', scaleTable(scale));
  if (sweep.length > 0) parts.push('', '## Rebuild time by SDS count (same device size)', '', sweepTable(sweep));
  for (const run of runs) if (run.phases.some((phase) => phase.probe !== null)) parts.push('', hotSpots(run));
  return parts.join('\n');
}

async function main(): Promise<number> {
  if (helpRequested(process.argv.slice(2), process.env)) {
    process.stdout.write(`${helpText()}\n`);
    return 0;
  }
  let config: BenchConfig;
  let runs: RunProfile[];
  try {
    config = loadConfig(process.env);
    runs = profiles(config);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`bench:mdm: ${error.message}\n(npm run bench:mdm -- --help lists every setting)\n`);
      return 2;
    }
    throw error;
  }
  const settings = describeConfig(config);
  const command = `${settings.filter((line) => process.env[line.split('=')[0]!] !== undefined).join(' ')} npm run bench:mdm`.trim();
  log(`seed ${config.seed} (BENCH_MDM_SEED=${config.seed} replays this run)`);
  for (const line of settings) log(`  ${line}`);
  mkdirSync(config.workDir, { recursive: true });
  const runDir = mkdtempSync(join(config.workDir, 'pflex-bench-mdm-'));
  log(`work dir ${runDir}${config.keep ? ' (kept)' : ' (removed at the end)'}`);
  const startedAt = new Date().toISOString();
  const measured = `${config.label === '' ? (gitCommit() ?? 'unknown commit') : config.label}, ${new Date().toISOString().slice(0, 10)}`;
  const results: RunResult[] = [];
  /** The run in progress, phase by phase: saved with the others, so a stopped run leaves its figures. */
  let current: { label: string; phases: readonly PhaseResult[] } | undefined;
  const machine = { cpus: cpus().length, cpu_model: cpus()[0]?.model ?? 'unknown', memory_bytes: totalmem(), node: process.version, kernel: release() };
  const write = (finished: boolean): void => {
    mkdirSync(dirname(resolve(config.outJson)), { recursive: true });
    const document = {
      benchmark: 'bench:mdm',
      started_at: startedAt,
      finished_at: finished ? new Date().toISOString() : null,
      command,
      seed: config.seed,
      commit: gitCommit(),
      label: config.label === '' ? gitCommit() : config.label,
      machine,
      config,
      runs: results,
      run_in_progress: current ?? null,
      tables: render(results, command, measured),
    };
    writeFileSync(config.outJson, `${JSON.stringify(document, null, 1)}\n`);
  };

  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`${signal}: stopping; the MDM and simulators get SIGTERM (by PID)`);
    for (const child of liveChildren) child.kill('SIGTERM');
    write(false);
    if (!config.keep) rmSync(runDir, { recursive: true, force: true });
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  for (const [index, profile] of runs.entries()) {
    if (config.quietWaitS > 0) await waitForQuiet(config.quietWaitS);
    log(`run ${index + 1}/${runs.length}: ${profile.label}`);
    try {
      current = { label: profile.label, phases: [] };
      const result = await runProfile(config, profile, runDir, config.seed + index * 7919, log, (phases) => {
        current = { label: profile.label, phases: [...phases] };
        write(false);
      });
      current = undefined;
      results.push(result);
    } catch (error) {
      log(`${profile.label} could not run: ${(error as Error).message}`);
    }
    write(false);
  }
  write(true);
  if (!config.keep) rmSync(runDir, { recursive: true, force: true });
  process.stdout.write(`${render(results, command, measured)}\n`);
  log(`JSON report: ${resolve(config.outJson)}`);
  return results.some((run) => run.error !== null) || results.length < runs.length ? 1 : 0;
}

process.exitCode = await main();
