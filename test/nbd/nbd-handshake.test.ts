/**
 * The handshake phase (nbd/handshake.ts): what real clients (nbdinfo) learn about exports, and how the
 * server answers raw option traffic real clients never send: wrong magics and flags, unknown and
 * oversized options, malformed INFO/GO and meta-context payloads, ABORT, EXPORT_NAME with and without
 * NO_ZEROES, non-fixed-newstyle clients, option floods, the handshake timeout and connectionsMax.
 */
import t from 'tap';
import { MemoryExport } from '../helpers/nbd-memory-export.js';
import {
  CLIENT_FLAG,
  CMD,
  INFO,
  IHAVEOPT,
  NBDMAGIC,
  OPT,
  REP,
  RawNbdClient,
  infoPayload,
  metaContextPayload,
  u16,
  u32,
} from '../helpers/nbd-raw-client.js';
import { missingTools, runTool, startMemoryNbdServer } from '../helpers/nbd-tools.js';

const MiB = 1024 * 1024;
const DISK_BYTES = 64 * MiB;
const RO_BYTES = 1 * MiB;

const disk = new MemoryExport({ name: 'disk', sizeBytes: DISK_BYTES, description: 'pflex test disk' });
const ro = new MemoryExport({ name: 'ro', sizeBytes: RO_BYTES, readOnly: true });
const blocky = new MemoryExport({ name: 'blocky', sizeBytes: 4 * MiB, minimumBlockBytes: 512, preferredBlockBytes: 65536, maximumBlockBytes: MiB });
const nbd = await startMemoryNbdServer([disk, ro, blocky], { defaultName: 'disk' });
t.teardown(() => nbd.close());

const missing = await missingTools(['nbdinfo']);

interface NbdinfoExport {
  'export-name': string;
  description?: string;
  'export-size': number;
  is_read_only: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_fast_zero: boolean;
  can_cache: boolean;
  can_multi_conn: boolean;
  can_df: boolean;
  block_size_minimum: number;
  block_size_preferred: number;
  block_size_maximum: number;
  contexts?: string[];
}

async function nbdinfoJson(args: string[]): Promise<{ exports: NbdinfoExport[]; structured: boolean; protocol: string }> {
  const result = await runTool('nbdinfo', ['--json', ...args]);
  if (result.code !== 0) throw new Error(`nbdinfo ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as { exports: NbdinfoExport[]; structured: boolean; protocol: string };
}

t.test('nbdinfo', { skip: missing.length > 0 ? `missing ${missing.join(', ')}` : false }, async (t) => {
  t.test('shows size, description, flags and block sizes of a writable export', async (t) => {
    const info = await nbdinfoJson([nbd.uri('disk')]);
    t.equal(info.protocol, 'newstyle-fixed');
    t.equal(info.structured, true, 'structured replies negotiated');
    const [exp] = info.exports;
    t.match(exp, {
      'export-name': 'disk',
      description: 'pflex test disk',
      'export-size': DISK_BYTES,
      is_read_only: false,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_fast_zero: true,
      can_cache: true,
      can_multi_conn: true,
      can_df: true,
      block_size_minimum: 1,
      block_size_preferred: 4096,
      block_size_maximum: 32 * MiB,
    });
    t.same(exp?.contexts, ['base:allocation'], 'base:allocation is the one meta context');
  });

  t.test('a read-only export advertises READ_ONLY and no write features', async (t) => {
    const [exp] = (await nbdinfoJson([nbd.uri('ro')])).exports;
    t.match(exp, { 'export-name': 'ro', 'export-size': RO_BYTES, is_read_only: true, can_trim: false, can_zero: false, can_fua: false, can_flush: true, can_multi_conn: true });
  });

  t.test('custom block sizes reach the client', async (t) => {
    const [exp] = (await nbdinfoJson([nbd.uri('blocky')])).exports;
    t.match(exp, { block_size_minimum: 512, block_size_preferred: 65536, block_size_maximum: MiB });
  });

  t.test('an empty export name means the default export', async (t) => {
    const [exp] = (await nbdinfoJson([`nbd://127.0.0.1:${nbd.port}/`])).exports;
    t.equal(exp?.['export-name'], 'disk');
    t.equal(exp?.['export-size'], DISK_BYTES);
  });

  t.test('--list lists every export with its description', async (t) => {
    const info = await nbdinfoJson(['--list', `nbd://127.0.0.1:${nbd.port}`]);
    t.same(info.exports.map((exp) => exp['export-name']).sort(), ['blocky', 'disk', 'ro']);
    t.equal(info.exports.find((exp) => exp['export-name'] === 'disk')?.description, 'pflex test disk');
  });

  t.test('an unknown export fails cleanly with the server still serving', async (t) => {
    const result = await runTool('nbdinfo', [nbd.uri('nope')]);
    t.not(result.code, 0);
    t.match(result.stderr, /nope/);
    const [exp] = (await nbdinfoJson([nbd.uri('disk')])).exports;
    t.equal(exp?.['export-size'], DISK_BYTES);
  });
});

