/**
 * The launcher's side of the local control channel (local-control-protocol.ts): a Unix socket
 * server in the data dir, mode 0600, removed when the launcher stops. A socket left by a launcher
 * that crashed is taken over; one that still answers means another launcher owns this data dir,
 * and this one refuses to start. Every request line is bounded and parsed with zod; a bad one gets
 * an error reply and changes nothing.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import type { ZodError } from 'zod';
import { PflexError } from '../common/errors.js';
import { ByteQueue } from '../common/sds-protocol.js';
import {
  CONTROL_REQUEST_BYTES_MAX,
  SOCKET_PATH_BYTES_MAX,
  controlRequestSchema,
  type ControlRequest,
  type ErrorReply,
} from './local-control-protocol.js';

export const CONTROL_CONNECTIONS_MAX = 16;
/** Longer than the slowest request (a start waits up to 30 s for the child's health). */
export const CONTROL_IDLE_TIMEOUT_MS = 120_000;
/** Unanswered bytes one connection may queue (requests sent while one is being answered). */
export const CONTROL_QUEUE_BYTES_MAX = 64 * 1024;
const PROBE_TIMEOUT_MS = 2000;
const ERROR_TEXT_LENGTH_MAX = 300;

/** Answers one valid request with the reply's fields (without `ok`), or throws a PflexError. */
export type ControlHandler = (request: ControlRequest) => Promise<Record<string, unknown>>;

/** The socket cannot be set up: another launcher runs here, or the path is unusable. */
export class ControlSocketError extends Error {}

function errorReply(code: string, message: string): ErrorReply {
  return { ok: false, error: { code, message: message.length <= ERROR_TEXT_LENGTH_MAX ? message : `${message.slice(0, ERROR_TEXT_LENGTH_MAX)}…` } };
}

function describeZodError(error: ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((issue) => (issue.path.length === 0 ? issue.message : `${issue.path.join('.')}: ${issue.message}`))
    .join('; ');
}

/** Parses and answers one request line; never throws. */
export async function answerControlLine(line: string, handler: ControlHandler): Promise<Record<string, unknown>> {
  let body: unknown;
  try {
    body = JSON.parse(line);
  } catch (error) {
    return errorReply('PFLEX_ERR_BAD_JSON', `a request is one JSON object a line: ${(error as Error).message}`);
  }
  const parsed = controlRequestSchema.safeParse(body);
  if (!parsed.success) {
    return errorReply('PFLEX_ERR_VALIDATION', `${describeZodError(parsed.error)} (requests: {"op":"status"}, {"op":"start"|"stop"|"kill","name":"sds-2"})`);
  }
  try {
    return { ok: true, ...(await handler(parsed.data)) };
  } catch (error) {
    if (error instanceof PflexError) return errorReply(error.code, error.message);
    return errorReply('PFLEX_ERR_INTERNAL', (error as Error).message);
  }
}

/** True when something listens at `socketPath`. */
function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = connect(socketPath);
    socket.setTimeout(PROBE_TIMEOUT_MS, () => {
      socket.destroy();
      resolvePromise(true); // something accepted the connection and holds it: not ours to remove
    });
    socket.on('connect', () => {
      socket.destroy();
      resolvePromise(true);
    });
    socket.on('error', () => resolvePromise(false));
  });
}

/** Makes `socketPath` free for this launcher, or says why it cannot be. */
async function claimSocketPath(socketPath: string): Promise<void> {
  const bytes = Buffer.byteLength(socketPath);
  if (bytes > SOCKET_PATH_BYTES_MAX) {
    throw new ControlSocketError(`the control socket path ${socketPath} is ${bytes} bytes, more than the ${SOCKET_PATH_BYTES_MAX} a Unix socket allows: use a shorter PFLEX_DATA_DIR`);
  }
  let isSocket: boolean;
  try {
    isSocket = lstatSync(socketPath).isSocket();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!isSocket) throw new ControlSocketError(`${socketPath} exists and is not a socket; move it away first`);
  if (await socketAnswers(socketPath)) {
    throw new ControlSocketError(
      `another local cluster is running with this data dir (its control socket ${socketPath} answers): stop it first (Ctrl-C in its terminal), or use another PFLEX_DATA_DIR`,
    );
  }
  unlinkSync(socketPath); // left behind by a launcher that crashed
}

export class LocalControlServer {
  private readonly connections = new Set<Socket>();
  private ino: number | undefined;

  private constructor(
    readonly socketPath: string,
    private readonly server: Server,
  ) {}

  /** Claims the socket path (see claimSocketPath) and listens there, mode 0600. */
  static async listen(socketPath: string, handler: ControlHandler): Promise<LocalControlServer> {
    await claimSocketPath(socketPath);
    const server = createServer();
    const control = new LocalControlServer(socketPath, server);
    server.maxConnections = CONTROL_CONNECTIONS_MAX;
    server.on('connection', (socket) => control.serve(socket, handler));
    // umask 0177 while binding: the socket is never reachable by other users, not even briefly.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolvePromise, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolvePromise();
        });
      });
    } finally {
      process.umask(umask);
    }
    chmodSync(socketPath, 0o600);
    control.ino = lstatSync(socketPath).ino;
    return control;
  }

  private serve(socket: Socket, handler: ControlHandler): void {
    this.connections.add(socket);
    const queue = new ByteQueue();
    let busy = false;
    let closed = false;
    socket.setTimeout(CONTROL_IDLE_TIMEOUT_MS, () => socket.destroy());
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      queue.clear();
      this.connections.delete(socket);
    });
    const send = (reply: Record<string, unknown>): void => {
      if (!closed) socket.write(`${JSON.stringify(reply)}\n`);
    };
    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        while (!closed) {
          const newline = queue.indexOf(0x0a, CONTROL_REQUEST_BYTES_MAX + 1);
          if (newline === -1) {
            if (queue.length > CONTROL_REQUEST_BYTES_MAX) {
              send(errorReply('PFLEX_ERR_PAYLOAD_TOO_LARGE', `a request line is limited to ${CONTROL_REQUEST_BYTES_MAX} bytes`));
              socket.end();
              closed = true;
            }
            return;
          }
          const line = queue.take(newline + 1).toString('utf8').trim();
          if (line.length > 0) send(await answerControlLine(line, handler));
        }
      } finally {
        busy = false;
      }
    };
    socket.on('data', (chunk: Buffer) => {
      queue.push(chunk);
      if (queue.length > CONTROL_QUEUE_BYTES_MAX) socket.destroy();
      else void pump();
    });
  }

  /** Stops listening, drops open connections and removes the socket file. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolvePromise) => this.server.close(() => resolvePromise()));
    for (const socket of this.connections) socket.destroy();
    await closed;
    this.removeSocketFile();
  }

  /** Removes the socket file if it is still the one this server made (safe to call from an exit handler). */
  removeSocketFile(): void {
    try {
      if (this.ino !== undefined && lstatSync(this.socketPath).ino === this.ino) unlinkSync(this.socketPath);
    } catch {
      // already gone
    }
    this.ino = undefined;
  }
}
