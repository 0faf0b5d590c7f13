/**
 * A simulated SDC: the real SDC's conversation with the MDM, without NBD or data IO.
 *
 *   - registration with the join token, then its mappings (GET /discovery/mappings), pulled
 *     again when a heartbeat answer's mappings_version differs from the last pull's, and on the
 *     MDM's push (POST /control/refresh on its control port, rate limited as
 *     src/sdc/sdc-http.ts), as src/sdc/sdc-service.ts;
 *   - heartbeats with the real body (per-volume IO counters), each after the previous answer;
 *   - IO token leases as src/sdc/token-leases.ts: one lease per window of ≤ 1024 chunks per
 *     mapped volume, all fetched when the volume appears, each renewed at half its lifetime
 *     through src/sdc/lease-renewer.ts (renewals due within a second share one POST /io/renew;
 *     a lease whose plan changed is authorized afresh; a failed renewal again after 1 s);
 *   - first writes to thin chunks (authorize with allocate: true, one chunk each) on request;
 *   - unreachable-SDS reports (POST /sds/report-unreachable) on request, as an SDC whose IO to
 *     that SDS failed.
 */
import { createServer, type Server } from 'node:http';
import { TOKEN_CHUNKS_MAX } from '../../src/common/io-token.js';
import type { PlanChunk } from '../../src/common/io-plan.js';
import { HttpClientError } from '../../src/common/http-client.js';
import { heartbeatTimeoutMs } from '../../src/common/node-link.js';
import { LeaseRenewer, type RenewOutcome } from '../../src/sdc/lease-renewer.js';
import { errorCode, JsonHttpError, type JsonHttp } from './http-json.js';
import { classifyGap, Counters, Samples, SampleSets, type Summary } from './stats.js';

/** Connections each simulated node keeps to the MDM. */
const SDC_MDM_SOCKETS_MAX = 2;
/** As AUTHORIZE_IN_FLIGHT_MAX of src/sdc/volume-registry.ts. */
const SDC_AUTHORIZE_SOCKETS_MAX = 8;
const RENEW_RETRY_MS = 1000;
/** As AUTHORIZE_BUSY_RETRY_MS_MAX of src/sdc/volume-registry.ts. */
const AUTHORIZE_BUSY_RETRY_MS_MAX = 20_000;
/** How soon an SDC that could not register tries again (src/common/node-link.ts). */
const REGISTER_RETRY_MS = 2000;
const REFRESH_INTERVAL_MS_MIN = 200;
const HEARTBEAT_LATE_FACTOR = 1.5;
const OPERATIONS_READ_WRITE = ['read', 'write', 'trim', 'flush'];

export interface SimSdcSettings {
  readonly host: string;
  readonly heartbeatMisses: number;
}

export class SdcPhaseStats {
  readonly registrationMs = new Samples(3);
  readonly registrationErrors = new Counters();
  readonly heartbeatRttMs = new Samples(5);
  readonly heartbeatGapMs = new Samples(7);
  heartbeatLate = 0;
  heartbeatMissed = 0;
  readonly heartbeatErrors = new Counters();
  readonly mappingsMs = new Samples(9);
  readonly mappingsErrors = new Counters();
  /**
   * Latency by kind: prime (a window's first lease), renew (an authorization again: the plan
   * changed), allocate (first write), renew-batch (one POST /io/renew of many leases).
   */
  readonly authorizeMs = new SampleSets(11);
  readonly authorizeErrors = new Counters();
  authorizeAnswerBytesMax = 0;
  authorizeAnswerBytes = 0;
  /**
   * Leases renewed as they were / planned again within the renewal (`replan`) / answered
   * PLAN_CHANGED without a plan (authorized afresh), and the tokens per renew request.
   */
  leasesRenewed = 0;
  leasesReplannedInRenewal = 0;
  leasesReplanned = 0;
  readonly renewBatchTokens = new Samples(15);
  placements = 0;
  placementsRefused = 0;
  readonly reportMs = new Samples(13);
  readonly reportErrors = new Counters();
  reportsFenced = 0;
  pushes = 0;
}