t.test('the greeting is fixed newstyle with NO_ZEROES', async (t) => {
  const client = await RawNbdClient.connect(nbd.port);
  const greeting = await client.read(18);
  t.ok(greeting.subarray(0, 8).equals(NBDMAGIC));
  t.ok(greeting.subarray(8, 16).equals(IHAVEOPT));
  t.equal(greeting.readUInt16BE(16), 0b11, 'FIXED_NEWSTYLE | NO_ZEROES');
  client.destroy();
});

t.test('client flags the server did not offer end the connection', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port, CLIENT_FLAG.FIXED_NEWSTYLE | 0x4);
  t.ok(await client.closesWithin(2000), 'closed');
  t.equal(client.pendingBytes(), 0, 'nothing sent');
});

t.test('a wrong option magic ends the connection', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  client.write(Buffer.concat([Buffer.from('IHAVEOPS'), u32(OPT.LIST), u32(0)]));
  t.ok(await client.closesWithin(2000));
});

t.test('unknown options get NBD_REP_ERR_UNSUP and the session goes on', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  for (const option of [99, OPT.STARTTLS, 4, 0x7fffffff]) {
    const replies = await client.option(option, Buffer.from('some option data'));
    t.equal(replies.length, 1);
    t.equal(replies[0]?.type, REP.ERR_UNSUP, `option ${option} unsupported`);
    t.equal(replies[0]?.option, option, 'the reply names the option');
  }
  const list = await client.option(OPT.LIST);
  t.same(list.filter((reply) => reply.type === REP.SERVER).length, 3, 'LIST still works');
  t.equal(list[list.length - 1]?.type, REP.ACK);
  const { sizeBytes } = await client.go('disk');
  t.equal(sizeBytes, DISK_BYTES, 'and so does GO');
  client.destroy();
});

t.test('LIST replies carry name and description', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  const replies = await client.option(OPT.LIST);
  const servers = replies.filter((reply) => reply.type === REP.SERVER).map((reply) => {
    const nameBytes = reply.payload.readUInt32BE(0);
    return { name: reply.payload.subarray(4, 4 + nameBytes).toString(), description: reply.payload.subarray(4 + nameBytes).toString() };
  });
  t.same(servers.find((server) => server.name === 'disk'), { name: 'disk', description: 'pflex test disk' });
  const [invalid] = await client.option(OPT.LIST, Buffer.from('x'));
  t.equal(invalid?.type, REP.ERR_INVALID, 'LIST with data is invalid');
  client.destroy();
});

t.test('an oversized option length gets NBD_REP_ERR_TOO_BIG and a disconnect', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  client.sendOption(OPT.GO, Buffer.alloc(0), 1024 * 1024);
  const reply = await client.readOptionReply();
  t.equal(reply.type, REP.ERR_TOO_BIG);
  t.ok(await client.closesWithin(2000));
});

t.test('a partial option waits for the rest', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  const bytes = Buffer.concat([IHAVEOPT, u32(OPT.INFO), u32(infoPayload('disk', []).length), infoPayload('disk', [])]);
  for (const byte of bytes) {
    client.write(Buffer.from([byte]));
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const replies = await client.readOptionReplies();
  t.equal(replies[replies.length - 1]?.type, REP.ACK);
  client.destroy();
});

t.test('ABORT is acknowledged and the server closes', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  const [reply] = await client.option(OPT.ABORT);
  t.equal(reply?.type, REP.ACK);
  t.ok(await client.closesWithin(2000));
});

t.test('EXPORT_NAME with NO_ZEROES: 10 bytes, then transmission', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port, CLIENT_FLAG.FIXED_NEWSTYLE | CLIENT_FLAG.NO_ZEROES);
  client.sendOption(OPT.EXPORT_NAME, Buffer.from('disk'));
  const reply = await client.read(10);
  t.equal(Number(reply.readBigUInt64BE(0)), DISK_BYTES);
  t.equal(reply.readUInt16BE(8) & 1, 1, 'HAS_FLAGS');
  client.sendRequest({ type: CMD.READ, handle: 7n, offsetBytes: 0, lengthBytes: 512 });
  const read = await client.readSimpleReply(512);
  t.equal(read.error, 0, 'the next bytes are the reply: no zeroes were sent');
  t.equal(read.handle, 7n);
  client.destroy();
});

