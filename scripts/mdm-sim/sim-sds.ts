/**
 * A simulated SDS: the real SDS's conversation with the MDM, without devices or data.
 *
 *   - registration (POST /discovery/register with the join token; the answer's signing key
 *     gives the control credential the MDM sends), then heartbeats on the interval the MDM gives,
 *     each scheduled after the previous answer (src/sds/sds-service.ts), with the real body shape;
 *   - transaction acks (POST /io/tx/ack) once a second for chunks it holds (src/sds/tx-acks.ts),
 *     at a set number of chunks per second, as if clients wrote to them;
 *   - the control plane the MDM calls (docs/PROTOCOL.md §6, src/sds/control-server.ts), checked
 *     with the control credential, on in-memory chunk records: GET /chunks (and ?attention=1),
 *     POST /chunks/query, /chunks/epoch, /chunks/assign, /chunks/delete, /chunks/resynced,
 *     /chunks/rebuild, /chunks/copy, /devices/add.
 *     A copy takes chunk_size / copy rate on the target (writes) and on the source (reads), each
 *     SDS doing one copy write and one copy read at a time (its device bandwidth);
 *   - a data port that answers PING (sim-data-port.ts);
 *   - fail(): heartbeats and acks stop, every port closes, open connections drop.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { deriveControlCredential } from '../../src/common/sds-protocol.js';
import { Prng } from '../../src/common/prng.js';
import type { ChunkListing } from '../../src/common/chunk-listing.js';
import { heartbeatTimeoutMs } from '../../src/common/node-link.js';
import { SimDataPort } from './sim-data-port.js';
import { errorCode, JsonHttpError, type JsonHttp } from './http-json.js';
import { classifyGap, Counters, Samples, SampleSets, TimeWeightedGauge, type Summary } from './stats.js';

export const CONTROL_BODY_BYTES_MAX = 4 * 1024 * 1024;
export const CONTROL_CHUNKS_PER_REQUEST_MAX = 10_000;
/** Connections each simulated node keeps to the MDM. */
const SDS_MDM_SOCKETS_MAX = 4;
const TX_ACK_INTERVAL_MS = 1000;
const BYTES_PER_MB = 1_000_000;
const HEARTBEAT_LATE_FACTOR = 1.5;

export interface SimSdsSettings {
  readonly host: string;
  readonly requestTimeoutMs: number;
  readonly heartbeatMisses: number;
  readonly copyBytesPerS: number;
  readonly txAckChunksPerS: number;
}

/** What one phase of the benchmark saw from the SDS side. */
export class SdsPhaseStats {
  readonly registrationMs = new Samples(3);
  readonly registrationErrors = new Counters();
  readonly heartbeatRttMs = new Samples(5);
  readonly heartbeatGapMs = new Samples(7);
  heartbeatLate = 0;
  heartbeatMissed = 0;
  readonly heartbeatErrors = new Counters();
  readonly ackRttMs = new Samples(9);
  ackBatches = 0;
  ackTicksSkipped = 0;
  acksAccepted = 0;
  acksIgnored = 0;
  readonly ackErrors = new Counters();
  readonly controlCalls = new Counters();
  readonly controlErrors = new Counters();
  readonly controlMs = new SampleSets(13);
  listings = 0;
  listingChunksMax = 0;
  listingBytesMax = 0;
  copies = 0;
  copiesFailed = 0;
  readonly copyMs = new Samples(17);
  readonly copyQueueMs = new Samples(19);
  readonly copyTargets = new Set<string>();
  readonly copySources = new Set<number>();
  readonly copyPeakPerSds = new Map<string, number>();
}

interface ChunkState {
  poolId: number;
  epoch: number;
  writtenEpoch: number;
  rebuilding: boolean;
  stored: boolean;
}

interface DeviceAssignment {
  mdm_device_id: number;
  path: string;
  pool_id: number;
  capacity_bytes: number;
  slot_bytes: number;
}

interface Registration {
  credential: string;
  sds_id: number;
  signing_key: string;
  heartbeat_interval_ms: number;
  devices?: DeviceAssignment[];
  stale_epochs?: { volume_id: number; chunk_index: number; pool_id: number; epoch: number }[];
}

class ControlError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function chunkKey(volumeId: number, chunkIndex: number): number {
  return volumeId * 4294967296 + chunkIndex;
}

