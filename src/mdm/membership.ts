/**
 * Membership (DESIGN §4): join tokens, registration that issues each node its own credential,
 * heartbeats, deregistration, and the health monitor that marks silent nodes DOWN.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { z } from 'zod';
import { withoutSync, type Db } from './database.js';
import type { MdmContext } from './context.js';
import { pflexError } from '../common/errors.js';
import { nameSchema, refSchema } from '../common/names.js';
import { newSecret, sha256Hex } from '../common/secrets.js';
import { recordEvent } from './events.js';
import { findRow, getRow } from './lookup.js';
import { addSds, hostSchema, deviceSchema } from './topology.js';
import type { SdcRow, SdsRow } from './rows.js';
import type { Caller } from './auth.js';

export const NODE_ROLES = ['sds', 'sdc', 'mgmt'] as const;
export type NodeRole = (typeof NODE_ROLES)[number];
export const JOIN_TOKEN_TTL_S_DEFAULT = 3600;
export const JOIN_TOKEN_TTL_S_MAX = 7 * 24 * 3600;
export const JOIN_TOKEN_USES_MAX = 10_000;
const NODE_METADATA_BYTES_MAX = 64 * 1024;

const portSchema = z.number().int().min(1).max(65535);

// ---------------------------------------------------------------- join tokens

export const createJoinTokenSchema = z.strictObject({
  roles: z.array(z.enum(NODE_ROLES)).min(1).max(NODE_ROLES.length).default(['sds', 'sdc', 'mgmt']),
  ttl_s: z.number().int().min(1).max(JOIN_TOKEN_TTL_S_MAX).default(JOIN_TOKEN_TTL_S_DEFAULT),
  uses_max: z.number().int().min(1).max(JOIN_TOKEN_USES_MAX).default(JOIN_TOKEN_USES_MAX),
});

export function createJoinToken(
  db: Db,
  input: z.infer<typeof createJoinTokenSchema>,
  nowMs = Date.now(),
): { join_token: string; roles: string[]; expires_at: string; uses_max: number } {
  const token = newSecret('pfj');
  const roles = [...new Set(input.roles)].sort();
  const expiresAtMs = nowMs + input.ttl_s * 1000;
  db.prepare('INSERT INTO join_tokens (token_sha256, roles, expires_at_ms, uses_max) VALUES (?, ?, ?, ?)').run(
    sha256Hex(token),
    roles.join(','),
    expiresAtMs,
    input.uses_max,
  );
  db.prepare('DELETE FROM join_tokens WHERE expires_at_ms < ?').run(nowMs);
  recordEvent(db, 'info', 'JOIN_TOKEN_CREATED', `join token for ${roles.join(',')} created, valid ${input.ttl_s} s`);
  return { join_token: token, roles, expires_at: new Date(expiresAtMs).toISOString(), uses_max: input.uses_max };
}

/** Consumes one use of a join token for these roles, or throws 401 without saying which check failed. */
function consumeJoinToken(db: Db, token: string, roles: readonly string[], nowMs: number): void {
  const row = db.prepare('SELECT * FROM join_tokens WHERE token_sha256 = ?').get(sha256Hex(token)) as
    | { id: number; roles: string; expires_at_ms: number; uses_max: number; uses: number }
    | undefined;
  const allowed = row?.roles.split(',') ?? [];
  if (
    row === undefined ||
    row.expires_at_ms <= nowMs ||
    row.uses >= row.uses_max ||
    !roles.every((role) => allowed.includes(role))
  ) {
    throw pflexError('JOIN_TOKEN_INVALID', 'join token is unknown, expired, used up, or not valid for these roles');
  }
  db.prepare('UPDATE join_tokens SET uses = uses + 1 WHERE id = ?').run(row.id);
}

// ---------------------------------------------------------------- registration

