/**
 * The SDC's IO tokens for one volume (DESIGN §4): leases from the MDM, each covering a window
 * of up to 1024 chunks, renewed in the background at half-life so IO never waits on the MDM.
 * A write to a thin chunk nobody placed yet asks for just that chunk to be allocated.
 * Every chunk index maps to the newest route (lease + plan) that covers it.
 */
import type { Logger } from '../common/logger.js';
import { TOKEN_CHUNKS_MAX } from '../common/io-token.js';
import { macKeyOf, type MacKey } from '../common/sds-protocol.js';
import type { PlanChunk, PlanReplica, WindowPlan } from '../common/io-plan.js';
import type { Renewal, RenewedLease } from './lease-renewer.js';

export type { PlanChunk, PlanReplica };

/** An authorization's answer: a lease and its window's plan. */
export type AuthorizeAnswer = WindowPlan;

export interface AuthorizeRequest {
  operations: string[];
  chunk_first: number;
  chunk_count: number;
  allocate?: boolean;
}

export interface Lease {
  readonly token: Buffer;
  readonly tokenId: Buffer;
  readonly tokenIdHex: string;
  readonly sessionKey: MacKey;
  readonly issuedAtMs: number;
  readonly expiresAtMs: number;
  nextSeq: bigint;
}

export interface ChunkRoute {
  readonly lease: Lease;
  readonly chunk: PlanChunk;
  /** When this route's authorization was requested: newer routes win. */
  readonly requestedAtMs: number;
}

/** A lease is used while it has at least this much life left (covers clock skew between hosts). */
export const LEASE_MARGIN_MS = 2000;
const RENEW_RETRY_MS = 1000;

interface Window {
  readonly first: number;
  readonly count: number;
  lease: Lease | undefined;
  fetching: Promise<void> | undefined;
  /** When the fetch in flight was asked for. */
  fetchStartedAtMs: number;
  renewTimer: NodeJS.Timeout | undefined;
}

function leaseOf(answer: AuthorizeAnswer | RenewedLease): Lease {
  const tokenId = Buffer.from(answer.token_id, 'hex');
  return {
    token: Buffer.from(answer.token, 'base64'),
    tokenId,
    tokenIdHex: answer.token_id,
    sessionKey: macKeyOf(Buffer.from(answer.session_key, 'base64')),
    issuedAtMs: Date.parse(answer.issued_at),
    expiresAtMs: Date.parse(answer.expires_at),
    nextSeq: 1n,
  };
}

export class VolumeLeases {
  private readonly windows = new Map<number, Window>();
  private readonly routes = new Map<number, ChunkRoute>();
  private readonly allocating = new Map<number, Promise<ChunkRoute>>();
  private closed = false;

  constructor(
    private chunkCount: number,
    private operations: readonly string[],
    private readonly authorize: (request: AuthorizeRequest) => Promise<AuthorizeAnswer>,
    private readonly log: Logger,
    /** Renews a lease (lease-renewer.ts): as it is, or with its new plan; undefined: authorize afresh. */
    private readonly renew?: (token: Buffer, waitMs: number) => Promise<Renewal | undefined>,
  ) {}

  /** A usable route for a chunk: from the cache, or after (re)fetching its window. */
  async route(chunkIndex: number): Promise<ChunkRoute> {
    const cached = this.routes.get(chunkIndex);
    if (cached !== undefined && cached.lease.expiresAtMs - Date.now() > LEASE_MARGIN_MS) return cached;
    await this.fetchWindow(this.windowOf(chunkIndex), cached?.requestedAtMs ?? 0);
    const route = this.routes.get(chunkIndex);
    if (route === undefined) throw new Error(`the MDM gave no plan for chunk ${chunkIndex}`);
    return route;
  }

  /** Places an unplaced thin chunk (first write) and returns its route. */
  async allocate(chunkIndex: number): Promise<ChunkRoute> {
    const pending = this.allocating.get(chunkIndex);
    if (pending !== undefined) return pending;
    const promise = (async () => {
      const requestedAtMs = Date.now();
      const answer = await this.authorize({ operations: [...this.operations], chunk_first: chunkIndex, chunk_count: 1, allocate: true });
      this.apply(answer, requestedAtMs);
      return this.routes.get(chunkIndex)!;
    })();
    this.allocating.set(chunkIndex, promise);
    try {
      return await promise;
    } finally {
      this.allocating.delete(chunkIndex);
    }
  }

  /**
   * The plan was refused (stale epoch, expired, not a target), or the MDM just fenced a replica
   * of it: fetch the window again, unless a fetch asked for after `notBeforeMs` (by default when
   * the failed route was requested) already brought a newer plan. A fetch still in flight that
   * was asked for earlier does not count: its plan may predate the change.
   */
  async refresh(chunkIndex: number, failed: ChunkRoute, notBeforeMs = failed.requestedAtMs): Promise<void> {
    const current = this.routes.get(chunkIndex);
    if (current !== undefined && current.requestedAtMs > notBeforeMs) return;
    await this.fetchWindow(this.windowOf(chunkIndex), notBeforeMs, true);
  }

  /** Every distinct route currently cached (for FLUSH: which SDS hold this volume). */
  cachedRoutes(): ChunkRoute[] {
    return [...this.routes.values()];
  }

  /** Fetches every window once, so the plan is known before the first IO. */
  async prime(): Promise<void> {
    const fetches: Promise<void>[] = [];
    for (let first = 0; first < this.chunkCount; first += TOKEN_CHUNKS_MAX) fetches.push(this.fetchWindow(this.windowOf(first), 0));
    await Promise.all(fetches);
  }

