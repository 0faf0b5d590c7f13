/**
 * The token authority (DESIGN §4): answers an SDC's authorize request with the IO plan of a
 * chunk range, a signed token and the token's session key. Thin chunks are placed here, on the
 * first authorization that grants WRITE.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { MdmContext } from './context.js';
import { pflexError } from '../common/errors.js';
import { deriveSessionKey, signToken, TOKEN_CHUNKS_MAX, TokenOp, TOKEN_TARGETS_PER_CHUNK_MAX } from '../common/io-token.js';
import { getRow } from './lookup.js';
import type { LeaseGrant, PlanChunk, PlanReplica } from '../common/io-plan.js';
import { chunkCountOf, ensureChunksPlaced, mappingOf } from './volumes.js';
import type { PoolRow, SdcRow, VolumeRow } from './rows.js';

export const OPERATION_NAMES = ['read', 'write', 'trim', 'flush'] as const;
export type OperationName = (typeof OPERATION_NAMES)[number];
export const OPERATION_BITS: Record<OperationName, number> = {
  read: TokenOp.READ,
  write: TokenOp.WRITE,
  trim: TokenOp.TRIM,
  flush: TokenOp.FLUSH,
};

export const authorizeSchema = z.strictObject({
  operations: z.array(z.enum(OPERATION_NAMES)).min(1).max(OPERATION_NAMES.length),
  chunk_first: z.number().int().min(0).max(0xffffffff),
  chunk_count: z.number().int().min(1).max(TOKEN_CHUNKS_MAX),
  /**
   * Place the range's unplaced chunks (thin volumes) before planning. Needs `write`. Without it a
   * write token covers placed chunks only, so an SDC can hold one token for a whole volume and
   * ask for placement of just the chunks a write touches.
   */
  allocate: z.boolean().default(false),
  /** Only for admin callers (tests, tools): the SDC the token is for. An SDC node is itself. */
  sdc: z.union([z.number().int().positive(), z.string().max(64)]).optional(),
});

export type { PlanChunk, PlanReplica };

export interface Authorization extends LeaseGrant {
  volume: { id: number; name: string; pool_id: number; size_bytes: number; chunk_size_bytes: number; chunk_count: number };
  sdc_id: number;
  access_mode: string;
  operations: string[];
  chunk_first: number;
  chunk_count: number;
  chunks: PlanChunk[];
}

/** An authorization and what its plan read: the SDS holding a replica of its chunks (lease-renewal.ts checks them). */
export interface AuthorizeResult {
  readonly answer: Authorization;
  readonly planSdsIds: readonly number[];
}

export function authorize(
  context: MdmContext,
  volumeRef: string | number,
  sdcRef: string | number,
  input: z.infer<typeof authorizeSchema>,
  nowMs = Date.now(),
): AuthorizeResult {
  const { db } = context;
  const operations = [...new Set(input.operations)].sort();
  return db.transaction(() => {
    const volume = getRow<VolumeRow>(db, 'volume', volumeRef);
    const sdc = getRow<SdcRow>(db, 'sdc', sdcRef);
    const mapping = mappingOf(db, volume.id, sdc.id);
    if (mapping === undefined) {
      throw pflexError('FORBIDDEN', `volume ${volume.name} is not mapped to SDC ${sdc.name}`);
    }
    const mutating = operations.some((op) => op === 'write' || op === 'trim');
    if (mutating && mapping.access_mode === 'readOnly') {
      throw pflexError('FORBIDDEN', `volume ${volume.name} is mapped readOnly to SDC ${sdc.name}`);
    }
    const pool = getRow<PoolRow>(db, 'pool', volume.pool_id);
    const volumeChunkCount = chunkCountOf(volume.size_bytes, pool.chunk_size_bytes);
    if (input.chunk_first + input.chunk_count > volumeChunkCount) {
      throw pflexError(
        'RANGE',
        `chunks ${input.chunk_first}..${input.chunk_first + input.chunk_count - 1} are beyond volume ${volume.name}, ` +
          `which has ${volumeChunkCount} chunks`,
        { chunk_count: volumeChunkCount },
      );
    }
    if (input.allocate) {
      if (!operations.includes('write')) throw pflexError('VALIDATION', 'allocate needs the write operation', { field: 'allocate' });
      ensureChunksPlaced(db, volume, input.chunk_first, input.chunk_count);
    }
    const { chunks, sdsIds } = planChunks(context, volume, input.chunk_first, input.chunk_count);
    const tokenId = randomBytes(16);
    const expiresAtMs = nowMs + context.settings.tokenTtlMs;
    const token = signToken(
      {
        tokenId,
        operations: operations.reduce((bits, op) => bits | OPERATION_BITS[op], 0),
        volumeId: volume.id,
        sdcId: sdc.id,
        issuedAtMs: nowMs,
        expiresAtMs,
        chunkFirst: input.chunk_first,
        poolId: pool.id,
        chunkSizeBytes: pool.chunk_size_bytes,
        chunks: chunks.map((chunk) => ({ epoch: chunk.epoch, targetSdsIds: chunk.replicas.map((r) => r.sds_id) })),
      },
      context.signingKey,
    );
    const answer: Authorization = {
      token: token.toString('base64'),
      token_id: tokenId.toString('hex'),
      session_key: deriveSessionKey(context.signingKey, tokenId).toString('base64'),
      issued_at: new Date(nowMs).toISOString(),
      expires_at: new Date(expiresAtMs).toISOString(),
      ttl_ms: context.settings.tokenTtlMs,
      volume: {
        id: volume.id,
        name: volume.name,
        pool_id: pool.id,
        size_bytes: volume.size_bytes,
        chunk_size_bytes: pool.chunk_size_bytes,
        chunk_count: volumeChunkCount,
      },
      sdc_id: sdc.id,
      access_mode: mapping.access_mode,
      operations,
      chunk_first: input.chunk_first,
      chunk_count: input.chunk_count,
      chunks,
    };
    return { answer, planSdsIds: sdsIds };
  })();
}

