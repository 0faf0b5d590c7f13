/** pflex vol: create, list, show, chunks, map, unmap, extend, rename, delete. */
import { Command, InvalidArgumentError } from 'commander';
import { contextOf, parseSizeArgument, pathRef, ref } from '../context.js';
import { colourState, print, renderKeyValues, renderTable } from '../output.js';
import { formatBytes } from '../../common/units.js';
import { HttpClient } from '../../common/http-client.js';

export interface VolumeView {
  id: number;
  name: string;
  pool: string;
  size_bytes: number;
  provisioning: string;
  chunk_size_bytes: number;
  chunk_count: number;
  allocated_bytes: number;
  state: string;
  health: string;
  chunk_health: { chunks_placed: number; chunks_degraded: number; chunks_failed: number; replicas_available: number; replicas_expected: number };
  mappings: { sdc: string; access_mode: string }[];
  created_at: string;
}

interface VerifyReport {
  volume: string;
  chunks_checked: number;
  bytes_compared: number;
  clean: boolean;
  duration_ms: number;
  mismatches: { chunk_index: number; first_difference_offset_bytes: number | null; replicas: { sds: string; sha256: string | null; note: string }[] }[];
  unreadable: { chunk_index: number; first_difference_offset_bytes: number | null; replicas: { sds: string; sha256: string | null; note: string }[] }[];
}

interface ChunkView {
  index: number;
  epoch: number;
  generation: number;
  replicas: { sds: string; state: string; sds_state: string }[];
}

export function volumeTable(rows: readonly VolumeView[]): string {
  return renderTable(rows, [
    { header: 'ID', value: (v) => v.id, align: 'right' },
    { header: 'NAME', value: (v) => v.name },
    { header: 'POOL', value: (v) => v.pool },
    { header: 'SIZE', value: (v) => formatBytes(v.size_bytes), align: 'right' },
    { header: 'TYPE', value: (v) => v.provisioning },
    { header: 'ALLOCATED', value: (v) => formatBytes(v.allocated_bytes), align: 'right' },
    { header: 'STATE', value: (v) => colourState(v.state) },
    { header: 'HEALTH', value: (v) => colourState(v.health) },
    { header: 'MAPPED TO', value: (v) => v.mappings.map((m) => (m.access_mode === 'readOnly' ? `${m.sdc} (ro)` : m.sdc)).join(', ') },
  ]);
}

function volumeDetails(volume: VolumeView): string {
  return renderKeyValues([
    ['name', `${volume.name} (id ${volume.id})`],
    ['pool', volume.pool],
    ['size', `${formatBytes(volume.size_bytes)} (${volume.size_bytes} bytes)`],
    ['provisioning', volume.provisioning],
    ['allocated', formatBytes(volume.allocated_bytes)],
    ['chunks', `${volume.chunk_health.chunks_placed} of ${volume.chunk_count} placed, ${formatBytes(volume.chunk_size_bytes)} each`],
    ['state', colourState(volume.state)],
    ['health', colourState(volume.health)],
    ['replicas', `${volume.chunk_health.replicas_available}/${volume.chunk_health.replicas_expected} available`],
    ['mapped to', volume.mappings.map((m) => `${m.sdc} (${m.access_mode})`).join(', ') || '-'],
    ['created', volume.created_at],
  ]);
}

