/**
 * Volumes and their mappings. A volume is cut into chunks of its pool's chunk size; thick
 * volumes place every chunk at creation (and growth), thin volumes when a chunk is first
 * authorized for writing. Creation or growth that does not fit fails whole (scenario D).
 */
import { z } from 'zod';
import type { Db } from './database.js';
import { pflexError } from '../common/errors.js';
import { nameSchema, refSchema } from '../common/names.js';
import { formatBytes, MiB, TiB } from '../common/units.js';
import { assertNameFree, getRow } from './lookup.js';
import { recordEvent } from './events.js';
import { placeChunks, spreadKeyOf } from './placement.js';
import { placementCandidates, poolCapacity, poolFreeRawBytes } from './capacity.js';
import { pushTo } from '../common/maps.js';
import { copiesOf, type AccessMode, type ChunkRow, type MappingRow, type PoolRow, type SdcRow, type VolumeRow } from './rows.js';

/** Sizes round up to whole MiB, the way PowerFlex rounds to its allocation unit. */
export const VOLUME_SIZE_GRANULARITY_BYTES = MiB;
export const VOLUME_SIZE_BYTES_MAX = 64 * TiB;
export const MAPPINGS_PER_VOLUME_MAX = 64;

const sizeFields = {
  size_bytes: z.number().int().positive().max(VOLUME_SIZE_BYTES_MAX).optional(),
  size_gb: z.number().positive().max(VOLUME_SIZE_BYTES_MAX / 2 ** 30).optional(),
};

function sizeFromInput(input: { size_bytes?: number | undefined; size_gb?: number | undefined }, field: string): number {
  if ((input.size_bytes === undefined) === (input.size_gb === undefined)) {
    throw pflexError('VALIDATION', `give exactly one of size_bytes or size_gb`, { field });
  }
  const bytes = input.size_bytes ?? Math.round(input.size_gb! * 2 ** 30);
  const rounded = Math.ceil(bytes / VOLUME_SIZE_GRANULARITY_BYTES) * VOLUME_SIZE_GRANULARITY_BYTES;
  if (rounded > VOLUME_SIZE_BYTES_MAX) {
    throw pflexError('VALIDATION', `size must be at most ${formatBytes(VOLUME_SIZE_BYTES_MAX)}`, { field });
  }
  return rounded;
}

export function chunkCountOf(sizeBytes: number, chunkSizeBytes: number): number {
  return Math.ceil(sizeBytes / chunkSizeBytes);
}

// ---------------------------------------------------------------- placement of chunks

function insertChunk(db: Db, volume: VolumeRow, pool: PoolRow, chunkIndex: number, sdsIds: readonly number[]): void {
  const { lastInsertRowid } = db
    .prepare('INSERT INTO chunks (volume_id, chunk_index) VALUES (?, ?)')
    .run(volume.id, chunkIndex);
  const insertReplica = db.prepare('INSERT INTO replicas (chunk_id, sds_id, pool_id) VALUES (?, ?, ?)');
  for (const sdsId of sdsIds) insertReplica.run(Number(lastInsertRowid), sdsId, pool.id);
}

function capacityError(db: Db, pool: PoolRow, neededRawBytes: number, what: string): never {
  const capacity = poolCapacity(db, pool);
  const copies = copiesOf(pool.protection_policy);
  throw pflexError(
    'INSUFFICIENT_CAPACITY',
    `Insufficient capacity in pool ${pool.name}: ${what} needs ${formatBytes(neededRawBytes / copies)} ` +
      `(${copies} copies), the pool has ${formatBytes(capacity.free_bytes)} free of ${formatBytes(capacity.usable_bytes)} usable ` +
      `(${pool.spare_percent}% spare reserved). Add devices or SDS, or delete volumes.`,
    {
      pool: pool.name,
      needed_bytes: neededRawBytes / copies,
      free_bytes: capacity.free_bytes,
      usable_bytes: capacity.usable_bytes,
    },
  );
}

