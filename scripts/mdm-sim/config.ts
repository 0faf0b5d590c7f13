/**
 * The benchmark's settings: every one an environment variable with its unit in its name, a
 * default, a bound and a line of help. `npm run bench:mdm -- --help` (or BENCH_MDM_HELP=1)
 * prints the table.
 */

export type FailDetect = 'sdc-report' | 'heartbeat';

export interface BenchConfig {
  readonly seed: number;
  readonly scalesTib: readonly number[];
  readonly sdsCount: number;
  readonly sdcCount: number;
  readonly volumeCount: number;
  readonly thinVolumePercent: number;
  readonly thickFillPercent: number;
  readonly thinVolumeGib: number;
  readonly faultSetCount: number;
  readonly chunkMib: number;
  readonly sparePercent: number;
  readonly rebuildRateMbps: number;
  readonly heartbeatIntervalMs: number;
  readonly heartbeatMisses: number;
  readonly tokenTtlMs: number;
  readonly setupConcurrency: number;
  readonly setupBudgetS: number;
  readonly requestTimeoutMs: number;
  readonly adminTimeoutMs: number;
  readonly sdcStartSpreadMs: number;
  readonly idleS: number;
  readonly settleTimeoutS: number;
  readonly steadyS: number;
  readonly placementS: number;
  readonly placementConcurrencyPerSdc: number;
  readonly txAckChunksPerSPerSds: number;
  readonly seedWritten: boolean;
  readonly simCopyMbps: number;
  readonly failDetect: FailDetect;
  readonly rebuildTimeoutS: number;
  readonly pollMs: number;
  readonly lagProbeMs: number;
  readonly probe: boolean;
  readonly sweepSdsCounts: readonly number[];
  readonly sweepDeviceGib: number;
  readonly sweepVolumeCount: number;
  readonly sweepSdcCount: number;
  readonly outJson: string;
  readonly workDir: string;
  readonly keep: boolean;
  readonly mdmLogLevel: string;
  readonly mdmMaxOldSpaceMib: number;
  readonly label: string;
  readonly quietWaitS: number;
}

interface Setting {
  readonly env: string;
  readonly key: keyof BenchConfig;
  readonly unit: string;
  /** The default as text, as one would type it. */
  readonly fallback: string;
  readonly help: string;
  readonly parse: (text: string, env: string) => unknown;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function integer(min: number, max: number) {
  return (text: string, env: string): number => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min || value > max) throw new ConfigError(`${env}=${text}: must be an integer in ${min}..${max}`);
    return value;
  };
}

function decimal(min: number, max: number) {
  return (text: string, env: string): number => {
    const value = Number(text);
    if (!Number.isFinite(value) || value < min || value > max) throw new ConfigError(`${env}=${text}: must be a number in ${min}..${max}`);
    return value;
  };
}

function list(item: (text: string, env: string) => number, lengthMax: number) {
  return (text: string, env: string): number[] => {
    const items = text.split(',').map((part) => part.trim()).filter((part) => part !== '');
    if (items.length > lengthMax) throw new ConfigError(`${env}: at most ${lengthMax} values`);
    return items.map((part) => item(part, env));
  };
}

function flag(text: string, env: string): boolean {
  if (text === '1' || text === 'true') return true;
  if (text === '0' || text === 'false') return false;
  throw new ConfigError(`${env}=${text}: must be 0 or 1`);
}

function oneOf<T extends string>(choices: readonly T[]) {
  return (text: string, env: string): T => {
    if (!(choices as readonly string[]).includes(text)) throw new ConfigError(`${env}=${text}: must be one of ${choices.join(', ')}`);
    return text as T;
  };
}

function text(value: string, env: string): string {
  if (value.length === 0 || value.length > 4096) throw new ConfigError(`${env}: must be 1..4096 characters`);
  return value;
}

