/** pflex pd | fault-set | pool: protection domains, fault sets and storage pools. */
import { Command, Option } from 'commander';
import { contextOf, parseIntegerArgument, parseSizeArgument, pathRef, ref } from '../context.js';
import { colourState, print, renderKeyValues, renderTable } from '../output.js';
import { formatBytes } from '../../common/units.js';

interface PdView {
  id: number;
  name: string;
  description: string;
  pools: number;
  fault_sets: number;
  sds: number;
  created_at: string;
}

interface FaultSetView {
  id: number;
  name: string;
  pd: string;
  sds: string[];
}

export interface PoolView {
  id: number;
  name: string;
  pd: string;
  protection_policy: string;
  chunk_size_bytes: number;
  spare_percent: number;
  rebuild_rate_mbps: number;
  rebuild_enabled: boolean;
  rebalance_enabled: boolean;
  capacity_alert_high_percent: number;
  capacity_alert_critical_percent: number;
  health: string;
  volumes: number;
  sds: number;
  capacity_alert: string;
  capacity: {
    raw_bytes: number;
    spare_bytes: number;
    usable_bytes: number;
    used_bytes: number;
    free_bytes: number;
    provisioned_bytes: number;
    utilization_percent: number;
  };
  chunk_health: { chunks_placed: number; chunks_degraded: number; chunks_failed: number; replicas_expected: number; replicas_available: number };
}

export function poolTable(pools: readonly PoolView[]): string {
  return renderTable(pools, [
    { header: 'ID', value: (p) => p.id, align: 'right' },
    { header: 'NAME', value: (p) => p.name },
    { header: 'PD', value: (p) => p.pd },
    { header: 'POLICY', value: (p) => p.protection_policy },
    { header: 'HEALTH', value: (p) => colourState(p.health) },
    { header: 'USABLE', value: (p) => formatBytes(p.capacity.usable_bytes), align: 'right' },
    { header: 'USED', value: (p) => formatBytes(p.capacity.used_bytes), align: 'right' },
    { header: 'FREE', value: (p) => formatBytes(p.capacity.free_bytes), align: 'right' },
    { header: 'UTIL', value: (p) => `${p.capacity.utilization_percent}%`, align: 'right' },
    { header: 'VOLUMES', value: (p) => p.volumes, align: 'right' },
    { header: 'CHUNKS', value: (p) => p.chunk_health.chunks_placed, align: 'right' },
    { header: 'DEGRADED', value: (p) => p.chunk_health.chunks_degraded, align: 'right' },
  ]);
}

function poolDetails(pool: PoolView): string {
  return renderKeyValues([
    ['name', `${pool.name} (id ${pool.id})`],
    ['protection domain', pool.pd],
    ['policy', pool.protection_policy],
    ['health', colourState(pool.health)],
    ['chunk size', formatBytes(pool.chunk_size_bytes)],
    ['spare', `${pool.spare_percent}% (${formatBytes(pool.capacity.spare_bytes)})`],
    ['rebuild rate', `${pool.rebuild_rate_mbps} MB/s`],
    ['rebuild / rebalance', `${pool.rebuild_enabled ? 'on' : 'OFF'} / ${pool.rebalance_enabled ? 'on' : 'OFF'}`],
    ['raw capacity', formatBytes(pool.capacity.raw_bytes)],
    ['usable', formatBytes(pool.capacity.usable_bytes)],
    ['used', `${formatBytes(pool.capacity.used_bytes)} (${pool.capacity.utilization_percent}%)`],
    ['free', formatBytes(pool.capacity.free_bytes)],
    ['provisioned', formatBytes(pool.capacity.provisioned_bytes)],
    ['capacity alerts', `high ${pool.capacity_alert_high_percent}%, critical ${pool.capacity_alert_critical_percent}% (now: ${pool.capacity_alert})`],
    ['SDS / volumes', `${pool.sds} / ${pool.volumes}`],
    [
      'chunks',
      `${pool.chunk_health.chunks_placed} placed, ${pool.chunk_health.chunks_degraded} degraded, ${pool.chunk_health.chunks_failed} failed; ` +
        `${pool.chunk_health.replicas_available}/${pool.chunk_health.replicas_expected} replicas available`,
    ],
  ]);
}

