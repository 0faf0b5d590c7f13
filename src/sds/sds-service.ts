/**
 * The SDS as a service: its data, control and management listeners, its chunk store, and its
 * link to the MDM (registration by join token or saved credential, heartbeats that also bring
 * device assignments, batched transaction acks). With a saved signing key it serves IO even
 * while the MDM is away, and keeps trying to register in the background.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../common/logger.js';
import { nativeMacAvailable } from '../common/request-mac.js';
import { HttpClient, HttpClientError } from '../common/http-client.js';
import { heartbeatTimeoutMs, listenOn, nextHeartbeatDelayMs, readNodeFile, registerWithMdm, REGISTER_RETRY_MS, writeNodeFile } from '../common/node-link.js';
import { derivePeerKey } from '../common/sds-protocol.js';
import { nodeState, openSdsDatabase, sdsIncarnation, setNodeState, type SdsDb } from './sds-database.js';
import { ChunkStore, type DeviceSpec } from './chunk-store.js';
import { Faults, faultConfigSchema, faultInjectionEnabled, FAULT_INJECTION_ENV } from './fault-config.js';
import { TokenChecker } from './token-checker.js';
import { IoStats } from './io-stats.js';
import { TxAckBatcher } from './tx-acks.js';
import { startDataServer, type DataServer } from './data-server.js';
import { buildControlServer } from './control-server.js';
import { buildMgmtServer } from './mgmt-server.js';


export interface SdsOptions {
  readonly nodeId: string;
  readonly dataDir: string;
  readonly mdmUrl: string;
  readonly joinToken: string | undefined;
  /** Address the MDM, SDC and peers reach this SDS at. */
  readonly advertiseHost: string;
  readonly listenHost: string;
  readonly dataPort: number;
  readonly controlPort: number;
  readonly mgmtPort: number;
  /** For a first registration without an SDS record: where it goes and what it brings. */
  readonly pd?: string | undefined;
  readonly faultSet?: string | undefined;
  readonly devices?: { path: string; capacity_bytes: number; pool: string }[] | undefined;
  readonly log: Logger;
}

interface NodeFile {
  node_id: string;
  credential: string;
  sds_id: number;
  signing_key: string;
}

interface DeviceAssignment {
  mdm_device_id: number;
  path: string;
  pool_id: number;
  capacity_bytes: number;
  slot_bytes: number;
}

export interface RunningSds {
  readonly dataPort: number;
  readonly controlPort: number;
  readonly mgmtPort: number;
  readonly store: ChunkStore;
  readonly registered: Promise<void>;
  close(): Promise<void>;
}

function toSpec(device: DeviceAssignment): DeviceSpec {
  return { mdmDeviceId: device.mdm_device_id, path: device.path, poolId: device.pool_id, capacityBytes: device.capacity_bytes, slotBytes: device.slot_bytes };
}

/** How often records without data are swept (chunk-store.ts TOMBSTONE_AGE_MS). */
const TOMBSTONE_SWEEP_MS = 10 * 60_000;
/** Chunks per report to the MDM (lost and suspect replicas). */
const REPORT_CHUNKS_PER_CALL_MAX = 10_000;
/** PFLEX_FAULT_VOLATILE_CACHE=1 (with fault injection): the cache model is on from the first write. */
const FAULT_VOLATILE_CACHE_ENV = 'PFLEX_FAULT_VOLATILE_CACHE';

/** Unix socket paths are limited to 107 bytes: a deep data dir goes without the local fast path. */
const SOCKET_PATH_BYTES_MAX = 107;

function localSocketPath(dataDir: string): string | undefined {
  const path = join(dataDir, 'data.sock');
  return Buffer.byteLength(path) <= SOCKET_PATH_BYTES_MAX ? path : undefined;
}

