/**
 * The SDS control plane (9100+n): orders from the MDM only, authenticated with a credential
 * derived from the signing key (which only the MDM and SDS hold). Install epochs, prepare slots,
 * delete chunks, become a rebuild target and copy a chunk from a peer, attach devices.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import { z, ZodError } from 'zod';
import type { Logger } from '../common/logger.js';
import { PflexError, pflexError } from '../common/errors.js';
import { deriveControlCredential, derivePeerKey, FRAME_PAYLOAD_BYTES_MAX, Opcode, Status, statusName } from '../common/sds-protocol.js';
import { SdsDataClient } from '../common/sds-client.js';
import type { ChunkStore } from './chunk-store.js';
import { faultConfigSchema, powerCutSchema, type Faults } from './fault-config.js';

export const CONTROL_BODY_BYTES_MAX = 4 * 1024 * 1024;
export const CONTROL_CHUNKS_PER_REQUEST_MAX = 10_000;
const COPY_PIECE_BYTES = 1024 * 1024;
const COPY_PIECES_IN_FLIGHT = 4;
/** How long an epoch install waits for writes admitted under an older epoch to finish. */
const DRAIN_TIMEOUT_MS = 4000;
/** A pull of source blocks for a partial write during a rebuild. */
const PULL_TIMEOUT_MS = 8000;

const u32 = z.number().int().min(0).max(0xffffffff);
const chunkRef = z.strictObject({ volume_id: u32, chunk_index: u32 });
const chunkWithEpoch = chunkRef.extend({ pool_id: u32, epoch: u32 });

const epochSchema = z.strictObject({ chunks: z.array(chunkWithEpoch).min(1).max(CONTROL_CHUNKS_PER_REQUEST_MAX) });
const deleteSchema = z.strictObject({
  // epoch: the chunk's epoch at the MDM now. Held at that epoch or newer here: a replica again,
  // kept. Otherwise the data goes and a record at `epoch` stays, refusing older requests.
  chunks: z.array(chunkRef.extend({ epoch: u32.optional() })).min(1).max(CONTROL_CHUNKS_PER_REQUEST_MAX),
});
const listQuerySchema = z.strictObject({ attention: z.enum(['0', '1']).optional() });
const querySchema = z.strictObject({ chunks: z.array(chunkRef).min(1).max(CONTROL_CHUNKS_PER_REQUEST_MAX) });
const resyncedSchema = z.strictObject({ chunks: z.array(chunkRef).min(1).max(CONTROL_CHUNKS_PER_REQUEST_MAX) });
const sourceSchema = z.strictObject({ host: z.string().max(253).regex(/^[A-Za-z0-9.:_-]+$/), data_port: z.number().int().min(1).max(65535) });
const copySchema = chunkWithEpoch.extend({
  chunk_size_bytes: z.number().int().min(4096).max(2 ** 30),
  source: sourceSchema,
});
const rebuildSchema = z.strictObject({
  chunks: z.array(chunkWithEpoch.extend({ source: sourceSchema })).min(1).max(CONTROL_CHUNKS_PER_REQUEST_MAX),
});
const deviceSchema = z.strictObject({
  mdm_device_id: z.number().int().positive(),
  path: z.string().max(1024).regex(/^\/[^\0\n\r]*$/),
  pool_id: u32,
  capacity_bytes: z.number().int().positive(),
  slot_bytes: z.number().int().min(4096).max(2 ** 30),
});

export interface ControlServerDeps {
  readonly store: ChunkStore;
  readonly signingKey: () => Buffer | undefined;
  readonly log: Logger;
  /** Fault injection (tests only, PFLEX_FAULT_INJECTION=1): /debug/faults and /debug/power-cut. */
  readonly faults?: Faults | undefined;
}

function toError(error: unknown): PflexError {
  if (error instanceof PflexError) return error;
  if (error instanceof ZodError) {
    const issue = error.issues[0];
    return pflexError('VALIDATION', `${issue?.path.join('.') || '(body)'}: ${issue?.message ?? 'invalid'}`.slice(0, 300));
  }
  const status = (error as { statusCode?: number }).statusCode;
  if (status === 413) return pflexError('PAYLOAD_TOO_LARGE', 'body too large');
  if (status !== undefined && status < 500) return pflexError('BAD_REQUEST', String((error as Error).message).slice(0, 300));
  return pflexError('INTERNAL', 'internal error; see the SDS log');
}

