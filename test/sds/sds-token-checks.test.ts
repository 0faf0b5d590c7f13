/**
 * SDS token checks (DESIGN §4, PROTOCOL §1.2, §2, §5) against real `pflex sds` processes over real
 * sockets, with a real in-process MDM issuing the tokens: every refusal reason — unknown, malformed,
 * forged and expired tokens, an operation not granted, another volume, a chunk out of range, an
 * SDS that is not a target, replayed and too-old sequence numbers, stale epochs (from the header
 * and after fencing through the control plane), bad MACs and a stolen token without its session
 * key — answers its status code, changes no byte of the device (read back through a valid session
 * and hashed on disk), creates no chunk record, and is counted per reason on /stats and /metrics.
 * The control plane refuses requests without the MDM's credential and changes nothing.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { startSdsBed } from '../helpers/sds-bed.js';
import {
  controlAuthorization,
  httpCall,
  KiB,
  MiB,
  patternBytes,
  RawConnection,
  readSdsNodeFile,
  SdsDataClient,
  setupSdsCluster,
  sha256File,
  sleep,
  startSdsProcess,
  TokenSession,
  type IoReply,
} from '../helpers/sds.js';
import { decodeToken, deriveSessionKey, signToken, type TokenFields } from '../../src/common/io-token.js';
import { Opcode, Status, statusName } from '../../src/common/sds-protocol.js';

type Tap = Test;

const { dir, mdm, processes, clients } = await startSdsBed(t, 'pflex-sds-tokens-');

const CHUNKS = 12;
const layout = await setupSdsCluster(mdm.admin, {
  baseDir: dir,
  sdsCount: 3,
  chunkSizeBytes: MiB,
  volumes: [
    { name: 'va', sizeBytes: CHUNKS * MiB },
    { name: 'vb', sizeBytes: 4 * MiB },
  ],
});
processes.push(
  ...(await Promise.all(
    layout.sds.map((record) => startSdsProcess({ nodeId: record.name, mdmUrl: mdm.url, joinToken: layout.joinToken, dataDir: record.dataDir, ports: record.ports })),
  )),
);

/** The SDS under test: the first one. */
const sds = processes[0]!;
const record = layout.sds[0]!;
const node = readSdsNodeFile(sds.dataDir);
const signingKey = node.signingKey;

function newClient(): SdsDataClient {
  const client = new SdsDataClient('127.0.0.1', sds.dataPort, 10_000);
  clients.push(client);
  return client;
}
const client = newClient();

/** The refusals this file expects the SDS to count, by reason. */
const expectedRejections = new Map<string, number>();
const rejectionsAtStart: Record<string, number> = (await sds.stats()).rejections;

function expectStatus(tt: Tap, reply: IoReply, status: number, label: string): void {
  tt.equal(statusName(reply.status), statusName(status), label);
  if (reply.status !== Status.OK && reply.status < 32) {
    const name = statusName(reply.status);
    expectedRejections.set(name, (expectedRejections.get(name) ?? 0) + 1);
  }
}

// A read/write/trim/flush token over the whole of volume va; write places every chunk.
const rw = await TokenSession.authorize(mdm.admin, 'va', layout.sdc, ['read', 'write', 'trim', 'flush'], 0, CHUNKS);
const mine = rw.answer.chunks.filter((chunk) => chunk.replicas.some((r) => r.sds_id === node.sds_id)).map((chunk) => chunk.index);
const notMine = rw.answer.chunks.filter((chunk) => chunk.placed && !chunk.replicas.some((r) => r.sds_id === node.sds_id)).map((chunk) => chunk.index);
t.comment(`SDS under test ${record.name} (id ${node.sds_id}); its chunks ${mine.join(',')}; others ${notMine.join(',')}`);

const [A, B] = mine as [number, number];
/** Untouched chunks of this SDS that must never get a record here. */
const untouched = mine.slice(2);
const PATTERN_BYTES = 64 * KiB;
const patternA0 = patternBytes(1, PATTERN_BYTES);
const patternA1 = patternBytes(2, PATTERN_BYTES);
const patternB = patternBytes(3, PATTERN_BYTES);
const A1_OFFSET = 512 * KiB;

/** Reads back the known pattern through a valid session: it must be unchanged. */
async function assertPatternIntact(tt: Tap, label: string): Promise<void> {
  const a0 = await rw.read(client, A, 0, PATTERN_BYTES);
  const a1 = await rw.read(client, A, A1_OFFSET, PATTERN_BYTES);
  const b = await rw.read(client, B, 0, PATTERN_BYTES);
  const ok = a0.status === Status.OK && a1.status === Status.OK && b.status === Status.OK;
  tt.ok(ok && a0.payload!.equals(patternA0) && a1.payload!.equals(patternA1) && b.payload!.equals(patternB), `${label}: device data unchanged`, {
    statuses: [a0.status, a1.status, b.status].map(statusName),
  });
}

