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

export class TxAckBatcher {
  private pending = new Map<string, Aggregate>();
  private timer: NodeJS.Timeout | undefined;
  private sending = false;
  dropped = 0;
  sent = 0;

  constructor(
    private readonly mdm: () => HttpClient | undefined,
    private readonly log: Logger,
  ) {}

  record(tokenIdHex: string, volumeId: number, chunkIndex: number, operation: AckOperation, bytes: number): void {
    const key = `${tokenIdHex}|${volumeId}|${chunkIndex}|${operation}`;
    const existing = this.pending.get(key);
    if (existing !== undefined) {
      existing.requests += 1;
      existing.bytes += bytes;
      return;
    }
    if (this.pending.size >= TX_ACK_PENDING_MAX) {
      const oldest = this.pending.keys().next().value as string;
      this.pending.delete(oldest);
      this.dropped += 1;
    }
    this.pending.set(key, { token_id: tokenIdHex, volume_id: volumeId, chunk_index: chunkIndex, operation, requests: 1, bytes });
  }

  start(): void {
    this.timer = setInterval(() => void this.send(), TX_ACK_INTERVAL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    await this.send();
  }

  private async send(): Promise<void> {
    const client = this.mdm();
    if (this.sending || this.pending.size === 0 || client === undefined) return;
    this.sending = true;
    const batch = this.pending;
    this.pending = new Map();
    try {
      await client.post('/io/tx/ack', { acks: [...batch.values()] });
      this.sent += batch.size;
    } catch (error) {
      // Put them back (newest last) within the bound; the next tick retries.
      for (const [key, aggregate] of batch) {
        if (this.pending.size >= TX_ACK_PENDING_MAX) {
          this.dropped += 1;
          continue;
        }
        if (!this.pending.has(key)) this.pending.set(key, aggregate);
      }
      this.log.debug({ err: error }, 'tx ack batch not delivered; will retry');
    } finally {
      this.sending = false;
    }
  }
}
