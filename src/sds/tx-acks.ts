/**
 * Transaction acknowledgements (DESIGN §4): completed IO aggregated per token, chunk and
 * operation, sent to the MDM's /io/tx/ack at most a second apart. Bounded: when the MDM is
 * unreachable the oldest aggregates are dropped and counted, never the IO itself.
 */
import type { HttpClient } from '../common/http-client.js';
import type { Logger } from '../common/logger.js';

export const TX_ACK_INTERVAL_MS = 1000;
export const TX_ACK_PENDING_MAX = 10_000;

type AckOperation = 'read' | 'write' | 'trim' | 'write_zeroes';

interface Aggregate {
  token_id: string;
  volume_id: number;
  chunk_index: number;
  operation: AckOperation;
  requests: number;
  bytes: number;
}

const OPERATION_INDEX: Record<AckOperation, number> = { read: 0, write: 1, trim: 2, write_zeroes: 3 };

/** Aggregates by token id, then by chunk and operation (a number: no string built per IO). */
type Batch = Map<string, Map<number, Aggregate>>;

export class TxAckBatcher {
  private pending: Batch = new Map();
  private pendingCount = 0;
  private timer: NodeJS.Timeout | undefined;
  private sending = false;
  dropped = 0;
  sent = 0;

  constructor(
    private readonly mdm: () => HttpClient | undefined,
    private readonly log: Logger,
  ) {}

  record(tokenIdHex: string, volumeId: number, chunkIndex: number, operation: AckOperation, bytes: number): void {
    let byChunk = this.pending.get(tokenIdHex);
    const key = chunkIndex * 4 + OPERATION_INDEX[operation];
    const existing = byChunk?.get(key);
    if (existing !== undefined) {
      existing.requests += 1;
      existing.bytes += bytes;
      return;
    }
    if (this.pendingCount >= TX_ACK_PENDING_MAX) this.dropOldest();
    if (byChunk === undefined) {
      byChunk = new Map();
      this.pending.set(tokenIdHex, byChunk);
    }
    byChunk.set(key, { token_id: tokenIdHex, volume_id: volumeId, chunk_index: chunkIndex, operation, requests: 1, bytes });
    this.pendingCount += 1;
  }

  start(): void {
    this.timer = setInterval(() => void this.send(), TX_ACK_INTERVAL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    await this.send();
  }

  private dropOldest(): void {
    const [tokenIdHex, byChunk] = this.pending.entries().next().value as [string, Map<number, Aggregate>];
    byChunk.delete(byChunk.keys().next().value as number);
    if (byChunk.size === 0) this.pending.delete(tokenIdHex);
    this.pendingCount -= 1;
    this.dropped += 1;
  }

  private async send(): Promise<void> {
    const client = this.mdm();
    if (this.sending || this.pendingCount === 0 || client === undefined) return;
    this.sending = true;
    const batch = this.pending;
    const batchCount = this.pendingCount;
    this.pending = new Map();
    this.pendingCount = 0;
    const acks: Aggregate[] = [];
    for (const byChunk of batch.values()) for (const aggregate of byChunk.values()) acks.push(aggregate);
    try {
      await client.post('/io/tx/ack', { acks });
      this.sent += batchCount;
    } catch (error) {
      // Put them back within the bound, merged with what arrived meanwhile; the next tick retries.
      for (const aggregate of acks) {
        const key = aggregate.chunk_index * 4 + OPERATION_INDEX[aggregate.operation];
        const byChunk = this.pending.get(aggregate.token_id);
        const newer = byChunk?.get(key);
        if (newer !== undefined) {
          newer.requests += aggregate.requests;
          newer.bytes += aggregate.bytes;
        } else if (this.pendingCount >= TX_ACK_PENDING_MAX) {
          this.dropped += 1;
        } else {
          if (byChunk === undefined) this.pending.set(aggregate.token_id, new Map([[key, aggregate]]));
          else byChunk.set(key, aggregate);
          this.pendingCount += 1;
        }
      }
      this.log.debug({ err: error }, 'tx ack batch not delivered; will retry');
    } finally {
      this.sending = false;
    }
  }
}