/** This SDS's chunk records (without the write-intent flag, which the cleaner clears over time). */
async function replicas(): Promise<{ volume_id: number; chunk_index: number; epoch: number; stored: boolean }[]> {
  const answer = await httpCall(`${sds.mgmtUrl}/replicas`);
  return (answer.body.chunks as { volume_id: number; chunk_index: number; epoch: number; stored: boolean }[])
    .map(({ volume_id, chunk_index, epoch, stored }) => ({ volume_id, chunk_index, epoch, stored }))
    .sort((x, y) => x.volume_id - y.volume_id || x.chunk_index - y.chunk_index);
}

let deviceHashBefore = '';
let replicasBefore: Awaited<ReturnType<typeof replicas>> = [];

t.test('setup: the layout gives chunks on and off the SDS under test', async (t) => {
  t.ok(mine.length >= 3, 'the SDS under test holds at least 3 chunks of va', { mine });
  t.ok(notMine.length >= 1, 'some chunk of va has no replica on the SDS under test (3 SDS, two copies)', { notMine });
  t.equal(processes.length, 3);
  for (const p of processes) t.equal((await p.health()).registered, true, `${p.nodeId} registered`);
});

t.test('no token installed: TOKEN_UNKNOWN for every operation, nothing stored', async (t) => {
  expectStatus(t, await rw.write(client, A, 0, patternA0), Status.TOKEN_UNKNOWN, 'write before TOKEN');
  expectStatus(t, await rw.read(client, A, 0, 4096), Status.TOKEN_UNKNOWN, 'read before TOKEN');
  expectStatus(t, await rw.trim(client, A, 0, 4096), Status.TOKEN_UNKNOWN, 'trim before TOKEN');
  expectStatus(t, await rw.flush(client), Status.TOKEN_UNKNOWN, 'flush before TOKEN');
  expectStatus(t, await rw.write(client, A, 0, patternA0, { tokenId: randomBytes(16) }), Status.TOKEN_UNKNOWN, 'write naming a random token id');
  t.same(await replicas(), [], 'no chunk record was created by refused requests');
});

t.test('valid session: install the token, write the known pattern, flush, read it back', async (t) => {
  expectStatus(t, await rw.install(client), Status.OK, 'TOKEN installs the MDM-signed token');
  expectStatus(t, await rw.install(client), Status.OK, 'installing it again is harmless');
  expectStatus(t, await rw.write(client, A, 0, patternA0), Status.OK, 'write chunk A @0');
  expectStatus(t, await rw.write(client, A, A1_OFFSET, patternA1), Status.OK, 'write chunk A @512K');
  expectStatus(t, await rw.write(client, B, 0, patternB), Status.OK, 'write chunk B @0');
  expectStatus(t, await rw.flush(client), Status.OK, 'flush');
  await assertPatternIntact(t, 'after the valid writes');
  replicasBefore = await replicas();
  t.same(
    replicasBefore.map((r) => [r.chunk_index, r.stored]),
    [A, B].sort((x, y) => x - y).map((i) => [i, true]),
    'exactly chunks A and B are stored here',
  );
  deviceHashBefore = await sha256File(record.devicePath);
});

t.test('malformed tokens: TOKEN_MALFORMED, never cached', async (t) => {
  const other = await TokenSession.authorize(mdm.admin, 'va', layout.sdc, ['read', 'write'], 0, CHUNKS);
  const good = other.token;
  const cases: [string, Buffer][] = [
    ['random bytes', randomBytes(200)],
    ['too short (95 bytes)', good.subarray(0, 95)],
    ['truncated by one byte', good.subarray(0, good.length - 1)],
    ['one trailing byte', Buffer.concat([good, Buffer.alloc(1)])],
    ['over the 21600-byte bound', Buffer.concat([good, Buffer.alloc(22_000)])],
    ['wrong magic', Buffer.from(good).fill(0x51, 0, 1)],
    ['wrong version', (() => { const b = Buffer.from(good); b[4] = 2; return b; })()],
    ['reserved byte set', (() => { const b = Buffer.from(good); b[62] = 1; return b; })()],
    ['chunk size log2 out of range', (() => { const b = Buffer.from(good); b[60] = 40; return b; })()],
    ['chunk count 0', (() => { const b = Buffer.from(good); b.writeUInt32BE(0, 52); return b; })()],
    ['unknown operation bit', (() => { const b = Buffer.from(good); b[5] = 0x80; return b; })()],
  ];
  for (const [what, bytes] of cases) {
    expectStatus(t, await other.install(client, bytes), Status.TOKEN_MALFORMED, `TOKEN with ${what}`);
  }
  expectStatus(t, await other.install(client, good, randomBytes(16)), Status.TOKEN_MALFORMED, "a valid token whose id is not the header's");
  expectStatus(t, await other.write(client, A, 0, Buffer.alloc(4096, 0xee)), Status.TOKEN_UNKNOWN, 'the token id was never cached');
  const emptyPayload = await other.send(client, { opcode: Opcode.TOKEN, seq: 0n }, undefined, null);
  t.ok(emptyPayload.status === Status.BAD_REQUEST || emptyPayload.status === Status.TOKEN_MALFORMED, 'TOKEN without a payload is refused', {
    status: statusName(emptyPayload.status),
  });
  if (emptyPayload.status < 32) expectedRejections.set(statusName(emptyPayload.status), (expectedRejections.get(statusName(emptyPayload.status)) ?? 0) + 1);
  await assertPatternIntact(t, 'after malformed tokens');
});