/** Places chunks [first, first+count) of a volume that have no row yet. All or nothing. */
function placeMissingChunks(db: Db, volume: VolumeRow, pool: PoolRow, chunkIndexes: readonly number[], what: string): void {
  if (chunkIndexes.length === 0) return;
  const copies = copiesOf(pool.protection_policy);
  const neededRaw = chunkIndexes.length * copies * pool.chunk_size_bytes;
  if (neededRaw > poolFreeRawBytes(db, pool)) capacityError(db, pool, neededRaw, what);
  const candidates = placementCandidates(db, pool);
  const plan = placeChunks(candidates, copies, pool.chunk_size_bytes, chunkIndexes.length, (i) => spreadKeyOf(volume.id, chunkIndexes[i]!));
  if (!plan.ok) {
    if (candidates.length < copies) {
      throw pflexError(
        'PLACEMENT_IMPOSSIBLE',
        `pool ${pool.name} keeps ${copies} copies but only ${candidates.length} SDS with capacity in the pool can take replicas`,
        { pool: pool.name, copies, sds_available: candidates.length },
      );
    }
    capacityError(db, pool, neededRaw, `${what} (${plan.reason})`);
  }
  chunkIndexes.forEach((chunkIndex, i) => insertChunk(db, volume, pool, chunkIndex, plan.placements[i]!));
}

/**
 * Makes sure every chunk in the range has replicas, placing the missing ones (thin volumes on
 * first write). Runs in the caller's transaction.
 */
export function ensureChunksPlaced(db: Db, volume: VolumeRow, chunkFirst: number, chunkCount: number): void {
  const pool = getRow<PoolRow>(db, 'pool', volume.pool_id);
  const present = new Set(
    (
      db
        .prepare('SELECT chunk_index FROM chunks WHERE volume_id = ? AND chunk_index >= ? AND chunk_index < ?')
        .all(volume.id, chunkFirst, chunkFirst + chunkCount) as { chunk_index: number }[]
    ).map((row) => row.chunk_index),
  );
  const missing: number[] = [];
  for (let index = chunkFirst; index < chunkFirst + chunkCount; index += 1) if (!present.has(index)) missing.push(index);
  // Thin allocation is frequent: no event per chunk; the pool's capacity shows it.
  placeMissingChunks(db, volume, pool, missing, `writing to volume ${volume.name}`);
}

// ---------------------------------------------------------------- volume lifecycle

export const createVolumeSchema = z.strictObject({
  name: nameSchema,
  pool: refSchema,
  ...sizeFields,
  provisioning: z.enum(['thin', 'thick']).default('thin'),
});

export function createVolume(db: Db, input: z.infer<typeof createVolumeSchema>): VolumeRow {
  const sizeBytes = sizeFromInput(input, 'size_bytes');
  return db.transaction(() => {
    const pool = getRow<PoolRow>(db, 'pool', input.pool);
    assertNameFree(db, 'volume', input.name);
    const { lastInsertRowid } = db
      .prepare('INSERT INTO volumes (name, pool_id, size_bytes, provisioning) VALUES (?, ?, ?, ?)')
      .run(input.name, pool.id, sizeBytes, input.provisioning);
    const volume = getRow<VolumeRow>(db, 'volume', Number(lastInsertRowid));
    if (input.provisioning === 'thick') {
      const count = chunkCountOf(sizeBytes, pool.chunk_size_bytes);
      placeMissingChunks(db, volume, pool, [...Array(count).keys()], `thick volume ${input.name}`);
    }
    recordEvent(
      db,
      'info',
      'VOLUME_CREATED',
      `volume ${input.name} created: ${formatBytes(sizeBytes)} ${input.provisioning} in pool ${pool.name}`,
      { poolId: pool.id, volumeId: volume.id },
    );
    return volume;
  })();
}

export const extendVolumeSchema = z.strictObject({
  volume: refSchema,
  ...sizeFields,
});

