/**
 * The volumes this SDC exports: one VolumeEngine per mapped volume, for as long as it is mapped.
 * A mapping that changes (rename, extend, access mode) updates its engine in place, so NBD
 * connections opened before and after the change share one write order (one volume, one order).
 * Engines share one SDS connection pool, and one reporter of failed replicas to the MDM.
 */
import type { Logger } from '../common/logger.js';
import { HttpClientError, type HttpClient } from '../common/http-client.js';
import { chunkCountOfVolume } from './sizes.js';
import type { MappingRow } from './sdc-database.js';
import { SdsPool } from './sds-pool.js';
import { VolumeLeases, type AuthorizeAnswer, type AuthorizeRequest } from './token-leases.js';
import { LeaseRenewer, type RenewOutcome } from './lease-renewer.js';
import { VolumeEngine, type ReplicaFailure, type ReplicaFailureOutcome } from './volume-engine.js';

const REPORT_INTERVAL_MS = 1000;
/** An authorization the MDM answers BUSY is asked again (after its hint) for at most this long. */
export const AUTHORIZE_BUSY_RETRY_MS_MAX = 20_000;
const AUTHORIZE_BUSY_WAIT_MS_MIN = 50;
const AUTHORIZE_BUSY_WAIT_MS_MAX = 2000;
/**
 * Authorizations this SDC has in flight at most (the others wait here, in order): a host with
 * hundreds of volumes mapped primes every window at once, and the MDM serves thousands of SDCs.
 */
export const AUTHORIZE_IN_FLIGHT_MAX = 8;
/** Failed-replica reports kept while the MDM cannot be told (oldest dropped beyond). */
export const FAILURE_REPORTS_PENDING_MAX = 10_000;
const FAILURE_REPORTS_PER_CALL_MAX = 1024;
const FAILURE_RETRY_MS = 1000;

interface Entry {
  mapping: MappingRow;
  readonly engine: VolumeEngine;
  readonly leases: VolumeLeases;
}

function operationsOf(mapping: MappingRow): string[] {
  return mapping.access_mode === 'readOnly' ? ['read'] : ['read', 'write', 'trim', 'flush'];
}

export class VolumeRegistry {
  /** By volume id: a renamed volume keeps its engine. */
  private readonly entries = new Map<number, Entry>();
  readonly pool = new SdsPool();
  private readonly lastReportMs = new Map<number, number>();
  /** Failed-replica reports the MDM has not taken yet (it was unreachable): sent again. */
  private pendingFailures: ReplicaFailure[] = [];
  private failureRetry: NodeJS.Timeout | undefined;
  private authorizeInFlight = 0;
  private readonly authorizeWaiting: (() => void)[] = [];
  /** Every volume's renewals share requests (lease-renewer.ts). */
  private readonly renewer = new LeaseRenewer((tokens) => this.postAdmitted<{ leases: RenewOutcome[] }>('/io/renew', { tokens, replan: true }));

  constructor(
    private readonly mdm: () => HttpClient | undefined,
    private readonly log: Logger,
  ) {}