t.test('forged tokens: TOKEN_BAD_SIGNATURE, never cached', async (t) => {
  const real = await TokenSession.authorize(mdm.admin, 'va', layout.sdc, ['read'], 0, CHUNKS, false);
  const { fields } = decodeToken(real.token);
  const wrongKey = randomBytes(32);
  const grantsMore: TokenFields = { ...fields, operations: 0x0f };
  const withMe: TokenFields = {
    ...fields,
    chunks: fields.chunks.map((chunk, i) => (notMine.includes(fields.chunkFirst + i) ? { ...chunk, targetSdsIds: [node.sds_id] } : chunk)),
  };
  const flipped = Buffer.from(real.token);
  flipped[flipped.length - 1]! ^= 0x01;
  const bodyChanged = Buffer.from(real.token);
  bodyChanged[5] = 0x0f; // grant everything, keep the old signature
  const cases: [string, Buffer][] = [
    ['the same fields re-signed with a wrong key', signToken(fields, wrongKey)],
    ['more operations, signed with a wrong key', signToken(grantsMore, wrongKey)],
    ['this SDS added as a target, signed with a wrong key', signToken(withMe, wrongKey)],
    ['one signature bit flipped', flipped],
    ['the operations byte changed under the old signature', bodyChanged],
  ];
  for (const [what, bytes] of cases) expectStatus(t, await real.install(client, bytes), Status.TOKEN_BAD_SIGNATURE, what);
  expectStatus(t, await real.write(client, A, 0, Buffer.alloc(4096, 0xee)), Status.TOKEN_UNKNOWN, 'a forged token is never cached');
  expectStatus(t, await real.read(client, A, 0, 4096), Status.TOKEN_UNKNOWN, 'not even for reads');
  await assertPatternIntact(t, 'after forged tokens');
});

t.test('expired tokens: refused at TOKEN and on requests once they expire', async (t) => {
  // The signing key from node.json (registration hands it to SDS nodes) signs like the MDM does.
  const base = decodeToken(rw.token).fields;
  const now = Date.now();
  const craft = (issuedAtMs: number, expiresAtMs: number): { fields: TokenFields; session: TokenSession } => {
    const tokenId = randomBytes(16);
    const f: TokenFields = { ...base, tokenId, issuedAtMs, expiresAtMs };
    const session = new TokenSession({
      ...rw.answer,
      token: signToken(f, signingKey).toString('base64'),
      token_id: tokenId.toString('hex'),
      session_key: deriveSession(tokenId).toString('base64'),
    });
    return { fields: f, session };
  };
  const live = craft(now, now + 60_000);
  expectStatus(t, await live.session.install(client), Status.OK, 'a token signed with the key from node.json installs: it is the cluster key');
  expectStatus(t, await live.session.read(client, A, 0, 16), Status.OK, 'and reads');

  const expired = craft(now - 60_000, now - 1000);
  expectStatus(t, await expired.session.install(client), Status.TOKEN_EXPIRED, 'a token past its expiry is refused at TOKEN');
  expectStatus(t, await expired.session.write(client, A, 0, Buffer.alloc(4096, 0xee)), Status.TOKEN_UNKNOWN, 'and never cached');

  const short = craft(Date.now(), Date.now() + 1200);
  expectStatus(t, await short.session.install(client), Status.OK, 'a short-lived token installs');
  expectStatus(t, await short.session.read(client, A, 0, 16), Status.OK, 'and works while valid');
  await sleep(1400);
  expectStatus(t, await short.session.write(client, A, 0, Buffer.alloc(8192, 0xee)), Status.TOKEN_EXPIRED, 'a write after expiry: TOKEN_EXPIRED');
  expectStatus(t, await short.session.trim(client, A, 0, 8192), Status.TOKEN_UNKNOWN, 'the expired token was dropped from the cache');
  expectStatus(t, await short.session.install(client), Status.TOKEN_EXPIRED, 'and cannot be installed again');
  await assertPatternIntact(t, 'after expired tokens');
});

