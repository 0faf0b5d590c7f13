/**
 * The SDS data port under malformed input (PROTOCOL §5, DESIGN §8 "no input can crash a process"),
 * against a real `pflex sds` process over real sockets: garbage, wrong first bytes, wrong magic,
 * unknown opcodes, oversized payloads, truncated frames, JSON lines that are huge, unterminated,
 * invalid, of the wrong shape or types, base64 garbage, and 500 seeded random frames mixing valid
 * headers with random fields. Afterwards the process is alive and healthy, valid sessions read and
 * write correctly, and data written before is intact (through the protocol and on the device).
 * Also: 200 concurrent connections, the connection limit, and PEER_READ bounds.
 */
import t from 'tap';
import { DEVICE_HEADER_BYTES } from '../../src/sds/device-superblock.js';
import Database from 'better-sqlite3';
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { startSdsBed } from '../helpers/sds-bed.js';
import {
  KiB,
  MiB,
  patternBytes,
  pidAlive,
  Prng,
  RawConnection,
  readSdsNodeFile,
  SdsDataClient,
  setupSdsCluster,
  sleep,
  startSdsProcess,
  TokenSession,
} from '../helpers/sds.js';
import {
  derivePeerKey,
  encodeRequestHeader,
  FRAME_PAYLOAD_BYTES_MAX,
  JSON_FRAME_BYTES_MAX,
  Opcode,
  REQUEST_MAGIC,
  signRequestHeader,
  Status,
  STATUS_NAMES,
  statusName,
} from '../../src/common/sds-protocol.js';

const SEED = Number(process.env.PFLEX_FUZZ_SEED ?? 20261123);
t.comment(`seed ${SEED} (set PFLEX_FUZZ_SEED to replay)`);

const { dir, mdm, processes, clients } = await startSdsBed(t, 'pflex-sds-fuzz-');
const raws: RawConnection[] = [];
t.teardown(() => {
  for (const raw of raws) raw.destroy();
});

const layout = await setupSdsCluster(mdm.admin, {
  baseDir: dir,
  sdsCount: 2,
  chunkSizeBytes: MiB,
  volumes: [
    { name: 'data', sizeBytes: 4 * MiB },
    { name: 'fuzz', sizeBytes: 4 * MiB },
  ],
});
processes.push(
  ...(await Promise.all(
    layout.sds.map((r) => startSdsProcess({ nodeId: r.name, mdmUrl: mdm.url, joinToken: layout.joinToken, dataDir: r.dataDir, ports: r.ports })),
  )),
);
const sds = processes[0]!;
const record = layout.sds[0]!;
const node = readSdsNodeFile(sds.dataDir);

function newClient(): SdsDataClient {
  const client = new SdsDataClient('127.0.0.1', sds.dataPort, 15_000);
  clients.push(client);
  return client;
}
async function raw(): Promise<RawConnection> {
  const connection = await RawConnection.open(sds.dataPort);
  raws.push(connection);
  return connection;
}

// Known data on volume "data" (chunks 0 and 1), written before any fuzzing.
const dataSession = await TokenSession.authorize(mdm.admin, 'data', layout.sdc, ['read', 'write', 'flush'], 0, 4);
const client = newClient();
const known = [
  { chunk: 0, offset: 0, bytes: patternBytes(100, 128 * KiB) },
  { chunk: 0, offset: 700 * KiB + 123, bytes: patternBytes(101, 50_001) },
  { chunk: 1, offset: 4096, bytes: patternBytes(102, 256 * KiB) },
];
// The fuzz volume: random signed frames may really write here, never to "data".
const fuzzSession = await TokenSession.authorize(mdm.admin, 'fuzz', layout.sdc, ['read', 'write', 'trim', 'flush'], 0, 4);