function listingOf(key: number, state: ChunkState): ChunkListing {
  return {
    volume_id: Math.floor(key / 4294967296),
    chunk_index: key % 4294967296,
    pool_id: state.poolId,
    epoch: state.epoch,
    written_epoch: state.writtenEpoch,
    rebuilding: state.rebuilding,
    stored: state.stored,
    dirty: false,
    needs_resync: false,
    lost: false,
  };
}

function u32(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new ControlError(400, 'PFLEX_ERR_VALIDATION', `${field}: must be an integer in 0..4294967295`);
  }
  return value;
}

function chunkList(body: unknown): Record<string, unknown>[] {
  const chunks = (body as { chunks?: unknown } | undefined)?.chunks;
  if (!Array.isArray(chunks) || chunks.length < 1 || chunks.length > CONTROL_CHUNKS_PER_REQUEST_MAX) {
    throw new ControlError(400, 'PFLEX_ERR_VALIDATION', `chunks: must be an array of 1..${CONTROL_CHUNKS_PER_REQUEST_MAX}`);
  }
  return chunks as Record<string, unknown>[];
}

export interface SimSdsShared {
  readonly mdm: JsonHttp;
  readonly settings: SimSdsSettings;
  readonly phase: () => SdsPhaseStats;
  /** Copies in flight on every SDS of this process. */
  readonly copiesInFlight: TimeWeightedGauge;
  /** Simulated SDS of this process by data port: a rebuild source that failed refuses copies. */
  readonly byDataPort: Map<number, SimSds>;
}

export class SimSds {
  readonly ports = { data: 0, control: 0, mgmt: 0 };
  sdsId = 0;
  failed = false;
  private credential: string | undefined;
  private expectedAuthorization: string | undefined;
  private heartbeatIntervalMs = 2000;
  private devices: DeviceAssignment[] = [];
  private readonly chunks = new Map<number, ChunkState>();
  /** Chunks written here (seeded, copied in, assigned): acks name them. */
  private readonly heldKeys: number[] = [];
  private readonly data = new SimDataPort();
  private control: Server | undefined;
  private mgmt: Server | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  private lastHeartbeatMs: number | undefined;
  private copiesHere = 0;
  private ackSending = false;
  /** When this SDS's device is free again for copy writes (as a target) and copy reads (as a source). */
  private copyWritesBusyUntilMs = 0;
  private copyReadsBusyUntilMs = 0;
  private readonly prng: Prng;
  private readonly incarnation: string;

  /** This node's own connections to the MDM (a real node's pool is its own). */
  private readonly mdm: JsonHttp;

  constructor(
    readonly name: string,
    private readonly shared: SimSdsShared,
    seed: number,
  ) {
    this.mdm = shared.mdm.ownConnections(SDS_MDM_SOCKETS_MAX);
    this.prng = new Prng(seed);
    this.incarnation = this.prng.bytes(16).toString('hex');
  }

