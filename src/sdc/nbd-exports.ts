/**
 * The SDC's NBD side: every mapped volume is an NBD export named after it (DESIGN §5.1), served
 * by the storage-independent server in nbd/. Engine errors become NBD errnos.
 */
import type { Logger } from '../common/logger.js';
import { NbdError, startNbdServer, type NbdExport, type NbdExportProvider } from '../../nbd/index.js';
import type { VolumeRegistry } from './volume-registry.js';
import { VolumeIoError, type VolumeEngine } from './volume-engine.js';

export interface NbdListener {
  readonly port: number;
  connections(): number;
  close(): Promise<void>;
}

async function translated<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof VolumeIoError) throw new NbdError(error.errno, error.message);
    throw error;
  }
}

function exportOf(engine: VolumeEngine): NbdExport {
  const { volume } = engine;
  return {
    name: volume.name,
    description: `pflex volume ${volume.name} (id ${volume.id}), ${volume.readOnly ? 'readOnly' : 'readWrite'}`,
    sizeBytes: volume.sizeBytes,
    readOnly: volume.readOnly,
    minimumBlockBytes: 1,
    preferredBlockBytes: 4096,
    maximumBlockBytes: 32 * 1024 * 1024,
    read: (offsetBytes, lengthBytes) => translated(() => engine.read(offsetBytes, lengthBytes)),
    write: (offsetBytes, data, fua) => translated(() => engine.write(offsetBytes, data, fua)),
    flush: () => translated(() => engine.flush()),
    trim: (offsetBytes, lengthBytes, fua) => translated(() => engine.trim(offsetBytes, lengthBytes, fua)),
    writeZeroes: (offsetBytes, lengthBytes, options) => translated(() => engine.writeZeroes(offsetBytes, lengthBytes, options)),
    cache: async () => undefined,
    blockStatus: (offsetBytes, lengthBytes) => translated(() => engine.blockStatus(offsetBytes, lengthBytes)),
  };
}

export async function startNbdExports(registry: VolumeRegistry, host: string, port: number, log: Logger): Promise<NbdListener> {
  const provider: NbdExportProvider = {
    list: () => registry.list().map((mapping) => ({ name: mapping.name, description: `pflex volume ${mapping.name}` })),
    open: (name) => {
      const engine = registry.get(name);
      return engine === undefined ? undefined : exportOf(engine);
    },
    defaultExportName: () => {
      const mappings = registry.list();
      return mappings.length === 1 ? mappings[0]!.name : undefined;
    },
  };
  const server = await startNbdServer({ host, port, provider, log });
  return { port: server.port, connections: () => server.connections(), close: () => server.close() };
}