const SETTINGS: readonly Setting[] = [
  { env: 'BENCH_MDM_SEED', key: 'seed', unit: 'integer', fallback: '(time-based)', help: 'seed of every random choice (volume sizes, which SDS fails, ack chunks); printed, so a run replays', parse: integer(0, 2 ** 31 - 1) },
  { env: 'BENCH_MDM_SCALES_TIB', key: 'scalesTib', unit: 'TiB, comma list', fallback: '1,4', help: 'raw pool capacities to run (the full run: 1,4,16,64)', parse: list(decimal(0.01, 1024), 16) },
  { env: 'BENCH_MDM_SDS_COUNT', key: 'sdsCount', unit: 'SDS', fallback: '100', help: 'simulated SDS per scale (raw capacity split evenly, one device each)', parse: integer(2, 1000) },
  { env: 'BENCH_MDM_SDC_COUNT', key: 'sdcCount', unit: 'SDC', fallback: '100', help: 'simulated SDCs; volumes are mapped round-robin', parse: integer(1, 1000) },
  { env: 'BENCH_MDM_VOLUME_COUNT', key: 'volumeCount', unit: 'volumes', fallback: '10000', help: 'volumes per scale (thick and thin)', parse: integer(1, 1_000_000) },
  { env: 'BENCH_MDM_THIN_VOLUME_PERCENT', key: 'thinVolumePercent', unit: '% of volumes', fallback: '10', help: 'share of the volumes that are thin (for the thin placement rate)', parse: integer(0, 100) },
  { env: 'BENCH_MDM_THICK_FILL_PERCENT', key: 'thickFillPercent', unit: '% of usable', fallback: '50', help: 'thick volumes fill this share of the pool\'s usable capacity', parse: integer(0, 95) },
  { env: 'BENCH_MDM_THIN_VOLUME_GIB', key: 'thinVolumeGib', unit: 'GiB', fallback: '8', help: 'size of each thin volume', parse: decimal(0.004, 65536) },
  { env: 'BENCH_MDM_FAULT_SET_COUNT', key: 'faultSetCount', unit: 'fault sets', fallback: '10', help: 'fault sets (SDS spread round-robin; capped at the SDS count)', parse: integer(0, 1000) },
  { env: 'BENCH_MDM_CHUNK_MIB', key: 'chunkMib', unit: 'MiB', fallback: '4', help: 'pool chunk size (power of two, 1..256)', parse: integer(1, 256) },
  { env: 'BENCH_MDM_SPARE_PERCENT', key: 'sparePercent', unit: '%', fallback: '10', help: 'pool spare capacity', parse: integer(0, 50) },
  { env: 'BENCH_MDM_REBUILD_RATE_MBPS', key: 'rebuildRateMbps', unit: 'MB/s', fallback: '100000', help: 'pool rebuild_rate_mbps (the MDM\'s own pacing; the default lifts it so job limits and SDS copy rates show)', parse: integer(1, 100_000) },
  { env: 'BENCH_MDM_HEARTBEAT_INTERVAL_MS', key: 'heartbeatIntervalMs', unit: 'ms', fallback: '2000', help: 'the MDM\'s heartbeat interval (--heartbeat-interval-ms)', parse: integer(100, 60_000) },
  { env: 'BENCH_MDM_HEARTBEAT_MISSES', key: 'heartbeatMisses', unit: 'heartbeats', fallback: '3', help: 'missed heartbeats before DOWN (--heartbeat-misses)', parse: integer(1, 100) },
  { env: 'BENCH_MDM_TOKEN_TTL_MS', key: 'tokenTtlMs', unit: 'ms', fallback: '30000', help: 'IO token lifetime (--token-ttl-ms); SDCs renew at half of it', parse: integer(1000, 3_600_000) },
  { env: 'BENCH_MDM_SETUP_CONCURRENCY', key: 'setupConcurrency', unit: 'requests', fallback: '4', help: 'admin requests in flight during bulk setup (volume create, map)', parse: integer(1, 256) },
  { env: 'BENCH_MDM_SETUP_BUDGET_S', key: 'setupBudgetS', unit: 's', fallback: '1800', help: 'thick volume creation stops after this long (reported as a finding; the run goes on with what exists)', parse: integer(10, 86_400) },
  { env: 'BENCH_MDM_REQUEST_TIMEOUT_MS', key: 'requestTimeoutMs', unit: 'ms', fallback: '10000', help: 'simulated nodes\' HTTP timeout (the real nodes\' HttpClient default)', parse: integer(100, 600_000) },
  { env: 'BENCH_MDM_ADMIN_TIMEOUT_MS', key: 'adminTimeoutMs', unit: 'ms', fallback: '120000', help: 'timeout of the benchmark\'s own admin calls', parse: integer(1000, 3_600_000) },
  { env: 'BENCH_MDM_SDC_START_SPREAD_MS', key: 'sdcStartSpreadMs', unit: 'ms', fallback: '(token TTL / 2)', help: 'SDC starts are spread over this window (independent hosts; each SDC primes all its windows at once, as the real one)', parse: integer(0, 3_600_000) },
  { env: 'BENCH_MDM_IDLE_S', key: 'idleS', unit: 's', fallback: '20', help: 'length of the idle phase: volumes exist, SDS heartbeat and ack, no SDC yet (the passes\' cost with nothing to do)', parse: integer(0, 86_400) },
  { env: 'BENCH_MDM_SETTLE_TIMEOUT_S', key: 'settleTimeoutS', unit: 's', fallback: '120', help: 'after the SDCs start, and before the failure, wait at most this long for every SDS UP and nothing to rebuild', parse: integer(0, 86_400) },
  { env: 'BENCH_MDM_STEADY_S', key: 'steadyS', unit: 's', fallback: '30', help: 'length of the steady phase (nothing changes; SDCs renew, nodes heartbeat, SDS ack)', parse: integer(1, 86_400) },
  { env: 'BENCH_MDM_PLACEMENT_S', key: 'placementS', unit: 's', fallback: '15', help: 'length of the thin placement phase (0 skips it)', parse: integer(0, 86_400) },
  { env: 'BENCH_MDM_PLACEMENT_CONCURRENCY_PER_SDC', key: 'placementConcurrencyPerSdc', unit: 'requests', fallback: '1', help: 'first-write authorizations (allocate) in flight per SDC', parse: integer(1, 64) },
  { env: 'BENCH_MDM_TX_ACK_CHUNKS_PER_S_PER_SDS', key: 'txAckChunksPerSPerSds', unit: 'acks/s per SDS', fallback: '10', help: 'transaction acks each SDS sends per second (one per chunk written, in one batch a second; 0: none)', parse: integer(0, 10_000) },
  { env: 'BENCH_MDM_SEED_WRITTEN', key: 'seedWritten', unit: '0/1', fallback: '1', help: 'simulated SDS hold a record of every replica placed on them (as after a first write): their GET /chunks lists them and acks name them', parse: flag },
  { env: 'BENCH_MDM_SIM_COPY_MBPS', key: 'simCopyMbps', unit: 'MB/s per SDS', fallback: '200', help: 'a simulated SDS writes rebuild copies (/chunks/copy, as target) and serves their reads (as source) at this rate each, one copy at a time each way (FIFO)', parse: decimal(0.1, 100_000) },
  { env: 'BENCH_MDM_FAIL_DETECT', key: 'failDetect', unit: 'mode', fallback: 'sdc-report', help: 'how the failed SDS is noticed: sdc-report (each SDC with a replica there reports it unreachable, as on an IO error) or heartbeat (missed heartbeats only)', parse: oneOf(['sdc-report', 'heartbeat'] as const) },
  { env: 'BENCH_MDM_REBUILD_TIMEOUT_S', key: 'rebuildTimeoutS', unit: 's', fallback: '180', help: 'the failure phase gives up after this long (progress and the rate so far are reported)', parse: integer(5, 86_400) },
  { env: 'BENCH_MDM_POLL_MS', key: 'pollMs', unit: 'ms', fallback: '100', help: 'polling interval of SDS state, events and rebuild status during the failure phase', parse: integer(10, 10_000) },
  { env: 'BENCH_MDM_LAG_PROBE_MS', key: 'lagProbeMs', unit: 'ms', fallback: '20', help: 'interval of the GET /health probe that measures how long the MDM cannot answer', parse: integer(5, 10_000) },
  { env: 'BENCH_MDM_PROBE', key: 'probe', unit: '0/1', fallback: '1', help: 'load scripts/mdm-sim/mdm-probe.js into the MDM (node --import): timings of SQL statements, transactions, passes, routes and event-loop stalls', parse: flag },
  { env: 'BENCH_MDM_SWEEP_SDS_COUNTS', key: 'sweepSdsCounts', unit: 'SDS, comma list', fallback: '10,50,100', help: 'rebuild-time sweep: one failure per SDS count, same device size (empty: no sweep)', parse: list(integer(2, 1000), 16) },
  { env: 'BENCH_MDM_SWEEP_DEVICE_GIB', key: 'sweepDeviceGib', unit: 'GiB per SDS', fallback: '4', help: 'device size of each SDS in the sweep (the failed SDS holds the same amount at every count)', parse: decimal(0.0625, 1_048_576) },
  { env: 'BENCH_MDM_SWEEP_VOLUME_COUNT', key: 'sweepVolumeCount', unit: 'volumes', fallback: '1000', help: 'thick volumes in each sweep run', parse: integer(1, 1_000_000) },
  { env: 'BENCH_MDM_SWEEP_SDC_COUNT', key: 'sweepSdcCount', unit: 'SDC', fallback: '10', help: 'SDCs in each sweep run', parse: integer(1, 1000) },
  { env: 'BENCH_MDM_OUT_JSON', key: 'outJson', unit: 'path', fallback: '/var/tmp/bench-mdm.json', help: 'where the JSON report goes', parse: text },
  { env: 'BENCH_MDM_DIR', key: 'workDir', unit: 'path', fallback: '/var/tmp', help: 'parent of the run\'s temp dir (the MDM\'s powerflex.db, logs)', parse: text },
  { env: 'BENCH_MDM_KEEP', key: 'keep', unit: '0/1', fallback: '0', help: 'keep the temp dir (databases and logs) after the run', parse: flag },
  { env: 'BENCH_MDM_LOG_LEVEL', key: 'mdmLogLevel', unit: 'level', fallback: 'warn', help: 'the MDM\'s log level (its log is in the temp dir)', parse: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const) },
  { env: 'BENCH_MDM_QUIET_WAIT_S', key: 'quietWaitS', unit: 's', fallback: '0', help: 'before each run, wait up to this long for the machine to be idle (other processes under 0.2 cores over 5 s); 0: do not wait', parse: integer(0, 86_400) },
  { env: 'BENCH_MDM_LABEL', key: 'label', unit: 'text', fallback: '(git commit)', help: 'what was measured, saved in the JSON (default: the git commit, marked when src/ has changes)', parse: text },
  { env: 'BENCH_MDM_MDM_MAX_OLD_SPACE_MIB', key: 'mdmMaxOldSpaceMib', unit: 'MiB', fallback: '0', help: 'node --max-old-space-size for the MDM (0: node\'s default)', parse: integer(0, 1_048_576) },
];

