/** pflex sds | sdc (admin side): SDS records with their devices, and SDC records. */
import { Command, InvalidArgumentError } from 'commander';
import { contextOf, parseIntegerArgument, pathRef, ref } from '../context.js';
import { colourState, print, renderKeyValues, renderTable } from '../output.js';
import { formatBytes, parseSizeBytes } from '../../common/units.js';
import { attachRunSdsAction } from './run-sds.js';
import { attachRunSdcAction } from './run-sdc.js';

export interface SdsView {
  id: number;
  name: string;
  pd: string;
  fault_set: string | null;
  host: string;
  data_port: number;
  control_port: number;
  mgmt_port: number;
  state: string;
  devices: { id: number; path: string; capacity_bytes: number; pool: string; state: string }[];
  capacity_bytes: number;
  allocated_bytes: number;
  replica_count: number;
  last_heartbeat_at: string | null;
}

export interface SdcView {
  id: number;
  name: string;
  host: string;
  state: string;
  nbd_port: number | null;
  mappings: { volume: string; access_mode: string }[];
  last_heartbeat_at: string | null;
}

interface DeviceSpec {
  path: string;
  capacity_bytes: number;
  pool?: string | number;
}

/** "--device /dev/sdb:100GiB" or "/data/sds1.img:4GiB:pool1". */
function parseDeviceSpec(text: string, previous: DeviceSpec[] = []): DeviceSpec[] {
  const parts = text.split(':');
  let spec: DeviceSpec | undefined;
  if (parts.length >= 2) {
    const lastSize = parseSizeBytes(parts[parts.length - 1]!);
    if (lastSize !== undefined) {
      spec = { path: parts.slice(0, -1).join(':'), capacity_bytes: lastSize };
    } else if (parts.length >= 3) {
      const size = parseSizeBytes(parts[parts.length - 2]!);
      if (size !== undefined) spec = { path: parts.slice(0, -2).join(':'), capacity_bytes: size, pool: ref(parts[parts.length - 1]!) };
    }
  }
  if (spec === undefined || !spec.path.startsWith('/')) {
    throw new InvalidArgumentError(`"${text}" is not PATH:SIZE[:POOL], e.g. /dev/sdb:100GiB or /var/lib/pflex/d0.img:8GiB:pool1`);
  }
  return [...previous, spec];
}

export function sdsTable(rows: readonly SdsView[]): string {
  return renderTable(rows, [
    { header: 'ID', value: (s) => s.id, align: 'right' },
    { header: 'NAME', value: (s) => s.name },
    { header: 'PD', value: (s) => s.pd },
    { header: 'FAULT SET', value: (s) => s.fault_set },
    { header: 'ADDRESS', value: (s) => `${s.host}:${s.data_port}` },
    { header: 'STATE', value: (s) => colourState(s.state) },
    { header: 'CAPACITY', value: (s) => formatBytes(s.capacity_bytes), align: 'right' },
    { header: 'ALLOCATED', value: (s) => formatBytes(s.allocated_bytes), align: 'right' },
    { header: 'REPLICAS', value: (s) => s.replica_count, align: 'right' },
  ]);
}

export function sdcTable(rows: readonly SdcView[]): string {
  return renderTable(rows, [
    { header: 'ID', value: (s) => s.id, align: 'right' },
    { header: 'NAME', value: (s) => s.name },
    { header: 'HOST', value: (s) => s.host },
    { header: 'STATE', value: (s) => colourState(s.state) },
    { header: 'MAPPED VOLUMES', value: (s) => s.mappings.map((m) => (m.access_mode === 'readOnly' ? `${m.volume} (ro)` : m.volume)).join(', ') },
  ]);
}