  async bind(): Promise<{ data: number; control: number; mgmt: number }> {
    const host = this.shared.settings.host;
    this.ports.data = await this.data.listen(host);
    this.control = createServer((request, response) => void this.serveControl(request, response));
    this.control.keepAliveTimeout = 60_000;
    this.ports.control = await listen(this.control, host);
    this.mgmt = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ status: 'ok', role: 'sds', simulated: true }));
    });
    this.ports.mgmt = await listen(this.mgmt, host);
    this.shared.byDataPort.set(this.ports.data, this);
    return { ...this.ports };
  }

  /** Registers with the join token (first start), as `pflex sds` does. */
  async register(joinToken: string): Promise<void> {
    const startedMs = performance.now();
    try {
      const answer = await this.mdm.post<Registration>('/discovery/register', {
        join_token: joinToken,
        node_id: this.name,
        roles: ['sds'],
        host: this.shared.settings.host,
        ports: { ...this.ports },
        incarnation: this.incarnation,
        device_states: this.devices.map((device) => ({ mdm_device_id: device.mdm_device_id, state: 'ok' })),
      });
      this.adopt(answer.body);
      this.shared.phase().registrationMs.add(performance.now() - startedMs);
    } catch (error) {
      this.shared.phase().registrationErrors.add(errorCode(error));
      throw error;
    }
  }

  /** Re-registers with its own credential (after a 401), as the real SDS does. */
  private async reregister(): Promise<void> {
    const answer = await this.mdm.post<Registration>(
      '/discovery/register',
      { node_id: this.name, roles: ['sds'], host: this.shared.settings.host, ports: { ...this.ports }, incarnation: this.incarnation, device_states: this.deviceStates() },
      this.credential,
    );
    this.adopt(answer.body);
  }

  private adopt(answer: Registration): void {
    this.credential = answer.credential;
    this.sdsId = answer.sds_id;
    this.expectedAuthorization = `Bearer ${deriveControlCredential(Buffer.from(answer.signing_key, 'base64'))}`;
    this.heartbeatIntervalMs = answer.heartbeat_interval_ms;
    this.devices = answer.devices ?? [];
    for (const chunk of answer.stale_epochs ?? []) {
      const state = this.chunks.get(chunkKey(chunk.volume_id, chunk.chunk_index));
      if (state === undefined) this.chunks.set(chunkKey(chunk.volume_id, chunk.chunk_index), { poolId: chunk.pool_id, epoch: chunk.epoch, writtenEpoch: 0, rebuilding: false, stored: false });
      else if (state.epoch < chunk.epoch) state.epoch = chunk.epoch;
    }
  }

  /** Heartbeats and acks begin, each after its own offset (hosts do not start in step). */
  start(heartbeatOffsetMs: number, ackOffsetMs: number): void {
    this.heartbeatTimer = setTimeout(() => void this.heartbeat(), heartbeatOffsetMs);
    if (this.shared.settings.txAckChunksPerS > 0) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = setInterval(() => void this.sendAcks(), TX_ACK_INTERVAL_MS);
        void this.sendAcks();
      }, ackOffsetMs);
    }
  }

  /** Records of chunks placed here, as after their first write: [volume, chunk, epoch, pool] × n. */
  seed(flat: Int32Array): number {
    let added = 0;
    for (let i = 0; i + 3 < flat.length; i += 4) {
      const key = chunkKey(flat[i]!, flat[i + 1]!);
      const epoch = flat[i + 2]!;
      const existing = this.chunks.get(key);
      if (existing === undefined) {
        this.chunks.set(key, { poolId: flat[i + 3]!, epoch, writtenEpoch: epoch, rebuilding: false, stored: true });
        this.heldKeys.push(key);
        added += 1;
      } else if (!existing.stored) {
        existing.stored = true;
        existing.writtenEpoch = Math.max(existing.writtenEpoch, epoch);
        if (epoch > existing.epoch) existing.epoch = epoch;
        this.heldKeys.push(key);
        added += 1;
      }
    }
    return added;
  }

  get chunkCount(): number {
    return this.chunks.size;
  }

  /** A crash: nothing more goes out, every port closes, connections drop mid-request. */
  async fail(): Promise<void> {
    this.failed = true;
    if (this.heartbeatTimer !== undefined) clearTimeout(this.heartbeatTimer);
    if (this.ackTimer !== undefined) clearInterval(this.ackTimer);
    await Promise.all([this.data.close(), closeServer(this.control), closeServer(this.mgmt)]);
  }

  async stop(): Promise<void> {
    await this.fail();
  }

  // ------------------------------------------------------------ to the MDM

  private deviceStates(): { mdm_device_id: number; state: string }[] {
    return this.devices.map((device) => ({ mdm_device_id: device.mdm_device_id, state: 'ok' }));
  }

  /** What the real SDS reports of its devices (device-set.ts report()). */
  private deviceReport(): Record<string, unknown>[] {
    return this.devices.map((device) => {
      const slots = Math.floor(device.capacity_bytes / device.slot_bytes);
      return {
        mdm_device_id: device.mdm_device_id,
        path: device.path,
        pool_id: device.pool_id,
        state: 'ok',
        uuid: this.incarnation,
        direct: true,
        block_device: false,
        slot_bytes: device.slot_bytes,
        slots,
        slots_free: Math.max(0, slots - this.heldKeys.length),
        io_errors: 0,
      };
    });
  }

  private async heartbeat(): Promise<void> {
    if (this.failed) return;
    const phase = this.shared.phase();
    let retryNow = false;
    try {
      const answer = await this.mdm.post<{ heartbeat_interval_ms: number; devices?: DeviceAssignment[] }>(
        '/discovery/heartbeat',
        { status: 'UP', devices: this.deviceReport(), io: { iops: 0, bytes_per_second: 0 }, write_intents_at_start: 0, tx_acks_dropped: 0 },
        this.credential,
        heartbeatTimeoutMs(this.heartbeatIntervalMs),
      );
      if (this.failed) return;
      const nowMs = performance.now();
      phase.heartbeatRttMs.add(answer.ms);
      if (this.lastHeartbeatMs !== undefined) {
        const gapMs = nowMs - this.lastHeartbeatMs;
        phase.heartbeatGapMs.add(gapMs);
        const verdict = classifyGap(gapMs, this.heartbeatIntervalMs, HEARTBEAT_LATE_FACTOR, this.shared.settings.heartbeatMisses);
        if (verdict === 'late') phase.heartbeatLate += 1;
        if (verdict === 'missed') phase.heartbeatMissed += 1;
      }
      this.lastHeartbeatMs = nowMs;
      this.heartbeatIntervalMs = answer.body.heartbeat_interval_ms;
      if (answer.body.devices !== undefined) this.devices = answer.body.devices;
    } catch (error) {
      // As the real node (src/common/node-link.ts): a heartbeat that timed out is sent again at once.
      if (errorCode(error) === 'TIMEOUT') retryNow = true;
      phase.heartbeatErrors.add(errorCode(error));
      if (error instanceof JsonHttpError && error.status === 401) await this.reregister().catch(() => undefined);
    } finally {
      if (!this.failed) this.heartbeatTimer = setTimeout(() => void this.heartbeat(), retryNow ? 0 : this.heartbeatIntervalMs);
    }
  }

  private async sendAcks(): Promise<void> {
    if (this.failed || this.heldKeys.length === 0 || this.credential === undefined) return;
    const phase = this.shared.phase();
    // One batch in flight, as the real SDS (src/sds/tx-acks.ts): slow answers must not fill this
    // node's connections and leave its heartbeat queued behind them.
    if (this.ackSending) {
      phase.ackTicksSkipped += 1;
      return;
    }
    this.ackSending = true;
    const tokenId = this.prng.bytes(16).toString('hex');
    const count = Math.min(this.shared.settings.txAckChunksPerS, this.heldKeys.length);
    const acks = [];
    for (let i = 0; i < count; i += 1) {
      const key = this.heldKeys[Math.floor(this.prng.next() * this.heldKeys.length)]!;
      const requests = 1 + Math.floor(this.prng.next() * 16);
      acks.push({ token_id: tokenId, volume_id: Math.floor(key / 4294967296), chunk_index: key % 4294967296, operation: 'write', requests, bytes: requests * 4096 });
    }
    try {
      const answer = await this.mdm.post<{ accepted: number; ignored: number }>('/io/tx/ack', { acks }, this.credential);
      phase.ackRttMs.add(answer.ms);
      phase.ackBatches += 1;
      phase.acksAccepted += answer.body.accepted;
      phase.acksIgnored += answer.body.ignored;
    } catch (error) {
      phase.ackErrors.add(errorCode(error));
    } finally {
      this.ackSending = false;
    }
  }

  // ------------------------------------------------------------ from the MDM (control plane)

  private async serveControl(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const startedMs = performance.now();
    const [path = '', query = ''] = (request.url ?? '').split('?');
    const route = `${request.method ?? '?'} ${path}${query === '' ? '' : `?${query}`}`;
    const phase = this.shared.phase();
    phase.controlCalls.add(route);
    try {
      if (this.failed) {
        request.socket.destroy();
        return;
      }
      if (this.expectedAuthorization === undefined) throw new ControlError(503, 'PFLEX_ERR_UNAVAILABLE', 'this SDS has not registered with the MDM yet');
      if (request.headers.authorization !== this.expectedAuthorization) throw new ControlError(401, 'PFLEX_ERR_UNAUTHORIZED', 'the control plane takes orders from the MDM only');
      const body = request.method === 'POST' ? await readJson(request) : undefined;
      const answer = await this.route(request.method ?? '', path, new URLSearchParams(query), body);
      if (this.failed) {
        request.socket.destroy();
        return;
      }
      const text = JSON.stringify(answer);
      if (path === '/chunks' || path === '/chunks/query') {
        phase.listings += 1;
        phase.listingBytesMax = Math.max(phase.listingBytesMax, text.length);
        phase.listingChunksMax = Math.max(phase.listingChunksMax, (answer as { chunks: unknown[] }).chunks.length);
      }
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(text);
    } catch (error) {
      const known = error instanceof ControlError ? error : new ControlError(500, 'PFLEX_ERR_INTERNAL', (error as Error).message);
      phase.controlErrors.add(`${route} ${known.status}`);
      if (!response.headersSent && !this.failed) {
        response.writeHead(known.status, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ error: { code: known.code, message: known.message } }));
      }
    } finally {
      phase.controlMs.add(route, performance.now() - startedMs);
    }
  }

  private async route(method: string, path: string, query: URLSearchParams, body: unknown): Promise<unknown> {
    // ?attention=1: only the chunks the MDM must look at (here: rebuilds in progress).
    if (method === 'GET' && path === '/chunks') return { chunks: this.listing(query.get('attention') === '1') };
    if (method !== 'POST') throw new ControlError(404, 'PFLEX_ERR_NOT_FOUND', `no such endpoint: ${method} ${path}`);
    switch (path) {
      case '/chunks/epoch':
        return this.installEpochs(chunkList(body));
      case '/chunks/assign':
        return this.assign(chunkList(body));
      case '/chunks/delete':
        return this.deleteChunks(chunkList(body));
      case '/chunks/query':
        return { chunks: this.query(chunkList(body)) };
      case '/chunks/resynced':
        chunkList(body); // no write intents here: nothing to clear
        return { cleared: 0 };
      case '/chunks/rebuild':
        return this.beginRebuild(chunkList(body));
      case '/chunks/copy':
        return this.copy(body as Record<string, unknown>);
      case '/devices/add':
        return { devices: this.deviceReport() };
      default:
        throw new ControlError(404, 'PFLEX_ERR_NOT_FOUND', `no such endpoint: ${method} ${path}`);
    }
  }

  private listing(attentionOnly: boolean): ChunkListing[] {
    const list: ChunkListing[] = [];
    for (const [key, state] of this.chunks) if (!attentionOnly || state.rebuilding) list.push(listingOf(key, state));
    return list;
  }

  /** POST /chunks/query: what this SDS knows of the chunks named (unknown ones left out). */
  private query(chunks: Record<string, unknown>[]): ChunkListing[] {
    const known: ChunkListing[] = [];
    for (const chunk of chunks) {
      const key = chunkKey(u32(chunk.volume_id, 'volume_id'), u32(chunk.chunk_index, 'chunk_index'));
      const state = this.chunks.get(key);
      if (state !== undefined) known.push(listingOf(key, state));
    }
    return known;
  }

  /** Epochs only grow: an older one is kept as held and listed back (control-server.ts). */
  private installEpochs(chunks: Record<string, unknown>[]): { updated: number; newer_held: unknown[] } {
    const newerHeld: unknown[] = [];
    let updated = 0;
    for (const chunk of chunks) {
      const volumeId = u32(chunk.volume_id, 'volume_id');
      const chunkIndex = u32(chunk.chunk_index, 'chunk_index');
      const epoch = u32(chunk.epoch, 'epoch');
      const key = chunkKey(volumeId, chunkIndex);
      const state = this.chunks.get(key);
      if (state !== undefined && epoch < state.epoch) {
        newerHeld.push({ volume_id: volumeId, chunk_index: chunkIndex, epoch, held: state.epoch });
        continue;
      }
      if (state === undefined) this.chunks.set(key, { poolId: u32(chunk.pool_id, 'pool_id'), epoch, writtenEpoch: 0, rebuilding: false, stored: false });
      else state.epoch = epoch;
      updated += 1;
    }
    return { updated, newer_held: newerHeld };
  }

  private assign(chunks: Record<string, unknown>[]): { assigned: number } {
    this.installEpochs(chunks);
    for (const chunk of chunks) this.markStored(chunkKey(u32(chunk.volume_id, 'volume_id'), u32(chunk.chunk_index, 'chunk_index')));
    return { assigned: chunks.length };
  }

  private markStored(key: number): void {
    const state = this.chunks.get(key);
    if (state === undefined || state.stored) return;
    state.stored = true;
    this.heldKeys.push(key);
  }

  /** With an epoch: kept where held at it or newer; otherwise a record without data stays there. */
  private deleteChunks(chunks: Record<string, unknown>[]): { deleted: number } {
    let deleted = 0;
    for (const chunk of chunks) {
      const key = chunkKey(u32(chunk.volume_id, 'volume_id'), u32(chunk.chunk_index, 'chunk_index'));
      const tombstone = chunk.epoch === undefined ? undefined : u32(chunk.epoch, 'epoch');
      const state = this.chunks.get(key);
      if (state === undefined) continue;
      if (tombstone !== undefined && state.epoch >= tombstone) continue;
      this.chunks.delete(key);
      if (tombstone !== undefined) this.chunks.set(key, { poolId: state.poolId, epoch: Math.max(state.epoch, tombstone), writtenEpoch: 0, rebuilding: false, stored: false });
      deleted += 1;
    }
    return { deleted };
  }

  private beginRebuild(chunks: Record<string, unknown>[]): { rebuilding: number } {
    for (const chunk of chunks) {
      const key = chunkKey(u32(chunk.volume_id, 'volume_id'), u32(chunk.chunk_index, 'chunk_index'));
      const epoch = u32(chunk.epoch, 'epoch');
      const state = this.chunks.get(key);
      if (state !== undefined && state.epoch > epoch) {
        throw new ControlError(500, 'PFLEX_ERR_INTERNAL', `chunk ${key} is at epoch ${state.epoch} here, newer than the rebuild's ${epoch}`);
      }
      if (state === undefined) this.chunks.set(key, { poolId: u32(chunk.pool_id, 'pool_id'), epoch, writtenEpoch: 0, rebuilding: true, stored: true });
      else {
        state.epoch = epoch;
        state.rebuilding = true;
        state.stored = true;
      }
    }
    return { rebuilding: chunks.length };
  }

  /** The copy takes chunk_size / rate, after the copies this SDS is already doing (FIFO). */
  private async copy(body: Record<string, unknown>): Promise<{ copied_bytes: number; written_bytes: number }> {
    const volumeId = u32(body.volume_id, 'volume_id');
    const chunkIndex = u32(body.chunk_index, 'chunk_index');
    const epoch = u32(body.epoch, 'epoch');
    const chunkBytes = u32(body.chunk_size_bytes, 'chunk_size_bytes');
    const sourcePort = u32((body.source as { data_port?: unknown } | undefined)?.data_port, 'source.data_port');
    const key = chunkKey(volumeId, chunkIndex);
    const state = this.chunks.get(key);
    if (state === undefined || !state.rebuilding) throw new ControlError(409, 'PFLEX_ERR_CONFLICT', `chunk ${volumeId}:${chunkIndex} is not being rebuilt here`);
    if (state.epoch !== epoch) throw new ControlError(409, 'PFLEX_ERR_CONFLICT', `chunk ${volumeId}:${chunkIndex} is not at epoch ${epoch} here`);
    const source = this.shared.byDataPort.get(sourcePort);
    if (source?.failed === true) throw new ControlError(500, 'PFLEX_ERR_INTERNAL', `peer 127.0.0.1:${sourcePort}: connect ECONNREFUSED`);
    const phase = this.shared.phase();
    const receivedMs = performance.now();
    this.copiesHere += 1;
    this.shared.copiesInFlight.inc(receivedMs);
    phase.copyPeakPerSds.set(this.name, Math.max(phase.copyPeakPerSds.get(this.name) ?? 0, this.copiesHere));
    phase.copyTargets.add(this.name);
    phase.copySources.add(sourcePort);
    try {
      // The target writes and the source reads the chunk, each at the copy rate and one copy at
      // a time (FIFO); the copy is done when both are. A source shared by many copies is the
      // limit then, as a real SDS's read bandwidth would be.
      const transferMs = (chunkBytes / this.shared.settings.copyBytesPerS) * 1000;
      const writeStartMs = Math.max(receivedMs, this.copyWritesBusyUntilMs);
      this.copyWritesBusyUntilMs = writeStartMs + transferMs;
      const readStartMs = source === undefined ? receivedMs : Math.max(receivedMs, source.copyReadsBusyUntilMs);
      if (source !== undefined) source.copyReadsBusyUntilMs = readStartMs + transferMs;
      const doneMs = Math.max(writeStartMs, readStartMs) + transferMs;
      phase.copyQueueMs.add(Math.max(writeStartMs, readStartMs) - receivedMs);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, doneMs - receivedMs)));
      const now = this.chunks.get(key);
      if (now === undefined || !now.rebuilding || now.epoch !== epoch) {
        phase.copiesFailed += 1;
        throw new ControlError(409, 'PFLEX_ERR_CONFLICT', `the rebuild of chunk ${volumeId}:${chunkIndex} was cancelled or is incomplete`);
      }
      now.rebuilding = false;
      this.markStored(key);
      phase.copies += 1;
      phase.copyMs.add(performance.now() - receivedMs);
      return { copied_bytes: chunkBytes, written_bytes: chunkBytes };
    } finally {
      this.copiesHere -= 1;
      this.shared.copiesInFlight.dec();
    }
  }
}