  /**
   * The volume grew or its access mode changed: windows are planned for the new size and
   * operations from now on (the last window is fetched again for its new chunks).
   */
  update(chunkCount: number, operations: readonly string[]): void {
    const sameOperations = operations.length === this.operations.length && operations.every((op) => this.operations.includes(op));
    if (chunkCount === this.chunkCount && sameOperations) return;
    this.chunkCount = chunkCount;
    this.operations = operations;
    // Windows sized for the old count (or leases for the old operations) are dropped and
    // refetched. Their routes stay until the refetch replaces them: a FLUSH must still find every
    // SDS the volume's writes went to.
    for (const [first, window] of this.windows) {
      if (sameOperations && window.first + window.count <= chunkCount && window.count === Math.min(TOKEN_CHUNKS_MAX, chunkCount - first)) continue;
      if (window.renewTimer !== undefined) clearTimeout(window.renewTimer);
      this.windows.delete(first);
    }
  }

  close(): void {
    this.closed = true;
    for (const window of this.windows.values()) if (window.renewTimer !== undefined) clearTimeout(window.renewTimer);
  }

  private windowOf(chunkIndex: number): Window {
    const first = Math.floor(chunkIndex / TOKEN_CHUNKS_MAX) * TOKEN_CHUNKS_MAX;
    let window = this.windows.get(first);
    if (window === undefined) {
      window = { first, count: Math.min(TOKEN_CHUNKS_MAX, this.chunkCount - first), lease: undefined, fetching: undefined, fetchStartedAtMs: 0, renewTimer: undefined };
      this.windows.set(first, window);
    }
    return window;
  }

  private async fetchWindow(window: Window, notBeforeMs: number, force = false): Promise<void> {
    while (window.fetching !== undefined) {
      const startedAtMs = window.fetchStartedAtMs;
      await window.fetching.catch(() => undefined);
      if (startedAtMs > notBeforeMs) return; // asked for after the caller's change: fresh enough
    }
    if (!force && window.lease !== undefined && window.lease.issuedAtMs > notBeforeMs && window.lease.expiresAtMs - Date.now() > LEASE_MARGIN_MS) return;
    const requestedAtMs = Date.now();
    window.fetchStartedAtMs = requestedAtMs;
    window.fetching = (async () => {
      const answer = await this.authorize({ operations: [...this.operations], chunk_first: window.first, chunk_count: window.count });
      window.lease = this.apply(answer, requestedAtMs);
      this.scheduleRenewal(window, answer.ttl_ms);
    })();
    try {
      await window.fetching;
    } finally {
      window.fetching = undefined;
    }
  }

  private scheduleRenewal(window: Window, ttlMs: number): void {
    if (this.closed) return;
    if (window.renewTimer !== undefined) clearTimeout(window.renewTimer);
    window.renewTimer = setTimeout(() => {
      window.renewTimer = undefined;
      this.renewWindow(window, ttlMs).catch((error: unknown) => {
        this.log.warn({ err: (error as Error).message, window: window.first }, 'token renewal failed; retrying');
        if (!this.closed) {
          window.renewTimer = setTimeout(() => this.scheduleRenewal(window, 0), RENEW_RETRY_MS);
          window.renewTimer.unref();
        }
      });
    }, Math.max(0, ttlMs / 2));
    window.renewTimer.unref();
  }

  /**
   * A lease at half its life: renewed as it is when its plan did not change (no plan travels),
   * else the window is authorized again. A fetch that started meanwhile wins: it brings a newer
   * plan and schedules its own renewal.
   */
  private async renewWindow(window: Window, ttlMs: number): Promise<void> {
    const lease = window.lease;
    // Still valid when the batch (at most ttl/8 later) reaches the MDM, or the MDM would refuse it.
    if (this.renew !== undefined && lease !== undefined && window.fetching === undefined && lease.expiresAtMs - Date.now() > ttlMs / 4) {
      const requestedAtMs = Date.now();
      const renewed = await this.renew(lease.token, ttlMs / 8);
      if (this.closed || window.lease !== lease || window.fetching !== undefined) return;
      if (renewed !== undefined && 'replanned' in renewed) {
        // The plan changed and the MDM planned the window again in the same request.
        window.lease = this.apply(renewed.replanned, requestedAtMs);
        this.scheduleRenewal(window, renewed.replanned.ttl_ms);
        return;
      }
      if (renewed !== undefined) {
        const next = leaseOf(renewed);
        // Only this window's routes of this lease: a chunk allocated since keeps its newer route.
        for (let index = window.first; index < window.first + window.count; index += 1) {
          const route = this.routes.get(index);
          if (route !== undefined && route.lease === lease) this.routes.set(index, { lease: next, chunk: route.chunk, requestedAtMs });
        }
        window.lease = next;
        this.scheduleRenewal(window, renewed.ttl_ms);
        return;
      }
    }
    await this.fetchWindow(window, Number.MAX_SAFE_INTEGER, true);
  }

  /** Installs an answer's routes, keeping newer routes (a later allocation) where they exist. */
  private apply(answer: AuthorizeAnswer, requestedAtMs: number): Lease {
    const lease = leaseOf(answer);
    for (const chunk of answer.chunks) {
      const current = this.routes.get(chunk.index);
      if (current !== undefined && current.requestedAtMs > requestedAtMs && current.lease.expiresAtMs - Date.now() > LEASE_MARGIN_MS) continue;
      this.routes.set(chunk.index, { lease, chunk, requestedAtMs });
    }
    return lease;
  }
}
