/**
 * IO tokens (DESIGN §4): canonical encoding, HMAC signature, strict decoding, session keys.
 */
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { createHmac, randomBytes } from 'node:crypto';
import {
  SESSION_KEY_BYTES,
  TOKEN_BYTES_MAX,
  TOKEN_CHUNKS_MAX,
  TOKEN_HEADER_BYTES,
  TOKEN_ID_BYTES,
  TOKEN_MAGIC,
  TOKEN_OPS_ALL,
  TOKEN_SIGNATURE_BYTES,
  TOKEN_TARGETS_PER_CHUNK_MAX,
  TOKEN_VERSION,
  TokenFormatError,
  TokenOp,
  computeTokenSignature,
  decodeToken,
  deriveSessionKey,
  encodeTokenBody,
  operationsToNames,
  signToken,
  verifyTokenSignature,
  type TokenFields,
} from '../../src/common/io-token.js';

const SEED = 0x70_6b_31;
const U32_MAX = 0xffffffff;
const KEY = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
const OTHER_KEY = Buffer.from('ff112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');

function sampleFields(overrides: Partial<TokenFields> = {}): TokenFields {
  return {
    tokenId: Buffer.from('0123456789abcdef0123456789abcdef', 'hex'),
    operations: TokenOp.READ | TokenOp.WRITE,
    volumeId: 42,
    sdcId: 7,
    issuedAtMs: 1_700_000_000_000,
    expiresAtMs: 1_700_000_030_000,
    chunkFirst: 100,
    poolId: 5,
    chunkSizeBytes: 4 * 1024 * 1024,
    chunks: [
      { epoch: 3, targetSdsIds: [1, 2, 3] },
      { epoch: 0, targetSdsIds: [] },
      { epoch: U32_MAX, targetSdsIds: [U32_MAX, 9] },
    ],
    ...overrides,
  };
}

/** Runs fn and reports whether it threw a TokenFormatError (any other outcome fails). */
function throwsFormat(tt: Test, fn: () => unknown, message: string, pattern?: RegExp): void {
  try {
    fn();
    tt.fail(`${message}: did not throw`);
  } catch (error) {
    tt.ok(error instanceof TokenFormatError, `${message}: throws TokenFormatError`, {
      thrown: String(error),
    });
    if (pattern !== undefined) tt.match((error as Error).message, pattern, `${message}: reason`);
  }
}

/** Re-signs bytes after tampering with the body, so only decoding can catch the change. */
function resign(token: Buffer, mutate: (body: Buffer) => void, key = KEY): Buffer {
  const body = Buffer.from(token.subarray(0, token.length - TOKEN_SIGNATURE_BYTES));
  mutate(body);
  return Buffer.concat([body, computeTokenSignature(body, key)]);
}

// ---------------------------------------------------------------- generators

const u32 = fc.integer({ min: 0, max: U32_MAX });
const sdsId = fc.integer({ min: 1, max: U32_MAX });
const chunkArb = fc.record({
  epoch: u32,
  targetSdsIds: fc.array(sdsId, { maxLength: TOKEN_TARGETS_PER_CHUNK_MAX }),
});
const timestamp = fc.oneof(
  fc.integer({ min: 1_600_000_000_000, max: 2_000_000_000_000 }),
  fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER - 1 }),
);

const fieldsArb: fc.Arbitrary<TokenFields> = fc
  .record({
    tokenId: fc.uint8Array({ minLength: TOKEN_ID_BYTES, maxLength: TOKEN_ID_BYTES }),
    operations: fc.integer({ min: 1, max: TOKEN_OPS_ALL }),
    volumeId: u32,
    sdcId: u32,
    issuedAtMs: timestamp,
    lifetimeMs: fc.oneof(fc.integer({ min: 1, max: 60_000 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })),
    chunkFirst: u32,
    poolId: u32,
    chunkSizeLog2: fc.integer({ min: 12, max: 30 }),
    chunks: fc.array(chunkArb, { minLength: 1, maxLength: 40 }),
  })
  .map(({ tokenId, issuedAtMs, lifetimeMs, chunkFirst, chunks, chunkSizeLog2, ...rest }) => ({
    ...rest,
    chunkSizeBytes: 2 ** chunkSizeLog2,
    tokenId: Buffer.from(tokenId),
    issuedAtMs,
    expiresAtMs: Math.min(issuedAtMs + lifetimeMs, Number.MAX_SAFE_INTEGER),
    chunkFirst: Math.min(chunkFirst, U32_MAX - chunks.length + 1),
    chunks,
  }));