interface Mapping {
  volume_id: number;
  name: string;
  size_bytes: number;
  provisioning: string;
  access_mode: string;
  pool_id: number;
  chunk_size_bytes: number;
}

interface Window {
  readonly first: number;
  readonly count: number;
  timer: NodeJS.Timeout | undefined;
  /** The lease held: its token (sent back to renew), expiry and lifetime. */
  token: Buffer | undefined;
  expiresAtMs: number;
  ttlMs: number;
}

interface SimVolume {
  readonly mapping: Mapping;
  readonly chunkCount: number;
  readonly windows: Window[];
  /** Thin volumes: 1 where the chunk is placed (as the plans say). */
  readonly placed: Uint8Array | undefined;
  /** Next chunk to try for a first write. */
  cursor: number;
}

interface AuthorizeAnswer {
  token: string;
  expires_at: string;
  ttl_ms: number;
  chunks: PlanChunk[];
}

export interface SimSdcShared {
  readonly mdm: JsonHttp;
  readonly settings: SimSdcSettings;
  readonly phase: () => SdcPhaseStats;
  /** Placed chunks seen in plans, by SDS id: [volume, chunk, epoch, pool] × n (for the SDS seeding); undefined: not collected. */
  holdings: Map<number, number[]> | undefined;
}

export class SimSdc {
  credential: string | undefined;
  sdcId = 0;
  private readonly volumes = new Map<number, SimVolume>();
  /** SDS ids the plans of this SDC name: the ones it would report if they stopped answering. */
  readonly sdsSeen = new Set<number>();
  private control: Server | undefined;
  private controlPort = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatIntervalMs = 2000;
  private lastHeartbeatMs: number | undefined;
  private lastRefreshMs = 0;
  private stopped = false;
  private leasing = false;

  /** This node's own connections to the MDM (a real node's pool is its own). */
  private readonly mdm: JsonHttp;
  /** Its authorizations: at most AUTHORIZE_IN_FLIGHT_MAX in flight (src/sdc/volume-registry.ts), never ahead of its heartbeats. */
  private readonly mdmAuthorize: JsonHttp;
  /**
   * Its unreachable-SDS report: answered when the fence is done (16 s for 75k chunks at 64 TiB).
   * The real SDC's 64 connections (src/common/http-client.ts) leave its heartbeats a free one;
   * on this node's two, the report held one and the heartbeats waited for the other.
   */
  private readonly mdmReports: JsonHttp;
  private authorizeInFlight = 0;
  private readonly authorizeWaiting: (() => void)[] = [];
  /** The real SDC's renewal batching (src/sdc/lease-renewer.ts). */
  private readonly renewer = new LeaseRenewer((tokens) => this.renewBatch(tokens));
  private mappingsVersion: string | undefined;

  constructor(
    readonly name: string,
    private readonly shared: SimSdcShared,
  ) {
    this.mdm = shared.mdm.ownConnections(SDC_MDM_SOCKETS_MAX);
    this.mdmAuthorize = shared.mdm.ownConnections(SDC_AUTHORIZE_SOCKETS_MAX);
    this.mdmReports = shared.mdm.ownConnections(1);
  }

