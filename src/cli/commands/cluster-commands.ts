/** pflex cluster status | join-token | topology, pflex rebuild status, and pflex event list. */
import { Command, Option } from 'commander';
import pc from 'picocolors';
import { contextOf, parseIntegerArgument } from '../context.js';
import { colourState, print, renderTable } from '../output.js';
import { poolTable, type PoolView } from './topology-commands.js';
import { sdcTable, sdsTable, type SdcView, type SdsView } from './node-commands.js';
import { volumeTable, type VolumeView } from './volume-commands.js';
import { formatBytes } from '../../common/units.js';
import type { PoolRebuildStatus } from '../../common/rebuild-status.js';

interface ClusterStatus {
  cluster_id: string;
  health: string;
  pools: PoolView[];
  sds: SdsView[];
  sdc: SdcView[];
  volumes: VolumeView[];
  replicas: { chunks: number; expected: number; available: number; degraded_chunks: number; failed_chunks: number };
  rebuild: PoolRebuildStatus[];
}

function formatEta(seconds: number | null): string {
  if (seconds === null) return 'unknown';
  if (seconds < 60) return `${seconds} s`;
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

/** One line per pool: what the rebuilder is doing there, how far it is, how fast, how long left. */
export function rebuildTable(pools: readonly PoolRebuildStatus[]): string {
  return renderTable(pools, [
    { header: 'POOL', value: (p) => p.pool },
    { header: 'STATE', value: (p) => colourState(p.state === 'idle' ? 'OK' : p.state.toUpperCase()) },
    { header: 'DONE', value: (p) => `${p.percent}%`, align: 'right' },
    { header: 'CHUNKS LEFT', value: (p) => p.chunks_pending + p.chunks_active, align: 'right' },
    { header: 'BYTES LEFT', value: (p) => formatBytes(p.bytes_remaining), align: 'right' },
    { header: 'COPIED', value: (p) => formatBytes(p.bytes_copied), align: 'right' },
    { header: 'RATE', value: (p) => `${(p.rate_bytes_per_s / 1e6).toFixed(1)} MB/s`, align: 'right' },
    { header: 'LIMIT', value: (p) => `${(p.rate_limit_bytes_per_s / 1e6).toFixed(0)} MB/s`, align: 'right' },
    { header: 'ETA', value: (p) => (p.state === 'idle' ? '-' : formatEta(p.eta_s)) },
    {
      header: 'LAST RUN',
      value: (p) => (p.last === null ? '-' : `${p.last.chunks} chunks, ${formatBytes(p.last.bytes)} in ${p.last.seconds} s (${(p.last.rate_bytes_per_s / 1e6).toFixed(1)} MB/s)`),
    },
  ]);
}

interface EventView {
  id: number;
  at: string;
  severity: string;
  type: string;
  message: string;
}

interface NodeView {
  node_id: string;
  roles: string[];
  host: string;
  ports: Record<string, number>;
  status: string;
  last_heartbeat_at: string;
}

function section(title: string, body: string): string {
  return `${pc.bold(pc.underline(title))}\n${body}`;
}

export function registerClusterCommands(program: Command): void {
  const cluster = program.command('cluster').description('the whole cluster: status, join tokens, topology');
  cluster
    .command('status')
    .description('pools with health and capacity, SDS and SDC with state, volumes, replica counts')
    .action(async (_options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const status = await client.get<ClusterStatus>('/cluster/status');
      print(output, status, () =>
        [
          `${pc.bold('cluster')} ${status.cluster_id}  ${pc.bold('health')} ${colourState(status.health)}`,
          section('Storage pools', poolTable(status.pools)),
          section('SDS', sdsTable(status.sds)),
          section('SDC', sdcTable(status.sdc)),
          section('Volumes', volumeTable(status.volumes)),
          section('Rebuild', rebuildTable(status.rebuild)),
          `${pc.bold('replicas')} ${status.replicas.available}/${status.replicas.expected} available over ${status.replicas.chunks} chunks; ` +
            `${status.replicas.degraded_chunks} chunks degraded, ${status.replicas.failed_chunks} failed`,
        ].join('\n\n'),
      );
    });
  cluster
    .command('check')
    .description("every chunk's metadata invariants: replica counts, pools, fault sets, placement counters, thick volumes (exit 1 on a violation)")
    .action(async (_options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const report = await client.get<{ chunks_checked: number; violation_count: number; violations: string[] }>('/cluster/invariants');
      print(output, report, () =>
        report.violation_count === 0
          ? `${pc.green('clean')}: ${report.chunks_checked} chunks checked`
          : [`${pc.red(`${report.violation_count} violation(s)`)} over ${report.chunks_checked} chunks:`, ...report.violations.map((line) => `  ${line}`)].join('\n'),
      );
      if (report.violation_count > 0) process.exitCode = 1;
    });
  cluster
    .command('join-token')
    .description('create a join token that lets SDS/SDC/MGMT nodes register')
    .option('--roles <roles>', 'comma-separated roles it admits: sds,sdc,mgmt', 'sds,sdc,mgmt')
    .option('--ttl-s <seconds>', 'lifetime in seconds (default 3600, max 7 days)', parseIntegerArgument(1, 7 * 24 * 3600))
    .option('--uses <n>', 'how many registrations it admits (default 10000)', parseIntegerArgument(1, 10_000))
    .action(async (options: { roles: string; ttlS?: number; uses?: number }, command: Command) => {
      const { client, output } = contextOf(command);
      const body: Record<string, unknown> = { roles: options.roles.split(',').map((role) => role.trim()).filter(Boolean) };
      if (options.ttlS !== undefined) body.ttl_s = options.ttlS;
      if (options.uses !== undefined) body.uses_max = options.uses;
      const created = await client.post<{ join_token: string; roles: string[]; expires_at: string; uses_max: number }>('/cluster/join-token', body);
      print(output, created, () => created.join_token);
      if (!output.json) {
        process.stderr.write(`join token for ${created.roles.join(',')}, valid until ${created.expires_at}, ${created.uses_max} use(s)\n`);
      }
    });
  cluster
    .command('topology')
    .description('registered nodes, their roles, addresses and liveness')
    .addOption(new Option('--role <role>', 'only nodes with this role').choices(['sds', 'sdc', 'mgmt']))
    .action(async (options: { role?: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const nodes =
        options.role === undefined
          ? (await client.get<{ nodes: NodeView[] }>('/discovery/topology')).nodes
          : await client.get<NodeView[]>(`/discovery/peers/${options.role}`);
      print(output, nodes, () =>
        renderTable(nodes, [
          { header: 'NODE', value: (n) => n.node_id },
          { header: 'ROLES', value: (n) => n.roles.join(',') },
          { header: 'HOST', value: (n) => n.host },
          { header: 'PORTS', value: (n) => Object.entries(n.ports).map(([k, v]) => `${k}=${v}`).join(' ') },
          { header: 'STATUS', value: (n) => colourState(n.status) },
          { header: 'LAST HEARTBEAT', value: (n) => n.last_heartbeat_at },
        ]),
      );
    });

  program
    .command('rebuild')
    .description('rebuilds, resyncs, drains and rebalancing: progress per pool')
    .command('status')
    .description('per pool: state, percent done, chunks and bytes left, copy rate and its limit, ETA, the last run')
    .action(async (_options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const status = await client.get<{ pools: PoolRebuildStatus[] }>('/rebuild/status');
      print(output, status, () => rebuildTable(status.pools));
    });

  const event = program.command('event').description('the event log');
  event
    .command('list')
    .description('recent events, oldest first')
    .option('--limit <n>', 'how many (default 100, max 1000)', parseIntegerArgument(1, 1000))
    .option('--type <TYPE>', 'only this event type, e.g. SDS_DOWN')
    .action(async (options: { limit?: number; type?: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const query = new URLSearchParams();
      if (options.limit !== undefined) query.set('limit', String(options.limit));
      if (options.type !== undefined) query.set('type', options.type);
      const events = await client.get<EventView[]>(`/event/list${query.size > 0 ? `?${query}` : ''}`);
      print(output, events, () =>
        renderTable(events, [
          { header: 'ID', value: (e) => e.id, align: 'right' },
          { header: 'AT', value: (e) => e.at },
          { header: 'SEVERITY', value: (e) => colourState(e.severity) },
          { header: 'TYPE', value: (e) => e.type },
          { header: 'MESSAGE', value: (e) => e.message },
        ]),
      );
    });
}
