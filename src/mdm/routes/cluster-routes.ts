/** HTTP routes for health, status, events, join tokens, discovery and the IO token authority. */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { MdmContext } from '../context.js';
import { bodyOf, refParam } from '../http-server.js';
import { pflexError, PflexError } from '../../common/errors.js';
import { findRow, getRow } from '../lookup.js';
import { clusterStatus } from '../views.js';
import { listEvents } from '../events.js';
import { checkInvariants } from '../invariants.js';
import {
  createJoinToken,
  createJoinTokenSchema,
  deregister,
  heartbeat,
  heartbeatSchema,
  listNodes,
  NODE_ROLES,
  registerNode,
  registerSchema,
} from '../membership.js';
import { authorize, authorizeSchema, txAckSchema } from '../token-authority.js';
import { LeaseRenewals, renewSchema, type Renewer } from '../lease-renewal.js';
import type { ChangeTracker } from '../change-tracker.js';
import type { TxAcks } from '../tx-acks.js';
import { Admission } from '../admission.js';
import type { SdcRow } from '../rows.js';
import type { Caller } from '../auth.js';
import type { Fencing, EpochOrder } from '../fencing.js';
import type { Rebuilder } from '../rebuild.js';
import { replicaFailureSchema, sdsChunkReportSchema, type ReplicaFaults } from '../replica-faults.js';

export const EVENTS_PAGE_MAX = 1000;
export const PFLEX_VERSION = '0.1.0';

function nodeCaller(request: FastifyRequest, role?: string): Extract<Caller, { kind: 'node' }> {
  const caller = request.caller;
  if (caller?.kind !== 'node') throw pflexError('FORBIDDEN', 'this endpoint is for registered nodes');
  if (role !== undefined && !caller.roles.includes(role)) {
    throw pflexError('FORBIDDEN', `this endpoint is for nodes with the ${role} role`);
  }
  return caller;
}

const reportSchema = z.strictObject({
  sds_id: z.number().int().positive().max(0xffffffff),
  problem: z.string().max(500).default(''),
});

const eventQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(EVENTS_PAGE_MAX).default(100),
  since_id: z.coerce.number().int().min(0).optional(),
  type: z.string().regex(/^[A-Z_]{1,64}$/).optional(),
});