/** The session key of a crafted token: the derivation of PROTOCOL §2, from the real signing key. */
function deriveSession(tokenId: Buffer): Buffer {
  return deriveSessionKey(signingKey, tokenId);
}

t.test('operation not granted: OP_NOT_GRANTED', async (t) => {
  const readOnly = await TokenSession.authorize(mdm.admin, 'va', layout.sdc, ['read'], 0, CHUNKS, false);
  expectStatus(t, await readOnly.install(client), Status.OK, 'install a read-only token');
  expectStatus(t, await readOnly.write(client, A, 0, Buffer.alloc(4096, 0xee)), Status.OP_NOT_GRANTED, 'write with a read-only token');
  expectStatus(t, await readOnly.write(client, B, 0, Buffer.alloc(4096, 0xee), { fua: true }), Status.OP_NOT_GRANTED, 'FUA write with a read-only token');
  expectStatus(t, await readOnly.trim(client, A, 0, 8192), Status.OP_NOT_GRANTED, 'trim with a read-only token');
  expectStatus(t, await readOnly.writeZeroes(client, A, 0, 8192), Status.OP_NOT_GRANTED, 'write_zeroes with a read-only token');
  expectStatus(t, await readOnly.flush(client), Status.OP_NOT_GRANTED, 'flush with a read-only token');
  expectStatus(t, await readOnly.write(client, untouched[0]!, 0, Buffer.alloc(4096, 0xee)), Status.OP_NOT_GRANTED, 'write to an unwritten chunk');
  const read = await readOnly.read(client, A, 0, PATTERN_BYTES);
  expectStatus(t, read, Status.OK, 'the read-only token reads');
  t.ok(read.payload?.equals(patternA0), 'and reads the pattern');

  const writeOnly = await TokenSession.authorize(mdm.admin, 'va', layout.sdc, ['write'], 0, CHUNKS);
  expectStatus(t, await writeOnly.install(client), Status.OK, 'install a write-only token');
  expectStatus(t, await writeOnly.read(client, A, 0, 4096), Status.OP_NOT_GRANTED, 'read with a write-only token');
  expectStatus(t, await writeOnly.trim(client, A, 0, 4096), Status.OP_NOT_GRANTED, 'trim with a write-only token');
  expectStatus(t, await writeOnly.flush(client), Status.OK, 'FLUSH is granted with WRITE');
  await assertPatternIntact(t, 'after operations not granted');
});

t.test('another volume, a chunk out of range, an SDS that is not a target', async (t) => {
  const vb = await TokenSession.authorize(mdm.admin, 'vb', layout.sdc, ['read', 'write'], 0, 4);
  t.not(vb.volumeId, rw.volumeId, 'two volumes');
  expectStatus(t, await rw.write(client, A, 0, Buffer.alloc(4096, 0xee), { volumeId: vb.volumeId }), Status.WRONG_VOLUME, "va's token naming vb");
  expectStatus(t, await rw.read(client, 0, 0, 4096, { volumeId: vb.volumeId }), Status.WRONG_VOLUME, "va's token reading vb");
  expectStatus(t, await rw.trim(client, A, 0, 4096, { volumeId: 0xffffffff }), Status.WRONG_VOLUME, 'a volume id that does not exist');

  const narrow = await TokenSession.authorize(mdm.admin, 'va', layout.sdc, ['read', 'write', 'trim'], 2, 3);
  expectStatus(t, await narrow.install(client), Status.OK, 'install a token for chunks 2..4');
  for (const index of [0, 1, 5, CHUNKS - 1, 0xffffffff]) {
    expectStatus(t, await narrow.write(client, index, 0, Buffer.alloc(4096, 0xee), { epoch: rw.epochOf(index) }), Status.CHUNK_OUT_OF_RANGE, `write to chunk ${index}`);
  }
  expectStatus(t, await narrow.trim(client, 7, 0, 4096, { epoch: rw.epochOf(7) }), Status.CHUNK_OUT_OF_RANGE, 'trim outside the range');

  const foreign = notMine[0]!;
  expectStatus(t, await rw.write(client, foreign, 0, Buffer.alloc(4096, 0xee)), Status.NOT_A_TARGET, `write to chunk ${foreign}, whose replicas are elsewhere`);
  expectStatus(t, await rw.read(client, foreign, 0, 4096), Status.NOT_A_TARGET, 'read of it');
  expectStatus(t, await rw.writeZeroes(client, foreign, 0, 4096), Status.NOT_A_TARGET, 'write_zeroes of it');
  // A token whose chunks are none of this SDS's refuses FLUSH too.
  const onlyForeign = await TokenSession.authorize(mdm.admin, 'va', layout.sdc, ['write'], foreign, 1);
  t.notOk(onlyForeign.targetsOf(foreign).includes(node.sds_id), 'the single-chunk token does not name this SDS');
  expectStatus(t, await onlyForeign.install(client), Status.OK, 'it installs (the signature is good)');
  expectStatus(t, await onlyForeign.flush(client), Status.NOT_A_TARGET, 'FLUSH under a token naming no chunk of this SDS');
  expectStatus(t, await onlyForeign.write(client, foreign, 0, Buffer.alloc(4096, 0xee)), Status.NOT_A_TARGET, 'write under it');
  t.same(await replicas(), replicasBefore, 'no chunk record appeared (vb, out-of-range and foreign chunks)');
  await assertPatternIntact(t, 'after wrong volume, range and target');
});