t.test('EXPORT_NAME without NO_ZEROES: 124 zero bytes follow', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port, CLIENT_FLAG.FIXED_NEWSTYLE);
  client.sendOption(OPT.EXPORT_NAME, Buffer.from('ro'));
  const reply = await client.read(134);
  t.equal(Number(reply.readBigUInt64BE(0)), RO_BYTES);
  t.equal(reply.readUInt16BE(8) & 0b11, 0b11, 'HAS_FLAGS | READ_ONLY');
  t.ok(reply.subarray(10).equals(Buffer.alloc(124)), '124 zeroes');
  client.sendRequest({ type: CMD.READ, handle: 8n, offsetBytes: 0, lengthBytes: 16 });
  t.equal((await client.readSimpleReply(16)).handle, 8n);
  client.destroy();
});

t.test('EXPORT_NAME of an unknown export hangs up (no error reply is possible)', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  client.sendOption(OPT.EXPORT_NAME, Buffer.from('nope'));
  t.ok(await client.closesWithin(2000));
  t.equal(client.pendingBytes(), 0);
});

t.test('a client without fixed newstyle may only use EXPORT_NAME', async (t) => {
  const plain = await RawNbdClient.negotiate(nbd.port, 0);
  plain.sendOption(OPT.EXPORT_NAME, Buffer.from(''));
  const reply = await plain.read(134);
  t.equal(Number(reply.readBigUInt64BE(0)), DISK_BYTES, 'the default export, with zeroes');
  plain.destroy();
  const other = await RawNbdClient.negotiate(nbd.port, 0);
  other.sendOption(OPT.LIST);
  t.ok(await other.closesWithin(2000), 'it cannot parse replies, so other options end the session');
});

t.test('INFO and GO validate their payload', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  const malformed: [string, Buffer][] = [
    ['shorter than 6 bytes', Buffer.from([0, 0, 0])],
    ['name length past the data', Buffer.concat([u32(100), Buffer.from('disk'), u16(0)])],
    ['more info requests announced than sent', Buffer.concat([u32(4), Buffer.from('disk'), u16(3), u16(INFO.NAME)])],
    ['trailing bytes', Buffer.concat([infoPayload('disk', [INFO.NAME]), Buffer.from([0])])],
    ['a NUL in the name', infoPayload('di\0sk', [])],
    ['invalid UTF-8 in the name', Buffer.concat([u32(2), Buffer.from([0xc3, 0x28]), u16(0)])],
  ];
  for (const [what, payload] of malformed) {
    for (const option of [OPT.INFO, OPT.GO]) {
      const replies = await client.option(option, payload);
      t.equal(replies.length, 1, `${what}: one reply`);
      t.equal(replies[0]?.type, REP.ERR_INVALID, `${what}: NBD_REP_ERR_INVALID`);
    }
  }
  const [unknown] = await client.option(OPT.INFO, infoPayload('nope', []));
  t.equal(unknown?.type, REP.ERR_UNKNOWN, 'unknown export');
  t.match(unknown?.payload.toString(), /nope/, 'with a message');

  const replies = await client.option(OPT.INFO, infoPayload('disk', [INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE, 0x7777]));
  t.equal(replies[replies.length - 1]?.type, REP.ACK);
  const infos = new Map(replies.filter((reply) => reply.type === REP.INFO).map((reply) => [reply.payload.readUInt16BE(0), reply.payload]));
  t.equal(Number(infos.get(INFO.EXPORT)?.readBigUInt64BE(2)), DISK_BYTES, 'INFO_EXPORT');
  t.equal(infos.get(INFO.NAME)?.subarray(2).toString(), 'disk', 'INFO_NAME');
  t.equal(infos.get(INFO.DESCRIPTION)?.subarray(2).toString(), 'pflex test disk', 'INFO_DESCRIPTION');
  const blockSize = infos.get(INFO.BLOCK_SIZE);
  t.same([blockSize?.readUInt32BE(2), blockSize?.readUInt32BE(6), blockSize?.readUInt32BE(10)], [1, 4096, 32 * MiB], 'INFO_BLOCK_SIZE');
  t.notOk(infos.has(0x7777), 'unknown info requests are ignored');

  const { sizeBytes } = await client.go('ro');
  t.equal(sizeBytes, RO_BYTES, 'GO still works after all that');
  client.destroy();
});

