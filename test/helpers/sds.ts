/**
 * Helpers for SDS tests: real `pflex sds` processes on free loopback ports, a cluster layout made
 * through the real MDM API, an IO-token session that speaks the binary data protocol
 * (docs/PROTOCOL.md §5) with its own sequence numbers and MACs, a raw socket for crafting
 * malformed input, and small HTTP helpers for the SDS's control and management planes.
 *
 * Nothing here mocks storage or the network: every byte goes through real sockets to real processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { HttpClient } from '../../src/common/http-client.js';
import { SdsDataClient, type RequestFields } from '../../src/common/sds-client.js';
import {
  ByteQueue,
  computeRequestMac,
  decodeReplyHeader,
  deriveControlCredential,
  encodeRequestHeader,
  Opcode,
  REPLY_HEADER_BYTES,
  REQUEST_MAC_OFFSET,
  signRequestHeader,
  type ReplyHeader,
} from '../../src/common/sds-protocol.js';
import * as nativeIo from '../../src/sds/native-io.js';
import { cleanEnv, PFLEX_BIN } from './cli.js';
import { freePort } from '../../src/launcher/free-port.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ------------------------------------------------------------------ temp dirs

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

/**
 * A fresh temp dir on a disk-backed file system where O_DIRECT really works (the SDS's device files
 * live there). /var/tmp first: /tmp may be tmpfs. Throws when no candidate accepts O_DIRECT.
 */
