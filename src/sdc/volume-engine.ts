/**
 * The SDC's IO engine for one mapped volume (DESIGN §6): requests are cut at chunk boundaries;
 * reads go to one current replica (rotating) and fail over to the next; writes, trims and
 * zeroes go to every replica in parallel and succeed when all did. Overlapping writes are
 * serialized here, so every replica applies them in the same order. FLUSH and FUA reach every
 * replica before the reply. Stale-token answers re-plan and retry.
 *
 * A replica that cannot take a write (device error, no space, no answer) is reported to the MDM,
 * which fences it alone at a new epoch; the write then completes on the survivors, so replicas
 * never differ. The application sees an error only when no replica can take it (and then none
 * did), or no replica can serve a read within the retry budget.
 */
import type { Logger } from '../common/logger.js';
import { RangeLock } from '../common/range-lock.js';
import { Opcode, RequestFlag, Status, statusName } from '../common/sds-protocol.js';
import { SdsConnectionError } from '../common/sds-client.js';
import type { SdsEndpoint, SdsPool } from './sds-pool.js';
import { TokenRefusedError } from './sds-pool.js';
import type { ChunkRoute, VolumeLeases } from './token-leases.js';
import type { PlanReplica } from '../common/io-plan.js';

/** Why a replica failed, as the MDM's /replicas/report-failed takes it. */
export type ReplicaFailureReason = 'IO_ERROR' | 'NO_SPACE' | 'TIMEOUT' | 'UNREACHABLE' | 'BUSY' | 'INTERNAL';

export interface ReplicaFailure {
  volume_id: number;
  chunk_index: number;
  sds_id: number;
  epoch: number;
  reason: ReplicaFailureReason;
  op: 'read' | 'write';
  detail: string;
}

export interface ReplicaFailureOutcome {
  sds_id: number;
  chunk_index: number;
  fenced: boolean;
  epoch: number;
  why: string;
}

/** Reports failed replicas to the MDM; undefined when the MDM could not be asked (it is retried later). */
export type ReplicaFailureReporter = (failures: ReplicaFailure[]) => Promise<ReplicaFailureOutcome[] | undefined>;

/** Replica answers that mean "this replica cannot do it": reported, so the MDM fences it alone. */
const HARD_STATUSES: ReadonlyMap<number, ReplicaFailureReason> = new Map<number, ReplicaFailureReason>([
  [Status.IO_ERROR, 'IO_ERROR'],
  [Status.NO_SPACE, 'NO_SPACE'],
  [Status.INTERNAL, 'INTERNAL'],
  [Status.BUSY, 'BUSY'],
]);
/** A status for "no answer": the connection failed or timed out. */
const NO_ANSWER = -1;

export type IoErrno = 'EIO' | 'ENOSPC' | 'EPERM' | 'EINVAL';

export class VolumeIoError extends Error {
  constructor(
    readonly errno: IoErrno,
    message: string,
  ) {
    super(message);
    this.name = 'VolumeIoError';
  }
}

/** Give up on a piece after this long: well under the kernel NBD client's 30 s timeout. */
export const PIECE_DEADLINE_MS = 20_000;
const RETRY_DELAY_MS = 100;
/** Largest request to one SDS; larger pieces of a chunk are split. */
export const SDS_REQUEST_BYTES_MAX = 4 * 1024 * 1024;

/** Answers after which the plan is re-fetched and the request retried. */
const REPLAN_STATUSES = new Set<number>([
  Status.TOKEN_EXPIRED,
  Status.TOKEN_BAD_SIGNATURE,
  Status.TOKEN_MALFORMED,
  Status.TOKEN_UNKNOWN,
  Status.STALE_EPOCH,
  Status.NOT_A_TARGET,
  Status.CHUNK_OUT_OF_RANGE,
  Status.WRONG_VOLUME,
  Status.OP_NOT_GRANTED,
  Status.BAD_MAC,
  Status.REPLAYED,
  Status.SHUTTING_DOWN,
]);

export interface VolumeInfo {
  readonly id: number;
  /** Name, size and access mode change in place (rename, extend, remap): one engine per volume. */
  name: string;
  sizeBytes: number;
  readonly chunkSizeBytes: number;
  readOnly: boolean;
}

interface Piece {
  chunkIndex: number;
  offsetInChunk: number;
  lengthBytes: number;
  /** Offset of this piece within the request. */
  requestOffset: number;
}