export const registerSchema = z.strictObject({
  join_token: z.string().max(256).optional(),
  node_id: nameSchema,
  roles: z.array(z.enum(NODE_ROLES)).min(1).max(NODE_ROLES.length),
  host: hostSchema,
  ports: z
    .strictObject({
      data: portSchema.optional(),
      control: portSchema.optional(),
      mgmt: portSchema.optional(),
      nbd: portSchema.optional(),
      device: portSchema.optional(),
      gui: portSchema.optional(),
    })
    .default({}),
  /** An SDS's data port also listens here; SDCs on the same host use it (loopback hosts only). */
  data_socket_path: z.string().max(107).regex(/^\/[^\0\n\r]*$/, 'must be an absolute path').optional(),
  /** For an SDS without a record yet: where it goes and what it brings. */
  pd: refSchema.optional(),
  fault_set: refSchema.optional(),
  devices: z.array(deviceSchema).max(64).optional(),
  capabilities: z.array(z.string().max(64)).max(32).default([]),
  /** An SDS's incarnation: made with its sds_local.db; a new one means its state was lost. */
  incarnation: z.string().regex(/^[0-9a-f]{32}$/).optional(),
  /** An SDS's devices as it found them. */
  device_states: z.array(deviceStateSchema()).max(64).optional(),
});

function deviceStateSchema() {
  return z.strictObject({
    mdm_device_id: z.number().int().positive().max(0xffffffff),
    state: z.enum(['ok', 'missing', 'foreign', 'unreadable']),
    reason: z.string().max(500).optional(),
  });
}

/**
 * Records the device states an SDS reported (OK, MISSING, FOREIGN, UNREADABLE): placement uses
 * only OK devices. Devices of other SDS are ignored.
 */
export function recordDeviceStates(db: Db, sdsId: number, states: readonly { mdm_device_id: number; state: string; reason?: string | undefined }[]): void {
  const update = db.prepare('UPDATE sds_devices SET state = ?, state_reason = ? WHERE id = ? AND sds_id = ? AND (state != ? OR state_reason IS NOT ?)');
  for (const device of states) {
    const state = device.state.toUpperCase();
    const reason = state === 'OK' ? null : (device.reason ?? null);
    if (update.run(state, reason, device.mdm_device_id, sdsId, state, reason).changes > 0 && state !== 'OK') {
      recordEvent(db, 'error', 'DEVICE_FAILED', `device #${device.mdm_device_id} of SDS #${sdsId} is ${state}: ${reason ?? ''}`.slice(0, 500), { sdsId });
    }
  }
}

export interface Registration {
  node_id: string;
  credential: string;
  cluster_id: string;
  heartbeat_interval_ms: number;
  sds_id?: number;
  sdc_id?: number;
  /** base64; only for nodes with the sds role, which verify IO tokens with it. */
  signing_key?: string;
  /** For an SDS: the devices it must serve, each with its pool's chunk size. */
  devices?: SdsDeviceAssignment[];
  /**
   * For an SDS: the chunks' epochs now, for its replicas that were fenced while it was away. It
   * installs them before anything else, so an SDC with a plan from before the fence cannot read
   * its stale data.
   */
  stale_epochs?: { volume_id: number; chunk_index: number; pool_id: number; epoch: number }[];
}

export interface SdsDeviceAssignment {
  mdm_device_id: number;
  path: string;
  pool_id: number;
  capacity_bytes: number;
  slot_bytes: number;
}

export function sdsDeviceAssignments(db: Db, sdsId: number): SdsDeviceAssignment[] {
  return db
    .prepare(
      `SELECT d.id AS mdm_device_id, d.path, d.pool_id, d.capacity_bytes, p.chunk_size_bytes AS slot_bytes
       FROM sds_devices d JOIN storage_pools p ON p.id = d.pool_id WHERE d.sds_id = ? ORDER BY d.id`,
    )
    .all(sdsId) as SdsDeviceAssignment[];
}

export interface RegistrationHooks {
  /** In the registration's transaction: an SDS came back with a new incarnation. */
  readonly sdsStateLost?: (sdsId: number) => void;
}