export function registerClusterRoutes(
  app: FastifyInstance,
  context: MdmContext,
  startedAtMs: number,
  fencing: Fencing,
  rebuilder: Rebuilder,
  replicaFaults: ReplicaFaults,
  txAcks: TxAcks,
  changes: ChangeTracker,
): void {
  const { db } = context;
  // One transaction per slice: thin placements of a slice share one fsync (each authorization's
  // own transaction is a savepoint in it, so one that fails undoes only itself).
  const authorizations = new Admission('authorize', undefined, undefined, (slice) => db.transaction(slice)());
  const renewals = new LeaseRenewals(context, changes, (volumeId, first, count) => fencing.heldIn(volumeId, first, count) !== undefined);

  app.get('/health', { config: { access: 'public' } }, async () => ({
    status: 'ok',
    role: 'mdm',
    version: PFLEX_VERSION,
    cluster_id: context.clusterId,
    uptime_s: Math.round((Date.now() - startedAtMs) / 1000),
  }));

  app.get('/cluster/status', { config: { access: 'admin-or-node' } }, async () => ({
    ...clusterStatus(db, context.clusterId),
    rebuild: rebuilder.status(),
    // Epoch installs and chunk deletions not yet delivered (an SDS that did not answer): retried.
    sds_orders_pending: fencing.orders.pending(),
    // Authorizations waiting their turn, and those refused as BUSY (admission.ts).
    authorize_admission: authorizations.stats(),
    // Leases renewed without a plan, and those whose plan changed (lease-renewal.ts).
    lease_renewals: renewals.stats(),
  }));
  // Every chunk's invariants (invariants.ts): for tests, chaos runs and operators after an incident.
  app.get('/cluster/invariants', async () => checkInvariants(context.db));
  app.get('/rebuild/status', { config: { access: 'admin-or-node' } }, async () => ({ pools: rebuilder.status() }));
  app.post('/cluster/join-token', async (request, reply) =>
    reply.status(201).send(createJoinToken(db, createJoinTokenSchema.parse(bodyOf(request)))),
  );
  app.get('/event/list', async (request) => {
    const query = eventQuerySchema.parse(request.query);
    return listEvents(db, {
      limit: query.limit,
      ...(query.since_id !== undefined ? { sinceId: query.since_id } : {}),
      ...(query.type !== undefined ? { type: query.type } : {}),
    });
  });

  // -------- discovery
  app.post('/discovery/register', { config: { access: 'public' } }, async (request, reply) => {
    const input = registerSchema.parse(bodyOf(request));
    // An SDS registers in the chain of epoch changes: the epochs it is told of are final, and a
    // new incarnation (its state was lost) fences every replica it had before it serves.
    const register = async () => {
      let lost: Map<number, EpochOrder[]> | undefined;
      const registration = registerNode(context, input, request.caller, Date.now(), { sdsStateLost: (sdsId) => (lost = replicaFaults.incarnationLost(sdsId)) });
      if (lost !== undefined) await fencing.installEpochs(lost);
      return registration;
    };
    const answer = input.roles.includes('sds') ? await fencing.serialize(register) : await register();
    // An SDC that (re)starts may have died with writes in flight: their chunks are resynced.
    if (input.roles.includes('sdc')) rebuilder.resyncAfterSdcLoss(input.node_id);
    if (answer.sds_id !== undefined) rebuilder.sdsRegistered(answer.sds_id);
    return reply.status(201).send(answer);
  });
  app.post('/discovery/heartbeat', { config: { access: 'node' } }, async (request) => {
    const caller = nodeCaller(request);
    const answer = heartbeat(context, caller.nodeId, heartbeatSchema.parse(bodyOf(request)));
    if (!caller.roles.includes('sdc')) return answer;
    // An SDC pulls its mappings only when this differs from the version of its last pull.
    const sdc = findRow<SdcRow>(db, 'sdc', caller.nodeId);
    return sdc === undefined ? answer : { ...answer, mappings_version: changes.mappingsVersion(sdc.id) };
  });
  app.post('/discovery/deregister', { config: { access: 'node' } }, async (request) => {
    const nodeId = nodeCaller(request).nodeId;
    const answer = deregister(context, nodeId);
    // A stopped SDS misses every write from now on: fence it like a failed one.
    const sds = db.prepare(`SELECT id FROM sds WHERE name = ? AND state = 'DOWN'`).get(nodeId) as { id: number } | undefined;
    if (sds !== undefined) void fencing.fence(sds.id, 'stopped');
    return answer;
  });
  app.get('/discovery/topology', { config: { access: 'admin-or-node' } }, async () => ({
    cluster_id: context.clusterId,
    mdm: { heartbeat_interval_ms: context.settings.heartbeatIntervalMs },
    nodes: listNodes(db),
  }));
  app.get('/discovery/peers/:role', { config: { access: 'admin-or-node' } }, async (request) => {
    const role = String((request.params as { role: string }).role).toLowerCase();
    if (!(NODE_ROLES as readonly string[]).includes(role)) {
      throw pflexError('VALIDATION', `role: must be one of ${NODE_ROLES.join(', ')}`, { field: 'role' });
    }
    return listNodes(db, role);
  });

  /** An SDC's own mappings: the volumes it exports. */
  app.get('/discovery/mappings', { config: { access: 'node' } }, async (request) => {
    const caller = nodeCaller(request, 'sdc');
    const sdc = getRow<SdcRow>(db, 'sdc', caller.nodeId);
    return {
      sdc_id: sdc.id,
      // Read in the same turn as the list: equal versions, equal lists (change-tracker.ts).
      mappings_version: changes.mappingsVersion(sdc.id),
      mappings: db
        .prepare(
          `SELECT v.id AS volume_id, v.name, v.size_bytes, v.provisioning, m.access_mode, p.id AS pool_id, p.chunk_size_bytes
           FROM volume_mappings m JOIN volumes v ON v.id = m.volume_id JOIN storage_pools p ON p.id = v.pool_id
           WHERE m.sdc_id = ? ORDER BY v.name`,
        )
        .all(sdc.id),
    };
  });

  // -------- IO authorization
  app.post('/vol/:id/io/authorize', { config: { access: 'admin-or-node' } }, async (request) => {
    const input = authorizeSchema.parse(bodyOf(request));
    let sdcRef: string | number;
    if (request.caller?.kind === 'node') {
      const caller = nodeCaller(request, 'sdc');
      sdcRef = getRow<SdcRow>(db, 'sdc', caller.nodeId).id;
      if (input.sdc !== undefined && input.sdc !== sdcRef && input.sdc !== caller.nodeId) {
        throw pflexError('FORBIDDEN', 'an SDC can only ask for tokens for itself');
      }
    } else {
      if (input.sdc === undefined) throw pflexError('VALIDATION', 'sdc: required for admin callers', { field: 'sdc' });
      sdcRef = input.sdc;
    }
    const volumeId = getRow<{ id: number }>(db, 'volume', refParam(request)).id;
    // In its turn (admission.ts: a burst of authorizations never holds up heartbeats), and never
    // with an epoch not yet installed on the survivors: an epoch change of these chunks in
    // progress (only those) is waited for, then the plan is made in the same turn as the check.
    for (;;) {
      const outcome = await authorizations.run(() => {
        const wait = fencing.heldIn(volumeId, input.chunk_first, input.chunk_count);
        if (wait !== undefined) return { wait };
        const { answer, planSdsIds } = authorize(context, volumeId, sdcRef, input);
        renewals.issued(answer.token_id, Date.parse(answer.expires_at), planSdsIds);
        return { answer };
      });
      if (outcome.answer === undefined) {
        await outcome.wait;
        continue;
      }
      txAcks.tokenIssued(outcome.answer.token_id, outcome.answer.volume.id, Date.parse(outcome.answer.expires_at));
      return outcome.answer;
    }
  });
  /**
   * Lease renewals, many tokens per request (lease-renewal.ts): each signed again for a new
   * lifetime when its plan did not change, or PLAN_CHANGED. Admitted like authorizations. With
   * `replan`, each PLAN_CHANGED window is authorized again here, each in an admission turn of
   * its own (a batch of changed windows never holds the loop for more than a slice): a fence
   * that changes the plans of thousands of windows costs no extra request per window. A window
   * whose epochs are being installed, or that cannot be planned (unmapped meanwhile, BUSY), stays
   * PLAN_CHANGED: its SDC authorizes it as before, and waits or hears why.
   */
  app.post('/io/renew', { config: { access: 'admin-or-node' } }, async (request) => {
    const input = renewSchema.parse(bodyOf(request));
    const renewer: Renewer = request.caller?.kind === 'node' ? { sdcId: getRow<SdcRow>(db, 'sdc', nodeCaller(request, 'sdc').nodeId).id } : { admin: true };
    const { outcomes, replans } = await authorizations.run(() => renewals.renew(renewer, input.tokens));
    if (input.replan) {
      await Promise.all(
        replans.map(async (replan) => {
          const answer = await authorizations
            .run(() => {
              if (fencing.heldIn(replan.volumeId, replan.chunkFirst, replan.chunkCount) !== undefined) return undefined;
              const { answer: planned, planSdsIds } = authorize(context, replan.volumeId, replan.sdcId, { operations: replan.operations, chunk_first: replan.chunkFirst, chunk_count: replan.chunkCount, allocate: false });
              renewals.issued(planned.token_id, Date.parse(planned.expires_at), planSdsIds);
              return planned;
            })
            .catch((error: unknown) => {
              if (error instanceof PflexError) return undefined; // PLAN_CHANGED stands: the SDC asks itself
              throw error;
            });
          if (answer === undefined) return;
          renewals.replanned();
          outcomes[replan.index] = { volume_id: replan.volumeId, replanned: answer };
        }),
      );
    }
    for (const outcome of outcomes) {
      if ('token_id' in outcome) txAcks.tokenIssued(outcome.token_id, outcome.volume_id, Date.parse(outcome.expires_at));
      else if ('replanned' in outcome) txAcks.tokenIssued(outcome.replanned.token_id, outcome.volume_id, Date.parse(outcome.replanned.expires_at));
    }
    return { leases: outcomes };
  });
  /** An SDC could not reach an SDS: the MDM probes it and fences it at once if it is gone. */
  app.post('/sds/report-unreachable', { config: { access: 'node' } }, async (request) => {
    const caller = nodeCaller(request, 'sdc');
    const input = reportSchema.parse(bodyOf(request));
    return fencing.reportUnreachable(input.sds_id, caller.nodeId, input.problem);
  });
  /**
   * An SDC says a replica could not take a write (or serve a read): it is fenced alone where a
   * peer is current, and the SDC re-plans onto the survivors (see replica-faults.ts).
   */
  app.post('/replicas/report-failed', { config: { access: 'node' } }, async (request) => {
    const caller = nodeCaller(request, 'sdc');
    const input = replicaFailureSchema.parse(bodyOf(request));
    // An SDC speaks only for the volumes mapped to it: it cannot strip another volume's redundancy.
    const sdc = getRow<SdcRow>(db, 'sdc', caller.nodeId);
    const mapped = db.prepare('SELECT 1 FROM volume_mappings WHERE volume_id = ? AND sdc_id = ?');
    const foreign = input.failures.find((failure) => mapped.get(failure.volume_id, sdc.id) === undefined);
    if (foreign !== undefined) throw pflexError('FORBIDDEN', `volume #${foreign.volume_id} is not mapped to SDC ${sdc.name}`);
    const outcomes = await replicaFaults.reportFailures(caller.nodeId, input);
    rebuilder.kick();
    return { outcomes };
  });
  /** An SDS's replicas on devices it found missing or foreign. */
  app.post('/sds/replicas/lost', { config: { access: 'node' } }, async (request) => {
    const caller = nodeCaller(request, 'sds');
    const sds = getRow<{ id: number }>(db, 'sds', caller.nodeId);
    const answer = await replicaFaults.replicasLost(sds.id, sdsChunkReportSchema.parse(bodyOf(request)));
    rebuilder.kick();
    return answer;
  });
  /** An SDS's chunks with crash-time write intents: trusted, or fenced for a copy. */
  app.post('/sds/replicas/suspect', { config: { access: 'node' } }, async (request) => {
    const caller = nodeCaller(request, 'sds');
    const sds = getRow<{ id: number }>(db, 'sds', caller.nodeId);
    const answer = await replicaFaults.replicasSuspect(sds.id, sdsChunkReportSchema.parse(bodyOf(request)));
    rebuilder.kick();
    return answer;
  });
  app.post('/io/tx/ack', { config: { access: 'node' } }, async (request) =>
    txAcks.record(nodeCaller(request, 'sds').nodeId, txAckSchema.parse(bodyOf(request)).acks),
  );
}