export function helpText(): string {
  const rows = SETTINGS.map((setting) => [setting.env, setting.unit, setting.fallback, setting.help]);
  const widths = [0, 1, 2].map((column) => Math.max(...rows.map((row) => row[column]!.length)));
  const lines = rows.map((row) => `  ${row[0]!.padEnd(widths[0]!)}  ${row[1]!.padEnd(widths[1]!)}  ${row[2]!.padEnd(widths[2]!)}  ${row[3]}`);
  return [
    'npm run bench:mdm: a real MDM (child process) driven by simulated SDS and SDC that speak the real',
    'control protocols without data IO. Per scale: setup through the API, a steady phase, thin placements,',
    'one SDS failure and its rebuild; then a rebuild-time sweep over SDS counts. Prints a table and writes JSON.',
    '',
    '  BENCH_MDM_HELP=1 or --help   this text',
    '',
    `  ${'variable'.padEnd(widths[0]!)}  ${'unit'.padEnd(widths[1]!)}  ${'default'.padEnd(widths[2]!)}  meaning`,
    ...lines,
    '',
    'Example (the full run): BENCH_MDM_SCALES_TIB=1,4,16,64 npm run bench:mdm',
  ].join('\n');
}

export function helpRequested(argv: readonly string[], env: NodeJS.ProcessEnv): boolean {
  return argv.includes('--help') || argv.includes('-h') || (env.BENCH_MDM_HELP !== undefined && env.BENCH_MDM_HELP !== '0' && env.BENCH_MDM_HELP !== '');
}

