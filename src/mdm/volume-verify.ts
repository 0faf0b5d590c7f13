/**
 * `pflex vol verify`: reads every placed chunk of a volume from every replica (PEER_READ under
 * the peer key, which the MDM can derive) and compares them byte for byte. A replica that has no
 * record of a chunk never received a write to it, so it is compared as zeros.
 */
import { createHash } from 'node:crypto';
import type { MdmContext } from './context.js';
import { getRow } from './lookup.js';
import { SdsDataClient } from '../common/sds-client.js';
import { derivePeerKey, Opcode, Status, statusName } from '../common/sds-protocol.js';
import type { PoolRow, VolumeRow } from './rows.js';

const PIECE_BYTES = 1024 * 1024;
const CHUNKS_IN_PARALLEL = 4;
/** A chunk whose epoch or replicas changed under the verify (a rebuild step, a fence) is read again. */
const CHUNK_ATTEMPTS_MAX = 5;
const RETRY_DELAY_MS = 200;

export interface ReplicaDigest {
  sds: string;
  sha256: string | null;
  /** "ok", "never written" (compared as zeros), or why it could not be read. */
  note: string;
}

export interface ChunkMismatch {
  chunk_index: number;
  first_difference_offset_bytes: number | null;
  replicas: ReplicaDigest[];
}

export interface VerifyReport {
  volume: string;
  chunks_checked: number;
  bytes_compared: number;
  mismatches: ChunkMismatch[];
  unreadable: ChunkMismatch[];
  clean: boolean;
  duration_ms: number;
}

interface ReplicaTarget {
  sds: string;
  host: string;
  dataPort: number;
}

