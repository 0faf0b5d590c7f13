/**
 * `npm start`: a whole local cluster on loopback (DESIGN §1). Each component is its own OS
 * process whose command line names its role; data lives under ./data (PFLEX_DATA_DIR), logs
 * under ./data/logs, and a restart finds everything where it was. Ctrl-C stops every child.
 *
 * Today it runs the MDM and bootstraps the topology (PD, three fault sets, a two-copy pool,
 * three SDS records with file devices, SDC sdc1, thin 1 GiB vol1 mapped to it). The SDS and SDC
 * processes join as their roles land.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, existsSync, readFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HttpClient, HttpClientError } from '../src/common/http-client.js';
import { GiB } from '../src/common/units.js';

const PFLEX_BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');
const DATA_DIR = resolve(process.env.PFLEX_DATA_DIR ?? 'data');
const MDM_PORT = Number(process.env.POWERFLEX_MDM_PORT ?? 8001);
const SDS_COUNT = 3;
const SDS_DEVICE_BYTES = 4 * GiB;
const STOP_GRACE_MS = 10_000;

interface Child {
  readonly name: string;
  readonly process: ChildProcess;
}

const children: Child[] = [];
let stopping = false;

function startChild(name: string, args: string[]): Child {
  mkdirSync(join(DATA_DIR, 'logs'), { recursive: true });
  const log = openSync(join(DATA_DIR, 'logs', `${name}.log`), 'a');
  const child = spawn(process.execPath, [PFLEX_BIN, ...args], { stdio: ['ignore', log, log], env: process.env });
  const entry = { name, process: child };
  children.push(entry);
  child.on('exit', (code, signal) => {
    if (!stopping) {
      process.stderr.write(`local-cluster: ${name} exited (code ${code}, signal ${signal}); see data/logs/${name}.log\n`);
      void stopAll(1);
    }
  });
  return entry;
}

async function waitForHealth(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) })).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer /health within ${timeoutMs} ms`);
}

/** Creates an object unless it exists: the bootstrap runs at every start and must be idempotent. */
async function ensure(client: HttpClient, showPath: string, createPath: string, body: unknown): Promise<void> {
  try {
    await client.get(showPath);
  } catch (error) {
    if (!(error instanceof HttpClientError) || error.status !== 404) throw error;
    await client.post(createPath, body);
  }
}

async function bootstrap(client: HttpClient): Promise<void> {
  await ensure(client, '/pd/pd1', '/pd/create', { name: 'pd1', description: 'local cluster' });
  for (let n = 1; n <= SDS_COUNT; n += 1) await ensure(client, `/fault_set/fs${n}`, '/fault_set/create', { pd: 'pd1', name: `fs${n}` });
  await ensure(client, '/pool/pool1', '/pool/create', { pd: 'pd1', name: 'pool1', protection_policy: 'two_copies' });
  for (let n = 1; n <= SDS_COUNT; n += 1) {
    const index = n - 1;
    await ensure(client, `/sds/sds-${n}`, '/sds/add', {
      name: `sds-${n}`,
      pd: 'pd1',
      fault_set: `fs${n}`,
      host: '127.0.0.1',
      data_port: 9700 + index,
      control_port: 9100 + index,
      mgmt_port: 9200 + index,
      devices: [{ path: join(DATA_DIR, `sds-${n}`, 'device0.img'), capacity_bytes: SDS_DEVICE_BYTES, pool: 'pool1' }],
    });
  }
  await ensure(client, '/sdc/sdc1', '/sdc/add', { name: 'sdc1', host: '127.0.0.1' });
  await ensure(client, '/vol/vol1', '/vol/create', { name: 'vol1', pool: 'pool1', size_bytes: GiB, provisioning: 'thin' });
  const volume = await client.get<{ mappings: { sdc: string }[] }>('/vol/vol1');
  if (!volume.mappings.some((mapping) => mapping.sdc === 'sdc1')) await client.post('/vol/map', { volume: 'vol1', sdc: 'sdc1' });
}

async function stopAll(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  process.stderr.write('local-cluster: stopping…\n');
  const exits = children.map(
    (child) =>
      new Promise<void>((resolveExit) => {
        if (child.process.exitCode !== null || child.process.signalCode !== null) return resolveExit();
        const timer = setTimeout(() => child.process.kill('SIGKILL'), STOP_GRACE_MS);
        child.process.on('exit', () => {
          clearTimeout(timer);
          resolveExit();
        });
        child.process.kill('SIGTERM');
      }),
  );
  await Promise.all(exits);
  process.stderr.write('local-cluster: stopped\n');
  process.exit(exitCode);
}

async function main(): Promise<void> {
  mkdirSync(DATA_DIR, { recursive: true });
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  const mdmUrl = `http://127.0.0.1:${MDM_PORT}`;
  startChild('mdm', ['mdm', '--port', String(MDM_PORT), '--data-dir', join(DATA_DIR, 'mdm')]);
  await waitForHealth(mdmUrl, 20_000);
  const tokenFile = join(DATA_DIR, 'mdm', 'admin.token');
  const token = process.env.PFLEX_ADMIN_TOKEN ?? (existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : undefined);
  const client = new HttpClient({ baseUrl: mdmUrl, credential: token });
  await bootstrap(client);
  process.stdout.write(
    [
      '',
      `pflex local cluster is up (data in ${DATA_DIR}, logs in ${join(DATA_DIR, 'logs')})`,
      `  MDM API        ${mdmUrl}   (admin credential: ${tokenFile})`,
      '  topology       pd1 / fs1..fs3 / pool1 (two_copies) / sds-1..sds-3 / sdc1 / vol1 (1 GiB thin, mapped to sdc1)',
      '  try            npx pflex cluster status',
      '  NBD export     nbd://127.0.0.1:10809/vol1 once the SDS and SDC roles run (issues 4 and 5)',
      '  stop           Ctrl-C',
      '',
    ].join('\n'),
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`local-cluster: ${(error as Error).message}\n`);
  void stopAll(1);
});
