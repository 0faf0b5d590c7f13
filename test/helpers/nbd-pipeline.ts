/**
 * A pipelined NBD client for tests that track every request: many requests in flight on one
 * connection, simple replies matched by handle, and each request's outcome (errno 0 or not) as a
 * promise. A connection that dies fails its requests with errno -1 (no answer).
 */
import { RawNbdClient, CMD, CMD_FLAG } from './nbd-raw-client.js';

const REPLY_WAIT_MS = 600_000;
export const NO_ANSWER = -1;

interface Pending {
  resolve: (reply: { error: number; data: Buffer }) => void;
  readBytes: number;
}

export class PipelinedNbd {
  private nextHandle = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private reading = false;
  private dead = false;

  private constructor(
    private readonly raw: RawNbdClient,
    readonly sizeBytes: number,
  ) {
    void raw.closed.then(() => this.failAll());
  }

  static async open(port: number, exportName: string): Promise<PipelinedNbd> {
    const raw = await RawNbdClient.negotiate(port);
    const { sizeBytes } = await raw.go(exportName);
    return new PipelinedNbd(raw, sizeBytes);
  }

  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<number> {
    return this.send(CMD.WRITE, offsetBytes, data.length, fua ? CMD_FLAG.FUA : 0, data, 0).then((reply) => reply.error);
  }

  read(offsetBytes: number, lengthBytes: number): Promise<{ error: number; data: Buffer }> {
    return this.send(CMD.READ, offsetBytes, lengthBytes, 0, undefined, lengthBytes);
  }

  flush(): Promise<number> {
    return this.send(CMD.FLUSH, 0, 0, 0, undefined, 0).then((reply) => reply.error);
  }

  close(): void {
    this.raw.socket.destroy();
    this.failAll();
  }

  private send(type: number, offsetBytes: number, lengthBytes: number, flags: number, payload: Buffer | undefined, readBytes: number): Promise<{ error: number; data: Buffer }> {
    if (this.dead) return Promise.resolve({ error: NO_ANSWER, data: Buffer.alloc(0) });
    const handle = this.nextHandle;
    this.nextHandle += 1n;
    const reply = new Promise<{ error: number; data: Buffer }>((resolve) => this.pending.set(handle, { resolve, readBytes }));
    this.raw.sendRequest({ type, handle, offsetBytes, lengthBytes, flags }, payload);
    void this.readLoop();
    return reply;
  }

  private async readLoop(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      while (this.pending.size > 0 && !this.dead) {
        const reply = await this.raw.readReply(REPLY_WAIT_MS);
        if (reply.kind !== 'simple') throw new Error('structured reply on a simple-reply connection');
        const pending = this.pending.get(reply.handle);
        if (pending === undefined) throw new Error(`reply for unknown handle ${reply.handle}`);
        this.pending.delete(reply.handle);
        const data = reply.error === 0 && pending.readBytes > 0 ? await this.raw.read(pending.readBytes, REPLY_WAIT_MS) : Buffer.alloc(0);
        pending.resolve({ error: reply.error, data });
      }
    } catch {
      this.failAll();
    } finally {
      this.reading = false;
    }
  }

  private failAll(): void {
    this.dead = true;
    for (const [handle, pending] of this.pending) {
      this.pending.delete(handle);
      pending.resolve({ error: NO_ANSWER, data: Buffer.alloc(0) });
    }
  }
}