/** Where chunk `index` of volume "data" lives on the device, from sds_local.db. */
function slotOf(chunkIndex: number): number {
  const db = new Database(join(sds.dataDir, 'sds_local.db'), { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare('SELECT slot_index FROM chunks WHERE volume_id = ? AND chunk_index = ?').get(dataSession.volumeId, chunkIndex) as
      | { slot_index: number | null }
      | undefined;
    if (row?.slot_index === null || row?.slot_index === undefined) throw new Error(`chunk ${chunkIndex} has no slot`);
    return row.slot_index;
  } finally {
    db.close();
  }
}

/** The known bytes as they sit in the device file, read with plain pread (not through the SDS). */
function knownOnDevice(): boolean {
  const fd = openSync(record.devicePath, 'r');
  try {
    return known.every((k) => {
      const out = Buffer.alloc(k.bytes.length);
      readSync(fd, out, 0, out.length, DEVICE_HEADER_BYTES + slotOf(k.chunk) * layout.chunkSizeBytes + k.offset);
      return out.equals(k.bytes);
    });
  } finally {
    closeSync(fd);
  }
}

async function knownThroughProtocol(c: SdsDataClient): Promise<boolean> {
  for (const k of known) {
    const reply = await dataSession.read(c, k.chunk, k.offset, k.bytes.length);
    if (reply.status !== Status.OK || !reply.payload?.equals(k.bytes)) return false;
  }
  return true;
}

t.test('setup: known data on volume "data", the fuzz token installed', async (t) => {
  t.equal((await dataSession.install(client)).status, Status.OK, 'install the data token');
  for (const k of known) t.equal(statusName((await dataSession.write(client, k.chunk, k.offset, k.bytes)).status), 'OK', `write known data to chunk ${k.chunk} @${k.offset}`);
  t.equal(statusName((await dataSession.flush(client)).status), 'OK', 'flush');
  t.equal((await fuzzSession.install(client)).status, Status.OK, 'install the fuzz token');
  t.ok(await knownThroughProtocol(client), 'the known data reads back');
  t.ok(knownOnDevice(), 'the known data is in the device file at the slots sds_local.db names');
});

const BINARY_OPCODES = Object.values(Opcode) as number[];

function header(fields: Partial<Parameters<typeof encodeRequestHeader>[0]> & { opcode: number }): Buffer {
  return encodeRequestHeader({
    flags: 0,
    requestId: 1n,
    tokenId: Buffer.alloc(16),
    seq: 1n,
    volumeId: 0,
    chunkIndex: 0,
    epoch: 0,
    offsetBytes: 0,
    lengthBytes: 0,
    payloadBytes: 0,
    ...fields,
  });
}

t.test('bytes that are no frame close the connection without a reply', async (t) => {
  const prng = new Prng(SEED);
  for (let i = 0; i < 20; i += 1) {
    const garbage = prng.bytes(prng.int(1, 64 * KiB));
    if (garbage[0] === 0x50 || garbage[0] === 0x7b) garbage[0] = 0x00;
    const c = await raw();
    await c.write(garbage);
    t.ok(await c.waitClosed(3000), `garbage #${i} (${garbage.length} bytes, first 0x${garbage[0]!.toString(16)}): closed`);
    t.equal(c.buffered, 0, `garbage #${i}: no reply bytes`);
  }
  for (const [what, bytes] of [
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    ['a zero byte', Buffer.from([0])],
    ['a JSON array first', Buffer.from('[{"action":"ping"}]\n')],
    ['a reply magic', Buffer.from('QFRP')],
  ] as const) {
    const c = await raw();
    await c.write(bytes);
    t.ok(await c.waitClosed(3000), `${what}: closed`);
    t.equal(c.buffered, 0, `${what}: no reply bytes`);
  }
});

t.test('binary headers with a wrong magic, an unknown opcode or a payload over 8 MiB close the connection', async (t) => {
  const cases: [string, Buffer][] = [];
  const wrongMagic = header({ opcode: Opcode.PING });
  wrongMagic.writeUInt32BE(REQUEST_MAGIC + 1, 0);
  cases.push(['wrong magic PFRR', wrongMagic]);
  const replyMagic = header({ opcode: Opcode.PING });
  replyMagic.write('PFRP', 0, 'latin1');
  cases.push(['reply magic PFRP', replyMagic]);
  for (const opcode of [0x00, 0x06, 0x0f, 0x11, 0x21, 0x32, 0x7f, 0xff]) cases.push([`unknown opcode 0x${opcode.toString(16)}`, header({ opcode })]);
  cases.push(['payload_bytes 8 MiB + 1', header({ opcode: Opcode.WRITE, payloadBytes: FRAME_PAYLOAD_BYTES_MAX + 1, lengthBytes: FRAME_PAYLOAD_BYTES_MAX + 1 })]);
  cases.push(['payload_bytes 2^32-1', header({ opcode: Opcode.TOKEN, payloadBytes: 0xffffffff })]);
  // A valid PING first (answered), so the connection is binary; then the bad header.
  for (const [what, bad] of cases) {
    const c = await raw();
    await c.write(header({ opcode: Opcode.PING, requestId: 5n }));
    const ping = await c.nextReply(3000);
    t.same([ping?.status, ping?.requestId], [Status.OK, 5n], `${what}: a PING first is answered`);
    await c.write(bad);
    t.ok(await c.waitClosed(3000), `${what}: then the connection is closed`);
    t.equal(c.buffered, 0, `${what}: nothing answers the bad header`);
  }
});

t.test('truncated frames: the SDS waits, and a client closing mid-frame harms nothing', async (t) => {
  const c1 = await raw();
  await c1.write(header({ opcode: Opcode.PING }).subarray(0, 40));
  t.equal(await c1.nextReply(300), undefined, 'half a header: no reply yet');
  t.notOk(c1.isClosed, 'and the connection waits');
  c1.destroy();

  const c2 = await raw();
  await c2.write(Buffer.concat([header({ opcode: Opcode.WRITE, payloadBytes: 64 * KiB, lengthBytes: 64 * KiB, volumeId: dataSession.volumeId }), Buffer.alloc(100, 0xab)]));
  t.equal(await c2.nextReply(300), undefined, 'a header whose payload never arrives: no reply');
  c2.socket.end();
  await c2.closed;

  const c3 = await raw();
  await c3.write(Buffer.from('P'));
  await sleep(50);
  c3.destroy();

  const c4 = await raw();
  await c4.write('{"action":"ping"');
  t.equal(await c4.nextLine(300), undefined, 'a JSON frame without its newline: no reply');
  c4.destroy();
  const ping = await newClient().request({ opcode: Opcode.PING, flags: 0, tokenId: Buffer.alloc(16), seq: 0n, volumeId: 0, chunkIndex: 0, epoch: 0, offsetBytes: 0, lengthBytes: 0 }, undefined, undefined);
  t.equal(ping.status, Status.OK, 'the SDS still answers PING');
});

t.test('huge JSON lines: a million bytes without a newline waits; over 12 MiB is FRAME_TOO_LARGE then closed', async (t) => {
  const c1 = await raw();
  await c1.write(Buffer.concat([Buffer.from('{"action":"ping","pad":"'), Buffer.alloc(1_000_000, 0x61)]));
  t.equal(await c1.nextLine(500), undefined, 'no reply to an unterminated million-byte line');
  t.notOk(c1.isClosed, 'the connection is still open (under the limit)');
  await c1.write('"}\n');
  const answer = JSON.parse((await c1.nextLine(5000)) ?? 'null');
  t.same(answer, { ok: true, id: null }, 'once terminated, the million-byte frame is an ordinary ping');
  await c1.write('x\n');
  t.equal(JSON.parse((await c1.nextLine(5000)) ?? 'null')?.error?.code, 'BAD_FRAME', 'then a non-JSON line is BAD_FRAME');
  c1.destroy();

  const c2 = await raw();
  const piece = Buffer.alloc(MiB, 0x61);
  await c2.write(Buffer.from('{"action":"ping","pad":"'));
  for (let written = 0; written <= JSON_FRAME_BYTES_MAX && !c2.isClosed; written += piece.length) await c2.write(piece);
  const line = await c2.nextLine(5000);
  t.equal(JSON.parse(line ?? 'null')?.error?.code, 'FRAME_TOO_LARGE', 'over 12 MiB without a newline: FRAME_TOO_LARGE');
  t.ok(await c2.waitClosed(5000), 'then the SDS closes the connection');
});

t.test('bad JSON frames get BAD_FRAME (or a refusal) and the connection goes on', async (t) => {
  const c = await raw();
  const ask = async (line: string): Promise<any> => {
    await c.write(`${line}\n`);
    const reply = await c.nextLine(5000);
    return reply === undefined ? undefined : JSON.parse(reply);
  };
  t.same(await ask('{"action":"ping","id":"p0"}'), { ok: true, id: 'p0' }, 'a ping makes this a JSON connection');
  const tokenHex = fuzzSession.tokenId.toString('hex');
  const mac = '00'.repeat(16);
  const badFrames: [string, string][] = [
    ['invalid JSON', '{"action":'],
    ['not JSON at all', 'hello'],
    ['a JSON array', '[1,2,3]'],
    ['an array of frames', '[{"action":"ping"}]'],
    ['a string', '"ping"'],
    ['a number', '42'],
    ['null', 'null'],
    ['no action', '{"id":1}'],
    ['an unknown action', '{"action":"format_disk","id":1}'],
    ['action as a number', '{"action":1}'],
    ['action toString (a prototype key)', `{"action":"toString","token_id":"${tokenHex}"}`],
    ['action __proto__', `{"action":"__proto__","token_id":"${tokenHex}"}`],
    ['action constructor', `{"action":"constructor","token_id":"${tokenHex}"}`],
    ['peer_read is not a JSON action', `{"action":"peer_read","token_id":"${tokenHex}","volume_id":1,"length_bytes":4096}`],
    ['token_id not hex', `{"action":"read","token_id":"zz${tokenHex.slice(2)}","seq":1,"mac":"${mac}","volume_id":1,"length_bytes":1}`],
    ['token_id too short', `{"action":"read","token_id":"abcd","seq":1,"mac":"${mac}","volume_id":1,"length_bytes":1}`],
    ['token_id a number', `{"action":"read","token_id":12,"seq":1,"volume_id":1,"length_bytes":1}`],
    ['seq negative', `{"action":"read","token_id":"${tokenHex}","seq":-1,"volume_id":1,"length_bytes":1}`],
    ['seq fractional', `{"action":"read","token_id":"${tokenHex}","seq":1.5,"volume_id":1,"length_bytes":1}`],
    ['seq 1e300', `{"action":"read","token_id":"${tokenHex}","seq":1e300,"volume_id":1,"length_bytes":1}`],
    ['seq a string', `{"action":"read","token_id":"${tokenHex}","seq":"1","volume_id":1,"length_bytes":1}`],
    ['volume_id a string', `{"action":"read","token_id":"${tokenHex}","seq":1,"volume_id":"1","length_bytes":1}`],
    ['volume_id missing', `{"action":"read","token_id":"${tokenHex}","seq":1,"length_bytes":1}`],
    ['volume_id 2^32', `{"action":"read","token_id":"${tokenHex}","seq":1,"volume_id":4294967296,"length_bytes":1}`],
    ['chunk_index negative', `{"action":"read","token_id":"${tokenHex}","seq":1,"volume_id":1,"chunk_index":-1,"length_bytes":1}`],
    ['offset_bytes an object', `{"action":"read","token_id":"${tokenHex}","seq":1,"volume_id":1,"offset_bytes":{},"length_bytes":1}`],
    ['length_bytes missing on read', `{"action":"read","token_id":"${tokenHex}","seq":1,"volume_id":1}`],
    ['length_bytes NaN-ish', `{"action":"trim","token_id":"${tokenHex}","seq":1,"volume_id":1,"length_bytes":"NaN"}`],
    ['data_b64 a number', `{"action":"write","token_id":"${tokenHex}","seq":1,"volume_id":1,"data_b64":12345}`],
    ['data_b64 missing', `{"action":"write","token_id":"${tokenHex}","seq":1,"volume_id":1}`],
    ['token not a string', '{"action":"token","token":{"a":1}}'],
  ];
  for (const [what, line] of badFrames) {
    const answer = await ask(line);
    t.equal(answer?.ok, false, `${what}: ok:false`);
    t.equal(answer?.error?.code, 'BAD_FRAME', `${what}: BAD_FRAME`, { answer });
    t.type(answer?.error?.message, 'string', `${what}: a message`);
    if (/prototype key|__proto__|constructor/.test(what)) {
      // Object.prototype's keys are no actions: the refusal must say so, not fail deeper.
      t.match(answer?.error?.message, /action/, `${what}: the message is about the action`, { answer });
    }
  }
  const refusals: [string, string, string][] = [
    // Decodes to 10 bytes: too short to hold a token id.
    ['token base64 garbage', '{"action":"token","token":"!!!not base64 at all***"}', 'BAD_FRAME'],
    ['token of random base64', `{"action":"token","token":"${Buffer.from(new Prng(SEED + 1).bytes(300)).toString('base64')}"}`, 'TOKEN_MALFORMED'],
    ['write with base64 garbage and no mac', `{"action":"write","id":9,"token_id":"${tokenHex}","seq":1,"volume_id":${fuzzSession.volumeId},"data_b64":"@@@@****"}`, 'BAD_MAC'],
    ['a mac that is not hex (treated as absent)', `{"action":"read","token_id":"${tokenHex}","seq":1,"mac":"xyz","volume_id":${fuzzSession.volumeId},"length_bytes":1}`, 'BAD_MAC'],
  ];
  for (const [what, line, code] of refusals) {
    const answer = await ask(line);
    t.same([answer?.ok, answer?.error?.code], [false, code], what);
  }
  t.same(await ask('{"action":"ping","id":7}'), { ok: true, id: 7 }, 'after all that the same connection still answers');
  t.notOk(c.isClosed, 'and was never closed');
});

t.test('500 seeded random frames mixing valid headers with random fields: one reply each, no INTERNAL', async (t) => {
  const prng = new Prng(SEED + 2);
  const peerKeyWrong = prng.bytes(32);
  const CONNECTIONS = 5;
  const PER_CONNECTION = 100;
  const known = new Set(Object.keys(STATUS_NAMES).map(Number));
  const seen = new Map<string, number>();
  for (let ci = 0; ci < CONNECTIONS; ci += 1) {
    const c = await raw();
    const frames: Buffer[] = [];
    const ids: bigint[] = [];
    for (let i = 0; i < PER_CONNECTION; i += 1) {
      const opcode = prng.pick(BINARY_OPCODES);
      const requestId = BigInt(ci * 1000 + i + 1);
      ids.push(requestId);
      const signed = prng.next() < 0.5;
      const chunkIndex = prng.next() < 0.7 ? prng.int(0, 3) : prng.int(0, 0xffffffff);
      let lengthBytes = prng.pick([0, 1, 511, 4096, 4097, 65_536, prng.int(0, 2 * MiB), prng.int(0, 0xffffffff)]);
      let payloadBytes = 0;
      if (opcode === Opcode.WRITE) {
        lengthBytes = Math.min(lengthBytes, 256 * KiB);
        payloadBytes = prng.next() < 0.9 ? lengthBytes : prng.int(0, 256 * KiB);
      } else if (opcode === Opcode.TOKEN) {
        payloadBytes = prng.int(0, 30_000);
      } else if (prng.next() < 0.1) {
        payloadBytes = prng.int(1, 8192); // a payload where none belongs
      }
      const fields = {
        opcode,
        flags: prng.int(0, 255),
        requestId,
        tokenId: signed || prng.next() < 0.3 ? fuzzSession.tokenId : prng.bytes(16),
        seq: signed ? fuzzSession.takeSeq() : BigInt(prng.int(0, 2 ** 31)),
        volumeId: prng.next() < 0.8 ? fuzzSession.volumeId : prng.int(0, 0xffffffff),
        chunkIndex,
        epoch: prng.next() < 0.7 ? fuzzSession.epochOf(chunkIndex) : prng.int(0, 0xffffffff),
        offsetBytes: prng.next() < 0.7 ? prng.int(0, MiB) : prng.int(0, 0xffffffff),
        lengthBytes,
        payloadBytes,
      };
      const bytes = encodeRequestHeader(fields);
      if (opcode === Opcode.PEER_READ) signRequestHeader(peerKeyWrong, bytes);
      else if (signed) signRequestHeader(fuzzSession.sessionKey, bytes);
      else prng.bytes(16).copy(bytes, 64);
      frames.push(bytes, prng.bytes(payloadBytes));
    }
    await c.write(Buffer.concat(frames));
    const got = new Set<bigint>();
    let internal = 0;
    let unknown = 0;
    for (let i = 0; i < PER_CONNECTION; i += 1) {
      const reply = await c.nextReply(10_000);
      if (reply === undefined) break;
      got.add(reply.requestId);
      if (reply.status === Status.INTERNAL) internal += 1;
      if (!known.has(reply.status)) unknown += 1;
      seen.set(statusName(reply.status), (seen.get(statusName(reply.status)) ?? 0) + 1);
    }
    t.equal(got.size, PER_CONNECTION, `connection ${ci}: one reply per frame`);
    t.same([...got].sort((x, y) => (x < y ? -1 : 1)), ids, `connection ${ci}: every request id echoed once`);
    t.equal(internal, 0, `connection ${ci}: no INTERNAL replies`);
    t.equal(unknown, 0, `connection ${ci}: every status is a documented one`);
    t.notOk(c.isClosed, `connection ${ci}: still open`);
    c.destroy();
  }
  t.comment(`statuses seen: ${JSON.stringify(Object.fromEntries(seen))}`);
  t.ok((seen.get('OK') ?? 0) > 0 && (seen.get('BAD_MAC') ?? 0) > 0 && (seen.get('TOKEN_UNKNOWN') ?? 0) > 0, 'the mix reached the IO path and the refusals');
});

t.test('after the fuzzing: alive, healthy, data intact, valid sessions work', async (t) => {
  t.ok(pidAlive(sds.pid), `pid ${sds.pid} still exists`);
  t.ok(sds.alive(), 'the child has not exited');
  const health = await sds.health();
  t.same([health?.status, health?.registered], ['ok', true], '/health ok and registered');
  const c = newClient();
  t.ok(await knownThroughProtocol(c), 'the data written before reads back through a valid session');
  t.ok(knownOnDevice(), 'and sits unchanged in the device file');
  const fresh = patternBytes(200, 96 * KiB + 5);
  t.equal(statusName((await dataSession.write(c, 2, 33, fresh, { fua: true })).status), 'OK', 'a new FUA write succeeds');
  const back = await dataSession.read(c, 2, 33, fresh.length);
  t.ok(back.status === Status.OK && back.payload?.equals(fresh), 'and reads back');
  const stderr = sds.stderr();
  t.notMatch(stderr, /uncaught|unhandled|TypeError|RangeError/i, 'nothing uncaught on stderr');
});

t.test('200 concurrent connections, each doing a few valid requests', async (t) => {
  const N = 200;
  const session = await TokenSession.authorize(mdm.admin, 'fuzz', layout.sdc, ['read', 'write'], 3, 1);
  const installer = newClient();
  t.equal((await session.install(installer)).status, Status.OK, 'install');
  const results = await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const c = newClient();
      const data = patternBytes(1000 + i, 4096);
      const ping = await c.request({ opcode: Opcode.PING, flags: 0, tokenId: Buffer.alloc(16), seq: 0n, volumeId: 0, chunkIndex: 0, epoch: 0, offsetBytes: 0, lengthBytes: 0 }, undefined, undefined);
      const write = await session.write(c, 3, i * 4096, data);
      const read = await session.read(c, 3, i * 4096, 4096);
      const unaligned = await session.write(c, 3, N * 4096 + i * 3, Buffer.from([i & 0xff, 0x5a, i >> 8]));
      c.close();
      return ping.status === Status.OK && write.status === Status.OK && read.status === Status.OK && read.payload!.equals(data) && unaligned.status === Status.OK;
    }),
  );
  t.equal(results.filter(Boolean).length, N, 'every connection got OK for ping, write, read-back and an unaligned write');
  const c = newClient();
  const all = await session.read(c, 3, 0, N * 4096 + N * 3);
  t.equal(all.status, Status.OK);
  let intact = 0;
  for (let i = 0; i < N; i += 1) {
    const block = all.payload!.subarray(i * 4096, (i + 1) * 4096);
    const tail = all.payload!.subarray(N * 4096 + i * 3, N * 4096 + i * 3 + 3);
    if (block.equals(patternBytes(1000 + i, 4096)) && tail.equals(Buffer.from([i & 0xff, 0x5a, i >> 8]))) intact += 1;
  }
  t.equal(intact, N, 'all 200 blocks and 200 neighbouring 3-byte writes (sharing 4 KiB blocks) are intact');
});