export function directTempDir(prefix: string): string {
  for (const parent of ['/var/tmp', process.cwd()]) {
    if (!existsSync(parent)) continue;
    const type = Number(statfsSync(parent).type);
    if (type === TMPFS_MAGIC || type === RAMFS_MAGIC) continue;
    const dir = mkdtempSync(join(parent, prefix));
    const probe = nativeIo.open(join(dir, '.direct-probe'), { create: true, direct: true });
    nativeIo.close(probe.fd);
    rmSync(join(dir, '.direct-probe'), { force: true });
    if (probe.direct) return dir;
    rmSync(dir, { recursive: true, force: true });
  }
  throw new Error('no disk-backed directory accepts O_DIRECT here');
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

// ------------------------------------------------------------------ HTTP to the SDS planes

export interface HttpAnswer {
  status: number;
  body: any;
  text: string;
}

/** A raw HTTP call that never throws on a status. */
export async function httpCall(
  url: string,
  options: { method?: string; json?: unknown; authorization?: string | undefined; raw?: string } = {},
): Promise<HttpAnswer> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (options.authorization !== undefined) headers.authorization = options.authorization;
  let body: string | undefined;
  if (options.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(options.json);
  } else if (options.raw !== undefined) {
    headers['content-type'] = 'application/json';
    body = options.raw;
  }
  const response = await fetch(url, { method: options.method ?? (body === undefined ? 'GET' : 'POST'), headers, body: body ?? null, signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: response.status, body: parsed, text };
}

/** The `Authorization` header value the MDM uses on an SDS control plane. */
export function controlAuthorization(signingKey: Buffer): string {
  return `Bearer ${deriveControlCredential(signingKey)}`;
}

export interface SdsNodeFile {
  node_id: string;
  credential: string;
  sds_id: number;
  signingKey: Buffer;
}

/** The identity a registered SDS keeps in its data dir (node.json, written 0600 at registration). */
export function readSdsNodeFile(dataDir: string): SdsNodeFile {
  const node = JSON.parse(readFileSync(join(dataDir, 'node.json'), 'utf8')) as { node_id: string; credential: string; sds_id: number; signing_key: string };
  return { node_id: node.node_id, credential: node.credential, sds_id: node.sds_id, signingKey: Buffer.from(node.signing_key, 'base64') };
}

// ------------------------------------------------------------------ SDS processes

export interface SdsPorts {
  data: number;
  control: number;
  mgmt: number;
}

export async function freeSdsPorts(): Promise<SdsPorts> {
  const ports = new Set<number>();
  while (ports.size < 3) ports.add(await freePort());
  const [data, control, mgmt] = [...ports] as [number, number, number];
  return { data, control, mgmt };
}

export interface StartSdsOptions {
  nodeId: string;
  mdmUrl: string;
  /** Needed for a first start; a restart finds its credential in dataDir/node.json. */
  joinToken?: string | undefined;
  dataDir: string;
  ports?: SdsPorts;
  logFile?: string;
  logLevel?: string;
  /** Wait for mgmt /health to say registered:true (default), or only for the process to listen. */
  wait?: 'registered' | 'listening' | 'none';
  timeoutMs?: number;
  /** Extra environment (PFLEX_FAULT_INJECTION=1 for the fault layer). */
  env?: NodeJS.ProcessEnv;
}

export interface SdsProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly nodeId: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly dataPort: number;
  readonly controlPort: number;
  readonly mgmtPort: number;
  readonly mgmtUrl: string;
  readonly controlUrl: string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive(): boolean;
  stderr(): string;
  log(): string;
  health(): Promise<any>;
  stats(): Promise<any>;
  waitRegistered(timeoutMs?: number): Promise<any>;
  /** Sends `signal` (SIGTERM by default) to this PID and waits for the exit. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL to this PID; resolves once it is gone. */
  kill9(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** True when a process with this PID exists (signal 0). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Spawns the real `pflex sds` on free (or given) loopback ports and waits until its management
 * plane says it registered with the MDM.
 */
export async function startSdsProcess(options: StartSdsOptions): Promise<SdsProcess> {
  const ports = options.ports ?? (await freeSdsPorts());
  const logFile = options.logFile ?? join(options.dataDir, 'sds.log');
  const env = cleanEnv({
    POWERFLEX_MDM_ADDRESS: options.mdmUrl,
    ...(options.joinToken !== undefined ? { PFLEX_JOIN_TOKEN: options.joinToken } : {}),
    ...((options.env ?? {}) as Record<string, string>),
  });
  const child = spawn(
    process.execPath,
    [
      PFLEX_BIN,
      'sds',
      '--node-id',
      options.nodeId,
      '--data-dir',
      options.dataDir,
      '--data-port',
      String(ports.data),
      '--control-port',
      String(ports.control),
      '--mgmt-port',
      String(ports.mgmt),
      '--log-file',
      logFile,
      '--log-level',
      options.logLevel ?? 'info',
    ],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  if (child.pid === undefined) throw new Error('pflex sds did not start');
  const pid = child.pid;
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    if (stderr.length < 64 * KiB) stderr += chunk.toString();
  });
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  const mgmtUrl = `http://127.0.0.1:${ports.mgmt}`;
  const controlUrl = `http://127.0.0.1:${ports.control}`;

  const health = async (): Promise<any> => (await httpCall(`${mgmtUrl}/health`)).body;
  const waitUntil = async (done: (health: any) => boolean, timeoutMs: number, what: string): Promise<any> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (exitInfo !== undefined) throw new Error(`pflex sds ${options.nodeId} exited (${JSON.stringify(exitInfo)}) before ${what}; stderr: ${stderr}`);
      try {
        const body = await health();
        if (done(body)) return body;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`pflex sds ${options.nodeId} not ${what} within ${timeoutMs} ms; stderr: ${stderr}`);
      await sleep(50);
    }
  };

  const sds: SdsProcess = {
    child,
    pid,
    nodeId: options.nodeId,
    dataDir: options.dataDir,
    logFile,
    dataPort: ports.data,
    controlPort: ports.control,
    mgmtPort: ports.mgmt,
    mgmtUrl,
    controlUrl,
    exited,
    alive: () => exitInfo === undefined && pidAlive(pid),
    stderr: () => stderr,
    log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
    health,
    stats: async () => (await httpCall(`${mgmtUrl}/stats`)).body,
    waitRegistered: (timeoutMs = 20_000) => waitUntil((body) => body?.registered === true, timeoutMs, 'registered'),
    async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000) {
      if (exitInfo !== undefined) return exitInfo;
      process.kill(pid, signal);
      const timer = setTimeout(() => {
        if (exitInfo === undefined) process.kill(pid, 'SIGKILL');
      }, timeoutMs);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
    async kill9() {
      if (exitInfo !== undefined) return exitInfo;
      process.kill(pid, 'SIGKILL');
      return exited;
    },
  };
  try {
    const timeoutMs = options.timeoutMs ?? 20_000;
    if (options.wait === 'listening') await waitUntil((body) => body?.status === 'ok', timeoutMs, 'listening');
    else if (options.wait !== 'none') await sds.waitRegistered(timeoutMs);
  } catch (error) {
    await sds.kill9();
    throw error;
  }
  return sds;
}

