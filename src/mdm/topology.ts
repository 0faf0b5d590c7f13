/**
 * Protection domains, fault sets, storage pools, SDS with their devices, and SDC: the cluster's
 * shape. Every function validates against the database inside one transaction and either does
 * the whole change or throws a PflexError and changes nothing.
 */
import { z } from 'zod';
import type { Db } from './database.js';
import { pflexError } from '../common/errors.js';
import { nameSchema, refSchema } from '../common/names.js';
import { MiB, TiB } from '../common/units.js';
import { assertNameFree, getRow } from './lookup.js';
import { recordEvent } from './events.js';
import type { DeviceRow, FaultSetRow, PdRow, PoolRow, SdcRow, SdsRow } from './rows.js';

export const CHUNK_SIZE_BYTES_DEFAULT = 4 * MiB;
export const CHUNK_SIZE_BYTES_MIN = 1 * MiB;
export const CHUNK_SIZE_BYTES_MAX = 256 * MiB;
export const DEVICE_CAPACITY_BYTES_MAX = 1024 * TiB;
export const DEVICE_CAPACITY_BYTES_MIN = 64 * MiB;
export const DEVICES_PER_SDS_MAX = 64;
export const DEVICE_PATH_LENGTH_MAX = 1024;
export const DESCRIPTION_LENGTH_MAX = 256;

const portSchema = z.number().int().min(1).max(65535);
/** A host name or an IPv4/IPv6 literal; never a URL, never spaces. */
export const hostSchema = z
  .string()
  .max(253)
  .regex(/^[A-Za-z0-9.:_-]+$/, 'must be a host name or an IP address');
const devicePathSchema = z
  .string()
  .max(DEVICE_PATH_LENGTH_MAX)
  .regex(/^\/[^\0\n\r]*$/, 'must be an absolute path');

// ---------------------------------------------------------------- protection domains

export const createPdSchema = z.strictObject({
  name: nameSchema,
  description: z.string().max(DESCRIPTION_LENGTH_MAX).optional(),
});

export function createPd(db: Db, input: z.infer<typeof createPdSchema>): PdRow {
  return db.transaction(() => {
    assertNameFree(db, 'pd', input.name);
    const { lastInsertRowid } = db
      .prepare('INSERT INTO protection_domains (name, description) VALUES (?, ?)')
      .run(input.name, input.description ?? '');
    recordEvent(db, 'info', 'PD_CREATED', `protection domain ${input.name} created`, { pdId: Number(lastInsertRowid) });
    return getRow<PdRow>(db, 'pd', Number(lastInsertRowid));
  })();
}