export function registerNode(
  context: MdmContext,
  input: z.infer<typeof registerSchema>,
  caller: Caller | undefined,
  nowMs = Date.now(),
  hooks: RegistrationHooks = {},
): Registration {
  const { db } = context;
  const roles = [...new Set(input.roles)].sort();
  return db.transaction(() => {
    const existing = db.prepare('SELECT node_id, roles, status FROM cluster_nodes WHERE node_id = ?').get(input.node_id) as
      | { node_id: string; roles: string; status: string }
      | undefined;
    const reRegistering = caller?.kind === 'node' && caller.nodeId === input.node_id;
    if (reRegistering) {
      const known = existing!.roles.split(',');
      if (!roles.every((role) => known.includes(role))) {
        throw pflexError('FORBIDDEN', 'a node credential cannot add roles; register again with a join token');
      }
    } else if (caller?.kind !== 'admin') {
      if (input.join_token === undefined) {
        throw pflexError('UNAUTHORIZED', 'registration needs a join token (pflex cluster join-token) or the node credential');
      }
      // A join token never takes over a live node, nor changes what a known node is.
      if (existing !== undefined && existing.status === 'UP') {
        throw pflexError(
          'CONFLICT',
          `node ${input.node_id} is registered and alive; it re-registers with its own credential (or remove it first)`,
        );
      }
      if (existing !== undefined && existing.roles !== roles.join(',')) {
        throw pflexError('CONFLICT', `node ${input.node_id} is registered with roles ${existing.roles}, not ${roles.join(',')}`);
      }
      consumeJoinToken(db, input.join_token, roles, nowMs);
    }
    const credential = newSecret('pfn');
    db.prepare(
      `INSERT INTO cluster_nodes (node_id, roles, host, ports_json, credential_sha256, status, last_heartbeat_at_ms, metadata_json)
       VALUES (?, ?, ?, ?, ?, 'UP', ?, ?)
       ON CONFLICT(node_id) DO UPDATE SET roles = excluded.roles, host = excluded.host, ports_json = excluded.ports_json,
         credential_sha256 = excluded.credential_sha256, status = 'UP', last_heartbeat_at_ms = excluded.last_heartbeat_at_ms,
         metadata_json = excluded.metadata_json`,
    ).run(
      input.node_id,
      roles.join(','),
      input.host,
      JSON.stringify(input.ports),
      sha256Hex(credential),
      nowMs,
      JSON.stringify({ capabilities: input.capabilities }),
    );
    const registration: Registration = {
      node_id: input.node_id,
      credential,
      cluster_id: context.clusterId,
      heartbeat_interval_ms: context.settings.heartbeatIntervalMs,
    };
    if (roles.includes('sds')) {
      const sds = bindSds(db, input, nowMs);
      registration.sds_id = sds.id;
      const known = (db.prepare('SELECT incarnation FROM sds WHERE id = ?').get(sds.id) as { incarnation: string | null }).incarnation;
      if (input.incarnation !== undefined && input.incarnation !== known) {
        if (known !== null) hooks.sdsStateLost?.(sds.id);
        db.prepare('UPDATE sds SET incarnation = ? WHERE id = ?').run(input.incarnation, sds.id);
      }
      if (input.device_states !== undefined) recordDeviceStates(db, sds.id, input.device_states);
      registration.signing_key = context.signingKey.toString('base64');
      registration.devices = sdsDeviceAssignments(db, registration.sds_id);
      registration.stale_epochs = staleEpochsOf(db, sds.id);
    }
    if (roles.includes('sdc')) registration.sdc_id = bindSdc(db, input, nowMs).id;
    recordEvent(db, 'info', 'NODE_REGISTERED', `node ${input.node_id} (${roles.join(',')}) registered from ${input.host}`, {
      ...(registration.sds_id !== undefined ? { sdsId: registration.sds_id } : {}),
      ...(registration.sdc_id !== undefined ? { sdcId: registration.sdc_id } : {}),
    });
    context.log.info({ nodeId: input.node_id, roles, host: input.host }, 'node registered');
    return registration;
  })();
}

/** The epochs now of an SDS's stale replicas: it installs them before anything else. */
export function staleEpochsOf(db: Db, sdsId: number): NonNullable<Registration['stale_epochs']> {
  return db
    .prepare(
      `SELECT c.volume_id, c.chunk_index, r.pool_id, c.epoch FROM replicas r JOIN chunks c ON c.id = r.chunk_id
       WHERE r.sds_id = ? AND r.state = 'STALE' ORDER BY c.volume_id, c.chunk_index`,
    )
    .all(sdsId) as NonNullable<Registration['stale_epochs']>;
}

