/**
 * The JSON device port (8005, seed reform-plan §4.1): newline-delimited JSON frames over the same
 * IO engine as NBD. connect, read, write, flush, disconnect. Frames are handled in order per
 * connection; every bad frame gets {"ok":false,"error":{"code","message"}} and changes nothing.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../common/logger.js';
import { ByteQueue } from '../common/sds-protocol.js';
import type { VolumeRegistry } from './volume-registry.js';
import { VolumeIoError, type VolumeEngine } from './volume-engine.js';

export const DEVICE_FRAME_BYTES_MAX = 12 * 1024 * 1024;
export const DEVICE_IO_BYTES_MAX = 8 * 1024 * 1024;
export const DEVICE_CONNECTIONS_MAX = 256;
export const DEVICE_IDLE_TIMEOUT_MS = 10 * 60 * 1000;

type Reply = Record<string, unknown>;

function failure(code: string, message: string): Reply {
  return { ok: false, error: { code, message: message.slice(0, 300) } };
}

class DeviceConnection {
  private readonly queue = new ByteQueue();
  private busy = false;
  private closed = false;
  private volume: VolumeEngine | undefined;
  private endAfterReply = false;

  constructor(
    private readonly socket: Socket,
    private readonly registry: VolumeRegistry,
    private readonly log: Logger,
  ) {
    socket.setNoDelay(true);
    socket.setTimeout(DEVICE_IDLE_TIMEOUT_MS, () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      void this.pump();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.queue.clear();
    });
  }

  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (!this.closed) {
        const newline = this.queue.indexOf(0x0a, DEVICE_FRAME_BYTES_MAX + 1);
        if (newline === -1) {
          if (this.queue.length > DEVICE_FRAME_BYTES_MAX) {
            this.send(failure('FRAME_TOO_LARGE', `frames are limited to ${DEVICE_FRAME_BYTES_MAX} bytes`));
            this.socket.end();
            this.closed = true;
          }
          return;
        }
        const line = this.queue.take(newline + 1).toString('utf8').trim();
        if (line.length === 0) continue;
        const reply = await this.handle(line);
        this.send(reply);
        if (this.endAfterReply) {
          this.socket.end();
          this.closed = true;
        }
      }
    } finally {
      this.busy = false;
    }
  }

  private send(reply: Reply): void {
    if (!this.closed) this.socket.write(`${JSON.stringify(reply)}\n`);
  }

  private async handle(line: string): Promise<Reply> {
    let frame: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(line);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return failure('BAD_FRAME', 'a frame is a JSON object');
      frame = parsed as Record<string, unknown>;
    } catch (error) {
      return failure('BAD_FRAME', `not JSON: ${(error as Error).message}`);
    }
    const nonNegative = (name: string): number => {
      const value = frame[name];
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new FrameFieldError(`${name} must be a non-negative integer`);
      return value;
    };
    try {
      switch (frame.action) {
        case 'connect': {
          const ref = frame.volume_id ?? frame.volume;
          if (typeof ref !== 'string' && typeof ref !== 'number') throw new FrameFieldError('volume_id must name a mapped volume');
          const engine = this.registry.byIdOrName(ref);
          if (engine === undefined) return failure('NOT_MAPPED', `volume ${String(ref)} is not mapped to this SDC`);
          this.volume = engine;
          return {
            ok: true,
            volume_id: engine.volume.id,
            volume_name: engine.volume.name,
            volume_size_bytes: engine.volume.sizeBytes,
            chunk_size_bytes: engine.volume.chunkSizeBytes,
            access_mode: engine.volume.readOnly ? 'readOnly' : 'readWrite',
          };
        }
        case 'read': {
          const engine = this.connected(frame);
          const length = nonNegative('length_bytes');
          if (length > DEVICE_IO_BYTES_MAX) throw new FrameFieldError(`length_bytes is limited to ${DEVICE_IO_BYTES_MAX}`);
          const data = await engine.read(nonNegative('offset_bytes'), length);
          return { ok: true, bytes_read: data.length, data_b64: data.toString('base64') };
        }
        case 'write': {
          const engine = this.connected(frame);
          if (typeof frame.data_b64 !== 'string') throw new FrameFieldError('data_b64 must be a base64 string');
          const data = Buffer.from(frame.data_b64, 'base64');
          if (data.length > DEVICE_IO_BYTES_MAX) throw new FrameFieldError(`writes are limited to ${DEVICE_IO_BYTES_MAX} bytes`);
          await engine.write(nonNegative('offset_bytes'), data, frame.fua === true);
          return { ok: true, bytes_written: data.length };
        }
        case 'flush': {
          await this.connected(frame).flush();
          return { ok: true };
        }
        case 'disconnect':
          this.endAfterReply = true;
          return { ok: true };
        default:
          return failure('BAD_FRAME', 'action must be one of connect, read, write, flush, disconnect');
      }
    } catch (error) {
      if (error instanceof FrameFieldError) return failure('BAD_FRAME', error.message);
      if (error instanceof VolumeIoError) return failure(error.errno, error.message);
      this.log.error({ err: error }, 'device frame failed');
      return failure('EIO', (error as Error).message);
    }
  }

  private connected(frame: Record<string, unknown>): VolumeEngine {
    const ref = frame.volume_id ?? frame.volume;
    if ((typeof ref === 'string' || typeof ref === 'number') && (this.volume === undefined || (String(ref) !== String(this.volume.volume.id) && ref !== this.volume.volume.name))) {
      const engine = this.registry.byIdOrName(ref);
      if (engine === undefined) throw new FrameFieldError(`volume ${String(ref)} is not mapped to this SDC`);
      this.volume = engine;
    }
    if (this.volume === undefined) throw new FrameFieldError('send {"action":"connect","volume_id":…} first');
    return this.volume;
  }
}

class FrameFieldError extends Error {}

export async function startJsonDeviceServer(registry: VolumeRegistry, host: string, port: number, log: Logger): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    new DeviceConnection(socket, registry, log);
  });
  server.maxConnections = DEVICE_CONNECTIONS_MAX;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  return {
    server,
    port: typeof address === 'object' && address !== null ? address.port : port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