export function copyBytesPerSOf(mbps: number): number {
  return mbps * BYTES_PER_MB;
}

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      resolve(typeof address === 'object' && address !== null ? address.port : 0);
    });
  });
}

async function closeServer(server: Server | undefined): Promise<void> {
  if (server === undefined || !server.listening) return;
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

function readJson(request: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let bytes = 0;
    request.on('data', (part: Buffer) => {
      bytes += part.length;
      if (bytes > CONTROL_BODY_BYTES_MAX) {
        reject(new ControlError(413, 'PFLEX_ERR_PAYLOAD_TOO_LARGE', 'body too large'));
        request.destroy();
        return;
      }
      parts.push(part);
    });
    request.on('error', reject);
    request.on('end', () => {
      if (bytes > CONTROL_BODY_BYTES_MAX) return;
      const text = Buffer.concat(parts).toString('utf8');
      try {
        resolve(text.length === 0 ? {} : JSON.parse(text));
      } catch {
        reject(new ControlError(400, 'PFLEX_ERR_BAD_JSON', 'request body is not valid JSON'));
      }
    });
  });
}

// ------------------------------------------------------------ reports

export interface SdsPhaseReport {
  readonly registration: { readonly ms: Summary; readonly errors: Record<string, number> };
  readonly heartbeats: { readonly rtt_ms: Summary; readonly gap_ms: Summary; readonly late: number; readonly missed: number; readonly errors: Record<string, number> };
  readonly tx_acks: { readonly batches: number; readonly ticks_skipped_in_flight: number; readonly rtt_ms: Summary; readonly accepted: number; readonly ignored: number; readonly errors: Record<string, number> };
  readonly control: { readonly calls: Record<string, number>; readonly errors: Record<string, number>; readonly ms: Record<string, Summary> };
  readonly listings: { readonly count: number; readonly chunks_max: number; readonly bytes_max: number };
  readonly copies: {
    readonly done: number;
    readonly failed: number;
    readonly ms: Summary;
    readonly queue_ms: Summary;
    readonly peak_in_flight: number;
    readonly average_in_flight: number;
    readonly window_ms: number;
    readonly targets: number;
    readonly sources: number;
    readonly peak_per_sds: number;
  };
}

