/**
 * Lease renewals (`POST /io/renew`, docs/PROTOCOL.md §3.1): an SDC sends back the tokens it holds,
 * many in one request, and gets each signed again for a new lifetime when nothing its plan shows
 * changed since it was issued. No chunk is read: the plan the SDC already has is still the plan
 * (change-tracker.ts says so). A token whose plan changed, that this MDM did not issue (it
 * restarted), or that expired is answered PLAN_CHANGED: the SDC authorizes that window afresh.
 *
 * Renewing cost a full authorization per window every half lifetime before: 11 000 windows were
 * 733 authorizations/s, past what one MDM admits (docs/SCALE.md, second round).
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { MdmContext } from './context.js';
import { ERRORS, pflexError, PflexError } from '../common/errors.js';
import {
  decodeToken,
  deriveSessionKey,
  signToken,
  TOKEN_BYTES_MAX,
  TokenFormatError,
  TokenOp,
  verifyTokenSignature,
} from '../common/io-token.js';
import type { ChangeTracker } from './change-tracker.js';
import type { RenewOutcome } from '../common/io-plan.js';
import { mappingOf } from './volumes.js';
import { OPERATION_BITS, OPERATION_NAMES, type OperationName } from './token-authority.js';

/** Tokens renewed in one request at most (each at most TOKEN_BYTES_MAX; the body stays under 1 MiB). */
export const RENEW_TOKENS_PER_CALL_MAX = 128;
const TOKEN_BASE64_LENGTH_MAX = Math.ceil(TOKEN_BYTES_MAX / 3) * 4;
/** Issued tokens whose plan stamp is remembered; past it the oldest are forgotten (renewed as PLAN_CHANGED). */
export const RENEWABLE_TOKENS_MAX = 200_000;

export const renewSchema = z.strictObject({
  tokens: z.array(z.string().min(1).max(TOKEN_BASE64_LENGTH_MAX)).min(1).max(RENEW_TOKENS_PER_CALL_MAX),
  /** A token whose plan changed comes back with its window planned again (as an authorization). */
  replan: z.boolean().default(false),
});

export type { RenewOutcome };
export type RenewedLease = Extract<RenewOutcome, { token_id: string }>;

/** A token whose plan changed and that its SDC may have planned again: the window to authorize. */
export interface Replan {
  /** Its place in the request's tokens (and in the answer's leases). */
  readonly index: number;
  readonly volumeId: number;
  readonly sdcId: number;
  readonly operations: OperationName[];
  readonly chunkFirst: number;
  readonly chunkCount: number;
}

/** Who asks: an SDC renews only its own tokens; an admin (tools, tests) any. */
export type Renewer = { readonly sdcId: number } | { readonly admin: true };

export interface RenewalStats {
  renewed_total: number;
  /** Answered PLAN_CHANGED: the SDC authorized the window afresh. */
  plan_changed_total: number;
  /** Refused otherwise (another SDC's token, not a token, unmapped). */
  refused_total: number;
  /** Of the PLAN_CHANGED ones, planned again in the same request (`replan`). */
  replanned_total: number;
}

/** Distinct SDS sets kept shared between stamps; past it the table starts again (stamps keep their own). */
const SDS_SETS_INTERNED_MAX = 10_000;

interface Stamp {
  readonly planSeq: number;
  readonly expiresAtMs: number;
  /** Every SDS the plan read (a change of one changes the plan): shared between stamps with the same set. */
  readonly sdsIds: readonly number[];
}

export class LeaseRenewals {
  /** Token id (hex) -> the plan stamp it was issued at, oldest first (a Map keeps insertion order). */
  private readonly stamps = new Map<string, Stamp>();
  /** Sorted SDS ids, joined -> one shared array: 200k tokens over the same 100 SDS hold one array, not 200k. */
  private readonly sdsSets = new Map<string, readonly number[]>();
  private readonly counts: RenewalStats = { renewed_total: 0, plan_changed_total: 0, refused_total: 0, replanned_total: 0 };

  constructor(
    private readonly context: MdmContext,
    private readonly changes: ChangeTracker,
    /** An epoch change of these chunks is in progress (Fencing.heldIn). */
    private readonly held: (volumeId: number, chunkFirst: number, chunkCount: number) => boolean,
  ) {}

  /** A token was issued with a plan read now, which read these SDS (call in the same turn as the plan was made). */
  issued(tokenIdHex: string, expiresAtMs: number, planSdsIds: readonly number[], nowMs = Date.now()): void {
    this.stamps.set(tokenIdHex, { planSeq: this.changes.now(), expiresAtMs, sdsIds: this.internSdsSet(planSdsIds) });
    for (const [id, stamp] of this.stamps) {
      if (stamp.expiresAtMs >= nowMs && this.stamps.size <= RENEWABLE_TOKENS_MAX) break;
      this.stamps.delete(id);
    }
  }

