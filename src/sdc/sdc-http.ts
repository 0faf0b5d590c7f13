/**
 * The SDC's HTTP planes. Control (8003): the MDM's push that mappings changed; it only makes
 * the SDC pull its mappings with its own credential, so it needs no secret and is rate limited.
 * Management (8004): read-only health, status, mappings, stats and Prometheus metrics.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../common/logger.js';
import { pflexError } from '../common/errors.js';
import type { VolumeRegistry } from './volume-registry.js';

const REFRESH_INTERVAL_MS_MIN = 200;

function baseServer(log: Logger): FastifyInstance {
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    bodyLimit: 64 * 1024,
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(pflexError('NOT_FOUND', `no such endpoint: ${request.method} ${request.url}`).toBody());
  });
  app.setErrorHandler((error, _request, reply) => {
    const status = (error as { statusCode?: number }).statusCode ?? 500;
    void reply.status(status).send(pflexError(status < 500 ? 'BAD_REQUEST' : 'INTERNAL', String((error as Error).message).slice(0, 300)).toBody());
  });
  return app;
}

export function buildSdcControlServer(refresh: () => Promise<void>, log: Logger): FastifyInstance {
  const app = baseServer(log);
  let lastRefreshMs = 0;
  app.post('/control/refresh', async () => {
    const now = Date.now();
    if (now - lastRefreshMs < REFRESH_INTERVAL_MS_MIN) return { refreshed: false, reason: 'rate limited' };
    lastRefreshMs = now;
    await refresh();
    return { refreshed: true };
  });
  app.get('/health', async () => ({ status: 'ok', role: 'sdc' }));
  return app;
}

export interface SdcStatus {
  node_id: string;
  registered: boolean;
  sdc_id: number | undefined;
  mdm: string;
  nbd: { port: number; connections: number };
  device_port: number;
}

export function buildSdcMgmtServer(registry: VolumeRegistry, status: () => SdcStatus, log: Logger): FastifyInstance {
  const app = baseServer(log);
  const startedAtMs = Date.now();
  const stats = () =>
    registry.engines().map((engine) => ({
      volume: engine.volume.name,
      volume_id: engine.volume.id,
      ...engine.counters,
    }));
  app.get('/health', async () => ({ status: 'ok', role: 'sdc', uptime_s: Math.round((Date.now() - startedAtMs) / 1000), ...status() }));
  app.get('/status', async () => ({ ...status(), volumes: registry.list() }));
  app.get('/mappings', async () => ({ mappings: registry.list() }));
  app.get('/stats', async () => ({ volumes: stats() }));

  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics, prefix: 'pflex_sdc_' });
  const counters = new Gauge({ name: 'pflex_sdc_io_total', help: 'SDC IO counters by volume and kind', labelNames: ['volume', 'kind'], registers: [metrics] });
  app.get('/metrics', async (_request, reply) => {
    counters.reset();
    for (const entry of stats()) {
      for (const kind of ['reads', 'writes', 'bytesRead', 'bytesWritten', 'replans', 'failovers', 'errors'] as const) {
        counters.set({ volume: entry.volume, kind }, entry[kind]);
      }
    }
    return reply.type(metrics.contentType).send(await metrics.metrics());
  });
  return app;
}
