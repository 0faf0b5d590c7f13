/**
 * The control channel of `npm start`: a Unix socket in the data dir (local-cluster.sock, mode
 * 0600) that `pflex local status|start|stop|kill` talk to. One JSON object a line each way: a
 * request, then its reply, `{"ok":true,…}` or `{"ok":false,"error":{"code","message"}}`. This
 * module holds what both sides share: the socket's path, the schemas, and the client.
 */
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { nameSchema } from '../common/names.js';
import { ByteQueue } from '../common/sds-protocol.js';

export const LOCAL_CONTROL_SOCKET_NAME = 'local-cluster.sock';
/** sun_path holds 108 bytes on Linux, the last one a NUL. */
export const SOCKET_PATH_BYTES_MAX = 107;
export const CONTROL_REQUEST_BYTES_MAX = 4096;
export const CONTROL_REPLY_BYTES_MAX = 256 * 1024;
/** How long the CLI waits for a reply: longer than a stop's grace (10 s) or a start's health wait. */
export const CONTROL_REPLY_TIMEOUT_MS = 60_000;

export function localControlSocketPath(dataDir: string): string {
  return join(dataDir, LOCAL_CONTROL_SOCKET_NAME);
}

/** The `pflex local` command a user types for `op` on this data dir (--data-dir unless it is ./data here). */
export function localCommandHint(dataDir: string, op: string, name?: string): string {
  const flag = resolve(dataDir) === resolve('data') ? '' : ` --data-dir ${/^[\w@%+=:,./-]+$/.test(dataDir) ? dataDir : `'${dataDir.replaceAll("'", "'\\''")}'`}`;
  return `npx pflex local ${op}${name === undefined ? '' : ` ${name}`}${flag}`;
}

export const controlRequestSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('status') }),
  z.strictObject({ op: z.literal('start'), name: nameSchema }),
  z.strictObject({ op: z.literal('stop'), name: nameSchema }),
  z.strictObject({ op: z.literal('kill'), name: nameSchema }),
]);
export type ControlRequest = z.infer<typeof controlRequestSchema>;

export const childStateSchema = z.enum(['running', 'exited', 'stopped']);

export const childStatusSchema = z.object({
  name: z.string(),
  role: z.enum(['mdm', 'sds', 'sdc']),
  /** The running process's PID, or the last one's once it has exited. */
  pid: z.number().int().nullable(),
  state: childStateSchema,
  /** When it entered this state (ISO 8601). */
  since: z.string(),
  exit: z
    .object({ code: z.number().int().nullable(), signal: z.string().nullable(), reason: z.string() })
    .nullable(),
  log: z.string(),
  /** How often the launcher started it again (by `pflex local start` or by itself). */
  restarts: z.number().int(),
  /** When the launcher will start it again by itself, if it will. */
  restart_at: z.string().nullable(),
  /** True once it died too often within a minute: no more automatic restarts. */
  restart_given_up: z.boolean(),
});
export type ChildStatus = z.infer<typeof childStatusSchema>;

export const launcherStatusSchema = z.object({
  pid: z.number().int(),
  data_dir: z.string(),
  socket: z.string(),
  restart_delay_s: z.number().int().nullable(),
  restarts_per_minute_max: z.number().int(),
});
export type LauncherStatus = z.infer<typeof launcherStatusSchema>;

export const statusReplySchema = z.object({ ok: z.literal(true), launcher: launcherStatusSchema, children: z.array(childStatusSchema) });
export const childReplySchema = z.object({ ok: z.literal(true), child: childStatusSchema });
export const errorReplySchema = z.object({ ok: z.literal(false), error: z.object({ code: z.string(), message: z.string() }) });

export type StatusReply = z.infer<typeof statusReplySchema>;
export type ChildReply = z.infer<typeof childReplySchema>;
export type ErrorReply = z.infer<typeof errorReplySchema>;

/** Nothing answers at the socket: no launcher, or one that crashed and left its socket behind. */
export class NoLocalClusterError extends Error {
  constructor(readonly socketPath: string) {
    super(`nothing answers at ${socketPath}`);
    this.name = 'NoLocalClusterError';
  }
}

/** The launcher answered with an error reply. */
export class ControlReplyError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ControlReplyError';
  }
}

/** Sends one request line and returns the one reply line, parsed as JSON (not yet checked). */
export function sendControlLine(socketPath: string, line: string, timeoutMs = CONTROL_REPLY_TIMEOUT_MS): Promise<unknown> {
  return new Promise((resolvePromise, reject) => {
    const socket = connect(socketPath);
    const queue = new ByteQueue();
    let settled = false;
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      outcome();
    };
    const fail = (error: Error): void => settle(() => reject(error));
    socket.setTimeout(timeoutMs, () => fail(new Error(`the local cluster did not answer within ${timeoutMs} ms (socket ${socketPath})`)));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED' || error.code === 'ENOTSOCK') fail(new NoLocalClusterError(socketPath));
      else fail(error);
    });
    socket.on('connect', () => socket.write(`${line}\n`));
    socket.on('data', (chunk: Buffer) => {
      queue.push(chunk);
      const newline = queue.indexOf(0x0a, CONTROL_REPLY_BYTES_MAX);
      if (newline === -1) {
        if (queue.length >= CONTROL_REPLY_BYTES_MAX) fail(new Error(`the local cluster's reply exceeds ${CONTROL_REPLY_BYTES_MAX} bytes`));
        return;
      }
      const text = queue.take(newline).toString('utf8');
      let reply: unknown;
      try {
        reply = JSON.parse(text);
      } catch {
        return fail(new Error(`the local cluster answered something that is not JSON: ${text.slice(0, 200)}`));
      }
      settle(() => resolvePromise(reply));
    });
    socket.on('end', () => fail(new Error('the local cluster closed the connection without a reply')));
  });
}

/** One request to the launcher; its reply, checked; an error reply throws ControlReplyError. */
export async function controlRequest(socketPath: string, request: { op: 'status' }): Promise<StatusReply>;
export async function controlRequest(socketPath: string, request: Exclude<ControlRequest, { op: 'status' }>): Promise<ChildReply>;
export async function controlRequest(socketPath: string, request: ControlRequest): Promise<StatusReply | ChildReply> {
  const reply = await sendControlLine(socketPath, JSON.stringify(request));
  const refused = errorReplySchema.safeParse(reply);
  if (refused.success) throw new ControlReplyError(refused.data.error.code, refused.data.error.message);
  const parsed = (request.op === 'status' ? statusReplySchema : childReplySchema).safeParse(reply);
  if (!parsed.success) throw new Error(`the local cluster's reply does not have the expected shape: ${parsed.error.message}`);
  return parsed.data;
}