/** Reads every setting from the environment; throws ConfigError naming the first bad one. */
export function loadConfig(env: NodeJS.ProcessEnv): BenchConfig {
  const values: Record<string, unknown> = {};
  for (const setting of SETTINGS) {
    const given = env[setting.env];
    if (given !== undefined && given !== '') {
      values[setting.key] = setting.parse(given, setting.env);
      continue;
    }
    if (given === '' && (setting.key === 'sweepSdsCounts' || setting.key === 'scalesTib')) {
      values[setting.key] = [];
      continue;
    }
    if (setting.fallback.startsWith('(')) continue; // computed below
    values[setting.key] = setting.parse(setting.fallback, setting.env);
  }
  values.seed ??= Date.now() % 1_000_000;
  values.sdcStartSpreadMs ??= Math.floor((values.tokenTtlMs as number) / 2);
  values.label ??= '';
  const config = values as unknown as BenchConfig;
  const chunk = config.chunkMib;
  if ((chunk & (chunk - 1)) !== 0) throw new ConfigError(`BENCH_MDM_CHUNK_MIB=${chunk}: must be a power of two`);
  if (config.scalesTib.length === 0 && config.sweepSdsCounts.length === 0) throw new ConfigError('nothing to run: BENCH_MDM_SCALES_TIB and BENCH_MDM_SWEEP_SDS_COUNTS are both empty');
  return config;
}

/** The settings as printed at the start of a run (env name = value). */
export function describeConfig(config: BenchConfig): string[] {
  return SETTINGS.map((setting) => {
    const value = config[setting.key];
    return `${setting.env}=${Array.isArray(value) ? value.join(',') : String(value)}`;
  });
}
