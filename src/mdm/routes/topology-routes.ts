/** HTTP routes for protection domains, fault sets, pools, SDS, devices and SDC (seed phase 6 paths). */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { MdmContext } from '../context.js';
import { bodyOf, refParam } from '../http-server.js';
import { getRow } from '../lookup.js';
import { refSchema, parseRef } from '../../common/names.js';
import { pflexError } from '../../common/errors.js';
import {
  addDevice,
  addDeviceSchema,
  addSdc,
  addSdcSchema,
  addSds,
  addSdsSchema,
  createFaultSet,
  createFaultSetSchema,
  createPd,
  createPdSchema,
  createPool,
  createPoolSchema,
  deleteFaultSet,
  deletePd,
  deletePool,
  modifyPool,
  modifyPoolSchema,
  removeSdc,
  removeSds,
  requestSdsRemoval,
} from '../topology.js';
import { faultSetView, pdView, poolView, sdcView, sdsView } from '../views.js';
import type { FaultSetRow, PdRow, PoolRow, SdcRow, SdsRow } from '../rows.js';

/** An optional "?pd=" style filter, resolved to an id. */
function filterId(context: MdmContext, query: unknown, key: string, kind: 'pd' | 'pool'): number | undefined {
  const raw = (query as Record<string, unknown> | undefined)?.[key];
  if (raw === undefined) return undefined;
  const ref = typeof raw === 'string' ? parseRef(raw) : undefined;
  if (ref === undefined) throw pflexError('VALIDATION', `${key}: must be a numeric id or a valid name`, { field: key });
  return getRow<{ id: number }>(context.db, kind, ref).id;
}

export function registerTopologyRoutes(app: FastifyInstance, context: MdmContext, kickRebuilder: () => void = () => undefined): void {
  const { db } = context;

  // -------- protection domains
  app.post('/pd/create', async (request, reply) => {
    const pd = createPd(db, createPdSchema.parse(bodyOf(request)));
    return reply.status(201).send(pdView(db, pd));
  });
  app.get('/pd/list', async () => (db.prepare('SELECT * FROM protection_domains ORDER BY name').all() as PdRow[]).map((pd) => pdView(db, pd)));
  app.get('/pd/:id', async (request) => pdView(db, getRow<PdRow>(db, 'pd', refParam(request))));
  app.delete('/pd/:id', async (request) => ({ deleted: deletePd(db, refParam(request)) }));

  // -------- fault sets
  app.post('/fault_set/create', async (request, reply) => {
    const faultSet = createFaultSet(db, createFaultSetSchema.parse(bodyOf(request)));
    return reply.status(201).send(faultSetView(db, faultSet));
  });
  app.get('/fault_set/list', async (request) => {
    const pdId = filterId(context, request.query, 'pd', 'pd');
    return (db.prepare('SELECT * FROM fault_sets WHERE ? IS NULL OR pd_id = ? ORDER BY name').all(pdId ?? null, pdId ?? null) as FaultSetRow[]).map(
      (row) => faultSetView(db, row),
    );
  });
  app.get('/fault_set/:id', async (request) => faultSetView(db, getRow<FaultSetRow>(db, 'faultSet', refParam(request))));
  app.delete('/fault_set/:id', async (request) => ({ deleted: deleteFaultSet(db, refParam(request)) }));

  // -------- storage pools
  app.post('/pool/create', async (request, reply) => {
    const pool = createPool(db, createPoolSchema.parse(bodyOf(request)));
    return reply.status(201).send(poolView(db, pool));
  });
  app.get('/pool/list', async (request) => {
    const pdId = filterId(context, request.query, 'pd', 'pd');
    return (db.prepare('SELECT * FROM storage_pools WHERE ? IS NULL OR pd_id = ? ORDER BY name').all(pdId ?? null, pdId ?? null) as PoolRow[]).map(
      (pool) => poolView(db, pool),
    );
  });
  app.get('/pool/:id', async (request) => poolView(db, getRow<PoolRow>(db, 'pool', refParam(request))));
  app.get('/pool/:id/health', async (request) => {
    const view = poolView(db, getRow<PoolRow>(db, 'pool', refParam(request)));
    return { id: view.id, name: view.name, health: view.health, chunk_health: view.chunk_health, capacity: view.capacity, capacity_alert: view.capacity_alert };
  });
  app.post('/pool/:id/modify', async (request) => poolView(db, modifyPool(db, refParam(request), modifyPoolSchema.parse(bodyOf(request)))));
  app.delete('/pool/:id', async (request) => ({ deleted: deletePool(db, refParam(request)) }));

  // -------- SDS and devices
  app.post('/sds/add', async (request, reply) => {
    const sds = addSds(db, addSdsSchema.parse(bodyOf(request)));
    return reply.status(201).send(sdsView(db, sds));
  });
  app.get('/sds/list', async (request) => {
    const pdId = filterId(context, request.query, 'pd', 'pd');
    return (db.prepare('SELECT * FROM sds WHERE ? IS NULL OR pd_id = ? ORDER BY name').all(pdId ?? null, pdId ?? null) as SdsRow[]).map(
      (row) => sdsView(db, row),
    );
  });
  app.get('/sds/:id', async (request) => sdsView(db, getRow<SdsRow>(db, 'sds', refParam(request))));
  app.post('/sds/:id/device/add', async (request, reply) => {
    const body = z.object({}).passthrough().parse(bodyOf(request));
    const device = addDevice(db, addDeviceSchema.parse({ ...body, sds: refParam(request) }));
    return reply.status(201).send(device);
  });
  app.post('/sds/device/add', async (request, reply) => reply.status(201).send(addDevice(db, addDeviceSchema.parse(bodyOf(request)))));
  app.delete('/sds/:id', async (request) => ({ deleted: removeSds(db, refParam(request)) }));
  /** Graceful: an SDS holding replicas is drained first (202), then removed by the rebuilder. */
  app.post('/sds/remove', async (request, reply) => {
    const result = requestSdsRemoval(db, z.strictObject({ sds: refSchema }).parse(bodyOf(request)).sds);
    if ('deleted' in result) return result;
    kickRebuilder();
    return reply.status(202).send({ draining: sdsView(db, result.draining), replicas: result.replicas });
  });

  // -------- SDC
  app.post('/sdc/add', async (request, reply) => {
    const sdc = addSdc(db, addSdcSchema.parse(bodyOf(request)));
    return reply.status(201).send(sdcView(db, sdc));
  });
  app.get('/sdc/list', async () => (db.prepare('SELECT * FROM sdc ORDER BY name').all() as SdcRow[]).map((row) => sdcView(db, row)));
  app.get('/sdc/:id', async (request) => sdcView(db, getRow<SdcRow>(db, 'sdc', refParam(request))));
  app.delete('/sdc/:id', async (request) => ({ deleted: removeSdc(db, refParam(request)) }));
}