function plain(fields: TokenFields) {
  return {
    tokenId: fields.tokenId.toString('hex'),
    operations: fields.operations,
    volumeId: fields.volumeId,
    sdcId: fields.sdcId,
    issuedAtMs: fields.issuedAtMs,
    expiresAtMs: fields.expiresAtMs,
    chunkFirst: fields.chunkFirst,
    chunks: fields.chunks.map((chunk) => ({ epoch: chunk.epoch, targetSdsIds: [...chunk.targetSdsIds] })),
  };
}

// ---------------------------------------------------------------- round trip

t.test('sign -> decode -> verify preserves every field', async (t) => {
  const fields = sampleFields();
  const token = signToken(fields, KEY);
  const decoded = decodeToken(token);
  t.same(plain(decoded.fields), plain(fields), 'fields survive the round trip');
  t.ok(Buffer.isBuffer(decoded.fields.tokenId), 'token id decodes as a Buffer');
  t.ok(verifyTokenSignature(decoded, KEY), 'signature verifies with the signing key');
  t.ok(decoded.body.equals(encodeTokenBody(fields)), 'body is the canonical encoding');
  t.ok(decoded.signature.equals(computeTokenSignature(decoded.body, KEY)), 'signature is the HMAC of the body');
  const scratch = Buffer.from(token);
  const fromScratch = decodeToken(scratch);
  scratch.fill(0);
  t.equal(fromScratch.fields.tokenId.toString('hex'), fields.tokenId.toString('hex'), 'decoded token id is a copy');

  const details = fc.check(
    fc.property(fieldsArb, (f) => {
      const bytes = signToken(f, KEY);
      let expectedLength = TOKEN_HEADER_BYTES + TOKEN_SIGNATURE_BYTES;
      for (const chunk of f.chunks) expectedLength += 5 + 4 * chunk.targetSdsIds.length;
      if (bytes.length !== expectedLength) throw new Error(`length ${bytes.length}, wanted ${expectedLength}`);
      const d = decodeToken(bytes);
      if (JSON.stringify(plain(d.fields)) !== JSON.stringify(plain(f))) throw new Error('fields differ');
      if (!verifyTokenSignature(d, KEY)) throw new Error('signature does not verify');
      if (verifyTokenSignature(d, OTHER_KEY)) throw new Error('signature verifies under another key');
      if (!signToken(d.fields, KEY).equals(bytes)) throw new Error('re-signing decoded fields changes the bytes');
    }),
    { seed: SEED, numRuns: 300 },
  );
  t.notOk(details.failed, `random fields round-trip (${details.numRuns} runs)`, {
    counterexample: details.failed ? fc.defaultReportMessage(details) : undefined,
  });
});

t.test('the largest token (1024 chunks x 4 targets) is exactly TOKEN_BYTES_MAX and round-trips', async (t) => {
  const chunks = Array.from({ length: TOKEN_CHUNKS_MAX }, (_, i) => ({
    epoch: i,
    targetSdsIds: [i + 1, i + 2, i + 3, i + 4],
  }));
  const fields = sampleFields({ chunkFirst: U32_MAX - TOKEN_CHUNKS_MAX + 1, chunks });
  const token = signToken(fields, KEY);
  t.equal(token.length, TOKEN_BYTES_MAX, 'maximum size');
  const decoded = decodeToken(token);
  t.same(plain(decoded.fields), plain(fields));
  t.ok(verifyTokenSignature(decoded, KEY));
  throwsFormat(t, () => decodeToken(Buffer.concat([token, Buffer.alloc(1)])), 'one byte more', /longer than/);
});

// ---------------------------------------------------------------- tampering