t.test('sequence numbers: replays and numbers older than the 4096 window are REPLAYED', async (t) => {
  const seq = rw.takeSeq();
  expectStatus(t, await rw.read(client, A, 0, 16, { seq }), Status.OK, `read with seq ${seq}`);
  expectStatus(t, await rw.write(client, A, 0, Buffer.alloc(4096, 0xee), { seq }), Status.REPLAYED, 'a write reusing that seq');
  expectStatus(t, await rw.read(client, A, 0, 16, { seq }), Status.REPLAYED, 'the same read replayed');
  const other = newClient();
  expectStatus(t, await rw.trim(other, A, 0, 4096, { seq }), Status.REPLAYED, 'replayed on another connection');
  expectStatus(t, await rw.write(client, A, 0, Buffer.alloc(4096, 0xee), { seq: 0n }), Status.REPLAYED, 'seq 0 is never valid');

  // A refused request does not consume its sequence number.
  const fresh = rw.takeSeq();
  expectStatus(t, await rw.read(client, A, 0, 16, { seq: fresh, macKey: randomBytes(32) }), Status.BAD_MAC, 'bad MAC with a fresh seq');
  expectStatus(t, await rw.read(client, A, 0, 16, { seq: fresh, epoch: 99 }), Status.STALE_EPOCH, 'stale epoch with the same seq');
  expectStatus(t, await rw.read(client, A, 0, 16, { seq: fresh }), Status.OK, 'the same seq is still usable by a valid request');

  const high = 100_000n;
  expectStatus(t, await rw.read(client, A, 0, 16, { seq: high }), Status.OK, `jump to seq ${high}`);
  expectStatus(t, await rw.write(client, A, 0, Buffer.alloc(4096, 0xee), { seq: high - 4096n }), Status.REPLAYED, '4096 below the highest: too old');
  expectStatus(t, await rw.write(client, A, 0, Buffer.alloc(4096, 0xee), { seq: fresh }), Status.REPLAYED, 'an old seq far below the window');
  expectStatus(t, await rw.read(client, A, 0, 16, { seq: high - 4095n }), Status.OK, '4095 below the highest and never seen: accepted');
  expectStatus(t, await rw.read(client, A, 0, 16, { seq: high - 4095n }), Status.REPLAYED, 'and not twice');
  expectStatus(t, await rw.read(client, A, 0, 16, { seq: high - 1n }), Status.OK, 'out of order inside the window: accepted');
  expectStatus(t, await rw.read(client, A, 0, 16, { seq: high }), Status.REPLAYED, 'the highest itself replayed');
  rw.skipTo(high + 1n);
  await assertPatternIntact(t, 'after replays');
});