export function buildControlServer(deps: ControlServerDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    bodyLimit: CONTROL_BODY_BYTES_MAX,
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
  });
  app.removeContentTypeParser('text/plain');
  app.setErrorHandler((error, _request, reply) => {
    const pflex = toError(error);
    if (pflex.httpStatus >= 500) deps.log.error({ err: error }, 'control request failed');
    void reply.status(pflex.httpStatus).send(pflex.toBody());
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(pflexError('NOT_FOUND', `no such endpoint: ${request.method} ${request.url}`).toBody());
  });
  app.addHook('onRequest', async (request) => {
    const key = deps.signingKey();
    if (key === undefined) throw pflexError('UNAVAILABLE', 'this SDS has not registered with the MDM yet');
    const expected = Buffer.from(`Bearer ${deriveControlCredential(key)}`);
    const given = Buffer.from(request.headers.authorization ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw pflexError('UNAUTHORIZED', 'the control plane takes orders from the MDM only');
    }
    const failWith = deps.faults?.controlFailure(request.url.split('?')[0]!);
    if (failWith !== undefined) throw pflexError(failWith >= 500 ? 'UNAVAILABLE' : 'BAD_REQUEST', `fault injection: ${request.url} refused on purpose`);
  });

  /**
   * What this SDS knows of its chunks. `?attention=1`: only those the MDM must look at (write
   * intents, rebuilds, lost devices), a list that follows what is going on, not what is stored.
   */
  app.get('/chunks', async (request) => {
    const query = listQuerySchema.parse(request.query ?? {});
    return { chunks: query.attention === '1' ? deps.store.listChunksNeedingAttention() : deps.store.listChunks() };
  });

  /** What this SDS knows of the chunks named (those it does not know are left out). */
  app.post('/chunks/query', async (request) => {
    const input = querySchema.parse(request.body ?? {});
    const chunks = [];
    for (const chunk of input.chunks) {
      const listing = deps.store.chunkListing(chunk.volume_id, chunk.chunk_index);
      if (listing !== undefined) chunks.push(listing);
    }
    return { chunks };
  });

  /**
   * Installs new epochs, then waits until no write admitted under an older epoch is in flight:
   * when this answers, a copy read of these chunks sees every write the old epoch let in.
   */
  app.post('/chunks/epoch', async (request) => {
    const input = epochSchema.parse(request.body ?? {});
    // Epochs only grow: one this SDS holds newer stays (and is reported back), never goes back.
    const older = deps.store.setEpochs(input.chunks);
    if (older.length > 0) deps.log.warn({ chunks: older.length, first: older[0] }, 'epoch install older than the epoch held: kept the newer one');
    const drained = await Promise.all(
      input.chunks.map((chunk) => deps.store.drainWritesBefore(chunk.volume_id, chunk.chunk_index, chunk.epoch, DRAIN_TIMEOUT_MS)),
    );
    const undrained = drained.filter((ok) => !ok).length;
    if (undrained > 0) throw pflexError('UNAVAILABLE', `${undrained} chunk(s) still have writes of an older epoch in flight`);
    return { updated: input.chunks.length - older.length, newer_held: older };
  });

  /**
   * Makes this SDS a rebuild target: each chunk at its new epoch, every block not final, partial
   * client writes pulling their blocks from the chunk's source. The copy (/chunks/copy) follows.
   */
  app.post('/chunks/rebuild', async (request) => {
    const input = rebuildSchema.parse(request.body ?? {});
    const peerKey = derivePeerKey(deps.signingKey()!);
    for (const chunk of input.chunks) {
      const client = new SdsDataClient(chunk.source.host, chunk.source.data_port, PULL_TIMEOUT_MS);
      const pull = async (offsetBytes: number, lengthBytes: number): Promise<Buffer> => {
        const epoch = deps.store.epochOf(chunk.volume_id, chunk.chunk_index) ?? chunk.epoch;
        const reply = await client.request(peerReadFields(chunk.volume_id, chunk.chunk_index, epoch, offsetBytes, lengthBytes), undefined, peerKey);
        if (reply.status !== Status.OK || reply.payload?.length !== lengthBytes) {
          throw new Error(`pull from ${chunk.source.host}:${chunk.source.data_port} refused: ${statusName(reply.status)}`);
        }
        return reply.payload;
      };
      await deps.store.beginRebuild(chunk.volume_id, chunk.chunk_index, chunk.pool_id, chunk.epoch, pull, () => client.close());
    }
    return { rebuilding: input.chunks.length };
  });

  app.post('/chunks/assign', async (request) => {
    const input = epochSchema.parse(request.body ?? {});
    for (const chunk of input.chunks) {
      deps.store.setEpoch(chunk.volume_id, chunk.chunk_index, chunk.pool_id, chunk.epoch);
      await deps.store.prepareSlot(chunk.volume_id, chunk.chunk_index);
    }
    return { assigned: input.chunks.length };
  });

  app.post('/chunks/delete', async (request) => {
    const input = deleteSchema.parse(request.body ?? {});
    let deleted = 0;
    for (const chunk of input.chunks) {
      const epoch = deps.store.epochOf(chunk.volume_id, chunk.chunk_index);
      if (chunk.epoch !== undefined && epoch !== undefined && epoch >= chunk.epoch) continue;
      if (deps.store.deleteChunk(chunk.volume_id, chunk.chunk_index, chunk.epoch)) deleted += 1;
    }
    return { deleted };
  });

  /**
   * Copies a chunk this SDS is rebuilding from a peer replica (PEER_READ), writing only blocks no
   * client write has made final, then ends the rebuild: the replica may serve once this answers.
   */
  app.post('/chunks/copy', async (request) => {
    const input = copySchema.parse(request.body ?? {});
    if (!deps.store.isRebuilding(input.volume_id, input.chunk_index)) {
      throw pflexError('CONFLICT', `chunk ${input.volume_id}:${input.chunk_index} is not being rebuilt here`);
    }
    if (deps.store.epochOf(input.volume_id, input.chunk_index) !== input.epoch) {
      throw pflexError('CONFLICT', `chunk ${input.volume_id}:${input.chunk_index} is not at epoch ${input.epoch} here`);
    }
    const peerKey = derivePeerKey(deps.signingKey()!);
    const client = new SdsDataClient(input.source.host, input.source.data_port);
    let copied = 0;
    let written = 0;
    try {
      const piece = Math.min(COPY_PIECE_BYTES, FRAME_PAYLOAD_BYTES_MAX, input.chunk_size_bytes);
      const offsets: number[] = [];
      for (let offset = 0; offset < input.chunk_size_bytes; offset += piece) offsets.push(offset);
      // A few pieces in flight at once: the source reads while this SDS writes.
      const copyPiece = async (offset: number): Promise<void> => {
        const reply = await client.request(peerReadFields(input.volume_id, input.chunk_index, input.epoch, offset, piece), undefined, peerKey);
        if (reply.status !== Status.OK || reply.payload === undefined) {
          throw pflexError('CONFLICT', `peer ${input.source.host}:${input.source.data_port} refused: ${statusName(reply.status)}`);
        }
        written += await deps.store.copyIn(input.volume_id, input.chunk_index, offset, reply.payload);
        copied += reply.payload.length;
      };
      for (let first = 0; first < offsets.length; first += COPY_PIECES_IN_FLIGHT) {
        await Promise.all(offsets.slice(first, first + COPY_PIECES_IN_FLIGHT).map(copyPiece));
      }
    } finally {
      client.close();
    }
    if (!(await deps.store.finishRebuild(input.volume_id, input.chunk_index))) {
      throw pflexError('CONFLICT', `the rebuild of chunk ${input.volume_id}:${input.chunk_index} was cancelled or is incomplete`);
    }
    return { copied_bytes: copied, written_bytes: written };
  });

  /** The MDM resynced these chunks: their crash-time write intents are cleared. */
  app.post('/chunks/resynced', async (request) => {
    const input = resyncedSchema.parse(request.body ?? {});
    return { cleared: deps.store.clearResynced(input.chunks) };
  });

  if (deps.faults !== undefined) registerFaultRoutes(app, deps.faults, deps.store, deps.log);

  app.post('/devices/add', async (request) => {
    const input = deviceSchema.parse(request.body ?? {});
    deps.store.attachDevice({
      mdmDeviceId: input.mdm_device_id,
      path: input.path,
      poolId: input.pool_id,
      capacityBytes: input.capacity_bytes,
      slotBytes: input.slot_bytes,
    });
    return { devices: deps.store.deviceReport() };
  });

  return app;
}