export function deletePd(db: Db, ref: string | number): PdRow {
  return db.transaction(() => {
    const pd = getRow<PdRow>(db, 'pd', ref);
    const count = (table: string): number =>
      (db.prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE pd_id = ?`).get(pd.id) as { n: number }).n;
    const pools = count('storage_pools');
    const sds = count('sds');
    const faultSets = count('fault_sets');
    if (pools + sds + faultSets > 0) {
      throw pflexError(
        'NOT_EMPTY',
        `protection domain ${pd.name} still has ${pools} pool(s), ${faultSets} fault set(s) and ${sds} SDS; remove them first`,
        { pools, fault_sets: faultSets, sds },
      );
    }
    db.prepare('DELETE FROM protection_domains WHERE id = ?').run(pd.id);
    recordEvent(db, 'info', 'PD_DELETED', `protection domain ${pd.name} deleted`);
    return pd;
  })();
}

// ---------------------------------------------------------------- fault sets

export const createFaultSetSchema = z.strictObject({ pd: refSchema, name: nameSchema });

export function createFaultSet(db: Db, input: z.infer<typeof createFaultSetSchema>): FaultSetRow {
  return db.transaction(() => {
    const pd = getRow<PdRow>(db, 'pd', input.pd);
    assertNameFree(db, 'faultSet', input.name);
    const { lastInsertRowid } = db.prepare('INSERT INTO fault_sets (pd_id, name) VALUES (?, ?)').run(pd.id, input.name);
    recordEvent(db, 'info', 'FAULT_SET_CREATED', `fault set ${input.name} created in ${pd.name}`, { pdId: pd.id });
    return getRow<FaultSetRow>(db, 'faultSet', Number(lastInsertRowid));
  })();
}

export function deleteFaultSet(db: Db, ref: string | number): FaultSetRow {
  return db.transaction(() => {
    const faultSet = getRow<FaultSetRow>(db, 'faultSet', ref);
    const sds = (db.prepare('SELECT COUNT(*) AS n FROM sds WHERE fault_set_id = ?').get(faultSet.id) as { n: number }).n;
    if (sds > 0) throw pflexError('NOT_EMPTY', `fault set ${faultSet.name} still has ${sds} SDS`, { sds });
    db.prepare('DELETE FROM fault_sets WHERE id = ?').run(faultSet.id);
    recordEvent(db, 'info', 'FAULT_SET_DELETED', `fault set ${faultSet.name} deleted`, { pdId: faultSet.pd_id });
    return faultSet;
  })();
}

// ---------------------------------------------------------------- storage pools

const percentSchema = z.number().int().min(0).max(100);

export const createPoolSchema = z
  .strictObject({
    pd: refSchema,
    name: nameSchema,
    protection_policy: z.enum(['two_copies', 'three_copies']).default('two_copies'),
    chunk_size_bytes: z
      .number()
      .int()
      .min(CHUNK_SIZE_BYTES_MIN)
      .max(CHUNK_SIZE_BYTES_MAX)
      .refine((n) => (n & (n - 1)) === 0, 'must be a power of two')
      .default(CHUNK_SIZE_BYTES_DEFAULT),
    spare_percent: z.number().int().min(0).max(50).default(10),
    rebuild_rate_mbps: z.number().int().min(1).max(100_000).default(100),
    rebuild_enabled: z.boolean().default(true),
    rebalance_enabled: z.boolean().default(true),
    capacity_alert_high_percent: percentSchema.default(80),
    capacity_alert_critical_percent: percentSchema.default(90),
  })
  .refine((pool) => pool.capacity_alert_high_percent <= pool.capacity_alert_critical_percent, {
    message: 'capacity_alert_high_percent must not exceed capacity_alert_critical_percent',
    path: ['capacity_alert_high_percent'],
  });

export function createPool(db: Db, input: z.infer<typeof createPoolSchema>): PoolRow {
  return db.transaction(() => {
    const pd = getRow<PdRow>(db, 'pd', input.pd);
    assertNameFree(db, 'pool', input.name);
    const { lastInsertRowid } = db
      .prepare(
        `INSERT INTO storage_pools (pd_id, name, protection_policy, chunk_size_bytes, spare_percent, rebuild_rate_mbps,
           rebuild_enabled, rebalance_enabled, capacity_alert_high_percent, capacity_alert_critical_percent)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        pd.id,
        input.name,
        input.protection_policy,
        input.chunk_size_bytes,
        input.spare_percent,
        input.rebuild_rate_mbps,
        input.rebuild_enabled ? 1 : 0,
        input.rebalance_enabled ? 1 : 0,
        input.capacity_alert_high_percent,
        input.capacity_alert_critical_percent,
      );
    const poolId = Number(lastInsertRowid);
    recordEvent(db, 'info', 'POOL_CREATED', `storage pool ${input.name} (${input.protection_policy}) created in ${pd.name}`, {
      pdId: pd.id,
      poolId,
    });
    return getRow<PoolRow>(db, 'pool', poolId);
  })();
}

export const modifyPoolSchema = z.strictObject({
  rebuild_rate_mbps: z.number().int().min(1).max(100_000).optional(),
  rebuild_enabled: z.boolean().optional(),
  rebalance_enabled: z.boolean().optional(),
  spare_percent: z.number().int().min(0).max(50).optional(),
  capacity_alert_high_percent: percentSchema.optional(),
  capacity_alert_critical_percent: percentSchema.optional(),
});

