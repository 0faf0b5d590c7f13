/**
 * Token checks on every data request (DESIGN §4, docs/PROTOCOL.md §1.2). A token is verified
 * once when installed (Opcode.TOKEN) and cached until it expires; each request then names it by
 * id and proves itself with a MAC under the token's session key and a fresh sequence number.
 * Every refusal has a reason code, is counted, and touches nothing.
 */
import { deriveSessionKey, decodeToken, TokenFormatError, TokenOp, verifyTokenSignature, type TokenFields } from '../common/io-token.js';
import { macKeyOf, Opcode, requestMacValid, Status, type MacKey, type RequestHeader, type StatusValue } from '../common/sds-protocol.js';

export const TOKENS_CACHED_MAX = 65_536;
/** Sequence numbers older than the highest seen minus this are refused as replays. */
export const REPLAY_WINDOW = 4096;

/** A sliding replay window (as in IPsec): the highest sequence number and a bitmap below it. */
class ReplayWindow {
  private highest = 0n;
  private readonly seen = new Uint8Array(REPLAY_WINDOW / 8);

  /** True (and records it) when seq was never seen and is inside the window. */
  accept(seq: bigint): boolean {
    if (seq === 0n) return false;
    if (seq > this.highest) {
      const shift = seq - this.highest;
      if (shift >= BigInt(REPLAY_WINDOW)) this.seen.fill(0);
      else for (let s = this.highest + 1n; s < seq; s += 1n) this.clear(s);
      this.highest = seq;
      this.set(seq);
      return true;
    }
    if (this.highest - seq >= BigInt(REPLAY_WINDOW)) return false;
    if (this.isSet(seq)) return false;
    this.set(seq);
    return true;
  }

  private bit(seq: bigint): [number, number] {
    const index = Number(seq % BigInt(REPLAY_WINDOW));
    return [index >> 3, 1 << (index & 7)];
  }
  private set(seq: bigint): void {
    const [byte, mask] = this.bit(seq);
    this.seen[byte]! |= mask;
  }
  private clear(seq: bigint): void {
    const [byte, mask] = this.bit(seq);
    this.seen[byte]! &= ~mask;
  }
  private isSet(seq: bigint): boolean {
    const [byte, mask] = this.bit(seq);
    return (this.seen[byte]! & mask) !== 0;
  }
}

export interface CachedToken {
  /** The token id in hex, the cache key (computed once, not per request). */
  readonly idHex: string;
  readonly fields: TokenFields;
  readonly sessionKey: MacKey;
  readonly replay: ReplayWindow;
}

export type CheckResult = { ok: true; token: CachedToken; epoch: number } | { ok: false; status: StatusValue; aux?: number };

const OPCODE_NEEDS: Record<number, number> = {
  [Opcode.READ]: TokenOp.READ,
  [Opcode.WRITE]: TokenOp.WRITE,
  [Opcode.TRIM]: TokenOp.TRIM,
  [Opcode.WRITE_ZEROES]: TokenOp.TRIM,
  [Opcode.FLUSH]: TokenOp.FLUSH | TokenOp.WRITE,
};

export class TokenChecker {
  private readonly tokens = new Map<string, CachedToken>();
  readonly rejections = new Map<string, number>();

  constructor(
    private readonly signingKey: Buffer,
    private readonly sdsId: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Verifies and caches a token (Opcode.TOKEN). The header's token id must match the token's. */
  install(tokenBytes: Buffer, headerTokenId: Buffer): { ok: true } | { ok: false; status: StatusValue } {
    let decoded;
    try {
      decoded = decodeToken(tokenBytes);
    } catch (error) {
      if (error instanceof TokenFormatError) return this.refuse(Status.TOKEN_MALFORMED);
      throw error;
    }
    if (!verifyTokenSignature(decoded, this.signingKey)) return this.refuse(Status.TOKEN_BAD_SIGNATURE);
    if (!decoded.fields.tokenId.equals(headerTokenId)) return this.refuse(Status.TOKEN_MALFORMED);
    if (decoded.fields.expiresAtMs <= this.now()) return this.refuse(Status.TOKEN_EXPIRED);
    const id = decoded.fields.tokenId.toString('hex');
    if (!this.tokens.has(id)) {
      if (this.tokens.size >= TOKENS_CACHED_MAX) this.sweep();
      if (this.tokens.size >= TOKENS_CACHED_MAX) return this.refuse(Status.BUSY as StatusValue);
      this.tokens.set(id, {
        idHex: id,
        fields: decoded.fields,
        sessionKey: macKeyOf(deriveSessionKey(this.signingKey, decoded.fields.tokenId)),
        replay: new ReplayWindow(),
      });
    }
    return { ok: true };
  }

  /**
   * Checks a data request against its token, in the order of PROTOCOL.md §1.2. `epochOf` gives
   * this SDS's epoch for the chunk (undefined: never heard of it, so the token's epoch stands).
   */
  check(header: RequestHeader, headerBytes: Buffer, epochOf: (volumeId: number, chunkIndex: number) => number | undefined): CheckResult {
    const id = header.tokenId.toString('hex');
    const token = this.tokens.get(id);
    if (token === undefined) return this.refuse(Status.TOKEN_UNKNOWN);
    const { fields } = token;
    if (fields.expiresAtMs <= this.now()) {
      this.tokens.delete(id);
      return this.refuse(Status.TOKEN_EXPIRED);
    }
    // The MAC first: without the session key nothing else about the request is worth reading.
    if (!requestMacValid(token.sessionKey, headerBytes)) return this.refuse(Status.BAD_MAC);
    const needs = OPCODE_NEEDS[header.opcode];
    if (needs === undefined || (fields.operations & needs) === 0) return this.refuse(Status.OP_NOT_GRANTED);
    if (header.volumeId !== fields.volumeId) return this.refuse(Status.WRONG_VOLUME);
    let epoch = 0;
    if (header.opcode === Opcode.FLUSH) {
      if (!fields.chunks.some((chunk) => chunk.targetSdsIds.includes(this.sdsId))) return this.refuse(Status.NOT_A_TARGET);
    } else {
      const position = header.chunkIndex - fields.chunkFirst;
      if (position < 0 || position >= fields.chunks.length) return this.refuse(Status.CHUNK_OUT_OF_RANGE);
      const chunk = fields.chunks[position]!;
      if (!chunk.targetSdsIds.includes(this.sdsId)) return this.refuse(Status.NOT_A_TARGET);
      const mine = epochOf(header.volumeId, header.chunkIndex);
      if (header.epoch !== chunk.epoch || (mine !== undefined && mine !== chunk.epoch)) {
        return this.refuse(Status.STALE_EPOCH, mine ?? chunk.epoch);
      }
      epoch = chunk.epoch;
    }
    if (!token.replay.accept(header.seq)) return this.refuse(Status.REPLAYED);
    return { ok: true, token, epoch };
  }

  /** Drops expired tokens; called on a timer and when the cache is full. */
  sweep(): void {
    const now = this.now();
    for (const [id, token] of this.tokens) if (token.fields.expiresAtMs <= now) this.tokens.delete(id);
  }

  get cachedCount(): number {
    return this.tokens.size;
  }

  private refuse(status: StatusValue, aux?: number): { ok: false; status: StatusValue; aux?: number } {
    const name = Object.entries(Status).find(([, value]) => value === status)?.[0] ?? String(status);
    this.rejections.set(name, (this.rejections.get(name) ?? 0) + 1);
    return aux === undefined ? { ok: false, status } : { ok: false, status, aux };
  }
}