/**
 * Fault injection (tests only): the live config, and a power cut that leaves the devices as a
 * volatile cache would after losing power, then kills this process as a cut would.
 */
function registerFaultRoutes(app: FastifyInstance, faults: Faults, store: ChunkStore, log: Logger): void {
  app.get('/debug/faults', async () => ({ config: faults.config, counters: faults.counters }));
  app.post('/debug/faults', async (request) => {
    const config = faultConfigSchema.parse(request.body ?? {});
    faults.set(config);
    log.warn({ config }, 'fault injection: new fault config');
    return { config: faults.config };
  });
  app.post('/debug/power-cut', async (request) => {
    const input = powerCutSchema.parse(request.body ?? {});
    const report = store.powerCut(input.torn);
    log.warn({ report, torn: input.torn }, 'fault injection: power cut');
    // Nothing after this may reach a device: the process dies here, as the machine would.
    process.kill(process.pid, 'SIGKILL');
    return { report };
  });
}

function peerReadFields(volumeId: number, chunkIndex: number, epoch: number, offsetBytes: number, lengthBytes: number) {
  return { opcode: Opcode.PEER_READ, flags: 0, tokenId: Buffer.alloc(16), seq: 0n, volumeId, chunkIndex, epoch, offsetBytes, lengthBytes };
}