function bindSds(db: Db, input: z.infer<typeof registerSchema>, nowMs: number): SdsRow {
  let sds = findRow<SdsRow>(db, 'sds', input.node_id);
  if (sds === undefined) {
    if (input.pd === undefined) {
      throw pflexError(
        'NOT_FOUND',
        `no SDS record named ${input.node_id}: create it with "pflex sds add" or register with a protection domain (--pd)`,
      );
    }
    sds = addSds(db, {
      name: input.node_id,
      pd: input.pd,
      ...(input.fault_set !== undefined ? { fault_set: input.fault_set } : {}),
      host: input.host,
      data_port: input.ports.data ?? 9700,
      control_port: input.ports.control ?? 9100,
      mgmt_port: input.ports.mgmt ?? 9200,
      devices: input.devices ?? [],
    });
  }
  if (sds.state === 'REMOVING') throw pflexError('CONFLICT', `SDS ${sds.name} is being removed`);
  db.prepare(
    `UPDATE sds SET host = ?, data_port = ?, control_port = ?, mgmt_port = ?, data_socket_path = ?, state = 'UP', last_heartbeat_at_ms = ? WHERE id = ?`,
  ).run(
    input.host,
    input.ports.data ?? sds.data_port,
    input.ports.control ?? sds.control_port,
    input.ports.mgmt ?? sds.mgmt_port,
    input.data_socket_path ?? null,
    nowMs,
    sds.id,
  );
  if (sds.state === 'DOWN') recordEvent(db, 'info', 'SDS_UP', `SDS ${sds.name} is back up`, { sdsId: sds.id });
  return getRow<SdsRow>(db, 'sds', sds.id);
}

function bindSdc(db: Db, input: z.infer<typeof registerSchema>, nowMs: number): SdcRow {
  let sdc = findRow<SdcRow>(db, 'sdc', input.node_id);
  if (sdc === undefined) {
    db.prepare('INSERT INTO sdc (name, host) VALUES (?, ?)').run(input.node_id, input.host);
    sdc = getRow<SdcRow>(db, 'sdc', input.node_id);
    recordEvent(db, 'info', 'SDC_ADDED', `SDC ${sdc.name} added by registration`, { sdcId: sdc.id });
  }
  db.prepare(
    `UPDATE sdc SET host = ?, control_port = ?, mgmt_port = ?, nbd_port = ?, state = 'UP', last_heartbeat_at_ms = ? WHERE id = ?`,
  ).run(input.host, input.ports.control ?? null, input.ports.mgmt ?? null, input.ports.nbd ?? null, nowMs, sdc.id);
  if (sdc.state === 'DOWN') recordEvent(db, 'info', 'SDC_UP', `SDC ${sdc.name} is back up`, { sdcId: sdc.id });
  return getRow<SdcRow>(db, 'sdc', sdc.id);
}

// ---------------------------------------------------------------- heartbeats and leaving

export const heartbeatSchema = z
  .object({
    status: z.string().max(64).optional(),
  })
  .catchall(z.unknown());

export function heartbeat(context: MdmContext, nodeId: string, report: Record<string, unknown>, nowMs = Date.now()) {
  const { db } = context;
  const metadata = JSON.stringify(report);
  if (metadata.length > NODE_METADATA_BYTES_MAX) {
    throw pflexError('PAYLOAD_TOO_LARGE', `heartbeat report larger than ${NODE_METADATA_BYTES_MAX} bytes`);
  }
  // Not fsync'd: a heartbeat's time and report are worth nothing after a power cut.
  return withoutSync(db, () => {
    const node = db.prepare('SELECT roles, status FROM cluster_nodes WHERE node_id = ?').get(nodeId) as
      | { roles: string; status: string }
      | undefined;
    if (node === undefined) throw pflexError('NOT_FOUND', `node ${nodeId} is not registered`);
    db.prepare(
      `UPDATE cluster_nodes SET last_heartbeat_at_ms = ?, status = 'UP', metadata_json = ? WHERE node_id = ?`,
    ).run(nowMs, metadata, nodeId);
    const roles = node.roles.split(',');
    const answer: { ok: true; heartbeat_interval_ms: number; devices?: SdsDeviceAssignment[] } = {
      ok: true,
      heartbeat_interval_ms: context.settings.heartbeatIntervalMs,
    };
    if (roles.includes('sds')) {
      markUp(db, 'sds', nodeId, nowMs);
      const sds = findRow<SdsRow>(db, 'sds', nodeId);
      if (sds !== undefined) {
        const states = z.array(z.object({ mdm_device_id: z.number().int().positive(), state: z.enum(['ok', 'missing', 'foreign', 'unreadable']), reason: z.string().max(500).optional() })).max(64).safeParse(report.devices);
        if (states.success) recordDeviceStates(db, sds.id, states.data);
        answer.devices = sdsDeviceAssignments(db, sds.id);
      }
    }
    if (roles.includes('sdc')) markUp(db, 'sdc', nodeId, nowMs);
    return answer;
  });
}