export function registerVolumeCommands(program: Command): void {
  const vol = program.command('vol').description('volumes: create, map to SDC, extend, delete');
  vol
    .command('create <pool> <name> <size>')
    .description('create a volume; SIZE like 800MiB or 8GiB (a bare number is GiB); rounded up to whole MiB')
    .option('--thin', 'place chunks when first written (default)')
    .option('--thick', 'place and reserve every chunk now')
    .action(async (poolRef: string, name: string, size: string, options: { thin?: boolean; thick?: boolean }, command: Command) => {
      if (options.thin && options.thick) throw new InvalidArgumentError('choose one of --thin and --thick');
      const { client, output } = contextOf(command);
      const created = await client.post<VolumeView>('/vol/create', {
        name,
        pool: ref(poolRef),
        size_bytes: parseSizeArgument(size),
        provisioning: options.thick ? 'thick' : 'thin',
      });
      print(output, created, () => `created ${created.provisioning} volume ${created.name} (id ${created.id}), ${formatBytes(created.size_bytes)} in ${created.pool}`);
    });
  vol
    .command('list')
    .description('list volumes')
    .option('--pool <pool>', 'only this storage pool')
    .action(async (options: { pool?: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const rows = await client.get<VolumeView[]>(`/vol/list${options.pool ? `?pool=${pathRef(options.pool)}` : ''}`);
      print(output, rows, () => volumeTable(rows));
    });
  vol
    .command('show <volume>')
    .description('show one volume')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const shown = await client.get<VolumeView>(`/vol/${pathRef(ref_)}`);
      print(output, shown, () => volumeDetails(shown));
    });
  vol
    .command('chunks <volume>')
    .description("list a volume's placed chunks and where their replicas live")
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const result = await client.get<{ volume: string; chunks: ChunkView[] }>(`/vol/${pathRef(ref_)}/chunks`);
      print(output, result, () =>
        renderTable(result.chunks, [
          { header: 'CHUNK', value: (c) => c.index, align: 'right' },
          { header: 'EPOCH', value: (c) => c.epoch, align: 'right' },
          { header: 'GENERATION', value: (c) => c.generation, align: 'right' },
          { header: 'REPLICAS', value: (c) => c.replicas.map((r) => `${r.sds}${r.state === 'CURRENT' && r.sds_state !== 'DOWN' ? '' : `(${colourState(r.sds_state === 'DOWN' ? 'DOWN' : r.state)})`}`).join(' ') },
        ]),
      );
    });
  vol
    .command('verify <volume>')
    .description('compare the replicas of every chunk byte for byte; exits 1 when any differ or cannot be read')
    .action(async (volumeRef: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const long = new HttpClient({ baseUrl: client.baseUrl, credential: client.credential, timeoutMs: 30 * 60 * 1000 });
      const report = await long.post<VerifyReport>(`/vol/${pathRef(volumeRef)}/verify`, {});
      print(output, report, () => {
        const lines = [
          `volume ${report.volume}: ${report.chunks_checked} chunks, ${formatBytes(report.bytes_compared)} compared in ${(report.duration_ms / 1000).toFixed(1)} s: ` +
            (report.clean ? colourState('OK') : colourState('FAILED')),
        ];
        for (const bad of [...report.mismatches, ...report.unreadable]) {
          lines.push(
            `  chunk ${bad.chunk_index}` +
              (bad.first_difference_offset_bytes === null ? '' : ` differs from byte ${bad.first_difference_offset_bytes}`) +
              ': ' +
              bad.replicas.map((r) => `${r.sds} ${r.sha256?.slice(0, 12) ?? '-'} (${r.note})`).join(', '),
          );
        }
        return lines.join('\n');
      });
      if (!report.clean) process.exitCode = 1;
    });
  vol
    .command('map <volume> <sdc>')
    .description('map a volume to an SDC, which then exports it over NBD')
    .option('--read-only', 'map readOnly (NBD exports it READ_ONLY)')
    .option('--allow-multi-map', 'allow the volume to be mapped to more than one SDC (every mapping readOnly: a readWrite volume has one SDC)')
    .action(async (volumeRef: string, sdcRef: string, options: { readOnly?: boolean; allowMultiMap?: boolean }, command: Command) => {
      const { client, output } = contextOf(command);
      const mapping = await client.post<{ access_mode: string }>('/vol/map', {
        volume: ref(volumeRef),
        sdc: ref(sdcRef),
        access_mode: options.readOnly ? 'readOnly' : 'readWrite',
        allow_multi_map: options.allowMultiMap === true,
      });
      print(output, mapping, () => `mapped volume ${volumeRef} to SDC ${sdcRef} (${mapping.access_mode})`);
    });
  vol
    .command('unmap <volume> <sdc>')
    .description('unmap a volume from an SDC')
    .action(async (volumeRef: string, sdcRef: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const result = await client.post('/vol/unmap', { volume: ref(volumeRef), sdc: ref(sdcRef) });
      print(output, result, () => `unmapped volume ${volumeRef} from SDC ${sdcRef}`);
    });
  vol
    .command('extend <volume> <size>')
    .description('grow a volume to SIZE, or by SIZE when written +SIZE (e.g. +8GiB); volumes never shrink')
    .action(async (volumeRef: string, size: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      let newSizeBytes: number;
      if (size.startsWith('+')) {
        const current = await client.get<VolumeView>(`/vol/${pathRef(volumeRef)}`);
        newSizeBytes = current.size_bytes + parseSizeArgument(size.slice(1));
      } else {
        newSizeBytes = parseSizeArgument(size);
      }
      const extended = await client.post<VolumeView>('/vol/extend', { volume: ref(volumeRef), size_bytes: newSizeBytes });
      print(output, extended, () => `volume ${extended.name} is now ${formatBytes(extended.size_bytes)}`);
    });
  vol
    .command('rename <volume> <new-name>')
    .description('rename a volume')
    .action(async (volumeRef: string, newName: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const renamed = await client.post<VolumeView>('/vol/rename', { volume: ref(volumeRef), new_name: newName });
      print(output, renamed, () => `volume ${volumeRef} renamed to ${renamed.name}`);
    });
  vol
    .command('delete <volume>')
    .description('delete an unmapped volume and free its capacity')
    .action(async (volumeRef: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const result = await client.delete<{ deleted: VolumeView }>(`/vol/${pathRef(volumeRef)}`);
      print(output, result, () => `deleted volume ${result.deleted.name}`);
    });
}
