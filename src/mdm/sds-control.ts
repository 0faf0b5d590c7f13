/**
 * The MDM's calls to an SDS: orders on its control plane (HTTP, the control credential) and a
 * liveness probe on its data port (PING). Nothing here decides anything; fencing, the rebuilder
 * and the order outbox (sds-orders.ts) do.
 */
import type { MdmContext } from './context.js';
import { SdsDataClient } from '../common/sds-client.js';
import { deriveControlCredential, Opcode, Status } from '../common/sds-protocol.js';
import type { ChunkListing } from '../common/chunk-listing.js';
import { exchange } from '../common/http-client.js';

export const CONTROL_TIMEOUT_MS = 5000;
/** Chunks per /chunks/query request (the SDS takes up to CONTROL_CHUNKS_PER_REQUEST_MAX). */
const QUERY_CHUNKS_MAX = 5000;
const PROBE_TIMEOUT_MS = 1500;

export class SdsControl {
  /** The control credential every SDS expects (an HMAC of the signing key: made once, not per call). */
  private readonly authorization: string;

  constructor(private readonly context: MdmContext) {
    this.authorization = `Bearer ${deriveControlCredential(context.signingKey)}`;
  }

  /** Sends an order to an SDS's control plane (POST with a JSON body, unless `method` says GET). */
  async call(sdsId: number, path: string, body: unknown, timeoutMs = CONTROL_TIMEOUT_MS, method: 'GET' | 'POST' = 'POST'): Promise<unknown> {
    const target = this.context.db.prepare('SELECT name, host, control_port FROM sds WHERE id = ?').get(sdsId) as
      | { name: string; host: string; control_port: number }
      | undefined;
    if (target === undefined) throw new Error(`SDS #${sdsId} is unknown`);
    const host = target.host.includes(':') ? `[${target.host}]` : target.host;
    const headers = { 'content-type': 'application/json', authorization: this.authorization };
    const response = await exchange(method, `http://${host}:${target.control_port}${path}`, headers, method === 'GET' ? undefined : JSON.stringify(body), timeoutMs);
    if (response.status < 200 || response.status >= 300) throw new Error(`${target.name} ${path}: HTTP ${response.status} ${response.text.slice(0, 200)}`);
    return response.text.length > 0 ? JSON.parse(response.text) : undefined;
  }

  /**
   * The chunks of an SDS that need the MDM's attention (write intents, rebuilds, lost devices):
   * a list that follows what is going on, never every chunk it stores.
   */
  async listChunksNeedingAttention(sdsId: number): Promise<ChunkListing[]> {
    return ((await this.call(sdsId, '/chunks?attention=1', undefined, CONTROL_TIMEOUT_MS, 'GET')) as { chunks: ChunkListing[] }).chunks;
  }

  /** What an SDS knows of these chunks (those it does not know are left out), in requests of QUERY_CHUNKS_MAX. */
  async queryChunks(sdsId: number, chunks: readonly { volume_id: number; chunk_index: number }[]): Promise<ChunkListing[]> {
    const known: ChunkListing[] = [];
    for (let first = 0; first < chunks.length; first += QUERY_CHUNKS_MAX) {
      const part = chunks.slice(first, first + QUERY_CHUNKS_MAX).map((chunk) => ({ volume_id: chunk.volume_id, chunk_index: chunk.chunk_index }));
      known.push(...((await this.call(sdsId, '/chunks/query', { chunks: part })) as { chunks: ChunkListing[] }).chunks);
    }
    return known;
  }
}

/** True when the SDS's data port answers a PING in time. */
export async function probe(host: string, port: number): Promise<boolean> {
  const client = new SdsDataClient(host, port, PROBE_TIMEOUT_MS);
  try {
    const reply = await client.request(
      { opcode: Opcode.PING, flags: 0, tokenId: Buffer.alloc(16), seq: 0n, volumeId: 0, chunkIndex: 0, epoch: 0, offsetBytes: 0, lengthBytes: 0 },
      undefined,
      undefined,
    );
    return reply.status === Status.OK;
  } catch {
    return false;
  } finally {
    client.close();
  }
}
