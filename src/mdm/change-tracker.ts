/**
 * What changed since when, in memory, fed by the database itself (issue 11: costs that follow
 * what changed). Temporary triggers on the MDM's own connection call back into this process on
 * every write that can change
 *
 * - a volume's IO plan (planChunks in token-authority.ts reads chunks, their replicas and the
 *   SDS holding them): a chunk's or replica's change stamps its volume, an SDS's change (state,
 *   address) stamps the SDS alone, and a plan is current while its volume and every SDS it read
 *   are unstamped since. So a lease renewal whose plan did not change is signed again without
 *   reading a single chunk (lease-renewal.ts), and an SDS going DOWN costs one stamp, not a pass
 *   over its replicas (that pass was 342 ms at 64 TiB, 75k replicas an SDS: docs/SCALE.md);
 * - an SDC's mappings (what GET /discovery/mappings answers): so an SDC pulls them only when
 *   they changed, not after every heartbeat.
 *
 * Each change takes the next value of one sequence and stamps it on what it touched. A change
 * made in a transaction that rolls back still stamps: it can only cause one needless re-plan or
 * pull, never a missed one. Only this connection's writes fire the triggers; the MDM is the only
 * writer of powerflex.db. A restarted MDM starts from nothing, and the boot id in every version
 * it hands out makes an SDC pull once after the restart.
 */
import { randomBytes } from 'node:crypto';
import type { Db } from './database.js';

/** The stamp of an SDC or volume that never changed in this MDM's life. */
const NEVER_CHANGED = 0;

export class ChangeTracker {
  private seq = 1;
  /** Last change of each volume's plan (its chunks and their replicas). */
  private readonly volumePlanSeqs = new Map<number, number>();
  /** Last change of each SDS's state or address (what a plan shows of it). */
  private readonly sdsSeqs = new Map<number, number>();
  /** Last change of each SDC's mappings (a mapping, or a mapped volume's name or size). */
  private readonly sdcMappingSeqs = new Map<number, number>();
  /** Changes everything of the previous MDM's life: a version from it never matches. */
  readonly bootId = randomBytes(6).toString('hex');

  constructor(db: Db) {
    db.function('pflex_plan_changed', { deterministic: false }, (volumeId: unknown) => {
      if (typeof volumeId === 'number' || typeof volumeId === 'bigint') this.volumePlanSeqs.set(Number(volumeId), this.next());
      return null;
    });
    db.function('pflex_sds_changed', { deterministic: false }, (sdsId: unknown) => {
      if (typeof sdsId === 'number' || typeof sdsId === 'bigint') this.sdsSeqs.set(Number(sdsId), this.next());
      return null;
    });
    db.function('pflex_mappings_changed', { deterministic: false }, (sdcId: unknown) => {
      if (typeof sdcId === 'number' || typeof sdcId === 'bigint') this.sdcMappingSeqs.set(Number(sdcId), this.next());
      return null;
    });
    db.exec(TRIGGERS);
  }

  /** The stamp a plan or a mapping list read now is current as of. */
  now(): number {
    return this.seq;
  }

  /**
   * True when no write since `seq` touched this volume's plan: its chunks, their replicas, and
   * `sdsIds`, every SDS holding a replica of them when the plan was read (planChunks returns them).
   */
  planUnchangedSince(volumeId: number, seq: number, sdsIds: readonly number[]): boolean {
    if ((this.volumePlanSeqs.get(volumeId) ?? NEVER_CHANGED) > seq) return false;
    for (const sdsId of sdsIds) if ((this.sdsSeqs.get(sdsId) ?? NEVER_CHANGED) > seq) return false;
    return true;
  }

  /** The version of an SDC's mappings: equal versions mean equal answers of GET /discovery/mappings. */
  mappingsVersion(sdcId: number): string {
    return `${this.bootId}.${this.sdcMappingSeqs.get(sdcId) ?? NEVER_CHANGED}`;
  }

  private next(): number {
    this.seq += 1;
    return this.seq;
  }
}

// An SDS shows in the plans of the volumes it holds replicas of: its change (state, address)
// stamps the SDS, which every plan that read it checks (a replica moving to or from it stamps the
// volume); an SDS can be removed only once it holds none. A pool's chunk size never changes (no trigger). Heartbeats rewrite an SDS's state and time, tx acks a replica's counters: only real changes
// count (WHEN ... IS NOT ...), or every heartbeat would invalidate every plan.
const TRIGGERS = `
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_chunk_added AFTER INSERT ON main.chunks
    BEGIN SELECT pflex_plan_changed(NEW.volume_id); END;
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_chunk_removed AFTER DELETE ON main.chunks
    BEGIN SELECT pflex_plan_changed(OLD.volume_id); END;
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_chunk_epoch AFTER UPDATE OF epoch, volume_id, chunk_index ON main.chunks
    WHEN OLD.epoch IS NOT NEW.epoch OR OLD.volume_id IS NOT NEW.volume_id OR OLD.chunk_index IS NOT NEW.chunk_index
    BEGIN SELECT pflex_plan_changed(OLD.volume_id); SELECT pflex_plan_changed(NEW.volume_id); END;
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_replica_added AFTER INSERT ON main.replicas
    BEGIN SELECT pflex_plan_changed(volume_id) FROM main.chunks WHERE id = NEW.chunk_id; END;
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_replica_removed AFTER DELETE ON main.replicas
    BEGIN SELECT pflex_plan_changed(volume_id) FROM main.chunks WHERE id = OLD.chunk_id; END;
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_replica_state AFTER UPDATE OF state, sds_id, chunk_id ON main.replicas
    WHEN OLD.state IS NOT NEW.state OR OLD.sds_id IS NOT NEW.sds_id OR OLD.chunk_id IS NOT NEW.chunk_id
    BEGIN
      SELECT pflex_plan_changed(volume_id) FROM main.chunks WHERE id = OLD.chunk_id;
      SELECT pflex_plan_changed(volume_id) FROM main.chunks WHERE id = NEW.chunk_id;
    END;
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_sds_changed AFTER UPDATE OF state, name, host, data_port, data_socket_path ON main.sds
    WHEN OLD.state IS NOT NEW.state OR OLD.name IS NOT NEW.name OR OLD.host IS NOT NEW.host
      OR OLD.data_port IS NOT NEW.data_port OR OLD.data_socket_path IS NOT NEW.data_socket_path
    BEGIN SELECT pflex_sds_changed(NEW.id); END;

  CREATE TEMP TRIGGER IF NOT EXISTS pflex_mapping_added AFTER INSERT ON main.volume_mappings
    BEGIN SELECT pflex_mappings_changed(NEW.sdc_id); END;
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_mapping_removed AFTER DELETE ON main.volume_mappings
    BEGIN SELECT pflex_mappings_changed(OLD.sdc_id); END;
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_mapping_changed AFTER UPDATE ON main.volume_mappings
    BEGIN SELECT pflex_mappings_changed(OLD.sdc_id); SELECT pflex_mappings_changed(NEW.sdc_id); END;
  CREATE TEMP TRIGGER IF NOT EXISTS pflex_volume_changed AFTER UPDATE OF name, size_bytes, pool_id, provisioning ON main.volumes
    WHEN OLD.name IS NOT NEW.name OR OLD.size_bytes IS NOT NEW.size_bytes OR OLD.pool_id IS NOT NEW.pool_id
      OR OLD.provisioning IS NOT NEW.provisioning
    BEGIN
      SELECT pflex_mappings_changed(sdc_id) FROM main.volume_mappings WHERE volume_id = NEW.id;
      SELECT pflex_plan_changed(NEW.id);
    END;
`;