  async bind(): Promise<void> {
    this.control = createServer((request, response) => {
      const path = (request.url ?? '').split('?')[0];
      if (request.method === 'POST' && path === '/control/refresh') {
        this.shared.phase().pushes += 1;
        const nowMs = Date.now();
        const refreshed = nowMs - this.lastRefreshMs >= REFRESH_INTERVAL_MS_MIN;
        if (refreshed) {
          this.lastRefreshMs = nowMs;
          void this.refreshMappings().catch(() => undefined);
        }
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify(refreshed ? { refreshed: true } : { refreshed: false, reason: 'rate limited' }));
        return;
      }
      response.writeHead(404, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ error: { code: 'PFLEX_ERR_NOT_FOUND', message: `no such endpoint: ${request.method} ${path}` } }));
    });
    this.controlPort = await new Promise<number>((resolve, reject) => {
      this.control!.once('error', reject);
      this.control!.listen(0, this.shared.settings.host, () => {
        const address = this.control!.address();
        resolve(typeof address === 'object' && address !== null ? address.port : 0);
      });
    });
  }

  /**
   * An SDC starting: registration (again every REGISTER_RETRY_MS until it works, as the real one
   * retries), then heartbeats, its mappings and every window's first lease. Resolves true once
   * the mappings were read and every window asked for, false if it gave up (stopped).
   */
  async start(joinToken: string): Promise<boolean> {
    while (!this.stopped) {
      const phase = this.shared.phase();
      const startedMs = performance.now();
      try {
        const answer = await this.mdm.post<{ credential: string; sdc_id: number; heartbeat_interval_ms: number }>('/discovery/register', {
          join_token: joinToken,
          node_id: this.name,
          roles: ['sdc'],
          host: this.shared.settings.host,
          ports: { control: this.controlPort },
        });
        this.credential = answer.body.credential;
        this.sdcId = answer.body.sdc_id;
        this.heartbeatIntervalMs = answer.body.heartbeat_interval_ms;
        phase.registrationMs.add(performance.now() - startedMs);
        break;
      } catch (error) {
        phase.registrationErrors.add(errorCode(error));
        await new Promise((resolve) => setTimeout(resolve, REGISTER_RETRY_MS));
      }
    }
    if (this.stopped) return false;
    // Registered: heartbeats run from here, and pull the mappings again if this first pull fails.
    this.leasing = true;
    this.heartbeatTimer = setTimeout(() => void this.heartbeat(), this.heartbeatIntervalMs);
    try {
      await this.refreshMappings(true);
      return true;
    } catch {
      return false;
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.heartbeatTimer !== undefined) clearTimeout(this.heartbeatTimer);
    for (const volume of this.volumes.values()) for (const window of volume.windows) if (window.timer !== undefined) clearTimeout(window.timer);
    this.renewer.close();
    if (this.control?.listening === true) {
      this.control.closeAllConnections();
      this.control.close();
    }
  }

  get volumeCount(): number {
    return this.volumes.size;
  }

  /** Thin chunks not placed yet, over all thin volumes of this SDC. */
  unplacedThinChunks(): number {
    let count = 0;
    for (const volume of this.volumes.values()) {
      if (volume.placed === undefined) continue;
      for (let i = 0; i < volume.placed.length; i += 1) if (volume.placed[i] === 0) count += 1;
    }
    return count;
  }

  // ------------------------------------------------------------ mappings and heartbeats

  private async refreshMappings(awaitPrime = false): Promise<void> {
    const phase = this.shared.phase();
    let mappings: Mapping[];
    try {
      const answer = await this.mdm.get<{ mappings_version?: string; mappings: Mapping[] }>('/discovery/mappings', this.credential);
      phase.mappingsMs.add(answer.ms);
      mappings = answer.body.mappings;
      this.mappingsVersion = answer.body.mappings_version;
    } catch (error) {
      phase.mappingsErrors.add(errorCode(error));
      if (awaitPrime) throw error;
      return;
    }
    const wanted = new Set(mappings.map((mapping) => mapping.volume_id));
    for (const [id, volume] of this.volumes) {
      if (wanted.has(id)) continue;
      for (const window of volume.windows) if (window.timer !== undefined) clearTimeout(window.timer);
      this.volumes.delete(id);
    }
    const primes: Promise<void>[] = [];
    for (const mapping of mappings) {
      if (this.volumes.has(mapping.volume_id)) continue;
      const chunkCount = Math.ceil(mapping.size_bytes / mapping.chunk_size_bytes);
      const windows: Window[] = [];
      for (let first = 0; first < chunkCount; first += TOKEN_CHUNKS_MAX) windows.push({ first, count: Math.min(TOKEN_CHUNKS_MAX, chunkCount - first), timer: undefined, token: undefined, expiresAtMs: 0, ttlMs: 0 });
      const volume: SimVolume = { mapping, chunkCount, windows, placed: mapping.provisioning === 'thin' ? new Uint8Array(chunkCount) : undefined, cursor: 0 };
      this.volumes.set(mapping.volume_id, volume);
      // As the real SDC: every window of a new volume is fetched at once (leases.prime()).
      if (this.leasing) for (const window of windows) primes.push(this.lease(volume, window, 'prime'));
    }
    if (awaitPrime) await Promise.all(primes);
  }

  private async heartbeat(): Promise<void> {
    if (this.stopped) return;
    const phase = this.shared.phase();
    let retryNow = false;
    try {
      const answer = await this.mdm.post<{ heartbeat_interval_ms: number; mappings_version?: string }>(
        '/discovery/heartbeat',
        {
          status: 'UP',
          volumes: this.volumes.size,
          nbd_connections: 0,
          io: [...this.volumes.values()].map((volume) => ({ volume_id: volume.mapping.volume_id, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, replans: 0, failovers: 0, errors: 0 })),
        },
        this.credential,
        heartbeatTimeoutMs(this.heartbeatIntervalMs),
      );
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
      const version = answer.body.mappings_version;
      if (version === undefined || version !== this.mappingsVersion) await this.refreshMappings();
    } catch (error) {
      // As the real node (src/common/node-link.ts): a heartbeat that timed out is sent again at once.
      if (errorCode(error) === 'TIMEOUT') retryNow = true;
      phase.heartbeatErrors.add(errorCode(error));
    } finally {
      if (!this.stopped) this.heartbeatTimer = setTimeout(() => void this.heartbeat(), retryNow ? 0 : this.heartbeatIntervalMs);
    }
  }

  // ------------------------------------------------------------ leases

  private operationsOf(volume: SimVolume): string[] {
    return volume.mapping.access_mode === 'readOnly' ? ['read'] : OPERATIONS_READ_WRITE;
  }

  /**
   * One lease for a window: at renewal the lease is renewed as it is (lease-renewer.ts) when its
   * plan did not change, else (and at prime) authorized; the next renewal at half its life.
   */
  private async lease(volume: SimVolume, window: Window, kind: 'prime' | 'renew'): Promise<void> {
    if (this.stopped) return;
    const phase = this.shared.phase();
    try {
      if (kind === 'renew' && window.token !== undefined && window.expiresAtMs - Date.now() > window.ttlMs / 4) {
        const renewed = await this.renewer.renew(window.token, window.ttlMs / 8);
        if (renewed !== undefined && 'replanned' in renewed) {
          this.shared.phase().leasesReplannedInRenewal += 1;
          this.learn(volume, renewed.replanned.chunks);
          this.keep(window, renewed.replanned);
          this.schedule(volume, window, renewed.replanned.ttl_ms / 2);
          return;
        }
        if (renewed !== undefined) {
          this.shared.phase().leasesRenewed += 1;
          this.keep(window, renewed);
          this.schedule(volume, window, renewed.ttl_ms / 2);
          return;
        }
        this.shared.phase().leasesReplanned += 1;
      }
      const answer = await this.authorizeRetryingBusy(`/vol/${volume.mapping.volume_id}/io/authorize`, { operations: this.operationsOf(volume), chunk_first: window.first, chunk_count: window.count }, kind);
      phase.authorizeMs.add(kind, answer.ms);
      phase.authorizeAnswerBytes += answer.bytes;
      phase.authorizeAnswerBytesMax = Math.max(phase.authorizeAnswerBytesMax, answer.bytes);
      this.learn(volume, answer.body.chunks);
      this.keep(window, answer.body);
      this.schedule(volume, window, answer.body.ttl_ms / 2);
    } catch (error) {
      phase.authorizeErrors.add(`${kind} ${errorCode(error)}`);
      this.schedule(volume, window, RENEW_RETRY_MS);
    }
  }

  /** As src/sdc/volume-registry.ts: a BUSY answer is asked again after its hint (with jitter), for a while. */
  private async authorizeRetryingBusy<T = AuthorizeAnswer>(path: string, body: unknown, kind: string) {
    // At most SDC_AUTHORIZE_SOCKETS_MAX in flight, the rest waiting here (not in the agent, whose
    // queue would count toward the request timeout): the real SDC's slots, handed over in order.
    if (this.authorizeInFlight >= SDC_AUTHORIZE_SOCKETS_MAX) await new Promise<void>((resolve) => this.authorizeWaiting.push(resolve));
    else this.authorizeInFlight += 1;
    try {
      return await this.authorizeSlot<T>(path, body, kind);
    } finally {
      const next = this.authorizeWaiting.shift();
      if (next !== undefined) next();
      else this.authorizeInFlight -= 1;
    }
  }

  private async authorizeSlot<T>(path: string, body: unknown, kind: string) {
    const startedAtMs = Date.now();
    for (;;) {
      try {
        return await this.mdmAuthorize.post<T>(path, body, this.credential);
      } catch (error) {
        if (!(error instanceof JsonHttpError) || error.code !== 'PFLEX_ERR_BUSY' || Date.now() - startedAtMs > AUTHORIZE_BUSY_RETRY_MS_MAX) throw error;
        this.shared.phase().authorizeErrors.add(`${kind} BUSY (retried)`);
        const hinted = Number(error.details?.retry_after_ms);
        const baseMs = Number.isFinite(hinted) ? Math.min(2000, Math.max(50, hinted)) : 50;
        await new Promise((resolve) => setTimeout(resolve, baseMs * (0.5 + Math.random())));
      }
    }
  }

  private keep(window: Window, lease: { token: string; expires_at: string; ttl_ms: number }): void {
    window.token = Buffer.from(lease.token, 'base64');
    window.expiresAtMs = Date.parse(lease.expires_at);
    window.ttlMs = lease.ttl_ms;
  }

  /** One POST /io/renew in an authorization slot, BUSY retried (as src/sdc/volume-registry.ts postAdmitted). */
  private async renewBatch(tokens: string[]): Promise<{ leases: RenewOutcome[] }> {
    this.shared.phase().renewBatchTokens.add(tokens.length);
    try {
      const answer = await this.authorizeRetryingBusy<{ leases: RenewOutcome[] }>('/io/renew', { tokens, replan: true }, 'renew-batch');
      this.shared.phase().authorizeMs.add('renew-batch', answer.ms);
      return answer.body;
    } catch (error) {
      this.shared.phase().authorizeErrors.add(`renew-batch ${errorCode(error)}`);
      // The renewer tells a refusal (authorize afresh) from an MDM it could not ask by this class.
      if (error instanceof JsonHttpError) throw new HttpClientError(error.message, error.code, error.status, error.details);
      throw error;
    }
  }

  private schedule(volume: SimVolume, window: Window, delayMs: number): void {
    if (this.stopped || !this.volumes.has(volume.mapping.volume_id)) return;
    if (window.timer !== undefined) clearTimeout(window.timer);
    window.timer = setTimeout(() => {
      window.timer = undefined;
      void this.lease(volume, window, 'renew');
    }, delayMs);
  }

  /** What a plan says: placed thin chunks, the SDS named, and (when asked) holdings per SDS. */
  private learn(volume: SimVolume, chunks: readonly PlanChunk[]): void {
    const holdings = this.shared.holdings;
    for (const chunk of chunks) {
      if (!chunk.placed) continue;
      if (volume.placed !== undefined) volume.placed[chunk.index] = 1;
      for (const replica of chunk.replicas) {
        this.sdsSeen.add(replica.sds_id);
        if (holdings === undefined || replica.rebuilding === true) continue;
        let list = holdings.get(replica.sds_id);
        if (list === undefined) {
          list = [];
          holdings.set(replica.sds_id, list);
        }
        list.push(volume.mapping.volume_id, chunk.index, chunk.epoch, volume.mapping.pool_id);
      }
    }
  }

  // ------------------------------------------------------------ first writes and failure reports

  /** The next unplaced thin chunk (round-robin over volumes), or undefined when none is left. */
  private nextUnplaced(): { volume: SimVolume; index: number } | undefined {
    for (const volume of this.volumes.values()) {
      const placed = volume.placed;
      if (placed === undefined || volume.mapping.access_mode === 'readOnly') continue;
      while (volume.cursor < placed.length && placed[volume.cursor] === 1) volume.cursor += 1;
      if (volume.cursor < placed.length) {
        const index = volume.cursor;
        volume.cursor += 1;
        return { volume, index };
      }
    }
    return undefined;
  }

  /**
   * First writes to unplaced thin chunks until `deadlineMs`, `concurrency` at a time: each one
   * authorize with allocate for that chunk alone (token-leases.ts allocate()). Stops early when
   * the pool is full (`full()` turns true for every SDC of the host).
   */
  async placeThin(deadlineMs: number, concurrency: number, full: { value: boolean }): Promise<void> {
    const worker = async (): Promise<void> => {
      while (!this.stopped && !full.value && performance.now() < deadlineMs) {
        const next = this.nextUnplaced();
        if (next === undefined) return;
        const phase = this.shared.phase();
        try {
          const answer = await this.authorizeRetryingBusy(`/vol/${next.volume.mapping.volume_id}/io/authorize`, { operations: OPERATIONS_READ_WRITE, chunk_first: next.index, chunk_count: 1, allocate: true }, 'allocate');
          phase.authorizeMs.add('allocate', answer.ms);
          this.learn(next.volume, answer.body.chunks);
          if (answer.body.chunks.some((chunk) => chunk.index === next.index && chunk.placed)) phase.placements += 1;
        } catch (error) {
          const code = errorCode(error);
          phase.authorizeErrors.add(`allocate ${code}`);
          phase.placementsRefused += 1;
          if (code === 'PFLEX_ERR_INSUFFICIENT_CAPACITY' || code === 'PFLEX_ERR_PLACEMENT_IMPOSSIBLE') full.value = true;
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, () => worker()));
  }

  /** As an SDC whose IO to an SDS failed: POST /sds/report-unreachable. */
  async reportUnreachable(sdsId: number): Promise<void> {
    const phase = this.shared.phase();
    try {
      const answer = await this.mdmReports.post<{ fenced: boolean }>(
        '/sds/report-unreachable',
        { sds_id: sdsId, problem: `127.0.0.1: connect ECONNREFUSED (simulated by the MDM benchmark)` },
        this.credential,
      );
      phase.reportMs.add(answer.ms);
      if (answer.body.fenced) phase.reportsFenced += 1;
    } catch (error) {
      phase.reportErrors.add(errorCode(error));
    }
  }
}