t.test('stale epochs: from the header, and after fencing through the control plane', async (t) => {
  // Fenced here: chunk C, written first, then at a new epoch behind the MDM's back. Epochs only
  // grow, so C stays fenced for the MDM's tokens; the other subtests use A and B.
  const C = untouched[untouched.length - 1]!;
  t.ok(untouched.length >= 2, 'a spare chunk of this SDS to fence', { untouched });
  const patternC = patternBytes(4, PATTERN_BYTES);
  expectStatus(t, await rw.write(client, C, 0, patternC), Status.OK, 'write chunk C');
  const epoch = rw.epochOf(C);
  const stale = await rw.write(client, C, 0, Buffer.alloc(4096, 0xee), { epoch: epoch + 5 });
  expectStatus(t, stale, Status.STALE_EPOCH, 'header epoch ≠ token epoch');
  t.equal(stale.aux, epoch, 'aux carries the SDS epoch of the chunk');
  const poolId = decodeToken(rw.token).fields.poolId;
  const auth = controlAuthorization(signingKey);
  const fence = await httpCall(`${sds.controlUrl}/chunks/epoch`, {
    authorization: auth,
    json: { chunks: [{ volume_id: rw.volumeId, chunk_index: C, pool_id: poolId, epoch: epoch + 1 }] },
  });
  t.equal(fence.status, 200, 'the control plane installs a new epoch for chunk C', { body: fence.text });
  for (const [what, reply] of [
    ['write', await rw.write(client, C, 0, Buffer.alloc(4096, 0xee))],
    ['FUA write', await rw.write(client, C, A1_OFFSET, Buffer.alloc(4096, 0xee), { fua: true })],
    ['trim', await rw.trim(client, C, 0, 8192)],
    ['read', await rw.read(client, C, 0, 4096)],
    ['header with the new epoch, token with the old', await rw.write(client, C, 0, Buffer.alloc(4096, 0xee), { epoch: epoch + 1 })],
  ] as const) {
    expectStatus(t, reply, Status.STALE_EPOCH, `${what} under the old epoch`);
    t.equal(reply.aux, epoch + 1, `${what}: aux is the SDS's new epoch`);
  }
  expectStatus(t, await rw.read(client, B, 0, 16), Status.OK, 'chunk B is not fenced');
  // Epochs only grow: installing the old epoch again is refused, and C stays fenced.
  const restore = await httpCall(`${sds.controlUrl}/chunks/epoch`, {
    authorization: auth,
    json: { chunks: [{ volume_id: rw.volumeId, chunk_index: C, pool_id: poolId, epoch }] },
  });
  t.equal(restore.status, 200, 'an older epoch install is answered', { body: restore.text });
  t.same(restore.body?.newer_held, [{ volume_id: rw.volumeId, chunk_index: C, epoch, held: epoch + 1 }], 'and names the newer epoch it kept');
  expectStatus(t, await rw.read(client, C, 0, 16), Status.STALE_EPOCH, 'the old epoch still reads nothing');
  // C's bytes, read with a token at its new epoch (signed as the MDM would): the fenced writes never landed.
  const base = decodeToken(rw.token).fields;
  const tokenId = randomBytes(16);
  const fields: TokenFields = { ...base, tokenId, chunks: base.chunks.map((chunk, i) => (base.chunkFirst + i === C ? { ...chunk, epoch: epoch + 1 } : chunk)) };
  const fresh = new TokenSession({
    ...rw.answer,
    token: signToken(fields, signingKey).toString('base64'),
    token_id: tokenId.toString('hex'),
    session_key: deriveSession(tokenId).toString('base64'),
    chunks: rw.answer.chunks.map((chunk) => (chunk.index === C ? { ...chunk, epoch: epoch + 1 } : chunk)),
  });
  expectStatus(t, await fresh.install(client), Status.OK, 'a token at the new epoch installs');
  const back = await fresh.read(client, C, 0, PATTERN_BYTES);
  t.ok(back.status === Status.OK && back.payload?.equals(patternC), 'chunk C holds its pattern: no fenced write landed');
  await assertPatternIntact(t, 'after stale epochs');
  // The later subtests compare against the state after this one.
  replicasBefore = await replicas();
  deviceHashBefore = await sha256File(record.devicePath);
});

t.test('bad MACs and a stolen token without its session key: BAD_MAC', async (t) => {
  const raw = await RawConnection.open(sds.dataPort);
  t.teardown(() => raw.destroy());
  const data = Buffer.alloc(4096, 0xee);
  const flipMac = rw.header({ opcode: Opcode.WRITE, chunkIndex: A, lengthBytes: 4096 }, { requestId: 11n, payloadBytes: 4096 });
  flipMac[64 + 7]! ^= 0x10;
  await raw.write(Buffer.concat([flipMac, data]));
  let reply = await raw.nextReply();
  t.equal(reply?.requestId, 11n, 'the reply echoes the request id');
  expectStatus(t, { status: reply?.status ?? -1, aux: 0, payload: undefined }, Status.BAD_MAC, 'one MAC bit flipped');

  const fieldChanged = rw.header({ opcode: Opcode.WRITE, chunkIndex: A, offsetBytes: 0, lengthBytes: 4096 }, { requestId: 12n, payloadBytes: 4096 });
  fieldChanged.writeUInt32BE(8192, 52); // move the write after signing
  await raw.write(Buffer.concat([fieldChanged, data]));
  reply = await raw.nextReply();
  expectStatus(t, { status: reply?.status ?? -1, aux: 0, payload: undefined }, Status.BAD_MAC, 'offset changed after the MAC was computed');

  const zeroMac = rw.header({ opcode: Opcode.TRIM, chunkIndex: A, lengthBytes: 8192 }, { requestId: 13n });
  zeroMac.fill(0, 64, 80);
  await raw.write(zeroMac);
  reply = await raw.nextReply();
  expectStatus(t, { status: reply?.status ?? -1, aux: 0, payload: undefined }, Status.BAD_MAC, 'an all-zero MAC');
  t.notOk(raw.isClosed, 'a bad MAC gets a reply, not a closed connection');

  const other = await TokenSession.authorize(mdm.admin, 'va', layout.sdc, ['read', 'write'], 0, CHUNKS);
  expectStatus(t, await rw.write(client, A, 0, data, { macKey: other.sessionKey }), Status.BAD_MAC, "another token's session key");
  expectStatus(t, await rw.write(client, A, 0, data, { macKey: signingKey }), Status.BAD_MAC, 'the signing key itself is not the session key');

  // A thief who saw the token on the wire can install it, but has no session key.
  const thief = newClient();
  const stolen = new TokenSession({ ...other.answer, session_key: randomBytes(32).toString('base64') });
  expectStatus(t, await stolen.install(thief), Status.OK, 'the stolen token installs (it is genuine)');
  expectStatus(t, await stolen.write(thief, A, 0, data), Status.BAD_MAC, 'stolen token: write with a guessed key');
  expectStatus(t, await stolen.write(thief, B, 0, data, { fua: true }), Status.BAD_MAC, 'stolen token: FUA write');
  expectStatus(t, await stolen.trim(thief, A, 0, PATTERN_BYTES), Status.BAD_MAC, 'stolen token: trim');
  expectStatus(t, await stolen.read(thief, A, 0, 4096), Status.BAD_MAC, 'stolen token: read');
  expectStatus(t, await stolen.flush(thief), Status.BAD_MAC, 'stolen token: flush');
  const legit = await other.read(client, A, 0, PATTERN_BYTES);
  expectStatus(t, legit, Status.OK, 'the rightful holder of that token reads');
  t.ok(legit.payload?.equals(patternA0), 'and sees the pattern');
  await assertPatternIntact(t, 'after bad MACs');
});