t.test('the connection limit: beyond 1024 connections new ones are closed, and the SDS recovers', async (t) => {
  const EXTRA = 16;
  const open: RawConnection[] = [];
  const started = Date.now();
  for (let i = 0; i < 1024 + EXTRA; i += 1) {
    try {
      open.push(await RawConnection.open(sds.dataPort));
    } catch {
      // a refused connect counts as closed
    }
  }
  t.comment(`opened ${open.length} connections in ${Date.now() - started} ms`);
  await Promise.all(open.map((c) => c.write(encodeRequestHeader({ opcode: Opcode.PING, flags: 0, requestId: 1n, tokenId: Buffer.alloc(16), seq: 0n, volumeId: 0, chunkIndex: 0, epoch: 0, offsetBytes: 0, lengthBytes: 0, payloadBytes: 0 }))));
  const answered = (await Promise.all(open.map(async (c) => (await c.nextReply(5000))?.status === Status.OK))).filter(Boolean).length;
  t.ok(answered <= 1024, `at most 1024 connections are served (${answered})`);
  t.ok(answered >= 1024 - clients.filter((c) => c.connected).length - 8, `about 1024 are served (${answered})`);
  for (const c of open) c.destroy();
  await sleep(300);
  const c = newClient();
  const reply = await dataSession.read(c, 0, 0, known[0]!.bytes.length);
  t.ok(reply.status === Status.OK && reply.payload?.equals(known[0]!.bytes), 'after they close, a new connection is served');
  t.ok(sds.alive(), 'still alive');
});