  /** Applies a new list of mappings: new volumes get engines, gone ones lose them, changed ones are updated in place. */
  apply(mappings: readonly MappingRow[]): { added: string[]; removed: string[]; changed: string[] } {
    const added: string[] = [];
    const removed: string[] = [];
    const changed: string[] = [];
    const wanted = new Map(mappings.map((mapping) => [mapping.volume_id, mapping]));
    for (const [volumeId, entry] of this.entries) {
      const next = wanted.get(volumeId);
      if (next === undefined || next.chunk_size_bytes !== entry.mapping.chunk_size_bytes || next.size_bytes < entry.mapping.size_bytes) {
        entry.leases.close();
        entry.engine.close();
        this.entries.delete(volumeId);
        removed.push(entry.mapping.name);
        continue;
      }
      if (next.name !== entry.mapping.name || next.size_bytes !== entry.mapping.size_bytes || next.access_mode !== entry.mapping.access_mode) {
        entry.engine.update({ name: next.name, sizeBytes: next.size_bytes, readOnly: next.access_mode === 'readOnly' });
        entry.leases.update(chunkCountOfVolume(next.size_bytes, next.chunk_size_bytes), operationsOf(next));
        changed.push(next.name);
      }
      entry.mapping = next;
    }
    for (const mapping of mappings) {
      if (this.entries.has(mapping.volume_id)) continue;
      const volumeId = mapping.volume_id;
      const leases = new VolumeLeases(
        chunkCountOfVolume(mapping.size_bytes, mapping.chunk_size_bytes),
        operationsOf(mapping),
        (request: AuthorizeRequest) => this.authorize(volumeId, request),
        this.log,
        (token, waitMs) => this.renewer.renew(token, waitMs),
      );
      const engine = new VolumeEngine(
        {
          id: mapping.volume_id,
          name: mapping.name,
          sizeBytes: mapping.size_bytes,
          chunkSizeBytes: mapping.chunk_size_bytes,
          readOnly: mapping.access_mode === 'readOnly',
        },
        leases,
        this.pool,
        this.log,
        (sdsId, problem) => this.reportUnreachable(sdsId, problem),
        (failures) => this.reportFailures(failures),
      );
      this.entries.set(volumeId, { mapping, engine, leases });
      // Learn the plan before the first IO; failures are retried on demand.
      leases.prime().catch((error: unknown) => this.log.debug({ err: (error as Error).message, volume: mapping.name }, 'plan prefetch failed'));
      added.push(mapping.name);
    }
    if (added.length + removed.length + changed.length > 0) this.log.info({ added, removed, changed }, 'exports changed');
    return { added, removed, changed };
  }

  /**
   * One authorization (or renewal). An MDM that is BUSY (admission.ts: a burst of them is
   * queued) says when to ask again; the SDC does, with jitter so a crowd of SDCs does not return
   * at once, for at most AUTHORIZE_BUSY_RETRY_MS_MAX. Every other failure goes to the caller as it is.
   */
  private authorize(volumeId: number, request: AuthorizeRequest): Promise<AuthorizeAnswer> {
    return this.postAdmitted<AuthorizeAnswer>(`/vol/${volumeId}/io/authorize`, request);
  }

  /** A request the MDM admits in turn (authorize, renew): in a slot, BUSY answers retried. */
  private async postAdmitted<T>(path: string, body: unknown): Promise<T> {
    // A slot ends with its holder, who hands it to the first waiter (the count stays) or frees it.
    if (this.authorizeInFlight >= AUTHORIZE_IN_FLIGHT_MAX) await new Promise<void>((resolve) => this.authorizeWaiting.push(resolve));
    else this.authorizeInFlight += 1;
    try {
      return await this.postRetryingBusy<T>(path, body);
    } finally {
      const next = this.authorizeWaiting.shift();
      if (next !== undefined) next();
      else this.authorizeInFlight -= 1;
    }
  }

  private async postRetryingBusy<T>(path: string, body: unknown): Promise<T> {
    const startedAtMs = Date.now();
    for (;;) {
      const client = this.mdm();
      if (client === undefined) throw new Error('not registered with the MDM');
      try {
        return await client.post<T>(path, body);
      } catch (error) {
        if (!(error instanceof HttpClientError) || error.code !== 'PFLEX_ERR_BUSY') throw error;
        if (Date.now() - startedAtMs > AUTHORIZE_BUSY_RETRY_MS_MAX) throw error;
        const hinted = Number((error.details as { retry_after_ms?: unknown } | undefined)?.retry_after_ms);
        const baseMs = Number.isFinite(hinted) ? Math.min(AUTHORIZE_BUSY_WAIT_MS_MAX, Math.max(AUTHORIZE_BUSY_WAIT_MS_MIN, hinted)) : AUTHORIZE_BUSY_WAIT_MS_MIN;
        await new Promise((resolve) => setTimeout(resolve, baseMs * (0.5 + Math.random())));
      }
    }
  }