export function registerNodeCommands(program: Command): void {
  // ---------------------------------------------------------------- SDS
  const sds = program
    .command('sds')
    .description('run a storage data server (no subcommand), or manage SDS records: add, list, show, device, remove');
  attachRunSdsAction(sds);
  sds
    .command('add <pd> <name>')
    .description('add an SDS record (the `pflex sds` process with this name registers into it)')
    .option('--fault-set <fault-set>', 'fault set the SDS belongs to')
    .option('--host <host>', 'address the SDC and peers reach it at', '127.0.0.1')
    .option('--data-port <port>', 'data port (default 9700)', parseIntegerArgument(1, 65535))
    .option('--control-port <port>', 'control port (default 9100)', parseIntegerArgument(1, 65535))
    .option('--mgmt-port <port>', 'management port (default 9200)', parseIntegerArgument(1, 65535))
    .option('--pool <pool>', 'pool for --device entries that do not name one')
    .option('--device <PATH:SIZE[:POOL]>', 'a device and the capacity it gives a pool; repeatable', parseDeviceSpec)
    .action(
      async (
        pdRef: string,
        name: string,
        options: { faultSet?: string; host: string; dataPort?: number; controlPort?: number; mgmtPort?: number; pool?: string; device?: DeviceSpec[] },
        command: Command,
      ) => {
        const { client, output } = contextOf(command);
        const devices = (options.device ?? []).map((device) => {
          const pool = device.pool ?? (options.pool !== undefined ? ref(options.pool) : undefined);
          if (pool === undefined) throw new InvalidArgumentError(`device ${device.path} names no pool: add :POOL or --pool`);
          return { path: device.path, capacity_bytes: device.capacity_bytes, pool };
        });
        const body: Record<string, unknown> = { pd: ref(pdRef), name, host: options.host, devices };
        if (options.faultSet !== undefined) body.fault_set = ref(options.faultSet);
        if (options.dataPort !== undefined) body.data_port = options.dataPort;
        if (options.controlPort !== undefined) body.control_port = options.controlPort;
        if (options.mgmtPort !== undefined) body.mgmt_port = options.mgmtPort;
        const created = await client.post<SdsView>('/sds/add', body);
        print(output, created, () => `added SDS ${created.name} (id ${created.id}) with ${created.devices.length} device(s), ${formatBytes(created.capacity_bytes)}`);
      },
    );
  sds
    .command('list')
    .description('list SDS with state and capacity')
    .option('--pd <pd>', 'only this protection domain')
    .action(async (options: { pd?: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const rows = await client.get<SdsView[]>(`/sds/list${options.pd ? `?pd=${pathRef(options.pd)}` : ''}`);
      print(output, rows, () => sdsTable(rows));
    });
  sds
    .command('show <sds>')
    .description('show one SDS and its devices')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const shown = await client.get<SdsView>(`/sds/${pathRef(ref_)}`);
      print(output, shown, () =>
        [
          renderKeyValues([
            ['name', `${shown.name} (id ${shown.id})`],
            ['state', colourState(shown.state)],
            ['protection domain', shown.pd],
            ['fault set', shown.fault_set],
            ['ports', `data ${shown.host}:${shown.data_port}, control ${shown.control_port}, mgmt ${shown.mgmt_port}`],
            ['capacity', formatBytes(shown.capacity_bytes)],
            ['allocated', `${formatBytes(shown.allocated_bytes)} in ${shown.replica_count} replicas`],
            ['last heartbeat', shown.last_heartbeat_at],
          ]),
          '',
          renderTable(shown.devices, [
            { header: 'DEVICE', value: (d) => d.path },
            { header: 'CAPACITY', value: (d) => formatBytes(d.capacity_bytes), align: 'right' },
            { header: 'POOL', value: (d) => d.pool },
            { header: 'STATE', value: (d) => colourState(d.state) },
          ]),
        ].join('\n'),
      );
    });
  const device = sds.command('device').description("an SDS's devices");
  device
    .command('add <sds> <path> <size>')
    .description('give a pool the capacity of a device (raw block device or file) on an SDS')
    .requiredOption('--pool <pool>', 'storage pool the device serves')
    .action(async (sdsRef: string, path: string, size: string, options: { pool: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const bytes = parseSizeBytes(size);
      if (bytes === undefined) throw new InvalidArgumentError(`"${size}" is not a size`);
      const added = await client.post<{ path: string; capacity_bytes: number }>(`/sds/${pathRef(sdsRef)}/device/add`, {
        path,
        capacity_bytes: bytes,
        pool: ref(options.pool),
      });
      print(output, added, () => `added device ${added.path} (${formatBytes(added.capacity_bytes)}) to SDS ${sdsRef}`);
    });
  sds
    .command('remove <sds>')
    .description('remove an SDS: one holding replicas is drained first (its replicas move to other SDS), then removed')
    .option('--wait', 'wait until the drain is over and the SDS is gone')
    .option('--timeout <seconds>', 'with --wait: give up after this long', '3600')
    .action(async (ref_: string, options: { wait?: boolean; timeout: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const result = await client.post<{ deleted: SdsView } | { draining: SdsView; replicas: number }>('/sds/remove', { sds: ref(ref_) });
      if ('deleted' in result || options.wait !== true) {
        print(output, result, () =>
          'deleted' in result
            ? `removed SDS ${result.deleted.name}`
            : `draining SDS ${result.draining.name}: ${result.replicas} replica(s) move to other SDS first; see pflex rebuild status`,
        );
        return;
      }
      const deadlineMs = Date.now() + Number(options.timeout) * 1000;
      for (;;) {
        const left = await client.get<SdsView>(`/sds/${pathRef(ref_)}`).catch((error: unknown) => {
          if ((error as { code?: string }).code === 'PFLEX_ERR_NOT_FOUND') return undefined;
          throw error;
        });
        if (left === undefined) break;
        if (Date.now() > deadlineMs) throw new Error(`SDS ${result.draining.name} is still draining after ${options.timeout} s`);
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
      print(output, { deleted: result.draining }, () => `drained and removed SDS ${result.draining.name}`);
    });

  // ---------------------------------------------------------------- SDC
  const sdc = program
    .command('sdc')
    .description('run a storage data client, the NBD server (no subcommand), or manage SDC records: add, list, show, remove');
  attachRunSdcAction(sdc);
  sdc
    .command('add <name>')
    .description('add an SDC record (an SDC process also adds itself when it registers)')
    .option('--host <host>', 'address of the SDC host', '127.0.0.1')
    .action(async (name: string, options: { host: string }, command: Command) => {
      const { client, output } = contextOf(command);
      const created = await client.post<SdcView>('/sdc/add', { name, host: options.host });
      print(output, created, () => `added SDC ${created.name} (id ${created.id})`);
    });
  sdc
    .command('list')
    .description('list SDC with state and mapped volumes')
    .action(async (_options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const rows = await client.get<SdcView[]>('/sdc/list');
      print(output, rows, () => sdcTable(rows));
    });
  sdc
    .command('show <sdc>')
    .description('show one SDC')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const shown = await client.get<SdcView>(`/sdc/${pathRef(ref_)}`);
      print(output, shown, () =>
        renderKeyValues([
          ['name', `${shown.name} (id ${shown.id})`],
          ['state', colourState(shown.state)],
          ['host', shown.host],
          ['NBD port', shown.nbd_port],
          ['mapped volumes', shown.mappings.map((m) => `${m.volume} (${m.access_mode})`).join(', ') || '-'],
          ['last heartbeat', shown.last_heartbeat_at],
        ]),
      );
    });
  sdc
    .command('remove <sdc>')
    .description('remove an SDC with no mapped volumes')
    .action(async (ref_: string, _options: unknown, command: Command) => {
      const { client, output } = contextOf(command);
      const result = await client.delete<{ deleted: SdcView }>(`/sdc/${pathRef(ref_)}`);
      print(output, result, () => `removed SDC ${result.deleted.name}`);
    });
}