t.test('changing any byte of a signed token is detected', async (t) => {
  const token = signToken(sampleFields(), KEY);
  const problems: string[] = [];
  let formatRejections = 0;
  let signatureRejections = 0;
  let tried = 0;
  const tryTampered = (tampered: Buffer, what: string): void => {
    tried += 1;
    try {
      const decoded = decodeToken(tampered);
      if (verifyTokenSignature(decoded, KEY)) problems.push(`${what}: accepted`);
      else signatureRejections += 1;
    } catch (error) {
      if (error instanceof TokenFormatError) formatRejections += 1;
      else problems.push(`${what}: threw ${String(error)}`);
    }
  };
  for (let position = 0; position < token.length; position += 1) {
    for (const change of [0xff, 0x01, 0x80]) {
      const tampered = Buffer.from(token);
      tampered[position] ^= change;
      tryTampered(tampered, `byte ${position} ^ 0x${change.toString(16)}`);
    }
    const replaced = Buffer.from(token);
    replaced[position] = (replaced[position]! + 1) & 0xff;
    tryTampered(replaced, `byte ${position} + 1`);
  }
  // Every bit of a few interesting bytes: magic, version, operations, reserved, token id,
  // volume, timestamps (high and low), chunk count, a target count, a target id, the signature.
  const signatureStart = token.length - TOKEN_SIGNATURE_BYTES;
  for (const position of [0, 4, 5, 6, 7, 8, 23, 27, 31, 32, 39, 40, 47, 51, 55, 60, 61, 64, signatureStart, token.length - 1]) {
    for (let bit = 0; bit < 8; bit += 1) {
      const tampered = Buffer.from(token);
      tampered[position] ^= 1 << bit;
      tryTampered(tampered, `byte ${position} bit ${bit}`);
    }
  }
  t.same(problems, [], 'every tampered token is rejected, and only with TokenFormatError or a bad signature');
  t.equal(tried, token.length * 4 + 20 * 8, 'every position was tried');
  t.ok(formatRejections > 0, `some were malformed (${formatRejections})`);
  t.ok(signatureRejections > 0, `some were well formed but badly signed (${signatureRejections})`);
});

t.test('a wrong key fails verification', async (t) => {
  const decoded = decodeToken(signToken(sampleFields(), KEY));
  t.ok(verifyTokenSignature(decoded, KEY), 'the right key verifies');
  t.notOk(verifyTokenSignature(decoded, OTHER_KEY), 'a key differing in one byte fails');
  t.notOk(verifyTokenSignature(decoded, Buffer.alloc(0)), 'an empty key fails');
  t.notOk(verifyTokenSignature(decoded, KEY.subarray(0, 31)), 'a truncated key fails');
  t.notOk(verifyTokenSignature(decoded, randomBytes(32)), 'a random key fails');
  const forged = decodeToken(signToken(sampleFields(), OTHER_KEY));
  t.notOk(verifyTokenSignature(forged, KEY), 'a token signed with another key fails');
});

t.test('truncated tokens and trailing bytes throw TokenFormatError', async (t) => {
  const token = signToken(sampleFields(), KEY);
  const problems: string[] = [];
  const expectFormatError = (bytes: Buffer, what: string): void => {
    try {
      decodeToken(bytes);
      problems.push(`${what}: decoded`);
    } catch (error) {
      if (!(error instanceof TokenFormatError)) problems.push(`${what}: threw ${String(error)}`);
    }
  };
  for (let length = 0; length < token.length; length += 1) {
    expectFormatError(token.subarray(0, length), `truncated to ${length}`);
  }
  for (let extra = 1; extra <= 64; extra += 1) {
    expectFormatError(Buffer.concat([token, Buffer.alloc(extra)]), `${extra} zero bytes appended`);
    expectFormatError(Buffer.concat([token, token.subarray(0, extra)]), `${extra} token bytes appended`);
  }
  // A token cut before its signature but padded back to length: still not accepted.
  expectFormatError(token.subarray(TOKEN_SIGNATURE_BYTES), 'header cut off');
  t.same(problems, [], 'every truncated or extended token is refused');
  throwsFormat(t, () => decodeToken(token.subarray(0, TOKEN_HEADER_BYTES)), 'header only', /too short/);
  throwsFormat(t, () => decodeToken(token.subarray(0, token.length - 1)), 'one byte short', /truncated|trailing/);
  throwsFormat(t, () => decodeToken(Buffer.concat([token, Buffer.alloc(1)])), 'one byte long', /trailing/);
});

