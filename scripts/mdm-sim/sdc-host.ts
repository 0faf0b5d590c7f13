/**
 * A process hosting many simulated SDCs (sim-sdc.ts), driven by the benchmark over IPC. It
 * exits when the benchmark goes away.
 */
import { serveRpc } from './ipc.js';
import { JsonHttp } from './http-json.js';
import { HostLoadMeter, type HostPhaseResult } from './host-load.js';
import { SdcPhaseStats, SimSdc, sdcPhaseReport, type SdcPhaseReport, type SimSdcShared } from './sim-sdc.js';
import { sleep } from './stats.js';
import { Prng } from '../../src/common/prng.js';

export interface SdcHostInit {
  readonly mdmUrl: string;
  readonly seed: number;
  readonly socketsMax: number;
  readonly requestTimeoutMs: number;
  readonly heartbeatMisses: number;
}

/** Flat [volume, chunk, epoch, pool] × n per SDS id, for seeding the simulated SDS. */
export type Holdings = Record<string, Int32Array>;

let shared: SimSdcShared | undefined;
let prng = new Prng(1);
const sims: SimSdc[] = [];
let phaseName = 'start';
let phaseStartedMs = performance.now();
let phase = new SdcPhaseStats();
const load = new HostLoadMeter();

function ready(): SimSdcShared {
  if (shared === undefined) throw new Error('sdc-host: init first');
  return shared;
}

/** Takes the holdings collected so far and stops collecting. */
function takeHoldings(): Holdings {
  const context = ready();
  const collected = context.holdings ?? new Map<number, number[]>();
  context.holdings = undefined;
  return Object.fromEntries([...collected.entries()].map(([sdsId, flat]) => [String(sdsId), Int32Array.from(flat)]));
}

/** Holdings taken from the SDCs (collection stopped) and not handed out yet, by SDS id. */
let holdingsLeft: Map<number, number[]> | undefined;

/**
 * Stops collecting and hands out the holdings of at most `sdsCountMax` SDS, and how many SDS are
 * left: the runner seeds a few SDS per call, so neither host stops for seconds (at 64 TiB all of
 * them at once were 7.5M records, and the SDS host's heartbeats stopped while it took them).
 */
function takeHoldingsPage(sdsCountMax: number): { holdings: Holdings; left: number } {
  const context = ready();
  if (context.holdings !== undefined) {
    holdingsLeft = context.holdings;
    context.holdings = undefined;
  }
  const holdings: Holdings = {};
  let count = 0;
  for (const [sdsId, flat] of holdingsLeft ?? []) {
    if (count >= sdsCountMax) break;
    holdings[String(sdsId)] = Int32Array.from(flat);
    holdingsLeft!.delete(sdsId);
    count += 1;
  }
  return { holdings, left: holdingsLeft?.size ?? 0 };
}

serveRpc({
  init: (params: SdcHostInit) => {
    prng = new Prng(params.seed);
    shared = {
      mdm: new JsonHttp({ baseUrl: params.mdmUrl, socketsMax: params.socketsMax, timeoutMs: params.requestTimeoutMs }),
      settings: { host: '127.0.0.1', heartbeatMisses: params.heartbeatMisses },
      phase: () => phase,
      holdings: undefined,
    };
    return { pid: process.pid };
  },

  bind: async (params: { names: string[] }) => {
    const context = ready();
    for (const name of params.names) {
      const node = new SimSdc(name, context);
      await node.bind();
      sims.push(node);
    }
    return { bound: sims.length };
  },

  /**
   * Starts every SDC, the i-th after spreadMs × i / n (independent hosts), and resolves once each
   * has registered and asked for a lease for every window of its volumes, or at `deadlineMs`
   * (those not done keep trying in the background, as real SDCs do).
   */
  start: async (params: { joinToken: string; spreadMs: number; collectHoldings: boolean; timeoutMs: number }) => {
    const context = ready();
    if (params.collectHoldings) context.holdings = new Map();
    const startedMs = performance.now();
    let startedCount = 0;
    const all = Promise.all(
      sims.map(async (node, i) => {
        await sleep((params.spreadMs * i) / Math.max(1, sims.length));
        if (await node.start(params.joinToken)) startedCount += 1;
      }),
    );
    const timedOut = await Promise.race([all.then(() => false), sleep(params.timeoutMs).then(() => true)]);
    return {
      started: startedCount,
      failures: timedOut ? [`${sims.length - startedCount} SDC(s) not started within ${params.timeoutMs} ms (still trying)`] : sims.length === startedCount ? [] : [`${sims.length - startedCount} SDC(s) could not read their mappings`],
      seconds: Math.round((performance.now() - startedMs) / 100) / 10,
      volumes: sims.reduce((sum, node) => sum + node.volumeCount, 0),
      unplaced_thin_chunks: sims.reduce((sum, node) => sum + node.unplacedThinChunks(), 0),
    };
  },

  holdings: (params: { sdsCountMax: number }): { holdings: Holdings; left: number } => takeHoldingsPage(params.sdsCountMax),

  /** First writes to thin chunks on every SDC for `durationMs`; the placed chunks come back as holdings. */
  place: async (params: { durationMs: number; concurrencyPerSdc: number; collectHoldings: boolean }) => {
    const context = ready();
    if (params.collectHoldings) context.holdings = new Map();
    const full = { value: false };
    const before = sims.reduce((sum, node) => sum + node.unplacedThinChunks(), 0);
    const startedMs = performance.now();
    const deadlineMs = startedMs + params.durationMs;
    await Promise.all(sims.map((node) => node.placeThin(deadlineMs, params.concurrencyPerSdc, full)));
    const seconds = (performance.now() - startedMs) / 1000;
    const after = sims.reduce((sum, node) => sum + node.unplacedThinChunks(), 0);
    return {
      seconds: Math.round(seconds * 10) / 10,
      placed: before - after,
      pool_full: full.value,
      thin_chunks_left: after,
      holdings: params.collectHoldings ? takeHoldings() : {},
    };
  },

  /** Every SDC whose plans name `sdsId` reports it unreachable, within `jitterMs` of each other. */
  reportUnreachable: async (params: { sdsId: number; jitterMs: number }) => {
    const reporters = sims.filter((node) => node.sdsSeen.has(params.sdsId));
    await Promise.all(
      reporters.map(async (node) => {
        await sleep(prng.int(0, params.jitterMs));
        await node.reportUnreachable(params.sdsId);
      }),
    );
    return { reporters: reporters.length };
  },

  phase: (params: { name: string }): HostPhaseResult<SdcPhaseReport> => {
    const nowMs = performance.now();
    const result = { phase: phaseName, seconds: Math.round((nowMs - phaseStartedMs) / 100) / 10, load: load.take(), report: sdcPhaseReport(phase) };
    phase = new SdcPhaseStats();
    phaseName = params.name;
    phaseStartedMs = nowMs;
    return result;
  },

  stop: () => {
    for (const node of sims) node.stop();
    shared?.mdm.close();
    setImmediate(() => process.exit(0));
    return { stopped: sims.length };
  },
});

process.on('disconnect', () => process.exit(0));