export function registerTopologyCommands(program: Command): void {
  // ---------------------------------------------------------------- pd
  const pd = program.command('pd').description('protection domains: the top of the storage hierarchy');
  pd.command('create <name>')
    .description('create a protection domain')
    .option('-d, --description <text>', 'free-form description')
    .action(async (name: string, options: { description?: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const created = await client.post<PdView>('/pd/create', { name, ...(options.description ? { description: options.description } : {}) });
      print(output, created, () => `created protection domain ${created.name} (id ${created.id})`);
    });
  pd.command('list')
    .description('list protection domains')
    .action(async (_options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const pds = await client.get<PdView[]>('/pd/list');
      print(output, pds, () =>
        renderTable(pds, [
          { header: 'ID', value: (p) => p.id, align: 'right' },
          { header: 'NAME', value: (p) => p.name },
          { header: 'POOLS', value: (p) => p.pools, align: 'right' },
          { header: 'FAULT SETS', value: (p) => p.fault_sets, align: 'right' },
          { header: 'SDS', value: (p) => p.sds, align: 'right' },
          { header: 'DESCRIPTION', value: (p) => p.description },
        ]),
      );
    });
  pd.command('show <pd>')
    .description('show one protection domain (by name or id)')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const shown = await client.get<PdView>(`/pd/${pathRef(ref_)}`);
      print(output, shown, () =>
        renderKeyValues([
          ['name', `${shown.name} (id ${shown.id})`],
          ['description', shown.description],
          ['pools', shown.pools],
          ['fault sets', shown.fault_sets],
          ['SDS', shown.sds],
          ['created', shown.created_at],
        ]),
      );
    });
  pd.command('delete <pd>')
    .description('delete an empty protection domain')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const result = await client.delete<{ deleted: PdView }>(`/pd/${pathRef(ref_)}`);
      print(output, result, () => `deleted protection domain ${result.deleted.name}`);
    });

  // ---------------------------------------------------------------- fault sets
  const faultSet = program.command('fault-set').description('fault sets: groups of SDS that may fail together (a rack, a chassis)');
  faultSet
    .command('create <pd> <name>')
    .description('create a fault set in a protection domain')
    .action(async (pdRef: string, name: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const created = await client.post<FaultSetView>('/fault_set/create', { pd: ref(pdRef), name });
      print(output, created, () => `created fault set ${created.name} (id ${created.id}) in ${created.pd}`);
    });
  faultSet
    .command('list')
    .description('list fault sets')
    .option('--pd <pd>', 'only this protection domain')
    .action(async (options: { pd?: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const rows = await client.get<FaultSetView[]>(`/fault_set/list${options.pd ? `?pd=${pathRef(options.pd)}` : ''}`);
      print(output, rows, () =>
        renderTable(rows, [
          { header: 'ID', value: (f) => f.id, align: 'right' },
          { header: 'NAME', value: (f) => f.name },
          { header: 'PD', value: (f) => f.pd },
          { header: 'SDS', value: (f) => f.sds.join(', ') },
        ]),
      );
    });
  faultSet
    .command('show <fault-set>')
    .description('show one fault set')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const shown = await client.get<FaultSetView>(`/fault_set/${pathRef(ref_)}`);
      print(output, shown, () => renderKeyValues([['name', `${shown.name} (id ${shown.id})`], ['protection domain', shown.pd], ['SDS', shown.sds.join(', ')]]));
    });
  faultSet
    .command('delete <fault-set>')
    .description('delete a fault set with no SDS')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const result = await client.delete<{ deleted: FaultSetView }>(`/fault_set/${pathRef(ref_)}`);
      print(output, result, () => `deleted fault set ${result.deleted.name}`);
    });

  // ---------------------------------------------------------------- pools
  const pool = program.command('pool').description('storage pools: protection policy, chunk size, spare, rebuild rate');
  pool
    .command('create <pd> <name>')
    .description('create a storage pool in a protection domain; its capacity is the SDS devices added to it')
    .addOption(new Option('--policy <policy>', 'protection policy').choices(['two_copies', 'three_copies']).default('two_copies'))
    .option('--chunk-size <size>', 'chunk size, a power of two from 1MiB to 256MiB (default 4MiB)', parseSizeArgument)
    .option('--spare-percent <n>', 'capacity held back for rebuilds, 0-50 (default 10)', parseIntegerArgument(0, 50))
    .option('--rebuild-rate-mbps <n>', 'rebuild rate limit in MB/s (default 100)', parseIntegerArgument(1, 100_000))
    .option('--alert-high-percent <n>', 'capacity alert threshold (default 80)', parseIntegerArgument(0, 100))
    .option('--alert-critical-percent <n>', 'critical capacity alert threshold (default 90)', parseIntegerArgument(0, 100))
    .action(
      async (
        pdRef: string,
        name: string,
        options: { policy: string; chunkSize?: number; sparePercent?: number; rebuildRateMbps?: number; alertHighPercent?: number; alertCriticalPercent?: number },
        command: Command,
      ) => {
        const { client, output } = contextOf(command);
        const body: Record<string, unknown> = { pd: ref(pdRef), name, protection_policy: options.policy };
        if (options.chunkSize !== undefined) body.chunk_size_bytes = options.chunkSize;
        if (options.sparePercent !== undefined) body.spare_percent = options.sparePercent;
        if (options.rebuildRateMbps !== undefined) body.rebuild_rate_mbps = options.rebuildRateMbps;
        if (options.alertHighPercent !== undefined) body.capacity_alert_high_percent = options.alertHighPercent;
        if (options.alertCriticalPercent !== undefined) body.capacity_alert_critical_percent = options.alertCriticalPercent;
        const created = await client.post<PoolView>('/pool/create', body);
        print(output, created, () => `created storage pool ${created.name} (id ${created.id}, ${created.protection_policy}) in ${created.pd}`);
      },
    );
  pool
    .command('list')
    .description('list storage pools with health and capacity')
    .option('--pd <pd>', 'only this protection domain')
    .action(async (options: { pd?: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const pools = await client.get<PoolView[]>(`/pool/list${options.pd ? `?pd=${pathRef(options.pd)}` : ''}`);
      print(output, pools, () => poolTable(pools));
    });
  pool
    .command('show <pool>')
    .description('show one storage pool')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const shown = await client.get<PoolView>(`/pool/${pathRef(ref_)}`);
      print(output, shown, () => poolDetails(shown));
    });
  pool
    .command('health <pool>')
    .description("show a pool's health: chunks and replicas available")
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const health = await client.get<Pick<PoolView, 'name' | 'health' | 'chunk_health' | 'capacity_alert'>>(`/pool/${pathRef(ref_)}/health`);
      print(output, health, () =>
        renderKeyValues([
          ['pool', health.name],
          ['health', colourState(health.health)],
          ['chunks placed', health.chunk_health.chunks_placed],
          ['chunks degraded', health.chunk_health.chunks_degraded],
          ['chunks failed', health.chunk_health.chunks_failed],
          ['replicas', `${health.chunk_health.replicas_available}/${health.chunk_health.replicas_expected} available`],
          ['capacity alert', health.capacity_alert],
        ]),
      );
    });
  pool
    .command('modify <pool>')
    .description("change a pool's rebuild rate, rebuild/rebalance switches, spare or alert thresholds")
    .option('--spare-percent <n>', 'capacity held back for rebuilds, 0-50', parseIntegerArgument(0, 50))
    .option('--rebuild-rate-mbps <n>', 'rebuild rate limit in MB/s', parseIntegerArgument(1, 100_000))
    .addOption(new Option('--rebuild <on|off>', 'off: no new rebuild, resync or drain copies start (a maintenance window); running ones finish').choices(['on', 'off']))
    .addOption(new Option('--rebalance <on|off>', 'off: no new rebalance moves start').choices(['on', 'off']))
    .option('--alert-high-percent <n>', 'capacity alert threshold', parseIntegerArgument(0, 100))
    .option('--alert-critical-percent <n>', 'critical capacity alert threshold', parseIntegerArgument(0, 100))
    .action(
      async (
        ref_: string,
        options: {
          sparePercent?: number;
          rebuildRateMbps?: number;
          rebuild?: 'on' | 'off';
          rebalance?: 'on' | 'off';
          alertHighPercent?: number;
          alertCriticalPercent?: number;
        },
        command: Command,
      ) => {
        const { client, output } = contextOf(command);
        const body: Record<string, unknown> = {};
        if (options.rebuild !== undefined) body.rebuild_enabled = options.rebuild === 'on';
        if (options.rebalance !== undefined) body.rebalance_enabled = options.rebalance === 'on';
        if (options.sparePercent !== undefined) body.spare_percent = options.sparePercent;
        if (options.rebuildRateMbps !== undefined) body.rebuild_rate_mbps = options.rebuildRateMbps;
        if (options.alertHighPercent !== undefined) body.capacity_alert_high_percent = options.alertHighPercent;
        if (options.alertCriticalPercent !== undefined) body.capacity_alert_critical_percent = options.alertCriticalPercent;
        const modified = await client.post<PoolView>(`/pool/${pathRef(ref_)}/modify`, body);
        print(output, modified, () => poolDetails(modified));
      },
    );
  pool
    .command('delete <pool>')
    .description('delete a storage pool with no volumes and no devices')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const result = await client.delete<{ deleted: PoolView }>(`/pool/${pathRef(ref_)}`);
      print(output, result, () => `deleted storage pool ${result.deleted.name}`);
    });
}