  /** At most one report per SDS per REPORT_INTERVAL_MS; fire and forget (the MDM probes). */
  private reportUnreachable(sdsId: number, problem: string): void {
    const now = Date.now();
    if (now - (this.lastReportMs.get(sdsId) ?? 0) < REPORT_INTERVAL_MS) return;
    this.lastReportMs.set(sdsId, now);
    const client = this.mdm();
    if (client === undefined) return;
    this.log.warn({ sdsId, problem }, 'SDS unreachable; reporting to the MDM');
    client.post('/sds/report-unreachable', { sds_id: sdsId, problem: problem.slice(0, 500) }).catch((error: unknown) => {
      this.log.warn({ err: (error as Error).message }, 'could not report an unreachable SDS');
    });
  }

  /**
   * Tells the MDM replicas failed and returns what it did. When it cannot be told, the reports
   * are kept and sent again (the write that met the failure gets undefined and retries), so a
   * replica that missed a write is fenced as soon as the MDM answers again.
   */
  private async reportFailures(failures: ReplicaFailure[]): Promise<ReplicaFailureOutcome[] | undefined> {
    const client = this.mdm();
    if (client === undefined) {
      this.keepFailures(failures);
      return undefined;
    }
    const outcomes: ReplicaFailureOutcome[] = [];
    try {
      for (let first = 0; first < failures.length; first += FAILURE_REPORTS_PER_CALL_MAX) {
        const answer = await client.post<{ outcomes: ReplicaFailureOutcome[] }>('/replicas/report-failed', { failures: failures.slice(first, first + FAILURE_REPORTS_PER_CALL_MAX) });
        outcomes.push(...answer.outcomes);
      }
      return outcomes;
    } catch (error) {
      const status = error instanceof HttpClientError ? (error.status ?? 0) : 0;
      if (status >= 400 && status < 500 && status !== 401 && status !== 408 && status !== 429) {
        // Refused for good (the volume is no longer mapped here, a bad report): not retried.
        this.log.warn({ err: (error as Error).message, failures: failures.length }, 'the MDM refused failed-replica reports');
        return undefined;
      }
      this.log.warn({ err: (error as Error).message, failures: failures.length }, 'could not report failed replicas to the MDM; retrying');
      this.keepFailures(failures);
      return undefined;
    }
  }

  private keepFailures(failures: readonly ReplicaFailure[]): void {
    this.pendingFailures.push(...failures);
    if (this.pendingFailures.length > FAILURE_REPORTS_PENDING_MAX) this.pendingFailures.splice(0, this.pendingFailures.length - FAILURE_REPORTS_PENDING_MAX);
    if (this.failureRetry !== undefined) return;
    this.failureRetry = setTimeout(() => {
      this.failureRetry = undefined;
      const batch = this.pendingFailures;
      this.pendingFailures = [];
      if (batch.length > 0) void this.reportFailures(batch);
    }, FAILURE_RETRY_MS);
    this.failureRetry.unref();
  }

  get(name: string): VolumeEngine | undefined {
    for (const entry of this.entries.values()) if (entry.mapping.name === name) return entry.engine;
    return undefined;
  }

  byIdOrName(ref: string | number): VolumeEngine | undefined {
    if (typeof ref === 'number' || /^\d+$/.test(ref)) return this.entries.get(Number(ref))?.engine;
    return this.get(ref);
  }

  list(): MappingRow[] {
    return [...this.entries.values()].map((entry) => entry.mapping).sort((a, b) => a.name.localeCompare(b.name));
  }

  engines(): VolumeEngine[] {
    return [...this.entries.values()].map((entry) => entry.engine);
  }

  close(): void {
    if (this.failureRetry !== undefined) clearTimeout(this.failureRetry);
    this.renewer.close();
    for (const entry of this.entries.values()) {
      entry.leases.close();
      entry.engine.close();
    }
    this.entries.clear();
    this.pool.close();
  }
}