// ------------------------------------------------------------------ cluster layout through the MDM API

export interface SdsRecord {
  name: string;
  dataDir: string;
  devicePath: string;
  ports: SdsPorts;
}

export interface SdsClusterLayout {
  pd: string;
  pool: string;
  sdc: string;
  joinToken: string;
  chunkSizeBytes: number;
  deviceBytes: number;
  sds: SdsRecord[];
}

/**
 * Creates, through the real MDM admin API: a protection domain, a pool (given chunk size, spare 0),
 * `sdsCount` SDS records each with one device file under `baseDir/<name>/`, an SDC, the volumes
 * (mapped readWrite to that SDC), and a join token for SDS nodes.
 */
export async function setupSdsCluster(
  admin: HttpClient,
  options: {
    baseDir: string;
    sdsCount: number;
    chunkSizeBytes?: number;
    deviceBytes?: number;
    copies?: 2 | 3;
    volumes: { name: string; sizeBytes: number; thick?: boolean }[];
    prefix?: string;
    /** false for tests that write one replica behind the MDM's back: no resync may copy over it. */
    rebuildEnabled?: boolean;
  },
): Promise<SdsClusterLayout> {
  const prefix = options.prefix ?? 't';
  const chunkSizeBytes = options.chunkSizeBytes ?? MiB;
  const deviceBytes = options.deviceBytes ?? 64 * MiB;
  const pd = `${prefix}-pd`;
  const pool = `${prefix}-pool`;
  const sdc = `${prefix}-sdc`;
  await admin.post('/pd/create', { name: pd });
  await admin.post('/pool/create', {
    pd,
    name: pool,
    spare_percent: 0,
    chunk_size_bytes: chunkSizeBytes,
    ...(options.copies === 3 ? { protection_policy: 'three_copies' } : {}),
    ...(options.rebuildEnabled === false ? { rebuild_enabled: false } : {}),
  });
  const sds: SdsRecord[] = [];
  for (let n = 1; n <= options.sdsCount; n += 1) {
    const name = `${prefix}-sds${n}`;
    const dataDir = join(options.baseDir, name);
    const devicePath = join(dataDir, 'dev0.img');
    const ports = await freeSdsPorts();
    await admin.post('/sds/add', {
      name,
      pd,
      data_port: ports.data,
      control_port: ports.control,
      mgmt_port: ports.mgmt,
      devices: [{ path: devicePath, capacity_bytes: deviceBytes, pool }],
    });
    sds.push({ name, dataDir, devicePath, ports });
  }
  await admin.post('/sdc/add', { name: sdc });
  for (const volume of options.volumes) {
    await admin.post('/vol/create', { name: volume.name, pool, size_bytes: volume.sizeBytes, ...(volume.thick === true ? { provisioning: 'thick' } : {}) });
    await admin.post('/vol/map', { volume: volume.name, sdc });
  }
  const { join_token: joinToken } = await admin.post<{ join_token: string }>('/cluster/join-token', { roles: ['sds'] });
  return { pd, pool, sdc, joinToken, chunkSizeBytes, deviceBytes, sds };
}

// ------------------------------------------------------------------ token sessions

export interface AuthorizeAnswer {
  token: string;
  token_id: string;
  session_key: string;
  expires_at: string;
  ttl_ms: number;
  volume: { id: number; name: string; size_bytes: number; chunk_size_bytes: number; chunk_count: number };
  sdc_id: number;
  operations: string[];
  chunk_first: number;
  chunk_count: number;
  chunks: { index: number; placed: boolean; epoch: number; replicas: { sds_id: number; sds_name: string; host: string; data_port: number }[] }[];
}

export type Operation = 'read' | 'write' | 'trim' | 'flush';

