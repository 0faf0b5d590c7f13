/**
 * The volumes this SDC exports: one VolumeEngine per mapped volume, rebuilt when the MDM's
 * mappings change (map, unmap, extend, access mode). Engines share one SDS connection pool.
 */
import type { Logger } from '../common/logger.js';
import type { HttpClient } from '../common/http-client.js';
import { chunkCountOfVolume } from './sizes.js';
import type { MappingRow } from './sdc-database.js';
import { SdsPool } from './sds-pool.js';
import { VolumeLeases, type AuthorizeAnswer, type AuthorizeRequest } from './token-leases.js';
import { VolumeEngine } from './volume-engine.js';

const REPORT_INTERVAL_MS = 1000;

interface Entry {
  readonly mapping: MappingRow;
  readonly engine: VolumeEngine;
  readonly leases: VolumeLeases;
}

export class VolumeRegistry {
  private readonly entries = new Map<string, Entry>();
  readonly pool = new SdsPool();
  private readonly lastReportMs = new Map<number, number>();

  constructor(
    private readonly mdm: () => HttpClient | undefined,
    private readonly log: Logger,
  ) {}

  /** Applies a new list of mappings: new volumes get engines, gone ones lose them, changed ones are rebuilt. */
  apply(mappings: readonly MappingRow[]): { added: string[]; removed: string[] } {
    const added: string[] = [];
    const removed: string[] = [];
    const wanted = new Map(mappings.map((mapping) => [mapping.name, mapping]));
    for (const [name, entry] of this.entries) {
      const next = wanted.get(name);
      const same =
        next !== undefined &&
        next.volume_id === entry.mapping.volume_id &&
        next.size_bytes === entry.mapping.size_bytes &&
        next.access_mode === entry.mapping.access_mode &&
        next.chunk_size_bytes === entry.mapping.chunk_size_bytes;
      if (!same) {
        entry.leases.close();
        this.entries.delete(name);
        removed.push(name);
      }
    }
    for (const mapping of mappings) {
      if (this.entries.has(mapping.name)) continue;
      const operations = mapping.access_mode === 'readOnly' ? ['read'] : ['read', 'write', 'trim', 'flush'];
      const volumeId = mapping.volume_id;
      const leases = new VolumeLeases(
        chunkCountOfVolume(mapping.size_bytes, mapping.chunk_size_bytes),
        operations,
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
      );
      this.entries.set(mapping.name, { mapping, engine, leases });
      // Learn the plan before the first IO; failures are retried on demand.
      leases.prime().catch((error: unknown) => this.log.debug({ err: (error as Error).message, volume: mapping.name }, 'plan prefetch failed'));
      if (!removed.includes(mapping.name)) added.push(mapping.name);
    }
    if (added.length + removed.length > 0) this.log.info({ added, removed }, 'exports changed');
    return { added, removed };
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

  get(name: string): VolumeEngine | undefined {
    return this.entries.get(name)?.engine;
  }

  byIdOrName(ref: string | number): VolumeEngine | undefined {
    if (typeof ref === 'number' || /^\d+$/.test(ref)) {
      const id = Number(ref);
      for (const entry of this.entries.values()) if (entry.mapping.volume_id === id) return entry.engine;
      return undefined;
    }
    return this.get(ref);
  }

  list(): MappingRow[] {
    return [...this.entries.values()].map((entry) => entry.mapping);
  }

  engines(): VolumeEngine[] {
    return [...this.entries.values()].map((entry) => entry.engine);
  }

  close(): void {
    for (const entry of this.entries.values()) entry.leases.close();
    this.entries.clear();
    this.pool.close();
  }
}
