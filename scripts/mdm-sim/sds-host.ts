/**
 * A process hosting many simulated SDS (sim-sds.ts), each with its own ports on 127.0.0.1,
 * driven by the benchmark over IPC (ipc.ts). It exits when the benchmark goes away.
 */
import { Prng } from '../../src/common/prng.js';
import { serveRpc } from './ipc.js';
import { JsonHttp, forEachLimited, errorCode } from './http-json.js';
import { HostLoadMeter, type HostPhaseResult } from './host-load.js';
import { SdsPhaseStats, SimSds, copyBytesPerSOf, sdsPhaseReport, type SdsPhaseReport, type SimSdsShared } from './sim-sds.js';
import { TimeWeightedGauge } from './stats.js';

export interface SdsHostInit {
  readonly mdmUrl: string;
  readonly seed: number;
  readonly socketsMax: number;
  readonly requestTimeoutMs: number;
  readonly heartbeatMisses: number;
  readonly copyMbps: number;
  readonly txAckChunksPerS: number;
}

export interface SdsPorts {
  readonly name: string;
  readonly data: number;
  readonly control: number;
  readonly mgmt: number;
}

let shared: SimSdsShared | undefined;
let prng = new Prng(1);
const sims = new Map<string, SimSds>();
let phaseName = 'start';
let phaseStartedMs = performance.now();
let phase = new SdsPhaseStats();
const copies = new TimeWeightedGauge();
const load = new HostLoadMeter();

function ready(): SimSdsShared {
  if (shared === undefined) throw new Error('sds-host: init first');
  return shared;
}

function sim(name: string): SimSds {
  const found = sims.get(name);
  if (found === undefined) throw new Error(`sds-host: no simulated SDS named ${name}`);
  return found;
}

serveRpc({
  init: (params: SdsHostInit) => {
    prng = new Prng(params.seed);
    shared = {
      mdm: new JsonHttp({ baseUrl: params.mdmUrl, socketsMax: params.socketsMax, timeoutMs: params.requestTimeoutMs }),
      settings: {
        host: '127.0.0.1',
        requestTimeoutMs: params.requestTimeoutMs,
        heartbeatMisses: params.heartbeatMisses,
        copyBytesPerS: copyBytesPerSOf(params.copyMbps),
        txAckChunksPerS: params.txAckChunksPerS,
      },
      phase: () => phase,
      copiesInFlight: copies,
      byDataPort: new Map(),
    };
    return { pid: process.pid };
  },

  bind: async (params: { names: string[] }): Promise<SdsPorts[]> => {
    const context = ready();
    const ports: SdsPorts[] = [];
    for (const name of params.names) {
      const node = new SimSds(name, context, prng.int(1, 2 ** 31 - 1));
      sims.set(name, node);
      ports.push({ name, ...(await node.bind()) });
    }
    return ports;
  },

  register: async (params: { joinToken: string; concurrency: number }) => {
    const failures: string[] = [];
    await forEachLimited([...sims.values()], params.concurrency, async (node) => {
      try {
        await node.register(params.joinToken);
      } catch (error) {
        failures.push(`${node.name}: ${errorCode(error)} ${(error as Error).message}`.slice(0, 300));
      }
    });
    return { registered: sims.size - failures.length, failures: failures.slice(0, 10), sds_ids: Object.fromEntries([...sims.values()].map((node) => [node.name, node.sdsId])) };
  },

  start: (params: { heartbeatIntervalMs: number }) => {
    for (const node of sims.values()) node.start(prng.int(0, params.heartbeatIntervalMs), prng.int(0, 1000));
    return { started: sims.size };
  },

  seed: (params: { byName: Record<string, Int32Array> }) => {
    let chunks = 0;
    for (const [name, flat] of Object.entries(params.byName)) chunks += sim(name).seed(flat);
    return { chunks };
  },

  phase: (params: { name: string }): HostPhaseResult<SdsPhaseReport> => {
    const nowMs = performance.now();
    const result = { phase: phaseName, seconds: Math.round((nowMs - phaseStartedMs) / 100) / 10, load: load.take(), report: sdsPhaseReport(phase, copies.snapshot(nowMs)) };
    phase = new SdsPhaseStats();
    phaseName = params.name;
    phaseStartedMs = nowMs;
    copies.reset(nowMs);
    return result;
  },

  copies: () => ({ in_flight: copies.current, ...copies.snapshot() }),

  chunkCounts: () => Object.fromEntries([...sims.values()].map((node) => [node.name, node.chunkCount])),

  fail: async (params: { name: string }) => {
    const node = sim(params.name);
    const failedAtMs = Date.now();
    await node.fail();
    return { failed_at_ms: failedAtMs, closed_at_ms: Date.now() };
  },

  stop: async () => {
    await Promise.all([...sims.values()].map((node) => node.stop()));
    shared?.mdm.close();
    setImmediate(() => process.exit(0));
    return { stopped: sims.size };
  },
});

// Never outlive the benchmark.
process.on('disconnect', () => process.exit(0));