/** Grows a volume to a new total size (size_bytes / size_gb are the new size, not a delta). */
export function extendVolume(db: Db, input: z.infer<typeof extendVolumeSchema>): VolumeRow {
  const newSizeBytes = sizeFromInput(input, 'size_bytes');
  return db.transaction(() => {
    const volume = getRow<VolumeRow>(db, 'volume', input.volume);
    if (newSizeBytes <= volume.size_bytes) {
      throw pflexError(
        'VALIDATION',
        `new size ${formatBytes(newSizeBytes)} must be larger than the current ${formatBytes(volume.size_bytes)}; volumes never shrink`,
        { field: 'size_bytes' },
      );
    }
    const pool = getRow<PoolRow>(db, 'pool', volume.pool_id);
    if (volume.provisioning === 'thick') {
      const first = chunkCountOf(volume.size_bytes, pool.chunk_size_bytes);
      const last = chunkCountOf(newSizeBytes, pool.chunk_size_bytes);
      const indexes: number[] = [];
      for (let index = first; index < last; index += 1) indexes.push(index);
      placeMissingChunks(db, volume, pool, indexes, `extending volume ${volume.name}`);
    }
    db.prepare('UPDATE volumes SET size_bytes = ? WHERE id = ?').run(newSizeBytes, volume.id);
    recordEvent(
      db,
      'info',
      'VOLUME_EXTENDED',
      `volume ${volume.name} extended from ${formatBytes(volume.size_bytes)} to ${formatBytes(newSizeBytes)}`,
      { poolId: pool.id, volumeId: volume.id },
    );
    return getRow<VolumeRow>(db, 'volume', volume.id);
  })();
}

export const renameVolumeSchema = z.strictObject({ volume: refSchema, new_name: nameSchema });

export function renameVolume(db: Db, input: z.infer<typeof renameVolumeSchema>): VolumeRow {
  return db.transaction(() => {
    const volume = getRow<VolumeRow>(db, 'volume', input.volume);
    if (volume.name === input.new_name) return volume;
    assertNameFree(db, 'volume', input.new_name);
    db.prepare('UPDATE volumes SET name = ? WHERE id = ?').run(input.new_name, volume.id);
    recordEvent(db, 'info', 'VOLUME_RENAMED', `volume ${volume.name} renamed to ${input.new_name}`, {
      poolId: volume.pool_id,
      volumeId: volume.id,
    });
    return getRow<VolumeRow>(db, 'volume', volume.id);
  })();
}

/**
 * Deletes an unmapped volume and its chunks. `freeReplicas` is told, in the same transaction, of
 * every replica's SDS and chunk (with a tombstone epoch above the chunk's), so the SDS orders
 * that free their slots are recorded as durably as the deletion itself.
 */
export function deleteVolume(
  db: Db,
  ref: string | number,
  freeReplicas: (sdsId: number, chunks: { volume_id: number; chunk_index: number; epoch: number }[]) => void = () => undefined,
): VolumeRow {
  return db.transaction(() => {
    const volume = getRow<VolumeRow>(db, 'volume', ref);
    const mappings = db
      .prepare('SELECT s.name FROM volume_mappings m JOIN sdc s ON s.id = m.sdc_id WHERE m.volume_id = ?')
      .all(volume.id) as { name: string }[];
    if (mappings.length > 0) {
      throw pflexError(
        'VOLUME_MAPPED',
        `volume ${volume.name} is mapped to ${mappings.map((m) => m.name).join(', ')}; unmap it first`,
        { sdc: mappings.map((m) => m.name) },
      );
    }
    const replicas = db
      .prepare('SELECT r.sds_id, c.chunk_index, c.epoch FROM chunks c JOIN replicas r ON r.chunk_id = c.id WHERE c.volume_id = ? ORDER BY r.sds_id, c.chunk_index')
      .all(volume.id) as { sds_id: number; chunk_index: number; epoch: number }[];
    const bySds = new Map<number, { volume_id: number; chunk_index: number; epoch: number }[]>();
    for (const row of replicas) pushTo(bySds, row.sds_id, { volume_id: volume.id, chunk_index: row.chunk_index, epoch: row.epoch + 1 });
    for (const [sdsId, chunks] of bySds) freeReplicas(sdsId, chunks);
    db.prepare('DELETE FROM chunks WHERE volume_id = ?').run(volume.id);
    db.prepare('DELETE FROM volumes WHERE id = ?').run(volume.id);
    recordEvent(db, 'info', 'VOLUME_DELETED', `volume ${volume.name} deleted`, { poolId: volume.pool_id });
    return volume;
  })();
}

// ---------------------------------------------------------------- mappings

export const mapVolumeSchema = z.strictObject({
  volume: refSchema,
  sdc: refSchema,
  access_mode: z.enum(['readWrite', 'readOnly']).default('readWrite'),
  allow_multi_map: z.boolean().default(false),
});