t.test('a token longer than TOKEN_BYTES_MAX is refused before any parsing', async (t) => {
  throwsFormat(t, () => decodeToken(Buffer.alloc(TOKEN_BYTES_MAX + 1)), 'one byte over the limit', /longer than/);
  // A huge buffer whose header looks valid: refusal must not depend on its size.
  const huge = Buffer.alloc(64 * 1024 * 1024);
  signToken(sampleFields(), KEY).copy(huge);
  const started = process.hrtime.bigint();
  for (let i = 0; i < 20; i += 1) {
    try {
      decodeToken(huge);
    } catch {
      // checked below
    }
  }
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
  throwsFormat(t, () => decodeToken(huge), '64 MiB token', /longer than/);
  t.ok(elapsedMs < 50, `20 decodes of a 64 MiB token took ${elapsedMs.toFixed(2)} ms (no copy, no scan)`);
});

t.test('decoding checks structure even when the signature is valid', async (t) => {
  const token = signToken(sampleFields(), KEY);
  const cases: [string, (body: Buffer) => void, RegExp][] = [
    ['bad magic', (b) => b.write('PFT2', 0, 'ascii'), /magic/],
    ['version 2', (b) => b.writeUInt8(2, 4), /version/],
    ['version 0', (b) => b.writeUInt8(0, 4), /version/],
    ['reserved bytes set', (b) => b.writeUInt16BE(1, 6), /reserved/],
    ['no operations', (b) => b.writeUInt8(0, 5), /operations/],
    ['unknown operation bit', (b) => b.writeUInt8(0x10 | TokenOp.READ, 5), /operations/],
    ['chunk count 0', (b) => b.writeUInt32BE(0, 52), /chunk count/],
    ['chunk count over the maximum', (b) => b.writeUInt32BE(TOKEN_CHUNKS_MAX + 1, 52), /chunk count/],
    ['chunk count one more than present', (b) => b.writeUInt32BE(4, 52), /truncated/],
    ['chunk count one less than present', (b) => b.writeUInt32BE(2, 52), /trailing/],
    ['five targets', (b) => b.writeUInt8(5, TOKEN_HEADER_BYTES + 4), /too many targets/],
    ['target count larger than the bytes', (b) => b.writeUInt8(4, TOKEN_HEADER_BYTES + 4), /./],
    ['target sds id 0', (b) => b.writeUInt32BE(0, TOKEN_HEADER_BYTES + 5), /sds id/],
    ['expires == issued', (b) => b.writeBigUInt64BE(b.readBigUInt64BE(32), 40), /expires/],
    ['expires before issued', (b) => b.writeBigUInt64BE(0n, 40), /expires/],
    ['timestamp beyond 2^53', (b) => b.writeBigUInt64BE(2n ** 60n, 40), /timestamps/],
    ['chunk range past u32', (b) => b.writeUInt32BE(U32_MAX, 48), /overflows/],
  ];
  for (const [what, mutate, pattern] of cases) {
    const tampered = resign(token, mutate);
    t.not(tampered.compare(token), 0, `${what}: bytes changed`);
    throwsFormat(t, () => decodeToken(tampered), what, pattern);
  }
});

// ---------------------------------------------------------------- encoding validation

