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
import { listenOn, readNodeFile, registerWithMdm, REGISTER_RETRY_MS, writeNodeFile } from '../common/node-link.js';
import { derivePeerKey } from '../common/sds-protocol.js';
import { openSdsDatabase, type SdsDb } from './sds-database.js';
import { ChunkStore, type DeviceSpec } from './chunk-store.js';
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
  const store = new ChunkStore(db, log);
  const stats = new IoStats();
  let node = readNodeFile<NodeFile>(options.dataDir);
  let checker: TokenChecker | undefined;
  let currentKey: Buffer | undefined;
  let peerKey: Buffer | undefined;
  let mdm: HttpClient | undefined;
  let registered = false;
  let closing = false;

  const adoptKey = (signingKeyB64: string, sdsId: number): void => {
    const key = Buffer.from(signingKeyB64, 'base64');
    currentKey = key;
    checker = new TokenChecker(key, sdsId);
    peerKey = derivePeerKey(key);
  };

  // With a saved identity, serve from local state at once: IO must not wait for the MDM.
  if (node !== undefined) {
    adoptKey(node.signing_key, node.sds_id);
    mdm = new HttpClient({ baseUrl: options.mdmUrl, credential: node.credential });
    const devices = db.prepare('SELECT * FROM devices ORDER BY id').all() as {
      mdm_device_id: number;
      path: string;
      pool_id: number;
      capacity_bytes: number;
      slot_bytes: number;
    }[];
    for (const device of devices) store.attachDevice(toSpec(device));
  }
  store.loadChunks();
  const intentsAtStart = store.intentsAtStart();
  if (intentsAtStart.length > 0) {
    log.warn({ chunks: intentsAtStart.length }, 'chunks had writes in flight at the last stop; they need resync');
  }
  store.startIntentCleaner();

  const acks = new TxAckBatcher(() => (registered ? mdm : undefined), log);
  const data: DataServer = await startDataServer(
    { store, checker: () => checker, peerKey: () => peerKey, stats, acks, log },
    options.listenHost,
    options.dataPort,
    localSocketPath(options.dataDir),
  );
  const control = buildControlServer({ store, signingKey: () => currentKey, log });
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
    if (options.pd !== undefined) body.pd = options.pd;
    if (options.faultSet !== undefined) body.fault_set = options.faultSet;
    if (options.devices !== undefined && options.devices.length > 0) body.devices = options.devices;
    const answer = await registerWithMdm<{
      credential: string;
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
    adoptKey(answer.signing_key, answer.sds_id);
    mdm = new HttpClient({ baseUrl: options.mdmUrl, credential: answer.credential });
    for (const device of answer.devices) store.attachDevice(toSpec(device));
    // Replicas fenced while this SDS was away: their chunks' epochs now, so requests carrying the
    // old epoch (an SDC's plan from before the fence) are refused, never served stale data.
    for (const chunk of answer.stale_epochs ?? []) {
      if ((store.epochOf(chunk.volume_id, chunk.chunk_index) ?? 0) < chunk.epoch) store.setEpoch(chunk.volume_id, chunk.chunk_index, chunk.pool_id, chunk.epoch);
    }
    registered = true;
    heartbeatIntervalMs = answer.heartbeat_interval_ms;
    log.info({ sdsId: answer.sds_id, devices: answer.devices.length }, 'registered with the MDM');
  };

  let heartbeatIntervalMs = 2000;
  let heartbeatTimer: NodeJS.Timeout | undefined;
  const heartbeat = async (): Promise<void> => {
    if (closing) return;
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
        });
        for (const device of answer.devices ?? []) store.attachDevice(toSpec(device));
        heartbeatIntervalMs = answer.heartbeat_interval_ms;
      }
    } catch (error) {
      if (error instanceof HttpClientError && error.status === 401) registered = false;
      log.warn({ err: (error as Error).message }, registered ? 'heartbeat failed' : 'registration failed; retrying');
    } finally {
      if (!closing) {
        heartbeatTimer = setTimeout(() => void heartbeat(), registered ? heartbeatIntervalMs : REGISTER_RETRY_MS);
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
