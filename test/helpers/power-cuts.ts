/**
 * The power-cut workload (issue 10): several NBD connections write, FUA-write and FLUSH a volume
 * at random while SDS lose power at random points — one SDS, or two at once (with three SDS and
 * two copies, that is both replicas of a third of the chunks) — and start again. The fault layer's
 * volatile cache model drops what no completed fdatasync covered (or tears it at 4 KiB).
 *
 * The model: in-flight writes never overlap, so each 4 KiB block has a history of writes in
 * order. A write is durable once it was acknowledged with FUA, or acknowledged before an
 * acknowledged FLUSH was sent, unless a FLUSH sent after its acknowledgement failed first (that
 * FLUSH reported it as possibly lost, once, as fsync does). After the last cut and a recovery, each block must hold the bytes
 * of its last durable write (zeros if none) or of any write issued after it — nothing older,
 * nothing else. Seeded: the same seed replays the cut schedule (which SDS, torn or not, how
 * long down) and each writer's choices; the interleaving of the IO is real time.
 */
import { Prng } from '../../src/common/prng.js';
import { PipelinedNbd } from './nbd-pipeline.js';
import { powerCut, waitWhole, type E2eCluster } from './e2e-cluster.js';
import { waitFor } from './api.js';

export const BLOCK_BYTES = 4096;
const BLOCKS_PER_WRITE_MAX = 8;

export interface PowerCutOptions {
  readonly seed: number;
  readonly cuts: number;
  readonly volume: string;
  readonly volumeBytes: number;
  readonly connections: number;
  readonly inFlightPerConnection: number;
  /** Writing between cuts. */
  readonly writeMsBetweenCuts: number;
  readonly log: (line: string) => void;
}

interface Write {
  readonly id: number;
  readonly firstBlock: number;
  readonly blocks: number;
  readonly fua: boolean;
  /** 'acked' with the event number of its acknowledgement. */
  state: 'inflight' | 'acked' | 'failed';
  ackEvent: number;
  /** Covered by an acknowledged FLUSH. */
  flushed?: boolean;
  /** Covered by a FLUSH that failed: it may be lost, whatever another FLUSH said. */
  flushFailed?: boolean;
}

export interface PowerCutReport {
  seed: number;
  cuts: number;
  doubleCuts: number;
  writes: number;
  acked: number;
  failed: number;
  flushes: number;
  /** FLUSHes that failed (writes they covered were reported as possibly lost). */
  flushesFailed: number;
  durable: number;
  blocksChecked: number;
  bad: string[];
  epochsWentBack: string[];
}

/** A write's bytes: every 4 KiB block tagged with the write id and its block number, the rest seeded. */
export function blockBytes(seed: number, writeId: number, block: number): Buffer {
  const data = new Prng((seed * 2654435761 + writeId * 40503 + block) >>> 0).bytes(BLOCK_BYTES);
  data.writeUInt32BE(writeId, 0);
  data.writeUInt32BE(block, 4);
  return data;
}