export interface EngineCounters {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  replans: number;
  failovers: number;
  errors: number;
}

export class VolumeEngine {
  private readonly writeOrder = new RangeLock();
  private readRotation = 0;
  readonly counters: EngineCounters = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, replans: 0, failovers: 0, errors: 0 };

  private closed = false;
  /**
   * Chunks with mutations acknowledged (without FUA) since the last FLUSH that covered them, and
   * for each, the replicas that acknowledged them with the generation of their connection then. A
   * FLUSH is acknowledged only when, for each such chunk, a replica that took those writes over a
   * connection that has not broken since (its SDS did not restart, so it still holds them) is
   * now flushed; when every one of them broke (both replicas lost power), the writes may be
   * gone, and the FLUSH fails with EIO instead of promising them.
   */
  private unflushed = new Map<number, Map<string, number>>();
  /** What each FLUSH still running took from `unflushed`: later FLUSHes check it too. */
  private readonly sealed = new Set<Map<number, Map<string, number>>>();
  /**
   * Replicas that failed a write the MDM could not be told of yet (it is away), per chunk, with
   * the epoch of the plan: they may lack a write their peers took, so they serve no read here
   * until the plan moves on (the MDM fenced them once it heard the report).
   */
  private readonly unfenced = new Map<number, { epoch: number; sdsIds: Set<number> }>();

  constructor(
    readonly volume: VolumeInfo,
    private readonly leases: VolumeLeases,
    private readonly pool: SdsPool,
    private readonly log: Logger,
    /** Tells the MDM an SDS did not answer, so it probes and fences it without waiting for heartbeats. */
    private readonly reportUnreachable: (sdsId: number, problem: string) => void = () => undefined,
    /** Tells the MDM replicas failed, so it fences them alone; undefined: the MDM could not be asked. */
    private readonly reportFailures: ReplicaFailureReporter = async () => undefined,
  ) {}

  // ------------------------------------------------------------ the block device interface

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.checkRange(offsetBytes, lengthBytes);
    const pieces = this.pieces(offsetBytes, lengthBytes);
    this.counters.reads += 1;
    this.counters.bytesRead += lengthBytes;
    // Most requests fit one chunk: hand back the SDS's reply bytes without another copy.
    if (pieces.length === 1) return this.readPiece(pieces[0]!, undefined);
    const out = Buffer.allocUnsafe(lengthBytes);
    await Promise.all(pieces.map((piece) => this.readPiece(piece, out)));
    return out;
  }

  async write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void> {
    this.checkWritable(offsetBytes, data.length);
    await this.mutate(offsetBytes, data.length, (piece) => ({
      opcode: Opcode.WRITE,
      flags: fua ? RequestFlag.FUA : 0,
      payload: data.subarray(piece.requestOffset, piece.requestOffset + piece.lengthBytes),
    }));
    this.counters.writes += 1;
    this.counters.bytesWritten += data.length;
  }

  async trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    this.checkWritable(offsetBytes, lengthBytes);
    await this.mutate(offsetBytes, lengthBytes, () => ({ opcode: Opcode.TRIM, flags: fua ? RequestFlag.FUA : 0, payload: undefined }), false);
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options: { fua: boolean; noHole: boolean }): Promise<void> {
    this.checkWritable(offsetBytes, lengthBytes);
    const flags = (options.fua ? RequestFlag.FUA : 0) | (options.noHole ? RequestFlag.NO_HOLE : 0);
    // Unplaced thin chunks are zeros already: nothing to place, nothing to send.
    await this.mutate(offsetBytes, lengthBytes, () => ({ opcode: Opcode.WRITE_ZEROES, flags, payload: undefined }), false);
  }

  /**
   * Durable on every replica of every placed chunk: every SDS holding this volume fdatasyncs. An
   * SDS that does not answer is reported to the MDM; once it is fenced the plan no longer lists
   * it (its replicas are stale and need no flush), so the flush is retried on the new plan.
   */
  async flush(): Promise<void> {
    // What this FLUSH promises: every write acknowledged before it. It takes those (a fresh map
    // collects later writes), and it checks too what FLUSHes still running took: those writes were
    // acknowledged before this FLUSH as well, so every FLUSH that covers a lost write reports it.
    const mine = this.unflushed;
    this.unflushed = new Map();
    this.sealed.add(mine);
    const covered = [...this.sealed];
    let flushed: Set<string>;
    try {
      flushed = await this.flushAll();
    } catch (error) {
      // Not made durable: a later FLUSH must cover these writes again (the oldest generation counts).
      this.sealed.delete(mine);
      for (const [chunk, acks] of mine) {
        const now = this.unflushed.get(chunk);
        if (now === undefined) this.unflushed.set(chunk, acks);
        else for (const [key, generation] of acks) now.set(key, Math.min(generation, now.get(key) ?? generation));
      }
      throw error;
    }
    this.sealed.delete(mine);
    const held = (key: string, generation: number): boolean => flushed.has(key) && this.pool.endpointByKey(key)?.generation === generation;
    const lost = covered.flatMap((map) => [...map.entries()]).filter(([, acks]) => ![...acks.entries()].some(([key, generation]) => held(key, generation)));
    if (lost.length > 0) {
      // Every replica that took these writes lost its connection since (its SDS restarted): the
      // writes may be gone, and no FLUSH can bring them back. Reported once, as fsync does.
      this.counters.errors += 1;
      const chunks = [...new Set(lost.map(([chunk]) => chunk))].sort((a, b) => a - b);
      const message = `flush of ${this.volume.name}: writes to chunk(s) ${chunks.join(',')} may be lost: every replica that took them restarted before they were flushed`;
      this.log.error({ volume: this.volume.name, chunks }, 'FLUSH failed: acknowledged writes may be lost (every replica that took them restarted before they were flushed); reported once, as fsync does');
      throw new VolumeIoError('EIO', message);
    }
  }

  private noteUnflushed(chunkIndex: number, endpoints: readonly SdsEndpoint[]): void {
    if (endpoints.length === 0) return;
    let acks = this.unflushed.get(chunkIndex);
    if (acks === undefined) {
      acks = new Map();
      this.unflushed.set(chunkIndex, acks);
    }
    for (const endpoint of endpoints) {
      const key = `${endpoint.host}:${endpoint.port}`;
      // The oldest generation counts: a write acknowledged before a reconnect may be gone.
      if (!acks.has(key)) acks.set(key, endpoint.generation);
    }
  }

  /** FLUSH to every SDS of the volume's plans, until all answer; returns the "host:port" of those flushed. */
  private async flushAll(): Promise<Set<string>> {
    const deadline = Date.now() + PIECE_DEADLINE_MS;
    let lastProblem = 'no attempt';
    while (Date.now() < deadline) {
      const bySds = new Map<string, ChunkRoute>();
      for (const route of this.leases.cachedRoutes()) {
        if (!route.chunk.placed) continue;
        for (const replica of route.chunk.replicas) {
          const key = `${replica.host}:${replica.data_port}`;
          const known = bySds.get(key);
          if (known === undefined || known.lease.expiresAtMs < route.lease.expiresAtMs) bySds.set(key, route);
        }
      }
      const failed: { key: string; sdsId: number; problem: string; unreachable: boolean; reason: ReplicaFailureReason | undefined }[] = [];
      await Promise.all(
        [...bySds.entries()].map(async ([key, route]) => {
          const replica = route.chunk.replicas.find((r) => `${r.host}:${r.data_port}` === key)!;
          try {
            const reply = await this.pool
              .endpoint(replica.host, replica.data_port, replica.data_socket_path)
              .send(route.lease, { opcode: Opcode.FLUSH, flags: 0, tokenId: route.lease.tokenId, seq: 0n, volumeId: this.volume.id, chunkIndex: route.chunk.index, epoch: route.chunk.epoch, offsetBytes: 0, lengthBytes: 0 }, undefined);
            if (reply.status !== Status.OK) failed.push({ key, sdsId: replica.sds_id, problem: statusName(reply.status), unreachable: false, reason: HARD_STATUSES.get(reply.status) });
          } catch (error) {
            if (!(error instanceof SdsConnectionError) && !(error instanceof TokenRefusedError)) throw error;
            const unreachable = error instanceof SdsConnectionError;
            failed.push({ key, sdsId: replica.sds_id, problem: (error as Error).message, unreachable, reason: unreachable ? noAnswerReason(error) : undefined });
          }
        }),
      );
      if (failed.length === 0) return new Set(bySds.keys());
      lastProblem = failed.map((failure) => `${failure.key}: ${failure.problem}`).join('; ');
      for (const failure of failed) if (failure.unreachable) this.reportUnreachable(failure.sdsId, failure.problem);
      // An SDS that cannot make this volume's writes durable holds no replica of it we can trust:
      // each of its replicas of this volume is fenced alone (the others keep every write).
      const hard = failed.filter((failure) => failure.reason !== undefined);
      if (hard.length > 0) {
        const failures: ReplicaFailure[] = [];
        for (const route of this.leases.cachedRoutes()) {
          if (!route.chunk.placed) continue;
          for (const failure of hard) {
            if (!route.chunk.replicas.some((replica) => replica.sds_id === failure.sdsId)) continue;
            failures.push({ volume_id: this.volume.id, chunk_index: route.chunk.index, sds_id: failure.sdsId, epoch: route.chunk.epoch, reason: failure.reason!, op: 'write', detail: `flush: ${failure.problem}`.slice(0, 300) });
          }
        }
        if (failures.length > 0) await this.reportFailures(failures);
      }
      // Fresh plans for every chunk those SDS hold, then flush again.
      this.counters.replans += 1;
      const failedIds = new Set(failed.map((failure) => failure.sdsId));
      await Promise.all(
        this.leases
          .cachedRoutes()
          .filter((route) => route.chunk.replicas.some((replica) => failedIds.has(replica.sds_id)))
          .map((route) => this.leases.refresh(route.chunk.index, route).catch(() => undefined)),
      );
      await delay(RETRY_DELAY_MS);
    }
    this.counters.errors += 1;
    throw new VolumeIoError('EIO', `flush of ${this.volume.name} failed: ${lastProblem}`);
  }

  /** base:allocation extents at chunk granularity: unplaced thin chunks are holes that read as zeros. */
  async blockStatus(offsetBytes: number, lengthBytes: number): Promise<{ lengthBytes: number; flags: number }[]> {
    this.checkRange(offsetBytes, lengthBytes);
    const extents: { lengthBytes: number; flags: number }[] = [];
    for (const piece of this.pieces(offsetBytes, lengthBytes)) {
      const route = await this.leases.route(piece.chunkIndex);
      const flags = route.chunk.placed ? 0 : 3; // HOLE | ZERO
      const last = extents[extents.length - 1];
      if (last !== undefined && last.flags === flags) last.lengthBytes += piece.lengthBytes;
      else extents.push({ lengthBytes: piece.lengthBytes, flags });
    }
    return extents;
  }

  // ------------------------------------------------------------ internals

  /**
   * The volume's mapping changed (renamed, extended, access mode): the same engine goes on, so
   * connections opened before and after share one write order. Volumes never shrink.
   */
  update(info: { name: string; sizeBytes: number; readOnly: boolean }): void {
    if (info.sizeBytes < this.volume.sizeBytes) throw new Error(`volume ${this.volume.name} cannot shrink`);
    this.volume.name = info.name;
    this.volume.sizeBytes = info.sizeBytes;
    this.volume.readOnly = info.readOnly;
  }

  /** The volume is no longer mapped here: every later request fails (connections still open are told EIO). */
  close(): void {
    this.closed = true;
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    if (this.closed) throw new VolumeIoError('EIO', `volume ${this.volume.name} is no longer mapped to this SDC`);
    if (offsetBytes < 0 || lengthBytes < 0 || offsetBytes + lengthBytes > this.volume.sizeBytes) {
      throw new VolumeIoError('EINVAL', `range ${offsetBytes}+${lengthBytes} is beyond volume ${this.volume.name} (${this.volume.sizeBytes} bytes)`);
    }
  }

  private checkWritable(offsetBytes: number, lengthBytes: number): void {
    if (this.volume.readOnly) throw new VolumeIoError('EPERM', `volume ${this.volume.name} is mapped readOnly`);
    this.checkRange(offsetBytes, lengthBytes);
  }

  private pieces(offsetBytes: number, lengthBytes: number): Piece[] {
    const pieces: Piece[] = [];
    const chunkBytes = this.volume.chunkSizeBytes;
    let offset = offsetBytes;
    const end = offsetBytes + lengthBytes;
    while (offset < end) {
      const chunkIndex = Math.floor(offset / chunkBytes);
      const offsetInChunk = offset - chunkIndex * chunkBytes;
      const length = Math.min(end - offset, chunkBytes - offsetInChunk, SDS_REQUEST_BYTES_MAX);
      pieces.push({ chunkIndex, offsetInChunk, lengthBytes: length, requestOffset: offset - offsetBytes });
      offset += length;
    }
    return pieces;
  }

  /** Reads one piece into `out` at its request offset, or returns its bytes when `out` is undefined. */
  private async readPiece(piece: Piece, out: Buffer | undefined): Promise<Buffer> {
    const deadline = Date.now() + PIECE_DEADLINE_MS;
    let lastProblem = 'no attempt';
    while (Date.now() < deadline) {
      const route = await this.routeOrFail(piece.chunkIndex, deadline);
      if (!route.chunk.placed) {
        if (out === undefined) return Buffer.alloc(piece.lengthBytes);
        out.fill(0, piece.requestOffset, piece.requestOffset + piece.lengthBytes);
        return out;
      }
      const replicas = this.withoutUnfenced(piece.chunkIndex, route, readableReplicas(route.chunk.replicas));
      if (replicas.length === 0) {
        await this.failLost(piece.chunkIndex, route);
        continue;
      }
      const start = this.readRotation++ % replicas.length;
      let replan = false;
      for (let i = 0; i < replicas.length && !replan; i += 1) {
        const replica = replicas[(start + i) % replicas.length]!;
        try {
          const reply = await this.pool.endpoint(replica.host, replica.data_port, replica.data_socket_path).send(
            route.lease,
            { opcode: Opcode.READ, flags: 0, tokenId: route.lease.tokenId, seq: 0n, volumeId: this.volume.id, chunkIndex: piece.chunkIndex, epoch: route.chunk.epoch, offsetBytes: piece.offsetInChunk, lengthBytes: piece.lengthBytes },
            undefined,
          );
          if (reply.status === Status.OK && reply.payload !== undefined && reply.payload.length === piece.lengthBytes) {
            if (out === undefined) return reply.payload;
            reply.payload.copy(out, piece.requestOffset);
            return out;
          }
          lastProblem = `${replica.sds_name}: ${statusName(reply.status)}`;
          if (REPLAN_STATUSES.has(reply.status)) replan = true;
          else {
            this.counters.failovers += 1;
            // A replica that fails a read (not one merely busy being rebuilt) is fenced alone.
            const reason = HARD_STATUSES.get(reply.status);
            if (reason !== undefined && reason !== 'BUSY') void this.reportFailures([this.failure(piece.chunkIndex, route, replica, reason, 'read', lastProblem)]);
          }
        } catch (error) {
          lastProblem = `${replica.sds_name}: ${(error as Error).message}`;
          if (error instanceof TokenRefusedError) replan = true;
          else if (!(error instanceof SdsConnectionError)) throw error;
          else {
            this.reportUnreachable(replica.sds_id, (error as Error).message);
            void this.reportFailures([this.failure(piece.chunkIndex, route, replica, noAnswerReason(error), 'read', lastProblem)]);
          }
          this.counters.failovers += 1;
        }
      }
      this.counters.replans += 1;
      await this.leases.refresh(piece.chunkIndex, route).catch(() => undefined);
      if (!replan) await delay(RETRY_DELAY_MS);
    }
    this.counters.errors += 1;
    throw new VolumeIoError('EIO', `read of chunk ${piece.chunkIndex} of ${this.volume.name} failed: ${lastProblem}`);
  }

  /**
   * Sends a mutating request for every piece to every replica. Holds the byte range so an
   * overlapping write waits: replicas then see overlapping writes in one order.
   */
  private async mutate(
    offsetBytes: number,
    lengthBytes: number,
    build: (piece: Piece) => { opcode: number; flags: number; payload: Buffer | undefined },
    allocate = true,
  ): Promise<void> {
    const release = await this.writeOrder.acquire('volume', offsetBytes, offsetBytes + lengthBytes);
    try {
      // Every piece settles before the write does (or fails): the range stays held and the
      // caller's payload buffer in use until no piece of this write can still be sent.
      const settled = await Promise.allSettled(this.pieces(offsetBytes, lengthBytes).map((piece) => this.mutatePiece(piece, build(piece), allocate)));
      const failure = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected');
      if (failure !== undefined) throw failure.reason;
    } finally {
      release();
    }
  }

  private async mutatePiece(piece: Piece, request: { opcode: number; flags: number; payload: Buffer | undefined }, allocate: boolean): Promise<void> {
    const deadline = Date.now() + PIECE_DEADLINE_MS;
    let lastProblem = 'no attempt';
    while (Date.now() < deadline) {
      let route = await this.routeOrFail(piece.chunkIndex, deadline);
      if (!route.chunk.placed) {
        if (!allocate) return; // trimming or zeroing a never-written thin chunk: it is zeros
        route = await this.leases.allocate(piece.chunkIndex).catch((error: unknown) => {
          const message = (error as Error).message;
          throw new VolumeIoError(/capacity/i.test(message) ? 'ENOSPC' : 'EIO', `cannot place chunk ${piece.chunkIndex}: ${message}`);
        });
      }
      // Every replica, those being rebuilt included: a rebuild target must miss no write.
      const replicas = route.chunk.replicas;
      if (readableReplicas(replicas).length === 0) {
        await this.failLost(piece.chunkIndex, route);
        continue;
      }
      const results = await Promise.all(
        replicas.map(async (replica) => {
          const endpoint = this.pool.endpoint(replica.host, replica.data_port, replica.data_socket_path);
          try {
            const reply = await endpoint.send(
              route.lease,
              {
                opcode: request.opcode,
                flags: request.flags,
                tokenId: route.lease.tokenId,
                seq: 0n, // stamped by send()
                volumeId: this.volume.id,
                chunkIndex: piece.chunkIndex,
                epoch: route.chunk.epoch,
                offsetBytes: piece.offsetInChunk,
                lengthBytes: piece.lengthBytes,
              },
              request.payload,
            );
            return { replica, endpoint, status: reply.status, problem: statusName(reply.status), reason: HARD_STATUSES.get(reply.status) };
          } catch (error) {
            if (!(error instanceof SdsConnectionError) && !(error instanceof TokenRefusedError)) throw error;
            if (error instanceof TokenRefusedError) return { replica, endpoint, status: Status.TOKEN_EXPIRED, problem: error.message, reason: undefined };
            this.reportUnreachable(replica.sds_id, error.message);
            return { replica, endpoint, status: NO_ANSWER, problem: error.message, reason: noAnswerReason(error) };
          }
        }),
      );
      const failed = results.filter((result) => result.status !== Status.OK);
      if (failed.length === 0) {
        // A rebuild target holds the write but is no replica yet (its copy may still be dropped).
        if ((request.flags & RequestFlag.FUA) === 0) this.noteUnflushed(piece.chunkIndex, results.filter((result) => result.replica.rebuilding !== true).map((result) => result.endpoint));
        return;
      }
      lastProblem = failed.map((result) => `${result.replica.sds_name}: ${result.problem}`).join('; ');
      if (failed.some((result) => result.status === Status.BAD_REQUEST)) {
        this.counters.errors += 1;
        throw new VolumeIoError('EIO', `write to chunk ${piece.chunkIndex} of ${this.volume.name} refused as malformed: ${lastProblem}`);
      }
      this.counters.replans += 1;
      const hard = failed.filter((result) => result.reason !== undefined);
      if (hard.length > 0) {
        // Replicas that cannot take the write: the MDM fences each one alone where a peer is
        // current, and the write goes again to the replicas left (rewriting the same bytes on
        // those that took it is harmless: the range is still held).
        const outcomes = await this.reportFailures(
          hard.map((result) => this.failure(piece.chunkIndex, route, result.replica, result.reason!, 'write', `${result.replica.sds_name}: ${result.problem}`)),
        );
        const kept = outcomes === undefined ? hard : hard.filter((result) => !outcomes.some((outcome) => outcome.sds_id === result.replica.sds_id && outcome.fenced));
        if (outcomes === undefined) this.noteUnfenced(piece.chunkIndex, route.chunk.epoch, hard.map((result) => result.replica.sds_id));
        if (kept.length > 0 && kept.every((result) => result.status === Status.NO_SPACE) && outcomes !== undefined) {
          // No replica left that could take it, and none did: a clear ENOSPC, replicas alike.
          this.counters.errors += 1;
          throw new VolumeIoError('ENOSPC', `no space for chunk ${piece.chunkIndex} of ${this.volume.name}: ${lastProblem}`);
        }
        this.log.warn({ volume: this.volume.name, chunk: piece.chunkIndex, problem: lastProblem, fenced: hard.length - kept.length }, 'replica failed a write');
        // A plan asked for before the fence was answered may still list the fenced replica.
        await this.leases.refresh(piece.chunkIndex, route, Date.now()).catch(() => undefined);
        if (kept.length > 0) await delay(RETRY_DELAY_MS);
        continue;
      }
      // Re-plan and send again to every replica: rewriting the same bytes is harmless, and the
      // range is still held, so no other write can slip in between.
      this.log.debug({ volume: this.volume.name, chunk: piece.chunkIndex, problem: lastProblem }, 'write refused; re-planning');
      await this.leases.refresh(piece.chunkIndex, route).catch(() => undefined);
      if (!failed.some((result) => REPLAN_STATUSES.has(result.status))) await delay(RETRY_DELAY_MS);
    }
    this.counters.errors += 1;
    throw new VolumeIoError('EIO', `write to chunk ${piece.chunkIndex} of ${this.volume.name} failed: ${lastProblem}`);
  }

  private noteUnfenced(chunkIndex: number, epoch: number, sdsIds: readonly number[]): void {
    let entry = this.unfenced.get(chunkIndex);
    if (entry === undefined || entry.epoch !== epoch) {
      entry = { epoch, sdsIds: new Set() };
      this.unfenced.set(chunkIndex, entry);
    }
    for (const sdsId of sdsIds) entry.sdsIds.add(sdsId);
  }

  /** The readable replicas less those that failed a write not yet fenced (all of them if none would be left). */
  private withoutUnfenced(chunkIndex: number, route: ChunkRoute, replicas: PlanReplica[]): PlanReplica[] {
    const entry = this.unfenced.get(chunkIndex);
    if (entry === undefined) return replicas;
    if (entry.epoch !== route.chunk.epoch) {
      this.unfenced.delete(chunkIndex); // the plan moved on: the MDM has decided
      return replicas;
    }
    const left = replicas.filter((replica) => !entry.sdsIds.has(replica.sds_id));
    return left.length > 0 ? left : replicas;
  }

  private failure(chunkIndex: number, route: ChunkRoute, replica: PlanReplica, reason: ReplicaFailureReason, op: 'read' | 'write', detail: string): ReplicaFailure {
    return { volume_id: this.volume.id, chunk_index: chunkIndex, sds_id: replica.sds_id, epoch: route.chunk.epoch, reason, op, detail: detail.slice(0, 300) };
  }

  /**
   * The plan says no replica is left (honest loss): ask the MDM once more — a returning SDS may
   * serve the chunk again — and fail with EIO if it is still lost. Never zeros.
   */
  private async failLost(chunkIndex: number, route: ChunkRoute): Promise<void> {
    await this.leases.refresh(chunkIndex, route).catch(() => undefined);
    const fresh = await this.leases.route(chunkIndex);
    if (readableReplicas(fresh.chunk.replicas).length > 0) return;
    this.counters.errors += 1;
    throw new VolumeIoError('EIO', `chunk ${chunkIndex} of ${this.volume.name} has no replica available`);
  }

  private async routeOrFail(chunkIndex: number, deadline: number): Promise<ChunkRoute> {
    for (;;) {
      try {
        return await this.leases.route(chunkIndex);
      } catch (error) {
        if (Date.now() > deadline) throw new VolumeIoError('EIO', `no IO plan for chunk ${chunkIndex}: ${(error as Error).message}`);
        this.log.warn({ volume: this.volume.name, err: (error as Error).message }, 'cannot get an IO plan from the MDM; retrying');
        await delay(500);
      }
    }
  }
}

/** The replicas that may serve reads: all but those still being rebuilt (no allocation when none is). */
function readableReplicas(replicas: PlanReplica[]): PlanReplica[] {
  for (const replica of replicas) if (replica.rebuilding === true) return replicas.filter((r) => r.rebuilding !== true);
  return replicas;
}

/** A request with no answer: timed out (the SDS is slow or stuck) or unreachable. */
function noAnswerReason(error: Error): ReplicaFailureReason {
  return /no reply within/.test(error.message) ? 'TIMEOUT' : 'UNREACHABLE';
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