export async function authorize(
  admin: HttpClient,
  volume: string | number,
  sdc: string,
  operations: Operation[],
  chunkFirst: number,
  chunkCount: number,
  allocate = operations.includes('write'),
): Promise<AuthorizeAnswer> {
  return admin.post<AuthorizeAnswer>(`/vol/${volume}/io/authorize`, {
    operations,
    chunk_first: chunkFirst,
    chunk_count: chunkCount,
    sdc,
    ...(allocate ? { allocate: true } : {}),
  });
}

export interface IoReply {
  status: number;
  aux: number;
  payload: Buffer | undefined;
}

export interface IoOptions {
  fua?: boolean;
  /** Overrides the flags byte (FUA, NO_HOLE). */
  flags?: number;
  /** A sequence number of the caller's choosing instead of the next one. */
  seq?: bigint;
  epoch?: number;
  volumeId?: number;
  tokenId?: Buffer;
  /** Sign with this key instead of the session key. */
  macKey?: Buffer;
}

/**
 * One IO token as an SDC holds it: token bytes, token id, session key and a sequence counter
 * (one per token across all connections, starting at 1). Methods build, sign and send requests.
 */
export class TokenSession {
  readonly token: Buffer;
  readonly tokenId: Buffer;
  readonly sessionKey: Buffer;
  readonly volumeId: number;
  readonly chunkSizeBytes: number;
  private nextSeq = 1n;

  constructor(readonly answer: AuthorizeAnswer) {
    this.token = Buffer.from(answer.token, 'base64');
    this.tokenId = Buffer.from(answer.token_id, 'hex');
    this.sessionKey = Buffer.from(answer.session_key, 'base64');
    this.volumeId = answer.volume.id;
    this.chunkSizeBytes = answer.volume.chunk_size_bytes;
  }

  /** Asks the MDM (as admin, for `sdc`) for a token; a write token places the range's chunks (allocate). */
  static async authorize(
    admin: HttpClient,
    volume: string | number,
    sdc: string,
    operations: Operation[],
    chunkFirst: number,
    chunkCount: number,
    allocate = operations.includes('write'),
  ): Promise<TokenSession> {
    return new TokenSession(await authorize(admin, volume, sdc, operations, chunkFirst, chunkCount, allocate));
  }

  /** Takes the next sequence number. */
  takeSeq(): bigint {
    const seq = this.nextSeq;
    this.nextSeq += 1n;
    return seq;
  }

  /** The highest sequence number taken so far. */
  get lastSeq(): bigint {
    return this.nextSeq - 1n;
  }

  /** Moves the counter so the next number taken is `next`. */
  skipTo(next: bigint): void {
    this.nextSeq = next;
  }

  plan(chunkIndex: number): AuthorizeAnswer['chunks'][number] {
    const chunk = this.answer.chunks.find((c) => c.index === chunkIndex);
    if (chunk === undefined) throw new Error(`chunk ${chunkIndex} is not in this token's range`);
    return chunk;
  }

  epochOf(chunkIndex: number): number {
    return this.answer.chunks.find((c) => c.index === chunkIndex)?.epoch ?? 0;
  }

  targetsOf(chunkIndex: number): number[] {
    return this.plan(chunkIndex).replicas.map((r) => r.sds_id);
  }

  /** The request fields of one request; options override the defaults. */
  fields(opcode: number, chunkIndex: number, offsetBytes: number, lengthBytes: number, options: IoOptions = {}): RequestFields {
    return {
      opcode,
      flags: options.flags ?? (options.fua === true ? 0x01 : 0),
      tokenId: options.tokenId ?? this.tokenId,
      seq: options.seq ?? this.takeSeq(),
      volumeId: options.volumeId ?? this.volumeId,
      chunkIndex,
      epoch: options.epoch ?? this.epochOf(chunkIndex),
      offsetBytes,
      lengthBytes,
    };
  }

  /** Installs a token (this one by default) with Opcode.TOKEN. */
  install(client: SdsDataClient, tokenBytes: Buffer = this.token, tokenId: Buffer = this.tokenId): Promise<IoReply> {
    return client.request(
      { opcode: Opcode.TOKEN, flags: 0, tokenId, seq: 0n, volumeId: this.volumeId, chunkIndex: 0, epoch: 0, offsetBytes: 0, lengthBytes: 0 },
      tokenBytes,
      undefined,
    );
  }