// ------------------------------------------------------------ reports

export interface SdcPhaseReport {
  readonly registration: { readonly ms: Summary; readonly errors: Record<string, number> };
  readonly heartbeats: { readonly rtt_ms: Summary; readonly gap_ms: Summary; readonly late: number; readonly missed: number; readonly errors: Record<string, number> };
  readonly mappings: { readonly ms: Summary; readonly errors: Record<string, number>; readonly pushes: number };
  readonly authorize: {
    readonly ms: Record<string, Summary>;
    readonly errors: Record<string, number>;
    readonly answer_bytes_max: number;
    readonly answer_bytes_total: number;
  };
  readonly renewals: { readonly renewed: number; readonly replanned_in_renewal: number; readonly replanned: number; readonly tokens_per_request: Summary };
  readonly placements: { readonly done: number; readonly refused: number };
  readonly reports: { readonly ms: Summary; readonly fenced: number; readonly errors: Record<string, number> };
}

export function sdcPhaseReport(stats: SdcPhaseStats): SdcPhaseReport {
  return {
    registration: { ms: stats.registrationMs.summary(), errors: stats.registrationErrors.toJSON() },
    heartbeats: {
      rtt_ms: stats.heartbeatRttMs.summary(),
      gap_ms: stats.heartbeatGapMs.summary(),
      late: stats.heartbeatLate,
      missed: stats.heartbeatMissed,
      errors: stats.heartbeatErrors.toJSON(),
    },
    mappings: { ms: stats.mappingsMs.summary(), errors: stats.mappingsErrors.toJSON(), pushes: stats.pushes },
    authorize: { ms: stats.authorizeMs.summaries(), errors: stats.authorizeErrors.toJSON(), answer_bytes_max: stats.authorizeAnswerBytesMax, answer_bytes_total: stats.authorizeAnswerBytes },
    renewals: { renewed: stats.leasesRenewed, replanned_in_renewal: stats.leasesReplannedInRenewal, replanned: stats.leasesReplanned, tokens_per_request: stats.renewBatchTokens.summary() },
    placements: { done: stats.placements, refused: stats.placementsRefused },
    reports: { ms: stats.reportMs.summary(), fenced: stats.reportsFenced, errors: stats.reportErrors.toJSON() },
  };
}