t.test('PEER_READ stays inside the chunk it names', async (t) => {
  // Only SDS hold the peer key; the peer reading for a rebuild must still get the chunk it asked
  // for, never the bytes of the next slot (another chunk, maybe another volume).
  const peerKey = derivePeerKey(node.signingKey);
  const c = newClient();
  const peerRead = (chunkIndex: number, offsetBytes: number, lengthBytes: number) =>
    c.request(
      { opcode: Opcode.PEER_READ, flags: 0, tokenId: Buffer.alloc(16), seq: 0n, volumeId: dataSession.volumeId, chunkIndex, epoch: dataSession.epochOf(chunkIndex), offsetBytes, lengthBytes },
      undefined,
      peerKey,
    );
  const inside = await peerRead(0, 0, known[0]!.bytes.length);
  t.ok(inside.status === Status.OK && inside.payload?.equals(known[0]!.bytes), 'a PEER_READ inside the chunk returns its bytes');
  const slot0 = slotOf(0);
  const slot1 = slotOf(1);
  t.comment(`chunk 0 in slot ${slot0}, chunk 1 in slot ${slot1}`);
  if (slot1 === slot0 + 1) {
    // Chunk 1 sits in the next slot: 4096 bytes past chunk 0's end are chunk 1's bytes at 4096.
    const leak = await peerRead(0, layout.chunkSizeBytes + 4096, 4096);
    t.notOk(leak.status === Status.OK && leak.payload?.equals(known[2]!.bytes.subarray(0, 4096)), "PEER_READ of chunk 0 past its end never returns chunk 1's bytes", {
      got: statusName(leak.status),
    });
  }
  for (const [what, offset, length] of [
    ['starting at the chunk end', layout.chunkSizeBytes, 4096],
    ['straddling the chunk end', layout.chunkSizeBytes - 4096, 8192],
    ['far beyond the chunk', 0xfff00000, 4096],
  ] as const) {
    const reply = await peerRead(0, offset, length);
    t.equal(statusName(reply.status), 'BAD_REQUEST', `PEER_READ ${what}: BAD_REQUEST`, {
      got: statusName(reply.status),
      payloadHead: reply.payload?.subarray(0, 16).toString('hex'),
    });
  }
});