function markUp(db: Db, table: 'sds' | 'sdc', name: string, nowMs: number): void {
  const row = db.prepare(`SELECT id, state FROM ${table} WHERE name = ?`).get(name) as { id: number; state: string } | undefined;
  if (row === undefined || row.state === 'REMOVING') return;
  db.prepare(`UPDATE ${table} SET state = 'UP', last_heartbeat_at_ms = ? WHERE id = ?`).run(nowMs, row.id);
  if (row.state === 'DOWN') {
    const label = table.toUpperCase();
    recordEvent(db, 'info', `${label}_UP`, `${label} ${name} is back up`, table === 'sds' ? { sdsId: row.id } : { sdcId: row.id });
  }
}

export function deregister(context: MdmContext, nodeId: string): { ok: true } {
  const { db } = context;
  db.transaction(() => {
    const node = db.prepare('SELECT roles FROM cluster_nodes WHERE node_id = ?').get(nodeId) as { roles: string } | undefined;
    if (node === undefined) throw pflexError('NOT_FOUND', `node ${nodeId} is not registered`);
    db.prepare(`UPDATE cluster_nodes SET status = 'OFFLINE' WHERE node_id = ?`).run(nodeId);
    for (const table of ['sds', 'sdc'] as const) {
      if (!node.roles.split(',').includes(table)) continue;
      db.prepare(`UPDATE ${table} SET state = 'DOWN' WHERE name = ? AND state != 'REMOVING'`).run(nodeId);
    }
    recordEvent(db, 'warning', 'NODE_DEREGISTERED', `node ${nodeId} left the cluster (graceful shutdown)`);
  })();
  context.log.info({ nodeId }, 'node deregistered');
  return { ok: true };
}

/**
 * One pass of the health monitor: every node silent for more than heartbeatMissesMax intervals
 * goes DOWN, and so do its SDS and SDC records. Returns the node ids it marked down.
 *
 * `heardUntilMs`: the MDM itself could not hear anyone before this time (it was stalled: a long
 * synchronous pass, a paused process). Nobody is judged until a whole miss window has passed
 * since then, so the MDM never fences for a delay it caused itself.
 */
export function markSilentNodesDown(context: MdmContext, nowMs = Date.now(), heardUntilMs = 0): string[] {
  const { db, settings } = context;
  const windowMs = settings.heartbeatIntervalMs * settings.heartbeatMissesMax;
  const deadlineMs = nowMs - windowMs;
  if (heardUntilMs > deadlineMs) return [];
  return db.transaction(() => {
    const silent = db
      .prepare(`SELECT node_id, roles FROM cluster_nodes WHERE status = 'UP' AND last_heartbeat_at_ms < ?`)
      .all(deadlineMs) as { node_id: string; roles: string }[];
    for (const node of silent) {
      db.prepare(`UPDATE cluster_nodes SET status = 'DOWN' WHERE node_id = ?`).run(node.node_id);
      for (const table of ['sds', 'sdc'] as const) {
        if (!node.roles.split(',').includes(table)) continue;
        const row = db.prepare(`SELECT id FROM ${table} WHERE name = ? AND state = 'UP'`).get(node.node_id) as
          | { id: number }
          | undefined;
        if (row === undefined) continue;
        db.prepare(`UPDATE ${table} SET state = 'DOWN' WHERE id = ?`).run(row.id);
        const label = table.toUpperCase();
        recordEvent(
          db,
          'error',
          `${label}_DOWN`,
          `${label} ${node.node_id} missed ${settings.heartbeatMissesMax} heartbeats and is DOWN`,
          table === 'sds' ? { sdsId: row.id } : { sdcId: row.id },
        );
      }
      context.log.warn({ nodeId: node.node_id }, 'node missed heartbeats: DOWN');
    }
    return silent.map((node) => node.node_id);
  })();
}

