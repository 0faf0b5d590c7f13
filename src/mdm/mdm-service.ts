/**
 * The MDM as a service: opens powerflex.db, makes the cluster's identity, signing key and admin
 * credential at first start, serves the HTTP API and runs the health monitor until stopped.
 */
import { mkdirSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { openDatabase, type Db } from './database.js';
import { ensureAdminCredential } from './auth.js';
import { buildHttpServer, HTTP_LISTEN_BACKLOG } from './http-server.js';
import { registerTopologyRoutes } from './routes/topology-routes.js';
import { registerVolumeRoutes } from './routes/volume-routes.js';
import { registerClusterRoutes } from './routes/cluster-routes.js';
import { registerMetrics } from './metrics.js';
import { startHealthMonitor } from './membership.js';
import { Fencing } from './fencing.js';
import { SdsControl } from './sds-control.js';
import { SdsOrders } from './sds-orders.js';
import { ReplicaFaults } from './replica-faults.js';
import { Rebuilder } from './rebuild.js';
import { TxAcks } from './tx-acks.js';
import { ChangeTracker } from './change-tracker.js';
import { pruneEvents, recordEvent } from './events.js';
import { newSigningKey } from '../common/secrets.js';
import type { Logger } from '../common/logger.js';
import type { MdmContext, MdmSettings } from './context.js';

export interface MdmOptions {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly settings: MdmSettings;
  readonly adminToken: string | undefined;
  readonly log: Logger;
}

export interface RunningMdm {
  readonly url: string;
  readonly port: number;
  readonly adminTokenFile: string;
  readonly context: MdmContext;
  close(): Promise<void>;
}

function configValue(db: Db, key: string, make: () => string): string {
  const row = db.prepare('SELECT value FROM cluster_config WHERE key = ?').get(key) as { value: string } | undefined;
  if (row !== undefined) return row.value;
  const value = make();
  db.prepare('INSERT INTO cluster_config (key, value) VALUES (?, ?)').run(key, value);
  return value;
}

export async function startMdm(options: MdmOptions): Promise<RunningMdm> {
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  chmodSync(options.dataDir, 0o700);
  const db = openDatabase(join(options.dataDir, 'powerflex.db'));
  const clusterId = configValue(db, 'cluster_id', () => randomUUID());
  const signingKey = Buffer.from(configValue(db, 'token_signing_key', () => newSigningKey().toString('base64')), 'base64');
  const admin = ensureAdminCredential(db, options.dataDir, options.adminToken);
  const context: MdmContext = { db, log: options.log, settings: options.settings, signingKey, clusterId };
  // Nodes could not heartbeat while the MDM was down: give every live node a full miss window
  // from now, or a restarted MDM would fence every SDS at its first health pass.
  const startedNowMs = Date.now();
  db.prepare(`UPDATE cluster_nodes SET last_heartbeat_at_ms = ? WHERE status = 'UP'`).run(startedNowMs);
  db.prepare(`UPDATE sds SET last_heartbeat_at_ms = ? WHERE state = 'UP'`).run(startedNowMs);
  db.prepare(`UPDATE sdc SET last_heartbeat_at_ms = ? WHERE state = 'UP'`).run(startedNowMs);

  const startedAtMs = Date.now();
  const app: FastifyInstance = buildHttpServer(options.log, db, admin);
  const sdsControl = new SdsControl(context);
  const orders = new SdsOrders(context, sdsControl);
  const fencing = new Fencing(context, sdsControl, orders);
  const replicaFaults = new ReplicaFaults(context, fencing);
  const rebuilder = new Rebuilder(context, fencing);
  const txAcks = new TxAcks(context);
  const changes = new ChangeTracker(db);
  registerClusterRoutes(app, context, startedAtMs, fencing, rebuilder, replicaFaults, txAcks, changes);
  registerTopologyRoutes(app, context, () => rebuilder.kick());
  registerVolumeRoutes(app, context, orders);
  registerMetrics(app, context);

  await app.listen({ host: options.host, port: options.port, backlog: HTTP_LISTEN_BACKLOG });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  const sdsStates = new SdsStateWatch(db);
  const stopHealthMonitor = startHealthMonitor(
    context,
    (sdsId) => void fencing.fence(sdsId, 'missed heartbeats'),
    () => {
      // Both look at replicas of SDS that changed state: only when some SDS did, or now and then.
      const change = sdsStates.changes();
      if (change.all) void fencing.recoverLost();
      else if (change.returned.length > 0) void fencing.recoverLost(change.returned);
      if (change.down) fenceDownHolders(context, fencing);
    },
    (sdcName) => rebuilder.resyncAfterSdcLoss(sdcName),
  );
  rebuilder.start();
  orders.start();
  txAcks.start();
  const pruneTimer = setInterval(() => pruneEvents(db), 60_000);
  pruneTimer.unref();
  recordEvent(db, 'info', 'MDM_STARTED', `MDM started on ${options.host}:${port}`);
  options.log.info({ host: options.host, port, dataDir: options.dataDir, clusterId }, 'MDM listening');

  let closed = false;
  return {
    url: `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`,
    port,
    adminTokenFile: admin.file,
    context,
    async close() {
      if (closed) return;
      closed = true;
      stopHealthMonitor();
      orders.stop();
      clearInterval(pruneTimer);
      await rebuilder.stop();
      await app.close();
      txAcks.stop();
      recordEvent(db, 'info', 'MDM_STOPPED', 'MDM stopped');
      db.close();
      options.log.info('MDM stopped');
    },
  };
}

/** Checks recovering lost chunks and fencing DOWN holders need at least this often, changes or not. */
const SDS_STATE_RECHECK_MS = 30_000;

/**
 * Which SDS changed state or incarnation since the last pass (one short query): `returned` when
 * some SDS is UP again or restarted with its state lost (lost chunks may be served again), `down`
 * when some SDS went DOWN (its replicas may need a fence). Both now and then regardless.
 */
class SdsStateWatch {
  private last = new Map<number, string>();
  private lastAllAtMs = 0;

  constructor(private readonly db: Db) {}

  /**
   * SDS whose state or incarnation changed since the last call: those that are not DOWN now
   * (returned, restarted), and whether any went DOWN; `all` now and then (look at every SDS).
   */
  changes(nowMs = Date.now()): { returned: number[]; down: boolean; all: boolean } {
    const rows = this.db.prepare(`SELECT id, state, COALESCE(incarnation, '') AS incarnation FROM sds`).all() as { id: number; state: string; incarnation: string }[];
    const now = new Map<number, string>();
    const returned: number[] = [];
    let down = false;
    for (const row of rows) {
      const signature = `${row.state}:${row.incarnation}`;
      now.set(row.id, signature);
      if (this.last.get(row.id) === signature) continue;
      if (row.state === 'DOWN') down = true;
      else returned.push(row.id);
    }
    this.last = now;
    if (nowMs - this.lastAllAtMs >= SDS_STATE_RECHECK_MS) {
      this.lastAllAtMs = nowMs;
      return { returned, down: true, all: true };
    }
    return { returned, down, all: false };
  }
}

/**
 * An SDS marked DOWN that still holds replicas to fence (say, found so after an MDM restart) is
 * fenced: otherwise its replicas would serve again, at their old epoch, when it returns. Its last
 * current replicas of chunks are not fenced (fenceNow's rule), so only SDS with a rebuild target
 * or a current replica that has a current peer on a live SDS qualify, not every pass again.
 */
function fenceDownHolders(context: MdmContext, fencing: Fencing): void {
  const { db } = context;
  // From the DOWN SDS (few) to their replicas (by index), never from every replica.
  // Each by the (sds_id, state) index: a fenced SDS's stale replicas are never read.
  const rebuilding = db.prepare(`SELECT 1 FROM replicas WHERE sds_id = ? AND state = 'REBUILDING' LIMIT 1`);
  const currentWithLivePeer = db.prepare(
    `SELECT 1 FROM replicas r WHERE r.sds_id = ? AND r.state = 'CURRENT' AND EXISTS (
       SELECT 1 FROM replicas o JOIN sds os ON os.id = o.sds_id
       WHERE o.chunk_id = r.chunk_id AND o.sds_id != r.sds_id AND o.state = 'CURRENT' AND os.state != 'DOWN') LIMIT 1`,
  );
  for (const sds of db.prepare(`SELECT id FROM sds WHERE state = 'DOWN'`).all() as { id: number }[]) {
    if (rebuilding.get(sds.id) !== undefined || currentWithLivePeer.get(sds.id) !== undefined) void fencing.fence(sds.id, 'down');
  }
}
