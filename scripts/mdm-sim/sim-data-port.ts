/**
 * A simulated SDS's data port: the binary framing of docs/PROTOCOL.md §5 with no data behind it.
 * PING and HELLO answer OK (the MDM's liveness probe, fencing.ts reportUnreachable, is a PING);
 * PEER_READ answers CHUNK_UNKNOWN (nothing is stored); any other request BAD_REQUEST. A header
 * with a wrong magic or an oversized payload closes the connection, as the real SDS does.
 */
import { createServer, type Server, type Socket } from 'node:net';
import {
  encodeReplyHeader,
  FRAME_PAYLOAD_BYTES_MAX,
  Opcode,
  REQUEST_HEADER_BYTES,
  REQUEST_MAGIC,
  Status,
} from '../../src/common/sds-protocol.js';

export class SimDataPort {
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  pings = 0;
  refused = 0;

  async listen(host: string): Promise<number> {
    const server = createServer((socket) => this.serve(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => resolve());
    });
    const address = server.address();
    if (typeof address !== 'object' || address === null) throw new Error('data port has no address');
    return address.port;
  }

  /** Stops listening and drops every connection at once (a crashed SDS). */
  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.setNoDelay(true);
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (part: Buffer) => {
      pending = pending.length === 0 ? part : Buffer.concat([pending, part]);
      while (pending.length >= REQUEST_HEADER_BYTES) {
        if (pending.readUInt32BE(0) !== REQUEST_MAGIC) {
          socket.destroy();
          return;
        }
        const payloadBytes = pending.readUInt32BE(60);
        if (payloadBytes > FRAME_PAYLOAD_BYTES_MAX) {
          socket.destroy();
          return;
        }
        if (pending.length < REQUEST_HEADER_BYTES + payloadBytes) return;
        const opcode = pending.readUInt8(4);
        const requestId = pending.readBigUInt64BE(8);
        pending = pending.subarray(REQUEST_HEADER_BYTES + payloadBytes);
        let status: number = Status.BAD_REQUEST;
        if (opcode === Opcode.PING || opcode === Opcode.HELLO) {
          status = Status.OK;
          this.pings += 1;
        } else if (opcode === Opcode.PEER_READ) status = Status.CHUNK_UNKNOWN;
        if (status !== Status.OK) this.refused += 1;
        socket.write(encodeReplyHeader({ status, requestId, payloadBytes: 0, aux: 0 }));
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => this.sockets.delete(socket));
  }
}