export function mapVolume(db: Db, input: z.infer<typeof mapVolumeSchema>): MappingRow {
  return db.transaction(() => {
    const volume = getRow<VolumeRow>(db, 'volume', input.volume);
    const sdc = getRow<SdcRow>(db, 'sdc', input.sdc);
    const existing = db.prepare('SELECT * FROM volume_mappings WHERE volume_id = ?').all(volume.id) as MappingRow[];
    if (existing.some((mapping) => mapping.sdc_id === sdc.id)) {
      throw pflexError('ALREADY_MAPPED', `volume ${volume.name} is already mapped to SDC ${sdc.name}`);
    }
    if (existing.length > 0 && !input.allow_multi_map) {
      throw pflexError(
        'MULTI_MAP_NOT_ALLOWED',
        `volume ${volume.name} is already mapped to another SDC; pass allow_multi_map (--allow-multi-map) to share it`,
      );
    }
    // Overlapping writes are ordered inside one SDC only, and an SDC's cached plan does not see
    // chunks another SDC placed: a volume written through one SDC is mapped to that SDC alone.
    // Several SDCs may share a volume when every mapping is readOnly.
    const writer = existing.find((mapping) => mapping.access_mode === 'readWrite');
    if (existing.length > 0 && (input.access_mode === 'readWrite' || writer !== undefined)) {
      const holder = writer ?? existing[0]!;
      const holderName = (db.prepare('SELECT name FROM sdc WHERE id = ?').get(holder.sdc_id) as { name: string }).name;
      throw pflexError(
        'MULTI_WRITER',
        `volume ${volume.name} is mapped ${holder.access_mode} to SDC ${holderName}: a volume mapped readWrite has exactly one SDC ` +
          '(pflex orders overlapping writes within one SDC only); share it between SDCs only with every mapping readOnly',
        { sdc: holderName, access_mode: holder.access_mode },
      );
    }
    if (existing.length >= MAPPINGS_PER_VOLUME_MAX) {
      throw pflexError('CONFLICT', `volume ${volume.name} already has ${MAPPINGS_PER_VOLUME_MAX} mappings`);
    }
    const { lastInsertRowid } = db
      .prepare('INSERT INTO volume_mappings (volume_id, sdc_id, access_mode) VALUES (?, ?, ?)')
      .run(volume.id, sdc.id, input.access_mode);
    recordEvent(db, 'info', 'VOLUME_MAPPED', `volume ${volume.name} mapped to SDC ${sdc.name} (${input.access_mode})`, {
      volumeId: volume.id,
      sdcId: sdc.id,
    });
    return db.prepare('SELECT * FROM volume_mappings WHERE id = ?').get(Number(lastInsertRowid)) as MappingRow;
  })();
}

export const unmapVolumeSchema = z.strictObject({ volume: refSchema, sdc: refSchema });

export function unmapVolume(db: Db, input: z.infer<typeof unmapVolumeSchema>): MappingRow {
  return db.transaction(() => {
    const volume = getRow<VolumeRow>(db, 'volume', input.volume);
    const sdc = getRow<SdcRow>(db, 'sdc', input.sdc);
    const mapping = db
      .prepare('SELECT * FROM volume_mappings WHERE volume_id = ? AND sdc_id = ?')
      .get(volume.id, sdc.id) as MappingRow | undefined;
    if (mapping === undefined) {
      throw pflexError('NOT_MAPPED', `volume ${volume.name} is not mapped to SDC ${sdc.name}`);
    }
    db.prepare('DELETE FROM volume_mappings WHERE id = ?').run(mapping.id);
    recordEvent(db, 'info', 'VOLUME_UNMAPPED', `volume ${volume.name} unmapped from SDC ${sdc.name}`, {
      volumeId: volume.id,
      sdcId: sdc.id,
    });
    return mapping;
  })();
}

export function mappingOf(db: Db, volumeId: number, sdcId: number): { access_mode: AccessMode } | undefined {
  return db.prepare('SELECT access_mode FROM volume_mappings WHERE volume_id = ? AND sdc_id = ?').get(volumeId, sdcId) as
    | { access_mode: AccessMode }
    | undefined;
}

export function chunksOf(db: Db, volumeId: number): ChunkRow[] {
  return db.prepare('SELECT * FROM chunks WHERE volume_id = ? ORDER BY chunk_index').all(volumeId) as ChunkRow[];
}