t.test('JSON frames get the same checks', async (t) => {
  const raw = await RawConnection.open(sds.dataPort);
  t.teardown(() => raw.destroy());
  const send = async (frame: Record<string, unknown>): Promise<any> => {
    await raw.write(`${JSON.stringify(frame)}\n`);
    return raw.nextJson();
  };
  const count = (code: string): void => {
    expectedRejections.set(code, (expectedRejections.get(code) ?? 0) + 1);
  };
  const good = await send(rw.jsonFrame('read', A, 0, PATTERN_BYTES, { id: 1 }));
  t.equal(good.ok, true, 'a valid JSON read');
  t.equal(good.id, 1);
  t.ok(Buffer.from(good.data_b64 ?? '', 'base64').equals(patternA0), 'returns the pattern');

  const badMac = rw.jsonFrame('write', A, 0, Buffer.alloc(4096, 0xee), { id: 2 });
  badMac.mac = randomBytes(16).toString('hex');
  let answer = await send(badMac);
  t.same([answer.ok, answer.id, answer.error?.code], [false, 2, 'BAD_MAC'], 'JSON write with a wrong mac');
  count('BAD_MAC');

  answer = await send(rw.jsonFrame('write', A, 0, Buffer.alloc(4096, 0xee), { id: 3, epoch: 42 }));
  t.same([answer.ok, answer.error?.code, answer.error?.epoch], [false, 'STALE_EPOCH', rw.epochOf(A)], 'JSON write with a stale epoch names the SDS epoch');
  count('STALE_EPOCH');

  const replay = rw.jsonFrame('trim', A, 0, 8192, { id: 4, seq: 7n });
  answer = await send(replay);
  t.same([answer.ok, answer.error?.code], [false, 'REPLAYED'], 'JSON trim replaying an old seq');
  count('REPLAYED');

  answer = await send(rw.jsonFrame('write', foreignChunk(), 0, Buffer.alloc(4096, 0xee), { id: 5 }));
  t.same([answer.ok, answer.error?.code], [false, 'NOT_A_TARGET'], 'JSON write to a foreign chunk');
  count('NOT_A_TARGET');

  answer = await send({ action: 'write', id: 6, token_id: randomBytes(16).toString('hex'), seq: 1, mac: randomBytes(16).toString('hex'), volume_id: rw.volumeId, chunk_index: A, epoch: 1, offset_bytes: 0, data_b64: Buffer.alloc(4096, 0xee).toString('base64') });
  t.same([answer.ok, answer.error?.code], [false, 'TOKEN_UNKNOWN'], 'JSON write under an unknown token');
  count('TOKEN_UNKNOWN');

  answer = await send({ action: 'token', token: signToken(decodeToken(rw.token).fields, randomBytes(32)).toString('base64') });
  t.same([answer.ok, answer.error?.code], [false, 'TOKEN_BAD_SIGNATURE'], 'JSON token forged');
  count('TOKEN_BAD_SIGNATURE');
  await assertPatternIntact(t, 'after refused JSON frames');
});

function foreignChunk(): number {
  return notMine[0]!;
}