  /**
   * Each token in order: renewed, or why not (a refusal of one never fails the others). `replans`:
   * the tokens answered PLAN_CHANGED that were signed by this cluster and are the renewer's: the
   * caller may plan their windows again in the same request.
   */
  renew(renewer: Renewer, tokens: readonly string[], nowMs = Date.now()): { outcomes: RenewOutcome[]; replans: Replan[] } {
    const replans: Replan[] = [];
    const outcomes = tokens.map((token, index): RenewOutcome => {
      try {
        const renewed = this.renewOne(renewer, token, nowMs, (fields) =>
          replans.push({
            index,
            volumeId: fields.volumeId,
            sdcId: fields.sdcId,
            operations: OPERATION_NAMES.filter((name) => (fields.operations & OPERATION_BITS[name]) !== 0),
            chunkFirst: fields.chunkFirst,
            chunkCount: fields.chunks.length,
          }),
        );
        this.counts.renewed_total += 1;
        return renewed;
      } catch (error) {
        if (!(error instanceof PflexError)) throw error;
        if (error.code === ERRORS.PLAN_CHANGED.code) this.counts.plan_changed_total += 1;
        else this.counts.refused_total += 1;
        return { error: { code: error.code, message: error.message } };
      }
    });
    return { outcomes, replans };
  }

  private internSdsSet(sdsIds: readonly number[]): readonly number[] {
    const key = sdsIds.join(',');
    const shared = this.sdsSets.get(key);
    if (shared !== undefined) return shared;
    if (this.sdsSets.size >= SDS_SETS_INTERNED_MAX) this.sdsSets.clear();
    const own = Object.freeze([...sdsIds]);
    this.sdsSets.set(key, own);
    return own;
  }

  /** A token answered PLAN_CHANGED was planned again in the same request. */
  replanned(): void {
    this.counts.replanned_total += 1;
  }

  stats(): RenewalStats {
    return { ...this.counts };
  }

  private renewOne(renewer: Renewer, tokenBase64: string, nowMs: number, planAgain: (fields: ReturnType<typeof decodeToken>['fields']) => void): RenewedLease {
    const { db, signingKey, settings } = this.context;
    let decoded;
    try {
      decoded = decodeToken(Buffer.from(tokenBase64, 'base64'));
    } catch (error) {
      if (error instanceof TokenFormatError) throw pflexError('VALIDATION', `not a token: ${error.message}`, { field: 'tokens' });
      throw error;
    }
    if (!verifyTokenSignature(decoded, signingKey)) throw pflexError('FORBIDDEN', 'the token is not signed by this cluster');
    const fields = decoded.fields;
    if ('sdcId' in renewer && fields.sdcId !== renewer.sdcId) throw pflexError('FORBIDDEN', 'an SDC can only renew its own tokens');
    const tokenIdHex = fields.tokenId.toString('hex');
    const stamp = this.stamps.get(tokenIdHex);
    if (stamp === undefined || fields.expiresAtMs <= nowMs) {
      planAgain(fields);
      throw pflexError('PLAN_CHANGED', 'the token expired or was issued by an earlier MDM; authorize again');
    }
    if (!this.changes.planUnchangedSince(fields.volumeId, stamp.planSeq, stamp.sdsIds) || this.held(fields.volumeId, fields.chunkFirst, fields.chunks.length)) {
      planAgain(fields);
      throw pflexError('PLAN_CHANGED', 'the plan of these chunks changed; authorize again');
    }
    // The mapping is read every time: an unmapped volume or a mapping made readOnly renews nothing.
    const mapping = mappingOf(db, fields.volumeId, fields.sdcId);
    if (mapping === undefined) throw pflexError('FORBIDDEN', `volume ${fields.volumeId} is not mapped to SDC ${fields.sdcId}`);
    if (mapping.access_mode === 'readOnly' && (fields.operations & (TokenOp.WRITE | TokenOp.TRIM)) !== 0) {
      throw pflexError('FORBIDDEN', `volume ${fields.volumeId} is mapped readOnly to SDC ${fields.sdcId}`);
    }
    const tokenId = randomBytes(16);
    const expiresAtMs = nowMs + settings.tokenTtlMs;
    const token = signToken({ ...fields, tokenId, issuedAtMs: nowMs, expiresAtMs }, signingKey);
    const renewedIdHex = tokenId.toString('hex');
    this.issued(renewedIdHex, expiresAtMs, stamp.sdsIds, nowMs);
    return {
      volume_id: fields.volumeId,
      token: token.toString('base64'),
      token_id: renewedIdHex,
      session_key: deriveSessionKey(signingKey, tokenId).toString('base64'),
      issued_at: new Date(nowMs).toISOString(),
      expires_at: new Date(expiresAtMs).toISOString(),
      ttl_ms: settings.tokenTtlMs,
    };
  }
}