  read(client: SdsDataClient, chunkIndex: number, offsetBytes: number, lengthBytes: number, options: IoOptions = {}): Promise<IoReply> {
    return client.request(this.fields(Opcode.READ, chunkIndex, offsetBytes, lengthBytes, options), undefined, options.macKey ?? this.sessionKey);
  }

  write(client: SdsDataClient, chunkIndex: number, offsetBytes: number, data: Buffer, options: IoOptions = {}): Promise<IoReply> {
    return client.request(this.fields(Opcode.WRITE, chunkIndex, offsetBytes, data.length, options), data, options.macKey ?? this.sessionKey);
  }

  trim(client: SdsDataClient, chunkIndex: number, offsetBytes: number, lengthBytes: number, options: IoOptions = {}): Promise<IoReply> {
    return client.request(this.fields(Opcode.TRIM, chunkIndex, offsetBytes, lengthBytes, options), undefined, options.macKey ?? this.sessionKey);
  }

  writeZeroes(client: SdsDataClient, chunkIndex: number, offsetBytes: number, lengthBytes: number, options: IoOptions = {}): Promise<IoReply> {
    return client.request(this.fields(Opcode.WRITE_ZEROES, chunkIndex, offsetBytes, lengthBytes, options), undefined, options.macKey ?? this.sessionKey);
  }

  flush(client: SdsDataClient, options: IoOptions = {}): Promise<IoReply> {
    return client.request(this.fields(Opcode.FLUSH, 0, 0, 0, { epoch: 0, ...options }), undefined, options.macKey ?? this.sessionKey);
  }

  /**
   * Sends a request built from overrides (for crafting bad ones): missing fields default to this
   * token's; `macKey` undefined signs with the session key, null sends an all-zero MAC.
   */
  send(client: SdsDataClient, override: Partial<RequestFields> & { opcode: number }, payload?: Buffer, macKey?: Buffer | null): Promise<IoReply> {
    const chunkIndex = override.chunkIndex ?? 0;
    const fields: RequestFields = {
      flags: 0,
      tokenId: this.tokenId,
      volumeId: this.volumeId,
      epoch: this.epochOf(chunkIndex),
      offsetBytes: 0,
      lengthBytes: payload?.length ?? 0,
      ...override,
      chunkIndex,
      seq: override.seq ?? this.takeSeq(),
    };
    return client.request(fields, payload, macKey === null ? undefined : (macKey ?? this.sessionKey));
  }

  /** A complete, signed 80-byte request header, for raw sockets. */
  header(override: Partial<RequestFields> & { opcode: number }, options: { requestId?: bigint; payloadBytes?: number; macKey?: Buffer } = {}): Buffer {
    const chunkIndex = override.chunkIndex ?? 0;
    const header = encodeRequestHeader({
      flags: 0,
      tokenId: this.tokenId,
      volumeId: this.volumeId,
      epoch: this.epochOf(chunkIndex),
      offsetBytes: 0,
      lengthBytes: 0,
      ...override,
      chunkIndex,
      seq: override.seq ?? this.takeSeq(),
      requestId: options.requestId ?? 1n,
      payloadBytes: options.payloadBytes ?? 0,
    });
    signRequestHeader(options.macKey ?? this.sessionKey, header);
    return header;
  }