t.test('the control plane needs the MDM credential; without it nothing changes', async (t) => {
  const right = controlAuthorization(signingKey);
  const before = await httpCall(`${sds.controlUrl}/chunks`, { authorization: right });
  t.equal(before.status, 200, 'GET /chunks with the control credential');
  const devicesBefore = (await httpCall(`${sds.mgmtUrl}/devices`)).body;
  const poolId = decodeToken(rw.token).fields.poolId;
  const wrongs: [string, string | undefined][] = [
    ['no Authorization header', undefined],
    ['a credential derived from another key', controlAuthorization(randomBytes(32))],
    ['the credential without the Bearer scheme', right.slice('Bearer '.length)],
    ['a lower-case scheme', `bearer ${right.slice('Bearer '.length)}`],
    ['the credential with a suffix', `${right}A`],
    ['the credential truncated', right.slice(0, -1)],
    ['the node credential of the SDS', `Bearer ${node.credential}`],
    ['the admin token', `Bearer ${mdm.adminToken}`],
  ];
  const orders: [string, string, unknown][] = [
    ['GET', '/chunks', undefined],
    ['POST', '/chunks/delete', { chunks: [{ volume_id: rw.volumeId, chunk_index: A }, { volume_id: rw.volumeId, chunk_index: B }] }],
    ['POST', '/chunks/epoch', { chunks: [{ volume_id: rw.volumeId, chunk_index: A, pool_id: poolId, epoch: 77 }] }],
    ['POST', '/chunks/assign', { chunks: [{ volume_id: rw.volumeId, chunk_index: untouched[0], pool_id: poolId, epoch: 1 }] }],
    [
      'POST',
      '/chunks/copy',
      { volume_id: rw.volumeId, chunk_index: A, pool_id: poolId, epoch: 1, chunk_size_bytes: MiB, source: { host: '127.0.0.1', data_port: processes[1]!.dataPort } },
    ],
    [
      'POST',
      '/chunks/rebuild',
      { chunks: [{ volume_id: rw.volumeId, chunk_index: A, pool_id: poolId, epoch: 9, source: { host: '127.0.0.1', data_port: processes[1]!.dataPort } }] },
    ],
    ['POST', '/devices/add', { mdm_device_id: 999, path: `${dir}/intruder.img`, pool_id: poolId, capacity_bytes: 64 * MiB, slot_bytes: MiB }],
  ];
  for (const [what, authorization] of wrongs) {
    for (const [method, path, body] of orders) {
      const answer = await httpCall(`${sds.controlUrl}${path}`, { method, authorization, ...(body === undefined ? {} : { json: body }) });
      t.equal(answer.status, 401, `${what}: ${method} ${path} → 401`);
      t.equal(answer.body?.error?.code, 'PFLEX_ERR_UNAUTHORIZED', `${what}: ${method} ${path} error code`);
    }
  }
  const after = await httpCall(`${sds.controlUrl}/chunks`, { authorization: right });
  t.same(after.body, before.body, 'chunk records, epochs and intents unchanged');
  t.same((await httpCall(`${sds.mgmtUrl}/devices`)).body, devicesBefore, 'devices unchanged');
  await assertPatternIntact(t, 'after refused control orders');
});

t.test('the device file is byte-for-byte unchanged; refusals are counted per reason', async (t) => {
  t.equal(await sha256File(record.devicePath), deviceHashBefore, 'sha256 of the whole device file is unchanged by every refused request');
  t.same(await replicas(), replicasBefore, 'chunk records as after the valid writes');
  const stats = await sds.stats();
  const delta: Record<string, number> = {};
  for (const [reason, count] of Object.entries(stats.rejections as Record<string, number>)) {
    const d = count - (rejectionsAtStart[reason] ?? 0);
    if (d !== 0) delta[reason] = d;
  }
  t.same(delta, Object.fromEntries([...expectedRejections].sort()), '/stats rejections: exactly the refusals made here, by reason');
  for (const reason of [
    'TOKEN_UNKNOWN',
    'TOKEN_MALFORMED',
    'TOKEN_BAD_SIGNATURE',
    'TOKEN_EXPIRED',
    'OP_NOT_GRANTED',
    'WRONG_VOLUME',
    'CHUNK_OUT_OF_RANGE',
    'NOT_A_TARGET',
    'STALE_EPOCH',
    'REPLAYED',
    'BAD_MAC',
  ]) {
    t.ok((expectedRejections.get(reason) ?? 0) > 0, `this file exercised ${reason}`);
  }
  const metrics = (await httpCall(`${sds.mgmtUrl}/metrics`)).text;
  for (const [reason, count] of Object.entries(stats.rejections as Record<string, number>)) {
    t.match(metrics, new RegExp(`^pflex_sds_rejections_total\\{reason="${reason}"\\} ${count}$`, 'm'), `/metrics pflex_sds_rejections_total{reason="${reason}"} ${count}`);
  }
  // The other SDS saw none of this.
  for (const p of processes.slice(1)) t.same((await p.stats()).rejections, {}, `${p.nodeId} counted no refusals`);
  t.ok(sds.alive(), 'the SDS process is alive');
});
