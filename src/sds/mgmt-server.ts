/** The SDS management plane (9200+n): read-only health, stats, devices, replicas and Prometheus metrics. */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../common/logger.js';
import { pflexError } from '../common/errors.js';
import type { ChunkStore } from './chunk-store.js';
import type { IoStats } from './io-stats.js';
import type { TokenChecker } from './token-checker.js';

export interface MgmtServerDeps {
  readonly nodeId: string;
  readonly store: ChunkStore;
  readonly stats: IoStats;
  readonly checker: () => TokenChecker | undefined;
  readonly state: () => { registered: boolean; sds_id: number | undefined; mdm: string };
  readonly log: Logger;
}

export function buildMgmtServer(deps: MgmtServerDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    bodyLimit: 1024,
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(pflexError('NOT_FOUND', `no such endpoint: ${request.method} ${request.url}`).toBody());
  });
  const startedAtMs = Date.now();
  app.get('/health', async () => ({
    status: 'ok',
    role: 'sds',
    node_id: deps.nodeId,
    uptime_s: Math.round((Date.now() - startedAtMs) / 1000),
    ...deps.state(),
  }));
  app.get('/stats', async () => ({
    node_id: deps.nodeId,
    ...deps.stats.snapshot(),
    rejections: Object.fromEntries(deps.checker()?.rejections ?? []),
    tokens_cached: deps.checker()?.cachedCount ?? 0,
  }));
  app.get('/devices', async () => ({ devices: deps.store.deviceReport() }));
  app.get('/replicas', async () => ({ chunks: deps.store.listChunks() }));

  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'pflex_sds_' });
  const requests = new Gauge({ name: 'pflex_sds_io_requests_total', help: 'IO requests served, by volume and kind', labelNames: ['volume', 'kind'], registers: [registry] });
  const bytes = new Gauge({ name: 'pflex_sds_io_bytes_total', help: 'IO bytes served, by volume and kind', labelNames: ['volume', 'kind'], registers: [registry] });
  const latency = new Gauge({ name: 'pflex_sds_io_latency_p99_us', help: 'p99 latency (log2 bucket bound), by volume and kind', labelNames: ['volume', 'kind'], registers: [registry] });
  const rejections = new Gauge({ name: 'pflex_sds_rejections_total', help: 'Requests refused, by reason', labelNames: ['reason'], registers: [registry] });
  const slotsFree = new Gauge({ name: 'pflex_sds_device_slots_free', help: 'Free chunk slots per device', labelNames: ['device'], registers: [registry] });
  app.get('/metrics', async (_request, reply) => {
    for (const gauge of [requests, bytes, latency, rejections, slotsFree]) gauge.reset();
    for (const [volume, kinds] of Object.entries(deps.stats.snapshot().volumes)) {
      for (const [kind, series] of Object.entries(kinds)) {
        requests.set({ volume, kind }, series.requests);
        bytes.set({ volume, kind }, series.bytes);
        latency.set({ volume, kind }, series.p99_us);
      }
    }
    for (const [reason, count] of deps.checker()?.rejections ?? []) rejections.set({ reason }, count);
    for (const device of deps.store.deviceReport()) slotsFree.set({ device: device.path }, device.slots_free);
    return reply.type(registry.contentType).send(await registry.metrics());
  });
  return app;
}