export function sdsPhaseReport(stats: SdsPhaseStats, copies: { peak: number; average: number; windowMs: number }): SdsPhaseReport {
  return {
    registration: { ms: stats.registrationMs.summary(), errors: stats.registrationErrors.toJSON() },
    heartbeats: {
      rtt_ms: stats.heartbeatRttMs.summary(),
      gap_ms: stats.heartbeatGapMs.summary(),
      late: stats.heartbeatLate,
      missed: stats.heartbeatMissed,
      errors: stats.heartbeatErrors.toJSON(),
    },
    tx_acks: { batches: stats.ackBatches, ticks_skipped_in_flight: stats.ackTicksSkipped, rtt_ms: stats.ackRttMs.summary(), accepted: stats.acksAccepted, ignored: stats.acksIgnored, errors: stats.ackErrors.toJSON() },
    control: { calls: stats.controlCalls.toJSON(), errors: stats.controlErrors.toJSON(), ms: stats.controlMs.summaries() },
    listings: { count: stats.listings, chunks_max: stats.listingChunksMax, bytes_max: stats.listingBytesMax },
    copies: {
      done: stats.copies,
      failed: stats.copiesFailed,
      ms: stats.copyMs.summary(),
      queue_ms: stats.copyQueueMs.summary(),
      peak_in_flight: copies.peak,
      average_in_flight: copies.average,
      window_ms: copies.windowMs,
      targets: stats.copyTargets.size,
      sources: stats.copySources.size,
      peak_per_sds: Math.max(0, ...stats.copyPeakPerSds.values()),
    },
  };
}