export function modifyPool(db: Db, ref: string | number, input: z.infer<typeof modifyPoolSchema>): PoolRow {
  return db.transaction(() => {
    const pool = getRow<PoolRow>(db, 'pool', ref);
    const given = Object.fromEntries(
      Object.entries(input)
        .filter(([, v]) => v !== undefined)
        .map(([key, v]) => [key, typeof v === 'boolean' ? (v ? 1 : 0) : v]),
    );
    const next = { ...pool, ...given } as PoolRow;
    if (next.capacity_alert_high_percent > next.capacity_alert_critical_percent) {
      throw pflexError('VALIDATION', 'capacity_alert_high_percent must not exceed capacity_alert_critical_percent', {
        field: 'capacity_alert_high_percent',
      });
    }
    db.prepare(
      `UPDATE storage_pools SET rebuild_rate_mbps = ?, rebuild_enabled = ?, rebalance_enabled = ?, spare_percent = ?,
         capacity_alert_high_percent = ?, capacity_alert_critical_percent = ? WHERE id = ?`,
    ).run(
      next.rebuild_rate_mbps,
      next.rebuild_enabled,
      next.rebalance_enabled,
      next.spare_percent,
      next.capacity_alert_high_percent,
      next.capacity_alert_critical_percent,
      pool.id,
    );
    recordEvent(db, 'info', 'POOL_MODIFIED', `storage pool ${pool.name} modified: ${JSON.stringify(input)}`, { poolId: pool.id });
    return getRow<PoolRow>(db, 'pool', pool.id);
  })();
}

export function deletePool(db: Db, ref: string | number): PoolRow {
  return db.transaction(() => {
    const pool = getRow<PoolRow>(db, 'pool', ref);
    const volumes = (db.prepare('SELECT COUNT(*) AS n FROM volumes WHERE pool_id = ?').get(pool.id) as { n: number }).n;
    const devices = (db.prepare('SELECT COUNT(*) AS n FROM sds_devices WHERE pool_id = ?').get(pool.id) as { n: number }).n;
    if (volumes + devices > 0) {
      throw pflexError('NOT_EMPTY', `storage pool ${pool.name} still has ${volumes} volume(s) and ${devices} device(s)`, {
        volumes,
        devices,
      });
    }
    db.prepare('DELETE FROM storage_pools WHERE id = ?').run(pool.id);
    recordEvent(db, 'info', 'POOL_DELETED', `storage pool ${pool.name} deleted`, { pdId: pool.pd_id });
    return pool;
  })();
}

// ---------------------------------------------------------------- SDS and devices

export const deviceSchema = z.strictObject({
  path: devicePathSchema,
  capacity_bytes: z.number().int().min(DEVICE_CAPACITY_BYTES_MIN).max(DEVICE_CAPACITY_BYTES_MAX),
  pool: refSchema,
});

export const addSdsSchema = z.strictObject({
  name: nameSchema,
  pd: refSchema,
  fault_set: refSchema.optional(),
  host: hostSchema.default('127.0.0.1'),
  data_port: portSchema.default(9700),
  control_port: portSchema.default(9100),
  mgmt_port: portSchema.default(9200),
  devices: z.array(deviceSchema).max(DEVICES_PER_SDS_MAX).default([]),
});