export async function verifyVolume(context: MdmContext, volumeRef: string | number): Promise<VerifyReport> {
  const startedAt = Date.now();
  const volume = getRow<VolumeRow>(context.db, 'volume', volumeRef);
  const pool = getRow<PoolRow>(context.db, 'pool', volume.pool_id);
  /** The current replicas and epoch of the volume's chunks (of one chunk, with `only`). */
  const planOf = (only?: number): Map<number, { epoch: number; replicas: ReplicaTarget[] }> => {
    const rows = context.db
      .prepare(
        `SELECT c.chunk_index, c.epoch, s.name AS sds, s.host, s.data_port FROM chunks c JOIN replicas r ON r.chunk_id = c.id
         JOIN sds s ON s.id = r.sds_id WHERE c.volume_id = ? AND (? IS NULL OR c.chunk_index = ?) AND r.state = 'CURRENT' ORDER BY c.chunk_index, s.id`,
      )
      .all(volume.id, only ?? null, only ?? null) as { chunk_index: number; epoch: number; sds: string; host: string; data_port: number }[];
    const plan = new Map<number, { epoch: number; replicas: ReplicaTarget[] }>();
    for (const row of rows) {
      let chunk = plan.get(row.chunk_index);
      if (chunk === undefined) {
        chunk = { epoch: row.epoch, replicas: [] };
        plan.set(row.chunk_index, chunk);
      }
      chunk.replicas.push({ sds: row.sds, host: row.host, dataPort: row.data_port });
    }
    return plan;
  };
  const chunks = planOf();
  const peerKey = derivePeerKey(context.signingKey);
  const clients = new Map<string, SdsDataClient>();
  const clientOf = (target: ReplicaTarget): SdsDataClient => {
    const key = `${target.host}:${target.dataPort}`;
    let client = clients.get(key);
    if (client === undefined) {
      client = new SdsDataClient(target.host, target.dataPort, 10_000);
      clients.set(key, client);
    }
    return client;
  };
  const mismatches: ChunkMismatch[] = [];
  const unreadable: ChunkMismatch[] = [];
  let bytesCompared = 0;
  const chunkBytes = pool.chunk_size_bytes;
  const chunkSize = (index: number): number => Math.min(chunkBytes, volume.size_bytes - index * chunkBytes);

  /** One pass over a chunk; 'again' when a replica answered for another epoch (the chunk changed meanwhile). */
  const verifyOnce = async (index: number, chunk: { epoch: number; replicas: ReplicaTarget[] }, last: boolean): Promise<'done' | 'again'> => {
    const hashes = chunk.replicas.map(() => createHash('sha256'));
    let changed = false;
    const notes = chunk.replicas.map(() => 'ok');
    const failed = chunk.replicas.map(() => false);
    let firstDifference: number | null = null;
    const size = chunkSize(index);
    for (let offset = 0; offset < size; offset += PIECE_BYTES) {
      const length = Math.min(PIECE_BYTES, size - offset);
      const pieces = await Promise.all(
        chunk.replicas.map(async (target, i): Promise<Buffer | undefined> => {
          if (failed[i]) return undefined;
          try {
            const reply = await clientOf(target).request(
              { opcode: Opcode.PEER_READ, flags: 0, tokenId: Buffer.alloc(16), seq: 0n, volumeId: volume.id, chunkIndex: index, epoch: chunk.epoch, offsetBytes: offset, lengthBytes: length },
              undefined,
              peerKey,
            );
            if (reply.status === Status.OK && reply.payload?.length === length) return reply.payload;
            if (reply.status === Status.CHUNK_UNKNOWN) {
              notes[i] = 'never written';
              return Buffer.alloc(length);
            }
            if (reply.status === Status.STALE_EPOCH || reply.status === Status.BUSY) changed = true;
            notes[i] = `refused: ${statusName(reply.status)}`;
          } catch (error) {
            notes[i] = `unreachable: ${(error as Error).message}`;
          }
          failed[i] = true;
          return undefined;
        }),
      );
      const readable = pieces.filter((piece): piece is Buffer => piece !== undefined);
      pieces.forEach((piece, i) => piece !== undefined && hashes[i]!.update(piece));
      if (firstDifference === null && readable.length > 1) {
        for (const other of readable.slice(1)) {
          const differs = readable[0]!.compare(other) !== 0;
          if (differs) {
            let at = 0;
            while (at < length && readable[0]![at] === other[at]) at += 1;
            firstDifference = offset + at;
            break;
          }
        }
      }
      bytesCompared += readable.length > 1 ? length : 0;
    }
    const replicas = chunk.replicas.map((target, i) => ({ sds: target.sds, sha256: failed[i] ? null : hashes[i]!.digest('hex'), note: notes[i]! }));
    if (changed && !last) return 'again';
    if (failed.some(Boolean)) unreadable.push({ chunk_index: index, first_difference_offset_bytes: firstDifference, replicas });
    else if (firstDifference !== null) mismatches.push({ chunk_index: index, first_difference_offset_bytes: firstDifference, replicas });
    return 'done';
  };

  const verifyChunk = async (index: number, first: { epoch: number; replicas: ReplicaTarget[] }): Promise<void> => {
    let chunk: { epoch: number; replicas: ReplicaTarget[] } | undefined = first;
    for (let attempt = 1; chunk !== undefined; attempt += 1) {
      if ((await verifyOnce(index, chunk, attempt >= CHUNK_ATTEMPTS_MAX)) === 'done') return;
      await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS));
      chunk = planOf(index).get(index);
    }
    // Every current replica went while it was being verified: say so, never skip it.
    unreadable.push({ chunk_index: index, first_difference_offset_bytes: null, replicas: [] });
  };

  try {
    const queue = [...chunks.entries()];
    const workers = Array.from({ length: CHUNKS_IN_PARALLEL }, async () => {
      for (let next = queue.shift(); next !== undefined; next = queue.shift()) await verifyChunk(next[0], next[1]);
    });
    await Promise.all(workers);
  } finally {
    for (const client of clients.values()) client.close();
  }
  const report: VerifyReport = {
    volume: volume.name,
    chunks_checked: chunks.size,
    bytes_compared: bytesCompared,
    mismatches: mismatches.sort((a, b) => a.chunk_index - b.chunk_index),
    unreadable: unreadable.sort((a, b) => a.chunk_index - b.chunk_index),
    clean: mismatches.length === 0 && unreadable.length === 0,
    duration_ms: Date.now() - startedAt,
  };
  context.log.info({ volume: volume.name, clean: report.clean, mismatches: mismatches.length, unreadable: unreadable.length }, 'volume verified');
  return report;
}
