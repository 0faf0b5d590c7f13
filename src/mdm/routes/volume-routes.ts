/** HTTP routes for volumes and mappings (seed phase 6 paths, plus rename and chunks). */
import type { FastifyInstance } from 'fastify';
import type { MdmContext } from '../context.js';
import { bodyOf, refParam } from '../http-server.js';
import { getRow } from '../lookup.js';
import { parseRef } from '../../common/names.js';
import { pflexError } from '../../common/errors.js';
import {
  createVolume,
  createVolumeSchema,
  deleteVolume,
  extendVolume,
  extendVolumeSchema,
  mapVolume,
  mapVolumeSchema,
  renameVolume,
  renameVolumeSchema,
  unmapVolume,
  unmapVolumeSchema,
} from '../volumes.js';
import { volumeChunksView, volumeView } from '../views.js';
import { notifySdcs, sdcIdsOfVolume } from '../sdc-notifier.js';
import { verifyVolume } from '../volume-verify.js';
import type { VolumeRow } from '../rows.js';
import type { SdsOrders } from '../sds-orders.js';

export function registerVolumeRoutes(app: FastifyInstance, context: MdmContext, orders: SdsOrders): void {
  const { db } = context;

  app.post('/vol/create', async (request, reply) => {
    const volume = createVolume(db, createVolumeSchema.parse(bodyOf(request)));
    return reply.status(201).send(volumeView(db, volume));
  });
  app.get('/vol/list', async (request) => {
    const raw = (request.query as Record<string, unknown>).pool;
    let poolId: number | null = null;
    if (raw !== undefined) {
      const ref = typeof raw === 'string' ? parseRef(raw) : undefined;
      if (ref === undefined) throw pflexError('VALIDATION', 'pool: must be a numeric id or a valid name', { field: 'pool' });
      poolId = getRow<{ id: number }>(db, 'pool', ref).id;
    }
    return (db.prepare('SELECT * FROM volumes WHERE ? IS NULL OR pool_id = ? ORDER BY name').all(poolId, poolId) as VolumeRow[]).map(
      (volume) => volumeView(db, volume),
    );
  });
  app.get('/vol/:id', async (request) => volumeView(db, getRow<VolumeRow>(db, 'volume', refParam(request))));
  app.get('/vol/:id/chunks', async (request) => {
    const volume = getRow<VolumeRow>(db, 'volume', refParam(request));
    return { volume: volume.name, chunks: volumeChunksView(db, volume) };
  });
  app.post('/vol/:id/verify', async (request) => verifyVolume(context, refParam(request)));
  app.post('/vol/extend', async (request) => {
    const volume = extendVolume(db, extendVolumeSchema.parse(bodyOf(request)));
    notifySdcs(db, context.log, sdcIdsOfVolume(db, volume.id));
    return volumeView(db, volume);
  });
  app.post('/vol/rename', async (request) => {
    const volume = renameVolume(db, renameVolumeSchema.parse(bodyOf(request)));
    notifySdcs(db, context.log, sdcIdsOfVolume(db, volume.id));
    return volumeView(db, volume);
  });
  app.delete('/vol/:id', async (request) => {
    // The SDS free the volume's slots (durable orders, delivered now or when each SDS is back).
    const deleted = deleteVolume(db, refParam(request), (sdsId, chunks) => orders.queueDeletions(sdsId, chunks));
    void orders.retry();
    return { deleted };
  });
  app.post('/vol/map', async (request, reply) => {
    const mapping = mapVolume(db, mapVolumeSchema.parse(bodyOf(request)));
    notifySdcs(db, context.log, [mapping.sdc_id]);
    return reply.status(201).send(mapping);
  });
  app.post('/vol/unmap', async (request) => {
    const mapping = unmapVolume(db, unmapVolumeSchema.parse(bodyOf(request)));
    notifySdcs(db, context.log, [mapping.sdc_id]);
    return { unmapped: mapping };
  });
}