t.test('STRUCTURED_REPLY and meta contexts', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  const [early] = await client.option(OPT.SET_META_CONTEXT, metaContextPayload('disk', ['base:allocation']));
  t.equal(early?.type, REP.ERR_INVALID, 'meta contexts need structured replies first');
  const [withData] = await client.option(OPT.STRUCTURED_REPLY, Buffer.from('x'));
  t.equal(withData?.type, REP.ERR_INVALID, 'STRUCTURED_REPLY takes no data');
  const [ack] = await client.option(OPT.STRUCTURED_REPLY);
  t.equal(ack?.type, REP.ACK);

  const contextNames = (replies: { type: number; payload: Buffer }[]): string[] =>
    replies.filter((reply) => reply.type === REP.META_CONTEXT).map((reply) => reply.payload.subarray(4).toString());
  t.same(contextNames(await client.option(OPT.LIST_META_CONTEXT, metaContextPayload('disk', []))), ['base:allocation'], 'LIST with no query: all');
  t.same(contextNames(await client.option(OPT.LIST_META_CONTEXT, metaContextPayload('disk', ['base:']))), ['base:allocation'], 'LIST base:');
  const otherNamespace = await client.option(OPT.LIST_META_CONTEXT, metaContextPayload('disk', ['qemu:dirty-bitmap:x', 'base:nope']));
  t.same(otherNamespace.map((reply) => reply.type), [REP.ACK], 'other namespaces and unknown leaves match nothing');
  const set = await client.option(OPT.SET_META_CONTEXT, metaContextPayload('disk', ['qemu:allocation-depth', 'base:allocation']));
  t.same(set.map((reply) => reply.type), [REP.META_CONTEXT, REP.ACK]);
  t.not(set[0]?.payload.readUInt32BE(0), undefined, 'SET gives a context id');
  t.same(contextNames(set), ['base:allocation']);

  const truncated = Buffer.concat([u32(4), Buffer.from('disk'), u32(1), u32(50), Buffer.from('base:allocation')]);
  const [invalid] = await client.option(OPT.SET_META_CONTEXT, truncated);
  t.equal(invalid?.type, REP.ERR_INVALID, 'a query running past the data is invalid');
  const [tooMany] = await client.option(OPT.LIST_META_CONTEXT, metaContextPayload('disk', Array.from({ length: 200 }, () => 'base:')));
  t.equal(tooMany?.type, REP.ERR_TOO_BIG, 'too many queries');
  client.destroy();
});

t.test('an option flood is cut off', async (t) => {
  const client = await RawNbdClient.negotiate(nbd.port);
  const flood = Buffer.concat(Array.from({ length: 17_000 }, () => Buffer.concat([IHAVEOPT, u32(99), u32(0)])));
  client.write(flood);
  let replies = 0;
  try {
    for (;;) {
      await client.readOptionReply();
      replies += 1;
    }
  } catch {
    // the server hung up
  }
  t.equal(replies, 16_384, `answered ${replies} options (OPTIONS_PER_HANDSHAKE_MAX), then disconnected`);
  t.ok(await client.closesWithin(2000));
});

t.test('a silent client is dropped after the handshake timeout', async (t) => {
  const quick = await startMemoryNbdServer([new MemoryExport({ name: 'disk', sizeBytes: MiB })], { handshakeTimeoutMs: 300 });
  t.teardown(() => quick.close());
  const client = await RawNbdClient.negotiate(quick.port);
  const started = Date.now();
  t.ok(await client.closesWithin(3000), 'closed');
  t.ok(Date.now() - started >= 200, 'not before the timeout');
  const [exp] = missing.length === 0 ? (await nbdinfoJson([quick.uri('disk')])).exports : [];
  if (missing.length === 0) t.equal(exp?.['export-size'], MiB, 'a prompt client still gets in');
});

t.test('connectionsMax refuses extra connections', async (t) => {
  const small = await startMemoryNbdServer([new MemoryExport({ name: 'disk', sizeBytes: MiB })], { connectionsMax: 2 });
  t.teardown(() => small.close());
  const first = await RawNbdClient.negotiate(small.port);
  const second = await RawNbdClient.negotiate(small.port);
  const third = await RawNbdClient.connect(small.port);
  t.ok(await third.closesWithin(2000), 'the third connection is dropped');
  t.equal(small.server.connections(), 2);
  first.destroy();
  await first.closed;
  await new Promise((resolve) => setTimeout(resolve, 50));
  const fourth = await RawNbdClient.negotiate(small.port);
  t.equal((await fourth.go('disk')).sizeBytes, MiB, 'a slot freed up');
  second.destroy();
  fourth.destroy();
});

t.test('close() ends handshaking connections and stops listening', async (t) => {
  const closing = await startMemoryNbdServer([new MemoryExport({ name: 'disk', sizeBytes: MiB })]);
  const client = await RawNbdClient.negotiate(closing.port);
  await client.option(OPT.LIST);
  t.equal(closing.server.connections(), 1);
  await closing.close();
  t.ok(await client.closesWithin(2000), 'client dropped');
  t.equal(closing.server.connections(), 0);
  await t.rejects(RawNbdClient.connect(closing.port), 'no longer listening');
});