/** A pass whose typical event-loop turn came this late or later: the MDM is saturated. */
export const OVERLOAD_LOOP_DELAY_MS = 100;
const LOOP_DELAY_RESOLUTION_MS = 20;
/** How long (in heartbeat miss windows) a saturated MDM judges nobody by heartbeats. */
export const OVERLOAD_GRACE_WINDOWS = 5;
/** A node last heard this many intervals ago or more is late (an on-time one: about one interval). */
export const HEARD_LATE_INTERVALS = 2;
/** Fewer UP nodes than this and lateness says nothing about the MDM. */
export const HEARD_LATE_NODES_MIN = 4;

/**
 * Most UP nodes are late at once: the MDM is not hearing heartbeats that are being sent (its
 * answers wait behind its own work, or the process that sends them is starved), rather than
 * most of the cluster failing in the same seconds. The 4 TiB bench run fenced 89 of 100 healthy
 * SDS in cascade while the event loop's typical turn stayed short (docs/SCALE.md): the loop
 * delay alone does not see a queue of work that yields. One failed SDS, or a fault set that is
 * a minority of the nodes, is judged as before.
 */
export function mostNodesHeardLate(context: MdmContext, nowMs: number): { up: number; late: number; held: boolean } {
  const row = context.db
    .prepare(`SELECT COUNT(*) AS up, COALESCE(SUM(last_heartbeat_at_ms < ?), 0) AS late FROM cluster_nodes WHERE status = 'UP'`)
    .get(nowMs - HEARD_LATE_INTERVALS * context.settings.heartbeatIntervalMs) as { up: number; late: number };
  return { ...row, held: row.up >= HEARD_LATE_NODES_MIN && row.late * 2 > row.up };
}

/**
 * The health monitor: a pass every half heartbeat interval. A pass that runs late by more than
 * its own interval means the MDM was stalled (its event loop blocked, the process paused):
 * heartbeats could not be heard meanwhile, so the stall's end counts as everyone's last word.
 */
