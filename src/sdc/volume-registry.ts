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
import { VolumeEngine, type ReplicaFailure, type ReplicaFailureOutcome } from './volume-engine.js';

const REPORT_INTERVAL_MS = 1000;
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
        (request: AuthorizeRequest) => {
          const client = this.mdm();
          if (client === undefined) return Promise.reject(new Error('not registered with the MDM'));
          return client.post<AuthorizeAnswer>(`/vol/${volumeId}/io/authorize`, request);
        },
        this.log,
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
    for (const entry of this.entries.values()) {
      entry.leases.close();
      entry.engine.close();
    }
    this.entries.clear();
    this.pool.close();
  }
}