export function addSds(db: Db, input: z.infer<typeof addSdsSchema>): SdsRow {
  return db.transaction(() => {
    const pd = getRow<PdRow>(db, 'pd', input.pd);
    assertNameFree(db, 'sds', input.name);
    let faultSetId: number | null = null;
    if (input.fault_set !== undefined) {
      const faultSet = getRow<FaultSetRow>(db, 'faultSet', input.fault_set);
      if (faultSet.pd_id !== pd.id) {
        throw pflexError('CONFLICT', `fault set ${faultSet.name} is not in protection domain ${pd.name}`);
      }
      faultSetId = faultSet.id;
    }
    const clash = db
      .prepare('SELECT name FROM sds WHERE host = ? AND (data_port = ? OR control_port = ? OR mgmt_port = ?)')
      .get(input.host, input.data_port, input.control_port, input.mgmt_port) as { name: string } | undefined;
    if (clash !== undefined) {
      throw pflexError('CONFLICT', `SDS ${clash.name} already uses one of these ports on ${input.host}`);
    }
    const { lastInsertRowid } = db
      .prepare(
        `INSERT INTO sds (name, pd_id, fault_set_id, host, data_port, control_port, mgmt_port) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(input.name, pd.id, faultSetId, input.host, input.data_port, input.control_port, input.mgmt_port);
    const sdsId = Number(lastInsertRowid);
    for (const device of input.devices) insertDevice(db, sdsId, device);
    recordEvent(db, 'info', 'SDS_ADDED', `SDS ${input.name} added to ${pd.name} with ${input.devices.length} device(s)`, {
      pdId: pd.id,
      sdsId,
    });
    return getRow<SdsRow>(db, 'sds', sdsId);
  })();
}

function insertDevice(db: Db, sdsId: number, device: z.infer<typeof deviceSchema>): DeviceRow {
  const sds = getRow<SdsRow>(db, 'sds', sdsId);
  const pool = getRow<PoolRow>(db, 'pool', device.pool);
  if (pool.pd_id !== sds.pd_id) {
    throw pflexError('CONFLICT', `storage pool ${pool.name} is not in the protection domain of SDS ${sds.name}`);
  }
  const count = (db.prepare('SELECT COUNT(*) AS n FROM sds_devices WHERE sds_id = ?').get(sdsId) as { n: number }).n;
  if (count >= DEVICES_PER_SDS_MAX) throw pflexError('CONFLICT', `SDS ${sds.name} already has ${DEVICES_PER_SDS_MAX} devices`);
  if (db.prepare('SELECT 1 FROM sds_devices WHERE sds_id = ? AND path = ?').get(sdsId, device.path) !== undefined) {
    throw pflexError('NAME_TAKEN', `SDS ${sds.name} already has device ${device.path}`);
  }
  const { lastInsertRowid } = db
    .prepare('INSERT INTO sds_devices (sds_id, pool_id, path, capacity_bytes) VALUES (?, ?, ?, ?)')
    .run(sdsId, pool.id, device.path, device.capacity_bytes);
  return db.prepare('SELECT * FROM sds_devices WHERE id = ?').get(Number(lastInsertRowid)) as DeviceRow;
}

export const addDeviceSchema = deviceSchema.extend({ sds: refSchema });

export function addDevice(db: Db, input: z.infer<typeof addDeviceSchema>): DeviceRow {
  return db.transaction(() => {
    const sds = getRow<SdsRow>(db, 'sds', input.sds);
    const device = insertDevice(db, sds.id, input);
    recordEvent(db, 'info', 'DEVICE_ADDED', `device ${input.path} (${input.capacity_bytes} bytes) added to SDS ${sds.name}`, {
      sdsId: sds.id,
      poolId: device.pool_id,
    });
    return device;
  })();
}

export function listDevices(db: Db, sdsId?: number): DeviceRow[] {
  if (sdsId === undefined) return db.prepare('SELECT * FROM sds_devices ORDER BY sds_id, id').all() as DeviceRow[];
  return db.prepare('SELECT * FROM sds_devices WHERE sds_id = ? ORDER BY id').all(sdsId) as DeviceRow[];
}

export function removeSds(db: Db, ref: string | number): SdsRow {
  return db.transaction(() => {
    const sds = getRow<SdsRow>(db, 'sds', ref);
    const replicas = (db.prepare('SELECT COUNT(*) AS n FROM replicas WHERE sds_id = ?').get(sds.id) as { n: number }).n;
    if (replicas > 0) {
      throw pflexError('NOT_EMPTY', `SDS ${sds.name} still holds ${replicas} chunk replica(s); they must be moved off first`, {
        replicas,
      });
    }
    db.prepare('DELETE FROM sds_devices WHERE sds_id = ?').run(sds.id);
    db.prepare('DELETE FROM sds_pool_usage WHERE sds_id = ?').run(sds.id);
    db.prepare('DELETE FROM sds WHERE id = ?').run(sds.id);
    db.prepare(`DELETE FROM cluster_nodes WHERE node_id = ? AND roles LIKE '%sds%'`).run(sds.name);
    recordEvent(db, 'info', 'SDS_REMOVED', `SDS ${sds.name} removed`, { pdId: sds.pd_id });
    return sds;
  })();
}

/**
 * `pflex sds remove`: an SDS without replicas goes now; one with replicas is drained first
 * (state REMOVING: no new replicas, the rebuilder moves every replica elsewhere, then removes it).
 * A DOWN SDS goes once none of its replicas is the last copy of anything.
 */
export function requestSdsRemoval(db: Db, ref: string | number): { deleted: SdsRow } | { draining: SdsRow; replicas: number } {
  return db.transaction(() => {
    const sds = getRow<SdsRow>(db, 'sds', ref);
    const replicas = (db.prepare('SELECT COUNT(*) AS n FROM replicas WHERE sds_id = ?').get(sds.id) as { n: number }).n;
    if (replicas === 0) return { deleted: removeSds(db, sds.id) };
    if (sds.state === 'REMOVING') return { draining: sds, replicas };
    if (sds.state === 'DOWN') {
      const lastCopies = (
        db
          .prepare(
            `SELECT COUNT(*) AS n FROM replicas r WHERE r.sds_id = ? AND NOT EXISTS (
               SELECT 1 FROM replicas o JOIN sds s ON s.id = o.sds_id WHERE o.chunk_id = r.chunk_id AND o.sds_id != r.sds_id AND o.state = 'CURRENT' AND s.state != 'DOWN')`,
          )
          .get(sds.id) as { n: number }
      ).n;
      if (lastCopies > 0) {
        throw pflexError('CONFLICT', `SDS ${sds.name} is down and holds the only copy of ${lastCopies} chunk(s); bring it back or accept the loss first`, {
          chunks: lastCopies,
        });
      }
      db.prepare('DELETE FROM replicas WHERE sds_id = ?').run(sds.id);
      return { deleted: removeSds(db, sds.id) };
    }
    db.prepare(`UPDATE sds SET state = 'REMOVING' WHERE id = ?`).run(sds.id);
    recordEvent(db, 'warning', 'SDS_DRAIN_STARTED', `SDS ${sds.name} is being removed: moving its ${replicas} replica(s) to other SDS`, { sdsId: sds.id, pdId: sds.pd_id });
    return { draining: { ...sds, state: 'REMOVING' as const }, replicas };
  })();
}

// ---------------------------------------------------------------- SDC

export const addSdcSchema = z.strictObject({
  name: nameSchema,
  host: hostSchema.default('127.0.0.1'),
});

export function addSdc(db: Db, input: z.infer<typeof addSdcSchema>): SdcRow {
  return db.transaction(() => {
    assertNameFree(db, 'sdc', input.name);
    const { lastInsertRowid } = db.prepare('INSERT INTO sdc (name, host) VALUES (?, ?)').run(input.name, input.host);
    const sdcId = Number(lastInsertRowid);
    recordEvent(db, 'info', 'SDC_ADDED', `SDC ${input.name} added`, { sdcId });
    return getRow<SdcRow>(db, 'sdc', sdcId);
  })();
}

export function removeSdc(db: Db, ref: string | number): SdcRow {
  return db.transaction(() => {
    const sdc = getRow<SdcRow>(db, 'sdc', ref);
    const mappings = (db.prepare('SELECT COUNT(*) AS n FROM volume_mappings WHERE sdc_id = ?').get(sdc.id) as { n: number }).n;
    if (mappings > 0) {
      throw pflexError('VOLUME_MAPPED', `SDC ${sdc.name} still has ${mappings} volume(s) mapped; unmap them first`, { mappings });
    }
    db.prepare('DELETE FROM sdc WHERE id = ?').run(sdc.id);
    db.prepare(`DELETE FROM cluster_nodes WHERE node_id = ? AND roles LIKE '%sdc%'`).run(sdc.name);
    recordEvent(db, 'info', 'SDC_REMOVED', `SDC ${sdc.name} removed`);
    return sdc;
  })();
}