  /**
   * A JSON data-port frame (PROTOCOL §5.5) with its MAC computed over the binary header the SDS
   * rebuilds from the fields (request_id 0, payload_bytes = decoded data length).
   */
  jsonFrame(
    action: 'read' | 'write' | 'trim' | 'write_zeroes' | 'flush',
    chunkIndex: number,
    offsetBytes: number,
    lengthOrData: number | Buffer,
    options: IoOptions & { id?: number | string } = {},
  ): Record<string, unknown> {
    const opcodes = { read: Opcode.READ, write: Opcode.WRITE, trim: Opcode.TRIM, write_zeroes: Opcode.WRITE_ZEROES, flush: Opcode.FLUSH };
    const data = typeof lengthOrData === 'number' ? undefined : lengthOrData;
    const lengthBytes = typeof lengthOrData === 'number' ? lengthOrData : lengthOrData.length;
    const fields = this.fields(opcodes[action], chunkIndex, offsetBytes, lengthBytes, { ...(action === 'flush' ? { epoch: 0 } : {}), ...options });
    const header = encodeRequestHeader({ ...fields, requestId: 0n, payloadBytes: data?.length ?? 0 });
    const mac = computeRequestMac(options.macKey ?? this.sessionKey, header);
    const frame: Record<string, unknown> = {
      action,
      id: options.id ?? Number(fields.seq),
      token_id: fields.tokenId.toString('hex'),
      seq: Number(fields.seq),
      mac: mac.toString('hex'),
      volume_id: fields.volumeId,
      chunk_index: fields.chunkIndex,
      epoch: fields.epoch,
      offset_bytes: fields.offsetBytes,
    };
    if (data !== undefined) frame.data_b64 = data.toString('base64');
    else frame.length_bytes = lengthBytes;
    if (fields.flags & 0x01) frame.fua = true;
    return frame;
  }
}

/** The MAC bytes of a header (bytes 64..79), for flipping bits in tests. */
export function macOf(header: Buffer): Buffer {
  return header.subarray(REQUEST_MAC_OFFSET, REQUEST_MAC_OFFSET + 16);
}

// ------------------------------------------------------------------ raw sockets

export interface RawReply extends ReplyHeader {
  payload: Buffer | undefined;
}

/**
 * A plain TCP connection to a data port for sending arbitrary bytes and reading back binary
 * replies or JSON lines, and seeing whether (and when) the server closed it.
 */
export class RawConnection {
  private readonly queue = new ByteQueue();
  private waiter: (() => void) | undefined;
  private closedFlag = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      this.wake();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.closedFlag = true;
        this.wake();
        resolve();
      }),
    );
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, noDelay: true });
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawConnection(socket));
      });
      socket.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  get buffered(): number {
    return this.queue.length;
  }

  /** Writes bytes; resolves when they are handed to the kernel (or the socket is gone). */
  write(bytes: Buffer | string): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.write(bytes, () => resolve());
    });
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  private async waitFor(enough: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!enough()) {
      if (this.closedFlag) return enough();
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return true;
  }

  /** The next binary reply, or undefined when none arrives in time (or the socket closed first). */
  async nextReply(timeoutMs = 5000): Promise<RawReply | undefined> {
    if (!(await this.waitFor(() => this.queue.length >= REPLY_HEADER_BYTES, timeoutMs))) return undefined;
    const headerBytes = Buffer.alloc(REPLY_HEADER_BYTES);
    this.queue.takeInto(REPLY_HEADER_BYTES, headerBytes);
    const header = decodeReplyHeader(headerBytes);
    if (header.payloadBytes === 0) return { ...header, payload: undefined };
    if (!(await this.waitFor(() => this.queue.length >= header.payloadBytes, timeoutMs))) throw new Error('reply payload did not arrive');
    return { ...header, payload: this.queue.take(header.payloadBytes) };
  }

  /** The next newline-terminated line (without the newline), or undefined. */
  async nextLine(timeoutMs = 5000): Promise<string | undefined> {
    const ok = await this.waitFor(() => this.queue.indexOf(0x0a, this.queue.length) !== -1, timeoutMs);
    if (!ok) return undefined;
    const index = this.queue.indexOf(0x0a, this.queue.length);
    return this.queue.take(index + 1).toString('utf8').replace(/\n$/, '');
  }

  /** The next line parsed as JSON. */
  async nextJson(timeoutMs = 5000): Promise<any> {
    const line = await this.nextLine(timeoutMs);
    return line === undefined ? undefined : JSON.parse(line);
  }

  /** True when the server closes the connection within the time. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    await this.waitFor(() => false, timeoutMs);
    return this.closedFlag;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export { SdsDataClient };

// ------------------------------------------------------------------ seeded randomness

export { Prng } from '../../src/common/prng.js';
import { Prng } from '../../src/common/prng.js';

/** Deterministic bytes for a (seed, length): what a test writes and later expects back. */
export function patternBytes(seed: number, length: number): Buffer {
  return new Prng(seed * 2654435761 + 1).bytes(length);
}
