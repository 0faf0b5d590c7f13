/**
 * The SDC's lease renewals, batched (docs/PROTOCOL.md §3.1): renewals that come due within
 * RENEW_BATCH_WAIT_MS of each other travel in one `POST /io/renew`, so a host with hundreds of
 * volumes mapped renews them in a request or two a second instead of one request per window.
 * Each token's answer goes back to its window: a new lease; or, its plan having changed, a new
 * lease with the new plan (the request asks for `replan`, so a fence that changes the plans of
 * thousands of windows costs no extra request per window); or undefined when the MDM could not
 * plan it there (the window then authorizes afresh).
 */
import { HttpClientError } from '../common/http-client.js';
import type { RenewOutcome } from '../common/io-plan.js';

/** A renewal waits this long at most for others to share its request. */
export const RENEW_BATCH_WAIT_MS = 1000;
/** As the MDM's RENEW_TOKENS_PER_CALL_MAX. */
export const RENEW_TOKENS_PER_CALL_MAX = 128;
/** Base64 token bytes per request at most (the MDM takes bodies up to 1 MiB). */
export const RENEW_BATCH_BYTES_MAX = 512 * 1024;

export type { RenewOutcome };
export type RenewedLease = Extract<RenewOutcome, { token_id: string }>;
/** What a renewal brings back: the lease signed again, or a new lease with the window's new plan. */
export type Renewal = Extract<RenewOutcome, { volume_id: number }>;

interface Pending {
  readonly token: string;
  readonly resolve: (lease: Renewal | undefined) => void;
  readonly reject: (error: unknown) => void;
}

export class LeaseRenewer {
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly send: (tokens: string[]) => Promise<{ leases: RenewOutcome[] }>) {}

  /**
   * Renews one token: its new lease (with a new plan when the plan changed), or undefined when
   * it must be authorized afresh (this MDM cannot renew or plan it). Rejects when the MDM could
   * not be asked.
   */
  renew(token: Buffer, waitMs: number): Promise<Renewal | undefined> {
    return new Promise((resolve, reject) => {
      const encoded = token.toString('base64');
      if (this.pendingBytes + encoded.length > RENEW_BATCH_BYTES_MAX) this.flush();
      this.pending.push({ token: encoded, resolve, reject });
      this.pendingBytes += encoded.length;
      if (this.pending.length >= RENEW_TOKENS_PER_CALL_MAX) this.flush();
      else if (this.timer === undefined) {
        this.timer = setTimeout(() => this.flush(), Math.max(0, Math.min(RENEW_BATCH_WAIT_MS, waitMs)));
        this.timer.unref();
      }
    });
  }

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    for (const item of batch) item.resolve(undefined);
  }

  private flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (batch.length === 0) return;
    this.send(batch.map((item) => item.token)).then(
      (answer) => {
        batch.forEach((item, i) => {
          const outcome = answer.leases[i];
          item.resolve(outcome !== undefined && 'volume_id' in outcome ? outcome : undefined);
        });
      },
      (error: unknown) => {
        // Refused as a whole (an MDM without renewals answers 404, a bad request 4xx): every
        // window authorizes as before, and that answer says what is wrong. Unreachable: rejected.
        const status = error instanceof HttpClientError ? (error.status ?? 0) : 0;
        const unsupported = status >= 400 && status < 500 && status !== 401 && status !== 408 && status !== 429;
        for (const item of batch) {
          if (unsupported) item.resolve(undefined);
          else item.reject(error);
        }
      },
    );
  }
}