export async function startSds(options: SdsOptions): Promise<RunningSds> {
  const { log } = options;
  const poolThreads = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  if (poolThreads < 8) {
    log.warn({ UV_THREADPOOL_SIZE: poolThreads }, 'few IO threads: start the SDS with UV_THREADPOOL_SIZE=16 (the pflex bin does) for deep queues');
  }
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  chmodSync(options.dataDir, 0o700);
  const db: SdsDb = openSdsDatabase(join(options.dataDir, 'sds_local.db'));
  const { incarnation, created: newIncarnation } = sdsIncarnation(db);
  let faults: Faults | undefined;
  if (faultInjectionEnabled()) {
    faults = new Faults();
    if (process.env[FAULT_VOLATILE_CACHE_ENV] === '1') faults.set(faultConfigSchema.parse({ volatile_cache: true }));
    log.warn({ env: FAULT_INJECTION_ENV, volatileCache: faults.volatileCache }, 'FAULT INJECTION ENABLED: this SDS fails IO on request (tests only, never in production)');
  }
  const store = new ChunkStore(db, log, faults === undefined ? {} : { faults });
  const stats = new IoStats();
  let node = readNodeFile<NodeFile>(options.dataDir);
  const identityOf = (sdsId: number): void => {
    const clusterId = nodeState(db, 'cluster_id');
    if (clusterId !== undefined) store.setIdentity({ clusterId, sdsId, incarnation });
  };
  let checker: TokenChecker | undefined;
  let currentKey: Buffer | undefined;
  let peerKey: Buffer | undefined;
  let mdm: HttpClient | undefined;
  let registered = false;
  /** Registered since this start: the epochs of replicas fenced while it was away are installed. */
  let registeredOnce = false;
  let closing = false;

  const adoptKey = (signingKeyB64: string, sdsId: number): void => {
    const key = Buffer.from(signingKeyB64, 'base64');
    currentKey = key;
    checker = new TokenChecker(key, sdsId);
    peerKey = derivePeerKey(key);
  };

  // With a saved identity, serve from local state at once: IO must not wait for the MDM. Not so
  // when this database is new (the data dir was lost): the MDM must first learn that every
  // replica of the old incarnation is gone, or this SDS would answer for them with zeros.
  if (node !== undefined) {
    mdm = new HttpClient({ baseUrl: options.mdmUrl, credential: node.credential });
    identityOf(node.sds_id);
    if (newIncarnation) log.warn('new sds_local.db beside a saved identity: serving nothing until the MDM accepts this new incarnation');
    else adoptKey(node.signing_key, node.sds_id);
    store.attachKnownDevices();
  }
  store.loadChunks();
  const intentsAtStart = store.intentsAtStart();
  if (intentsAtStart.length > 0) {
    log.warn({ chunks: intentsAtStart.length }, 'chunks had writes in flight at the last stop; they need resync');
  }
  store.startIntentCleaner();

  const acks = new TxAckBatcher(() => (registered ? mdm : undefined), log);
  const data: DataServer = await startDataServer(
    { store, checker: () => checker, peerKey: () => peerKey, stats, acks, log, faults, readsAllowed: () => registeredOnce },
    options.listenHost,
    options.dataPort,
    localSocketPath(options.dataDir),
  );
  const control = buildControlServer({ store, signingKey: () => currentKey, log, faults });
  const controlPort = await listenOn(control, options.listenHost, options.controlPort);
  const mgmt = buildMgmtServer({
    nodeId: options.nodeId,
    store,
    stats,
    checker: () => checker,
    state: () => ({ registered, sds_id: node?.sds_id, mdm: options.mdmUrl }),
    log,
  });
  const mgmtPort = await listenOn(mgmt, options.listenHost, options.mgmtPort);
  log.info({ dataPort: data.port, controlPort, mgmtPort }, 'SDS listening');
  if (!nativeMacAvailable) log.warn('pflex_mac addon not built: request MACs use node:crypto (slower); run npm install');

  const register = async (): Promise<void> => {
    const body: Record<string, unknown> = {
      node_id: options.nodeId,
      roles: ['sds'],
      host: options.advertiseHost,
      ports: { data: data.port, control: controlPort, mgmt: mgmtPort },
    };
    if (data.socketPath !== undefined) body.data_socket_path = data.socketPath;
    body.incarnation = incarnation;
    body.device_states = store.deviceReport().map((device) => ({ mdm_device_id: device.mdm_device_id, state: device.state, ...(device.reason !== undefined ? { reason: device.reason.slice(0, 500) } : {}) }));
    if (options.pd !== undefined) body.pd = options.pd;
    if (options.faultSet !== undefined) body.fault_set = options.faultSet;
    if (options.devices !== undefined && options.devices.length > 0) body.devices = options.devices;
    const answer = await registerWithMdm<{
      credential: string;
      cluster_id: string;
      sds_id: number;
      signing_key: string;
      devices: DeviceAssignment[];
      heartbeat_interval_ms: number;
      stale_epochs?: { volume_id: number; chunk_index: number; pool_id: number; epoch: number }[];
    }>(
      options.mdmUrl,
      node?.credential,
      options.joinToken,
      body,
    );
    node = { node_id: options.nodeId, credential: answer.credential, sds_id: answer.sds_id, signing_key: answer.signing_key };
    writeNodeFile(options.dataDir, node);
    setNodeState(db, 'cluster_id', answer.cluster_id);
    identityOf(answer.sds_id);
    adoptKey(answer.signing_key, answer.sds_id);
    mdm = new HttpClient({ baseUrl: options.mdmUrl, credential: answer.credential });
    attachAssigned(answer.devices);
    // Replicas fenced while this SDS was away: their chunks' epochs now, so requests carrying the
    // old epoch (an SDC's plan from before the fence) are refused, never served stale data.
    for (const chunk of answer.stale_epochs ?? []) {
      if ((store.epochOf(chunk.volume_id, chunk.chunk_index) ?? 0) < chunk.epoch) store.setEpoch(chunk.volume_id, chunk.chunk_index, chunk.pool_id, chunk.epoch);
    }
    registered = true;
    registeredOnce = true;
    heartbeatIntervalMs = answer.heartbeat_interval_ms;
    log.info({ sdsId: answer.sds_id, devices: answer.devices.length }, 'registered with the MDM');
    reconciled = false;
    await reconcile().catch((error: unknown) => log.warn({ err: (error as Error).message }, 'reporting lost and suspect replicas failed; retried at the next heartbeat'));
  };

  /** Devices the MDM assigned; one that cannot be attached is logged and reported, not fatal. */
  const attachAssigned = (devices: readonly DeviceAssignment[]): void => {
    for (const device of devices) {
      try {
        store.attachDevice(toSpec(device));
      } catch (error) {
        log.error({ path: device.path, err: (error as Error).message }, 'device refused');
      }
    }
  };

  /**
   * After (re)registration: replicas on missing or foreign devices are reported lost (the MDM
   * fences them and answers their new epochs, kept here as tombstones); chunks with crash-time
   * write intents are reported suspect (the MDM trusts them where no peer is current, else fences
   * them for a copy). Retried at the next heartbeat until both are done.
   */
  let reconciled = false;
  const reconcile = async (): Promise<void> => {
    if (reconciled || mdm === undefined) return;
    const lost = store.lostChunks();
    for (let first = 0; first < lost.length; first += REPORT_CHUNKS_PER_CALL_MAX) {
      const page = lost.slice(first, first + REPORT_CHUNKS_PER_CALL_MAX);
      const answer = await mdm.post<{ tombstones: { volume_id: number; chunk_index: number; epoch: number }[] }>('/sds/replicas/lost', {
        chunks: page.map((chunk) => ({ volume_id: chunk.volume_id, chunk_index: chunk.chunk_index })),
        reason: 'device missing or foreign',
      });
      for (const chunk of answer.tombstones) store.deleteChunk(chunk.volume_id, chunk.chunk_index, chunk.epoch);
    }
    const suspects = store.suspectChunks();
    for (let first = 0; first < suspects.length; first += REPORT_CHUNKS_PER_CALL_MAX) {
      const page = suspects.slice(first, first + REPORT_CHUNKS_PER_CALL_MAX);
      const answer = await mdm.post<{ trusted: { volume_id: number; chunk_index: number }[]; fenced: number }>('/sds/replicas/suspect', { chunks: page });
      store.clearResynced(answer.trusted);
      log.warn({ reported: page.length, trusted: answer.trusted.length, fenced: answer.fenced }, 'chunks with crash-time write intents reported to the MDM');
    }
    reconciled = true;
  };

  let heartbeatIntervalMs = 2000;
  let heartbeatTimer: NodeJS.Timeout | undefined;
  const heartbeat = async (): Promise<void> => {
    if (closing) return;
    let lastError: unknown;
    try {
      if (!registered) {
        await register();
      } else {
        const answer = await mdm!.post<{ devices?: DeviceAssignment[]; heartbeat_interval_ms: number }>('/discovery/heartbeat', {
          status: 'UP',
          devices: store.deviceReport(),
          io: stats.sampleRate(),
          write_intents_at_start: intentsAtStart.length,
          tx_acks_dropped: acks.dropped,
        }, heartbeatTimeoutMs(heartbeatIntervalMs));
        attachAssigned(answer.devices ?? []);
        heartbeatIntervalMs = answer.heartbeat_interval_ms;
        await reconcile();
      }
    } catch (error) {
      lastError = error;
      if (error instanceof HttpClientError && error.status === 401) registered = false;
      log.warn({ err: (error as Error).message }, registered ? 'heartbeat failed' : 'registration failed; retrying');
    } finally {
      if (!closing) {
        heartbeatTimer = setTimeout(() => void heartbeat(), registered ? nextHeartbeatDelayMs(heartbeatIntervalMs, lastError) : REGISTER_RETRY_MS);
        heartbeatTimer.unref();
      }
    }
  };

  const registeredPromise = (async () => {
    await register();
  })();
  registeredPromise.then(
    () => {
      heartbeatTimer = setTimeout(() => void heartbeat(), heartbeatIntervalMs);
      heartbeatTimer.unref();
    },
    (error: unknown) => {
      log.warn({ err: (error as Error).message }, 'first registration failed; retrying in the background');
      heartbeatTimer = setTimeout(() => void heartbeat(), REGISTER_RETRY_MS);
      heartbeatTimer.unref();
    },
  );
  acks.start();
  const sweepTimer = setInterval(() => checker?.sweep(), 10_000);
  sweepTimer.unref();
  const tombstoneTimer = setInterval(() => {
    const swept = store.sweepTombstones();
    if (swept > 0) log.info({ records: swept }, 'old records without data forgotten');
  }, TOMBSTONE_SWEEP_MS);
  tombstoneTimer.unref();

  return {
    dataPort: data.port,
    controlPort,
    mgmtPort,
    store,
    registered: registeredPromise,
    async close() {
      if (closing) return;
      closing = true;
      if (heartbeatTimer !== undefined) clearTimeout(heartbeatTimer);
      clearInterval(sweepTimer);
      clearInterval(tombstoneTimer);
      await acks.stop().catch(() => undefined);
      if (registered && mdm !== undefined) await mdm.post('/discovery/deregister', {}).catch(() => undefined);
      await data.close();
      await control.close();
      await mgmt.close();
      await store.close();
      db.close();
      log.info('SDS stopped');
    },
  };
}