export function startHealthMonitor(
  context: MdmContext,
  onSdsDown: (sdsId: number) => void,
  onPass: () => void = () => undefined,
  onSdcDown: (nodeId: string) => void = () => undefined,
): () => void {
  const passMs = Math.max(100, Math.floor(context.settings.heartbeatIntervalMs / 2));
  const windowMs = context.settings.heartbeatIntervalMs * context.settings.heartbeatMissesMax;
  let lastPassMs = Date.now();
  let heardUntilMs = 0;
  const loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  loopDelay.enable();
  /**
   * Since when each reason to hold has held (undefined: it does not now). Each has its own grace:
   * a 64 TiB bench run had its event loop saturated for 90 s while the SDCs leased, then every
   * SDS went silent at once (their simulator's process stalled) and all 100 were marked DOWN at
   * once, the grace having run out on the saturation that began long before.
   */
  let saturatedSinceMs: number | undefined;
  let heardLateSinceMs: number | undefined;
  const graceMs = OVERLOAD_GRACE_WINDOWS * windowMs;
  const timer = setInterval(() => {
    const nowMs = Date.now();
    const lateMs = nowMs - lastPassMs - passMs;
    lastPassMs = nowMs;
    // Most turns of the loop this pass came late: new requests (heartbeats) wait that long.
    const typicalDelayMs = loopDelay.count > 0 ? loopDelay.percentile(50) / 1e6 - LOOP_DELAY_RESOLUTION_MS : 0;
    loopDelay.reset();
    if (lateMs > passMs) {
      heardUntilMs = nowMs;
      context.log.warn({ stalledMs: lateMs + passMs }, 'the MDM was stalled: no node is judged by its heartbeats until a full window has passed');
      recordEvent(context.db, 'warning', 'MDM_STALLED', `the MDM could not run for ${lateMs + passMs} ms; heartbeat deadlines restart from now`);
    }
    // A saturated event loop hears heartbeats late (they wait in its sockets behind other work)
    // even when no single stall is long: nobody is judged while it lasts, for at most
    // OVERLOAD_GRACE_WINDOWS miss windows (a dead SDS is still fenced if the load never ends).
    // Busy alone is not late: heavy work that yields (admission.ts) keeps the delay short.
    // The same when most nodes are heard late at once, however short the loop's turns.
    let heard: ReturnType<typeof mostNodesHeardLate> | undefined;
    try {
      heard = mostNodesHeardLate(context, nowMs);
    } catch (error) {
      context.log.error({ err: error }, 'health monitor: could not count late heartbeats');
    }
    const overloaded = (why: string): void => {
      context.log.warn({ loopDelayMs: Math.round(typicalDelayMs), nodesUp: heard?.up, nodesLate: heard?.late }, 'the MDM hears heartbeats late: heartbeat deadlines wait until it does not');
      recordEvent(context.db, 'warning', 'MDM_OVERLOADED', `the MDM hears heartbeats late: ${why}; nobody is judged by heartbeats until it does not (for at most ${graceMs / 1000} s)`);
    };
    const wasHolding = saturatedSinceMs !== undefined || heardLateSinceMs !== undefined;
    if (typicalDelayMs >= OVERLOAD_LOOP_DELAY_MS) {
      if (saturatedSinceMs === undefined) {
        saturatedSinceMs = nowMs;
        overloaded(`its event loop is saturated (its turns come ${Math.round(typicalDelayMs)} ms late)`);
      }
    } else saturatedSinceMs = undefined;
    if (heard?.held === true) {
      if (heardLateSinceMs === undefined) {
        heardLateSinceMs = nowMs;
        overloaded(`${heard.late} of ${heard.up} nodes were last heard ${HEARD_LATE_INTERVALS} heartbeat intervals ago or more, all at once`);
      }
    } else heardLateSinceMs = undefined;
    const within = (sinceMs: number | undefined): boolean => sinceMs !== undefined && nowMs - sinceMs < graceMs;
    if (within(saturatedSinceMs) || within(heardLateSinceMs)) heardUntilMs = nowMs;
    if (wasHolding && saturatedSinceMs === undefined && heardLateSinceMs === undefined) {
      context.log.info('the MDM hears heartbeats on time again');
    }
    try {
      onPass();
      for (const nodeId of markSilentNodesDown(context, nowMs, heardUntilMs)) {
        const sds = context.db.prepare(`SELECT id FROM sds WHERE name = ? AND state = 'DOWN'`).get(nodeId) as { id: number } | undefined;
        if (sds !== undefined) onSdsDown(sds.id);
        const sdc = context.db.prepare(`SELECT id FROM sdc WHERE name = ? AND state = 'DOWN'`).get(nodeId) as { id: number } | undefined;
        if (sdc !== undefined) onSdcDown(nodeId);
      }
    } catch (error) {
      context.log.error({ err: error }, 'health monitor pass failed');
    }
  }, passMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    loopDelay.disable();
  };
}

// ---------------------------------------------------------------- discovery

export interface NodeView {
  node_id: string;
  roles: string[];
  host: string;
  ports: Record<string, number>;
  status: string;
  last_heartbeat_at: string;
  registered_at: string;
}

export function listNodes(db: Db, role?: string): NodeView[] {
  const rows = db.prepare('SELECT * FROM cluster_nodes ORDER BY node_id').all() as {
    node_id: string;
    roles: string;
    host: string;
    ports_json: string;
    status: string;
    last_heartbeat_at_ms: number;
    registered_at: string;
  }[];
  return rows
    .map((row) => ({
      node_id: row.node_id,
      roles: row.roles.split(','),
      host: row.host,
      ports: JSON.parse(row.ports_json) as Record<string, number>,
      status: row.status,
      last_heartbeat_at: new Date(row.last_heartbeat_at_ms).toISOString(),
      registered_at: row.registered_at,
    }))
    .filter((node) => role === undefined || node.roles.includes(role));
}