export async function runPowerCuts(e2e: E2eCluster, options: PowerCutOptions): Promise<PowerCutReport> {
  const schedule = new Prng(options.seed);
  const blocks = Math.floor(options.volumeBytes / BLOCK_BYTES);
  const history: Write[][] = Array.from({ length: blocks }, () => []);
  /** Per block: index in its history of the last durable write (-1: none, zeros). */
  const durable = new Int32Array(blocks).fill(-1);
  const busy = new Uint8Array(blocks);
  const writes: Write[] = [];
  let event = 0;
  let stop = false;
  const report: PowerCutReport = { seed: options.seed, cuts: 0, doubleCuts: 0, writes: 0, acked: 0, failed: 0, flushes: 0, flushesFailed: 0, durable: 0, blocksChecked: 0, bad: [], epochsWentBack: [] };

  /** Acknowledged writes without FUA that no acknowledged FLUSH covers yet. */
  let notYetDurable: Write[] = [];
  const makeDurable = (write: Write): void => {
    for (let b = write.firstBlock; b < write.firstBlock + write.blocks; b += 1) {
      const index = history[b]!.indexOf(write);
      if (index > durable[b]!) durable[b] = index;
    }
  };

  const connections = await Promise.all(Array.from({ length: options.connections }, () => PipelinedNbd.open(e2e.cluster.spec.sdc.nbd, options.volume)));
  const writer = async (connection: PipelinedNbd, prng: Prng): Promise<void> => {
    while (!stop) {
      if (prng.next() < 0.08) {
        const sentAt = ++event;
        const covered = notYetDurable.filter((write) => write.ackEvent < sentAt);
        const error = await connection.flush();
        report.flushes += 1;
        const done = new Set(covered);
        notYetDurable = notYetDurable.filter((write) => !done.has(write));
        if (error === 0) for (const write of covered) write.flushed = true;
        else {
          // A FLUSH that failed said these writes may be lost; like fsync, it says so once, so no
          // other FLUSH (a later one, or one running beside it) promises them.
          report.flushesFailed += 1;
          for (const write of covered) write.flushFailed = true;
        }
        continue;
      }
      const length = prng.int(1, BLOCKS_PER_WRITE_MAX);
      const first = prng.int(0, blocks - length);
      let free = true;
      for (let b = first; b < first + length && free; b += 1) if (busy[b] !== 0) free = false;
      if (!free) {
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      const write: Write = { id: writes.length + 1, firstBlock: first, blocks: length, fua: prng.next() < 0.2, state: 'inflight', ackEvent: 0 };
      writes.push(write);
      for (let b = first; b < first + length; b += 1) {
        busy[b] = 1;
        history[b]!.push(write);
      }
      const data = Buffer.concat(Array.from({ length }, (_, i) => blockBytes(options.seed, write.id, first + i)));
      const error = await connection.write(first * BLOCK_BYTES, data, write.fua);
      if (error === 0) {
        write.state = 'acked';
        write.ackEvent = ++event;
        if (!write.fua) notYetDurable.push(write);
      } else write.state = 'failed';
      for (let b = first; b < first + length; b += 1) busy[b] = 0;
    }
  };

  const epochsSeen = new Map<number, number>();
  const checkEpochs = async (): Promise<void> => {
    const { chunks } = await e2e.cluster.admin.get<{ chunks: { index: number; epoch: number }[] }>(`/vol/${options.volume}/chunks`);
    for (const chunk of chunks) {
      const before = epochsSeen.get(chunk.index) ?? 0;
      if (chunk.epoch < before) report.epochsWentBack.push(`chunk ${chunk.index}: ${before} -> ${chunk.epoch}`);
      epochsSeen.set(chunk.index, Math.max(before, chunk.epoch));
    }
  };

  const sdsCount = e2e.cluster.spec.sds.length;
  const workers = connections.flatMap((connection, c) =>
    Array.from({ length: options.inFlightPerConnection }, (_, i) => writer(connection, new Prng((options.seed + 7919 * (c * options.inFlightPerConnection + i + 1)) >>> 0))),
  );
  try {
    for (let cut = 0; cut < options.cuts; cut += 1) {
      await new Promise((resolve) => setTimeout(resolve, options.writeMsBetweenCuts * (0.5 + schedule.next())));
      await checkEpochs();
      const double = schedule.next() < 0.35;
      const first = schedule.int(0, sdsCount - 1);
      const victims = double ? [first, (first + schedule.int(1, sdsCount - 1)) % sdsCount] : [first];
      const torn = schedule.next() < 0.5;
      options.log(`cut ${cut + 1}/${options.cuts}: ${victims.map((i) => e2e.cluster.sdsName(i)).join(' + ')}${torn ? ' (torn)' : ''} after ${writes.length} writes`);
      await Promise.all(victims.map((index) => powerCut(e2e, index, torn)));
      report.cuts += 1;
      if (double) report.doubleCuts += 1;
      await new Promise((resolve) => setTimeout(resolve, schedule.int(100, 1500)));
      for (const index of victims) e2e.cluster.restart(e2e.cluster.sdsName(index));
      for (const index of victims) await waitRegistered(e2e.cluster.spec.sds[index]!.mgmt);
    }
    await new Promise((resolve) => setTimeout(resolve, options.writeMsBetweenCuts));
  } finally {
    stop = true;
    await Promise.all(workers);
  }
  await checkEpochs();

  // Recovery: every SDS up, every chunk with its two current replicas again, nothing rebuilding.
  const recovered = await waitWhole(e2e, 180_000, true);
  if (!recovered) throw new Error('the cluster did not recover within 180 s after the last power cut');
  await checkEpochs();

  // Durable: acknowledged with FUA, or covered by an acknowledged FLUSH and by no failed one.
  for (const write of writes) if (write.state === 'acked' && (write.fua || (write.flushed === true && write.flushFailed !== true))) makeDurable(write);

  // Every block: its last durable write, or a write issued after it.
  const reader = connections[0]!;
  for (let first = 0; first < blocks; first += 256) {
    const count = Math.min(256, blocks - first);
    const { error, data } = await reader.read(first * BLOCK_BYTES, count * BLOCK_BYTES);
    if (error !== 0) {
      report.bad.push(`read of blocks ${first}..${first + count - 1} failed with errno ${error}`);
      continue;
    }
    for (let i = 0; i < count; i += 1) {
      const b = first + i;
      const got = data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES);
      const list = history[b]!;
      if (list.length === 0) {
        if (!got.equals(Buffer.alloc(BLOCK_BYTES))) report.bad.push(`block ${b}: never written, reads tag ${got.readUInt32BE(0)}`);
        continue;
      }
      report.blocksChecked += 1;
      const from = durable[b]!;
      const allowed = from < 0 ? [undefined, ...list] : list.slice(from);
      const matches = allowed.some((write) => got.equals(write === undefined ? Buffer.alloc(BLOCK_BYTES) : blockBytes(options.seed, write.id, b)));
      if (!matches) {
        const durableId = from < 0 ? 'none' : String(list[from]!.id);
        report.bad.push(`block ${b}: reads write ${got.readUInt32BE(0)}/${got.readUInt32BE(4)}; last durable write ${durableId}, allowed ${allowed.map((w) => w?.id ?? 0).join(',')}`);
      }
    }
  }
  for (const connection of connections) connection.close();
  report.writes = writes.length;
  report.acked = writes.filter((write) => write.state === 'acked').length;
  report.failed = writes.filter((write) => write.state === 'failed').length;
  report.durable = [...durable].filter((index) => index >= 0).length;
  return report;
}

async function waitRegistered(mgmtPort: number): Promise<void> {
  const ok = await waitFor(
    async () => {
      try {
        const response = await fetch(`http://127.0.0.1:${mgmtPort}/health`, { signal: AbortSignal.timeout(1000) });
        return ((await response.json()) as { registered?: boolean }).registered === true ? true : undefined;
      } catch {
        return undefined;
      }
    },
    60_000,
    100,
  );
  if (ok === undefined) throw new Error(`the SDS on mgmt port ${mgmtPort} did not register again within 60 s`);
}
