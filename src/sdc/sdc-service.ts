/**
 * The SDC as a service (DESIGN §1, §5): registers with the MDM (join token, then its saved
 * credential), learns its mappings, and exports each mapped volume over NBD (10809) and the JSON
 * device port (8005), with control (8003) and management (8004) planes. Mappings are cached in
 * sdc_chunks.db so a restart exports at once, and re-pulled on every heartbeat and on a push.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../common/logger.js';
import { nativeMacAvailable } from '../common/request-mac.js';
import { HttpClient, HttpClientError } from '../common/http-client.js';
import { heartbeatTimeoutMs, listenOn, nextHeartbeatDelayMs, readNodeFile, registerWithMdm, REGISTER_RETRY_MS, writeNodeFile } from '../common/node-link.js';
import { openSdcDatabase, loadMappings, saveMappings, type MappingRow, type SdcDb } from './sdc-database.js';
import { VolumeRegistry } from './volume-registry.js';
import { startJsonDeviceServer } from './json-device-server.js';
import { buildSdcControlServer, buildSdcMgmtServer } from './sdc-http.js';
import { startNbdExports, type NbdListener } from './nbd-exports.js';


export interface SdcOptions {
  readonly nodeId: string;
  readonly dataDir: string;
  readonly mdmUrl: string;
  readonly joinToken: string | undefined;
  readonly advertiseHost: string;
  readonly listenHost: string;
  readonly nbdPort: number;
  readonly devicePort: number;
  readonly controlPort: number;
  readonly mgmtPort: number;
  readonly log: Logger;
}

interface NodeFile {
  node_id: string;
  credential: string;
  sdc_id: number;
}

export interface RunningSdc {
  readonly nbdPort: number;
  readonly devicePort: number;
  readonly controlPort: number;
  readonly mgmtPort: number;
  readonly registry: VolumeRegistry;
  readonly registered: Promise<void>;
  refreshMappings(): Promise<void>;
  close(): Promise<void>;
}

export async function startSdc(options: SdcOptions): Promise<RunningSdc> {
  const { log } = options;
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  chmodSync(options.dataDir, 0o700);
  const db: SdcDb = openSdcDatabase(join(options.dataDir, 'sdc_chunks.db'));
  let node = readNodeFile<NodeFile>(options.dataDir);
  let mdm: HttpClient | undefined = node === undefined ? undefined : new HttpClient({ baseUrl: options.mdmUrl, credential: node.credential });
  let registered = false;
  let closing = false;

  const registry = new VolumeRegistry(() => mdm, log);
  registry.apply(loadMappings(db));

  /** The MDM's version of the mappings last applied (change-tracker.ts): pulled again only when it differs. */
  let mappingsVersion: string | undefined;
  const refreshMappings = async (): Promise<void> => {
    if (mdm === undefined) return;
    const answer = await mdm.get<{ mappings_version?: string; mappings: (MappingRow & { provisioning: string })[] }>('/discovery/mappings');
    const mappings: MappingRow[] = answer.mappings.map((m) => ({
      volume_id: m.volume_id,
      name: m.name,
      size_bytes: m.size_bytes,
      chunk_size_bytes: m.chunk_size_bytes,
      pool_id: m.pool_id,
      access_mode: m.access_mode,
    }));
    registry.apply(mappings);
    saveMappings(db, mappings);
    mappingsVersion = answer.mappings_version;
  };

  const nbd: NbdListener = await startNbdExports(registry, options.listenHost, options.nbdPort, log);
  const device = await startJsonDeviceServer(registry, options.listenHost, options.devicePort, log);
  const control = buildSdcControlServer(refreshMappings, log);
  const controlPort = await listenOn(control, options.listenHost, options.controlPort);
  const mgmt = buildSdcMgmtServer(
    registry,
    () => ({
      node_id: options.nodeId,
      registered,
      sdc_id: node?.sdc_id,
      mdm: options.mdmUrl,
      nbd: { port: nbd.port, connections: nbd.connections() },
      device_port: device.port,
    }),
    log,
  );
  const mgmtPort = await listenOn(mgmt, options.listenHost, options.mgmtPort);
  log.info({ nbdPort: nbd.port, devicePort: device.port, controlPort, mgmtPort }, 'SDC listening');
  if (!nativeMacAvailable) log.warn('pflex_mac addon not built: request MACs use node:crypto (slower); run npm install');

  const register = async (): Promise<void> => {
    const body = {
      node_id: options.nodeId,
      roles: ['sdc'],
      host: options.advertiseHost,
      ports: { nbd: nbd.port, device: device.port, control: controlPort, mgmt: mgmtPort },
    };
    const answer = await registerWithMdm<{ credential: string; sdc_id: number; heartbeat_interval_ms: number }>(
      options.mdmUrl,
      node?.credential,
      options.joinToken,
      body,
    );
    node = { node_id: options.nodeId, credential: answer.credential, sdc_id: answer.sdc_id };
    writeNodeFile(options.dataDir, node);
    mdm = new HttpClient({ baseUrl: options.mdmUrl, credential: answer.credential });
    heartbeatIntervalMs = answer.heartbeat_interval_ms;
    registered = true;
    log.info({ sdcId: answer.sdc_id }, 'registered with the MDM');
    await refreshMappings();
  };

  let heartbeatIntervalMs = 2000;
  let heartbeatTimer: NodeJS.Timeout | undefined;
  const heartbeat = async (): Promise<void> => {
    if (closing) return;
    let lastError: unknown;
    try {
      if (!registered) await register();
      else {
        const answer = await mdm!.post<{ heartbeat_interval_ms: number; mappings_version?: string }>('/discovery/heartbeat', {
          status: 'UP',
          volumes: registry.list().length,
          nbd_connections: nbd.connections(),
          io: registry.engines().map((engine) => ({ volume_id: engine.volume.id, ...engine.counters })),
        }, heartbeatTimeoutMs(heartbeatIntervalMs));
        heartbeatIntervalMs = answer.heartbeat_interval_ms;
        // An MDM that gives no version is asked every time.
        if (answer.mappings_version === undefined || answer.mappings_version !== mappingsVersion) await refreshMappings();
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
  const registeredPromise = register();
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

  return {
    nbdPort: nbd.port,
    devicePort: device.port,
    controlPort,
    mgmtPort,
    registry,
    registered: registeredPromise,
    refreshMappings,
    async close() {
      if (closing) return;
      closing = true;
      if (heartbeatTimer !== undefined) clearTimeout(heartbeatTimer);
      await nbd.close();
      await device.close();
      await control.close();
      await mgmt.close();
      if (registered && mdm !== undefined) await mdm.post('/discovery/deregister', {}).catch(() => undefined);
      registry.close();
      db.close();
      log.info('SDC stopped');
    },
  };
}