t.test('encoding rejects bad fields', async (t) => {
  const bad: [string, Partial<TokenFields>][] = [
    ['operations 0', { operations: 0 }],
    ['operations bit 0x10', { operations: 0x10 }],
    ['operations with an unknown bit', { operations: TokenOp.READ | 0x80 }],
    ['operations 0x1f', { operations: 0x1f }],
    ['operations 256', { operations: 0x100 | TokenOp.READ }],
    ['token id of 15 bytes', { tokenId: Buffer.alloc(15, 1) }],
    ['token id of 17 bytes', { tokenId: Buffer.alloc(17, 1) }],
    ['empty token id', { tokenId: Buffer.alloc(0) }],
    ['no chunks', { chunks: [] }],
    [
      `${TOKEN_CHUNKS_MAX + 1} chunks`,
      { chunkFirst: 0, chunks: Array.from({ length: TOKEN_CHUNKS_MAX + 1 }, () => ({ epoch: 1, targetSdsIds: [1] })) },
    ],
    ['five targets', { chunks: [{ epoch: 1, targetSdsIds: [1, 2, 3, 4, 5] }] }],
    ['sds id 0', { chunks: [{ epoch: 1, targetSdsIds: [1, 0] }] }],
    ['negative sds id', { chunks: [{ epoch: 1, targetSdsIds: [-1] }] }],
    ['fractional sds id', { chunks: [{ epoch: 1, targetSdsIds: [1.5] }] }],
    ['sds id over u32', { chunks: [{ epoch: 1, targetSdsIds: [U32_MAX + 1] }] }],
    ['epoch over u32', { chunks: [{ epoch: U32_MAX + 1, targetSdsIds: [1] }] }],
    ['expires == issued', { issuedAtMs: 1000, expiresAtMs: 1000 }],
    ['expires < issued', { issuedAtMs: 1000, expiresAtMs: 999 }],
    ['fractional timestamp', { issuedAtMs: 1000.5, expiresAtMs: 2000 }],
    ['unsafe timestamp', { expiresAtMs: 2 ** 53 }],
    ['negative volume id', { volumeId: -1 }],
    ['volume id over u32', { volumeId: U32_MAX + 1 }],
    ['fractional sdc id', { sdcId: 1.25 }],
    ['chunk range past u32', { chunkFirst: U32_MAX, chunks: [{ epoch: 1, targetSdsIds: [] }, { epoch: 1, targetSdsIds: [] }] }],
  ];
  for (const [what, overrides] of bad) {
    const fields = sampleFields(overrides);
    throwsFormat(t, () => encodeTokenBody(fields), `encode: ${what}`);
    throwsFormat(t, () => signToken(fields, KEY), `sign: ${what}`);
  }
  // The edges that are allowed.
  t.doesNotThrow(() => signToken(sampleFields({ operations: TOKEN_OPS_ALL }), KEY), 'all four operations');
  t.doesNotThrow(() => signToken(sampleFields({ issuedAtMs: 0, expiresAtMs: 1 }), KEY), 'a 1 ms lifetime');
  t.doesNotThrow(
    () => signToken(sampleFields({ chunkFirst: U32_MAX, chunks: [{ epoch: 0, targetSdsIds: [] }] }), KEY),
    'the last chunk index',
  );
});

// ---------------------------------------------------------------- session keys

t.test('deriveSessionKey', async (t) => {
  const tokenId = Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex');
  const key = deriveSessionKey(KEY, tokenId);
  t.equal(key.length, SESSION_KEY_BYTES, '32 bytes');
  t.ok(key.equals(deriveSessionKey(KEY, Buffer.from(tokenId))), 'deterministic');
  t.notOk(key.equals(KEY), 'not the signing key');
  const otherId = Buffer.from(tokenId);
  otherId[15] ^= 1;
  t.notOk(key.equals(deriveSessionKey(KEY, otherId)), 'differs per token id (one bit)');
  t.notOk(key.equals(deriveSessionKey(OTHER_KEY, tokenId)), 'differs per signing key');
  const expected = createHmac('sha256', KEY)
    .update(Buffer.concat([Buffer.from('pflex-session-v1', 'ascii'), tokenId]))
    .digest();
  t.ok(key.equals(expected), 'HMAC-SHA256(signing key, "pflex-session-v1" || token id)');
  t.notOk(
    key.equals(createHmac('sha256', KEY).update(tokenId).digest()),
    'the label separates it from a plain HMAC of the token id',
  );
  throwsFormat(t, () => deriveSessionKey(KEY, Buffer.alloc(15)), 'token id of 15 bytes');
  throwsFormat(t, () => deriveSessionKey(KEY, Buffer.alloc(17)), 'token id of 17 bytes');

  const seen = new Set<string>();
  for (let i = 0; i < 200; i += 1) {
    const id = Buffer.alloc(16);
    id.writeUInt32BE(i, 12);
    seen.add(deriveSessionKey(KEY, id).toString('hex'));
  }
  t.equal(seen.size, 200, '200 token ids give 200 distinct session keys');
});

// ---------------------------------------------------------------- wire layout

