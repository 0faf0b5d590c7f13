/** GET /metrics: Prometheus text, computed from the database at scrape time. */
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { MdmContext } from './context.js';
import { poolView } from './views.js';
import type { PoolRow } from './rows.js';

const HEALTH_VALUE = { OK: 0, DEGRADED: 1, FAILED: 2 } as const;

export function registerMetrics(app: FastifyInstance, context: MdmContext): void {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'pflex_mdm_' });
  const requests = new Counter({
    name: 'pflex_mdm_http_requests_total',
    help: 'HTTP requests answered by the MDM, by status class',
    labelNames: ['status_class'],
    registers: [registry],
  });
  app.addHook('onResponse', async (_request, reply) => {
    requests.inc({ status_class: `${Math.floor(reply.statusCode / 100)}xx` });
  });
  const poolHealth = new Gauge({
    name: 'pflex_pool_health',
    help: 'Pool health: 0 OK, 1 DEGRADED, 2 FAILED',
    labelNames: ['pool'],
    registers: [registry],
  });
  const poolBytes = new Gauge({
    name: 'pflex_pool_capacity_bytes',
    help: 'Pool capacity in bytes as volumes see it, by kind (usable, used, free, provisioned)',
    labelNames: ['pool', 'kind'],
    registers: [registry],
  });
  const nodes = new Gauge({
    name: 'pflex_sds_state',
    help: 'Number of SDS in each state',
    labelNames: ['state'],
    registers: [registry],
  });

  app.get('/metrics', { config: { access: 'public' } }, async (_request, reply) => {
    poolHealth.reset();
    poolBytes.reset();
    nodes.reset();
    for (const pool of context.db.prepare('SELECT * FROM storage_pools').all() as PoolRow[]) {
      const view = poolView(context.db, pool);
      poolHealth.set({ pool: pool.name }, HEALTH_VALUE[view.health]);
      poolBytes.set({ pool: pool.name, kind: 'usable' }, view.capacity.usable_bytes);
      poolBytes.set({ pool: pool.name, kind: 'used' }, view.capacity.used_bytes);
      poolBytes.set({ pool: pool.name, kind: 'free' }, view.capacity.free_bytes);
      poolBytes.set({ pool: pool.name, kind: 'provisioned' }, view.capacity.provisioned_bytes);
    }
    for (const row of context.db.prepare('SELECT state, COUNT(*) AS n FROM sds GROUP BY state').all() as { state: string; n: number }[]) {
      nodes.set({ state: row.state }, row.n);
    }
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}