/** The plan of a chunk range, and every SDS holding a replica of its chunks (whatever their state: an SDS's state decides whether its replica is in the plan). */
function planChunks(context: MdmContext, volume: VolumeRow, chunkFirst: number, chunkCount: number): { chunks: PlanChunk[]; sdsIds: number[] } {
  const rows = context.db
    .prepare(
      `SELECT c.chunk_index, c.epoch, r.sds_id, s.name AS sds_name, s.host, s.data_port, s.data_socket_path, s.state AS sds_state, r.state AS replica_state
       FROM chunks c LEFT JOIN replicas r ON r.chunk_id = c.id LEFT JOIN sds s ON s.id = r.sds_id
       WHERE c.volume_id = ? AND c.chunk_index >= ? AND c.chunk_index < ?
       ORDER BY c.chunk_index, r.sds_id`,
    )
    .all(volume.id, chunkFirst, chunkFirst + chunkCount) as {
    chunk_index: number;
    epoch: number;
    sds_id: number | null;
    sds_name: string | null;
    host: string | null;
    data_port: number | null;
    data_socket_path: string | null;
    sds_state: string | null;
    replica_state: string | null;
  }[];
  const byIndex = new Map<number, PlanChunk>();
  const sdsIds = new Set<number>();
  for (const row of rows) if (row.sds_id !== null) sdsIds.add(row.sds_id);
  /** Chunks with a current replica on an SDS that is not DOWN. */
  const livePeer = new Map<number, boolean>();
  for (const row of rows) if (row.replica_state === 'CURRENT' && row.sds_state !== 'DOWN') livePeer.set(row.chunk_index, true);
  for (const row of rows) {
    let chunk = byIndex.get(row.chunk_index);
    if (chunk === undefined) {
      chunk = { index: row.chunk_index, placed: true, epoch: row.epoch, replicas: [] };
      byIndex.set(row.chunk_index, chunk);
    }
    // Current replicas on reachable SDS serve IO; a replica being rebuilt takes every write (so
    // the copy never misses one) but serves no read. Stale ones wait for resync.
    if (row.sds_id === null) continue;
    if (row.replica_state !== 'CURRENT' && row.replica_state !== 'REBUILDING') continue;
    // A current replica on an SDS just marked DOWN stays in the plan until it is fenced: a write
    // its peers took without it must fail on it first (and get it fenced at a new epoch), or it
    // could return clean without that write. The last current replica is left out instead: its
    // chunk fails honestly at once.
    if (row.sds_state === 'DOWN' && !(row.replica_state === 'CURRENT' && livePeer.get(row.chunk_index) === true)) continue;
    if (chunk.replicas.length >= TOKEN_TARGETS_PER_CHUNK_MAX) continue;
    const replica: PlanReplica = { sds_id: row.sds_id, sds_name: row.sds_name!, host: row.host!, data_port: row.data_port! };
    if (row.data_socket_path !== null) replica.data_socket_path = row.data_socket_path;
    if (row.replica_state === 'REBUILDING') replica.rebuilding = true;
    chunk.replicas.push(replica);
  }
  const chunks: PlanChunk[] = [];
  for (let index = chunkFirst; index < chunkFirst + chunkCount; index += 1) {
    chunks.push(byIndex.get(index) ?? { index, placed: false, epoch: 0, replicas: [] });
  }
  return { chunks, sdsIds: [...sdsIds].sort((a, b) => a - b) };
}

// ---------------------------------------------------------------- transaction acknowledgements

export const TX_ACKS_PER_BATCH_MAX = 10_000;

export const txAckSchema = z.strictObject({
  acks: z
    .array(
      z.strictObject({
        token_id: z.string().regex(/^[0-9a-f]{32}$/),
        volume_id: z.number().int().positive(),
        chunk_index: z.number().int().min(0).max(0xffffffff),
        operation: z.enum(['read', 'write', 'trim', 'write_zeroes']),
        requests: z.number().int().min(1).max(1_000_000_000),
        bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
      }),
    )
    .max(TX_ACKS_PER_BATCH_MAX),
});