t.test('byte layout of a signed token', async (t) => {
  const tokenId = Buffer.from('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf', 'hex');
  const fields: TokenFields = {
    tokenId,
    operations: TokenOp.READ | TokenOp.TRIM,
    volumeId: 0x01020304,
    sdcId: 0x05060708,
    issuedAtMs: 0x0000_0102_0304_0506,
    expiresAtMs: 0x0000_0102_0304_0507 + 0x10,
    chunkFirst: 0x0a0b0c0d,
    poolId: 0x71727374,
    chunkSizeBytes: 2 ** 22,
    chunks: [
      { epoch: 0x11121314, targetSdsIds: [0x21222324, 0x31323334] },
      { epoch: 0x41424344, targetSdsIds: [] },
      { epoch: 0x51525354, targetSdsIds: [0x61626364] },
    ],
  };
  const token = signToken(fields, KEY);
  t.equal(token.length, 64 + (5 + 8) + 5 + (5 + 4) + 32, 'header + chunk records + signature');
  t.equal(TOKEN_HEADER_BYTES, 64);
  t.equal(token.subarray(56, 60).toString('hex'), '71727374', 'pool id u32 BE at 56');
  t.equal(token[60], 22, 'log2 of the chunk size at 60');
  t.equal(token.subarray(61, 64).toString('hex'), '000000', 'reserved zero at 61..64');
  t.equal(token.subarray(0, 4).toString('ascii'), 'PFT1', 'magic "PFT1" at 0');
  t.equal(token.readUInt32BE(0), TOKEN_MAGIC);
  t.equal(token[4], 1, 'version 1 at 4');
  t.equal(TOKEN_VERSION, 1);
  t.equal(token[5], 0x05, 'operations at 5 (READ|TRIM)');
  t.equal(token.readUInt16BE(6), 0, 'reserved zero at 6..8');
  t.ok(token.subarray(8, 24).equals(tokenId), 'token id at 8..24');
  t.equal(token.subarray(24, 28).toString('hex'), '01020304', 'volume id u32 BE at 24');
  t.equal(token.subarray(28, 32).toString('hex'), '05060708', 'sdc id u32 BE at 28');
  t.equal(token.subarray(32, 40).toString('hex'), '0000010203040506', 'issued_at u64 BE at 32');
  t.equal(token.subarray(40, 48).toString('hex'), '0000010203040517', 'expires_at u64 BE at 40');
  t.equal(token.subarray(48, 52).toString('hex'), '0a0b0c0d', 'chunk_first u32 BE at 48');
  t.equal(token.subarray(52, 56).toString('hex'), '00000003', 'chunk count u32 BE at 52');
  t.equal(
    token.subarray(64, 77).toString('hex'),
    '11121314' + '02' + '21222324' + '31323334',
    'chunk 0: epoch u32, target count u8, targets u32',
  );
  t.equal(token.subarray(77, 82).toString('hex'), '41424344' + '00', 'chunk 1: no targets');
  t.equal(token.subarray(82, 91).toString('hex'), '51525354' + '01' + '61626364', 'chunk 2: one target');
  const body = token.subarray(0, 91);
  const mac = createHmac('sha256', KEY).update(body).digest();
  t.ok(token.subarray(91).equals(mac), 'last 32 bytes: HMAC-SHA256(signing key, all previous bytes)');
  t.equal(
    token.toString('hex'),
    '50465431' + '01' + '05' + '0000' + tokenId.toString('hex') +
      '01020304' + '05060708' + '0000010203040506' + '0000010203040517' + '0a0b0c0d' + '00000003' + '71727374' + '16' + '000000' +
      '11121314' + '02' + '21222324' + '31323334' + '41424344' + '00' + '51525354' + '01' + '61626364' +
      mac.toString('hex'),
    'the whole token, byte for byte',
  );
});

t.test('operation names', async (t) => {
  t.same(operationsToNames(TokenOp.READ), ['read']);
  t.same(operationsToNames(TokenOp.WRITE | TokenOp.FLUSH), ['write', 'flush']);
  t.same(operationsToNames(TOKEN_OPS_ALL), ['read', 'write', 'trim', 'flush']);
  t.same(operationsToNames(0), []);
});
