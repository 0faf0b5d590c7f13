/**
 * Transmission-phase abuse over a raw socket (nbd/transmission.ts): bad magic, out-of-range, zero and
 * oversized lengths, unknown commands and flags, read-only and alignment violations, BLOCK_STATUS without
 * negotiation, export failures and their NBD errors, structured replies, many requests in flight answered
 * out of order, backpressure, partial frames, DISC and vanished clients, and a shutdown with work in
 * flight. After all of it the server still serves a fresh client.
 */
import t from 'tap';
import { NbdError } from '../../nbd/index.js';
import { MemoryExport } from '../helpers/nbd-memory-export.js';
import { CMD, CMD_FLAG, ERRNO, OPT, REPLY_TYPE, RawNbdClient, metaContextPayload, type TransmissionReply } from '../helpers/nbd-raw-client.js';
import { missingTools, runTool, startMemoryNbdServer } from '../helpers/nbd-tools.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SLOW_BLOCKS = 64;

const disk = new MemoryExport({ name: 'disk', sizeBytes: MiB });
const smallMax = new MemoryExport({ name: 'small-max', sizeBytes: MiB, maximumBlockBytes: 64 * KiB });
const aligned = new MemoryExport({ name: 'aligned', sizeBytes: MiB, minimumBlockBytes: 512 });
const ro = new MemoryExport({ name: 'ro', sizeBytes: 64 * KiB, readOnly: true });
const faulty = new MemoryExport({
  name: 'faulty',
  sizeBytes: MiB,
  slowZeroes: true,
  fail: (operation, offsetBytes) => {
    if (operation === 'read' && offsetBytes === 4096) return new Error('disk on fire');
    if (operation === 'write' && offsetBytes === 8192) return new NbdError('ENOSPC', 'pool is full');
    if (operation === 'trim') return new NbdError('ENOTSUP', 'cannot trim');
    return undefined;
  },
});
// Later blocks answer sooner, so replies come back in the reverse of request order.
const slow = new MemoryExport({ name: 'slow', sizeBytes: SLOW_BLOCKS * 4096, delayMs: (operation, offsetBytes) => (operation === 'read' ? (SLOW_BLOCKS - offsetBytes / 4096) * 3 : 0) });
for (let block = 0; block < SLOW_BLOCKS; block += 1) slow.data.fill(block, block * 4096, (block + 1) * 4096);

const nbd = await startMemoryNbdServer([disk, smallMax, aligned, ro, faulty, slow]);
t.teardown(() => nbd.close());

let nextHandle = 1n;
const handle = (): bigint => nextHandle++;

async function transmit(name: string, options: { structured?: boolean; baseAllocation?: boolean } = {}): Promise<RawNbdClient> {
  const client = await RawNbdClient.negotiate(nbd.port);
  await client.go(name, options);
  return client;
}

/** Sends one request and returns the error of its simple reply (reading read data when it succeeds). */
async function simple(client: RawNbdClient, request: { type: number; offsetBytes?: number; lengthBytes?: number; flags?: number }, payload?: Buffer): Promise<number> {
  const sent = handle();
  client.sendRequest({ ...request, handle: sent }, payload);
  const reply = await client.readSimpleReply(request.type === CMD.READ ? (request.lengthBytes ?? 0) : 0);
  if (reply.handle !== sent) throw new Error(`handle ${reply.handle} for request ${sent}`);
  return reply.error;
}

async function chunk(client: RawNbdClient, request: { type: number; offsetBytes?: number; lengthBytes?: number; flags?: number }): Promise<TransmissionReply & { kind: 'chunk' }> {
  const sent = handle();
  client.sendRequest({ ...request, handle: sent });
  const reply = await client.readReply();
  if (reply.kind !== 'chunk') throw new Error(`expected a structured chunk, got a simple reply with error ${reply.error}`);
  if (reply.handle !== sent) throw new Error(`handle ${reply.handle} for request ${sent}`);
  return reply;
}

t.test('a bad request magic is a hard disconnect', async (t) => {
  const client = await transmit('disk');
  client.sendRequest({ type: CMD.READ, handle: handle(), lengthBytes: 512, magic: 0x12345678 });
  t.ok(await client.closesWithin(2000), 'closed');
  t.equal(client.pendingBytes(), 0, 'no reply');
});

t.test('out-of-range requests: EINVAL, or ENOSPC for writes, and the stream stays in sync', async (t) => {
  const client = await transmit('disk');
  t.equal(await simple(client, { type: CMD.READ, offsetBytes: MiB, lengthBytes: 1 }), ERRNO.EINVAL, 'read at the end');
  t.equal(await simple(client, { type: CMD.READ, offsetBytes: MiB - 512, lengthBytes: 1024 }), ERRNO.EINVAL, 'read straddling the end');
  t.equal(await simple(client, { type: CMD.READ, offsetBytes: 2 ** 63, lengthBytes: 512 }), ERRNO.EINVAL, 'read at 2^63');
  t.equal(await simple(client, { type: CMD.WRITE, offsetBytes: MiB - 100 }, Buffer.alloc(200, 1)), ERRNO.ENOSPC, 'write past the end');
  t.equal(await simple(client, { type: CMD.WRITE_ZEROES, offsetBytes: MiB, lengthBytes: 512 }), ERRNO.ENOSPC, 'write zeroes past the end');
  t.equal(await simple(client, { type: CMD.TRIM, offsetBytes: MiB - 1, lengthBytes: 2 }), ERRNO.EINVAL, 'trim past the end');
  t.equal(await simple(client, { type: CMD.CACHE, offsetBytes: 2 * MiB, lengthBytes: 2 }), ERRNO.EINVAL, 'cache past the end');
  t.equal(disk.data[MiB - 1], 0, 'nothing was written');
  t.equal(await simple(client, { type: CMD.WRITE, offsetBytes: MiB - 100 }, Buffer.alloc(100, 9)), 0, 'a write up to the end works');
  t.equal(disk.data[MiB - 1], 9);
  client.destroy();
});

t.test('zero-length requests succeed without touching the export; BLOCK_STATUS and FLUSH rules hold', async (t) => {
  const client = await transmit('disk', { structured: true, baseAllocation: true });
  const before = { ...disk.calls };
  for (const type of [CMD.WRITE, CMD.TRIM, CMD.WRITE_ZEROES, CMD.CACHE]) {
    const sent = handle();
    client.sendRequest({ type, handle: sent, offsetBytes: 4096, lengthBytes: 0 }, type === CMD.WRITE ? Buffer.alloc(0) : undefined);
    const answer = await client.readReply();
    t.match(answer, { kind: 'simple', error: 0, handle: sent }, `command ${type} of length 0`);
  }
  const read = await chunk(client, { type: CMD.READ, offsetBytes: 4096, lengthBytes: 0 });
  t.match(read, { type: REPLY_TYPE.NONE, flags: 1 }, 'a zero-length read is a lone NONE chunk');
  t.same(disk.calls, before, 'the export saw none of them');
  const blockStatus = await chunk(client, { type: CMD.BLOCK_STATUS, offsetBytes: 0, lengthBytes: 0 });
  t.equal(blockStatus.type, REPLY_TYPE.ERROR);
  t.equal(blockStatus.payload.readUInt32BE(0), ERRNO.EINVAL, 'BLOCK_STATUS of length 0 is EINVAL');
  const flush = await chunk(client, { type: CMD.FLUSH, offsetBytes: 512, lengthBytes: 0 });
  t.equal(flush.payload.readUInt32BE(0), ERRNO.EINVAL, 'FLUSH with an offset is EINVAL');
  client.destroy();
});

t.test('a write with a huge length is a hard disconnect', async (t) => {
  const client = await transmit('disk');
  client.sendRequest({ type: CMD.WRITE, handle: handle(), offsetBytes: 0, lengthBytes: 64 * MiB });
  client.write(Buffer.alloc(64 * KiB));
  t.ok(await client.closesWithin(2000), 'closed without waiting for 64 MiB');
  t.equal(client.pendingBytes(), 0);
});

t.test('requests over the maximum block size get EINVAL where the spec applies it', async (t) => {
  const client = await transmit('small-max');
  t.equal(await simple(client, { type: CMD.READ, lengthBytes: 128 * KiB }), ERRNO.EINVAL, 'read');
  t.equal(await simple(client, { type: CMD.WRITE }, Buffer.alloc(128 * KiB, 7)), ERRNO.EINVAL, 'write (payload consumed)');
  t.equal(await simple(client, { type: CMD.CACHE, lengthBytes: 128 * KiB }), ERRNO.EINVAL, 'cache');
  t.equal(await simple(client, { type: CMD.WRITE_ZEROES, lengthBytes: 128 * KiB }), ERRNO.EINVAL, 'write zeroes');
  t.equal(await simple(client, { type: CMD.WRITE_ZEROES, lengthBytes: 128 * KiB, flags: CMD_FLAG.FAST_ZERO }), 0, 'FAST_ZERO is exempt');
  t.equal(await simple(client, { type: CMD.TRIM, lengthBytes: 512 * KiB }), 0, 'TRIM is exempt');
  t.equal(smallMax.data[0], 0, 'the refused write wrote nothing');
  t.equal(await simple(client, { type: CMD.READ, lengthBytes: 64 * KiB }), 0, 'the maximum itself is fine');
  client.destroy();
});

t.test('unknown commands and misplaced flags get EINVAL', async (t) => {
  const client = await transmit('disk');
  t.equal(await simple(client, { type: 99 }), ERRNO.EINVAL, 'command 99');
  t.equal(await simple(client, { type: 8, lengthBytes: 4096 }), ERRNO.EINVAL, 'RESIZE (not offered)');
  t.equal(await simple(client, { type: CMD.READ, lengthBytes: 512, flags: CMD_FLAG.REQ_ONE }), ERRNO.EINVAL, 'REQ_ONE on READ');
  t.equal(await simple(client, { type: CMD.WRITE, flags: CMD_FLAG.NO_HOLE }, Buffer.alloc(512, 3)), ERRNO.EINVAL, 'NO_HOLE on WRITE');
  t.equal(await simple(client, { type: CMD.TRIM, lengthBytes: 512, flags: CMD_FLAG.FAST_ZERO }), ERRNO.EINVAL, 'FAST_ZERO on TRIM');
  t.equal(await simple(client, { type: CMD.READ, lengthBytes: 512, flags: CMD_FLAG.DF }), ERRNO.EINVAL, 'DF without structured replies');
  t.equal(await simple(client, { type: CMD.READ, lengthBytes: 512, flags: 0x100 }), ERRNO.EINVAL, 'an unknown flag bit');
  t.equal(disk.data[0], 0, 'the refused write wrote nothing');
  t.equal(await simple(client, { type: CMD.READ, lengthBytes: 512, flags: CMD_FLAG.FUA }), 0, 'FUA on READ must be accepted');
  t.equal(await simple(client, { type: CMD.FLUSH, flags: CMD_FLAG.FUA }), 0, 'and on FLUSH');
  t.equal(await simple(client, { type: CMD.WRITE, offsetBytes: 512, flags: CMD_FLAG.FUA }, Buffer.alloc(512, 4)), 0, 'FUA write');
  t.equal(disk.data[512], 4);
  client.destroy();
});

t.test('a read-only export answers EPERM to every write', async (t) => {
  const client = await transmit('ro');
  t.equal(await simple(client, { type: CMD.WRITE }, Buffer.alloc(4096, 1)), ERRNO.EPERM, 'write');
  t.equal(await simple(client, { type: CMD.WRITE, flags: CMD_FLAG.FUA }, Buffer.alloc(512, 1)), ERRNO.EPERM, 'write with FUA');
  t.equal(await simple(client, { type: CMD.TRIM, lengthBytes: 4096 }), ERRNO.EPERM, 'trim');
  t.equal(await simple(client, { type: CMD.WRITE_ZEROES, lengthBytes: 4096 }), ERRNO.EPERM, 'write zeroes');
  t.equal(await simple(client, { type: CMD.READ, lengthBytes: 512, flags: CMD_FLAG.FUA }), ERRNO.EINVAL, 'FUA was not offered on a read-only export');
  t.equal(await simple(client, { type: CMD.READ, lengthBytes: 4096 }), 0, 'reads work');
  t.equal(await simple(client, { type: CMD.FLUSH }), 0, 'flush works');
  t.equal(ro.calls.write + ro.calls.trim + ro.calls.writeZeroes, 0, 'no write reached the export');
  client.destroy();
});

t.test('unaligned requests on an export with a 512-byte minimum get EINVAL', async (t) => {
  const client = await transmit('aligned');
  t.equal(await simple(client, { type: CMD.READ, offsetBytes: 100, lengthBytes: 512 }), ERRNO.EINVAL, 'unaligned offset');
  t.equal(await simple(client, { type: CMD.READ, offsetBytes: 0, lengthBytes: 100 }), ERRNO.EINVAL, 'unaligned length');
  t.equal(await simple(client, { type: CMD.WRITE, offsetBytes: 512 }, Buffer.alloc(100)), ERRNO.EINVAL, 'unaligned write');
  t.equal(await simple(client, { type: CMD.READ, offsetBytes: 512, lengthBytes: 1024 }), 0, 'aligned works');
  client.destroy();
});

t.test('BLOCK_STATUS needs structured replies and base:allocation for this export', async (t) => {
  const plain = await transmit('disk');
  t.equal(await simple(plain, { type: CMD.BLOCK_STATUS, lengthBytes: 4096 }), ERRNO.EINVAL, 'without structured replies: EINVAL');
  plain.destroy();

  const noContext = await transmit('disk', { structured: true });
  const refused = await chunk(noContext, { type: CMD.BLOCK_STATUS, lengthBytes: 4096 });
  t.equal(refused.type, REPLY_TYPE.ERROR, 'without a meta context: an error chunk');
  t.equal(refused.flags & 1, 1, 'marked DONE');
  t.equal(refused.payload.readUInt32BE(0), ERRNO.EINVAL);
  const messageBytes = refused.payload.readUInt16BE(4);
  t.match(refused.payload.subarray(6, 6 + messageBytes).toString(), /base:allocation/, 'with a message');
  noContext.destroy();

  const client = await transmit('disk', { structured: true, baseAllocation: true });
  const base = 512 * KiB; // a region no other test touches
  t.equal(await simple(client, { type: CMD.WRITE, offsetBytes: base + 64 * KiB }, Buffer.alloc(64 * KiB, 5)), 0, 'write 64K at base+64K');
  const status = await chunk(client, { type: CMD.BLOCK_STATUS, offsetBytes: base, lengthBytes: 256 * KiB });
  t.equal(status.type, REPLY_TYPE.BLOCK_STATUS);
  t.equal(status.flags & 1, 1, 'DONE');
  t.not(status.payload.readUInt32BE(0), 0, 'the context id from SET_META_CONTEXT');
  const descriptors: [number, number][] = [];
  for (let position = 4; position < status.payload.length; position += 8) descriptors.push([status.payload.readUInt32BE(position), status.payload.readUInt32BE(position + 4)]);
  t.same(descriptors, [
    [64 * KiB, 3],
    [64 * KiB, 0],
    [128 * KiB, 3],
  ], 'hole, data, hole');
  const one = await chunk(client, { type: CMD.BLOCK_STATUS, offsetBytes: base, lengthBytes: 16 * KiB, flags: CMD_FLAG.REQ_ONE });
  t.equal(one.payload.length, 12, 'REQ_ONE: exactly one descriptor');
  t.same([one.payload.readUInt32BE(4), one.payload.readUInt32BE(8)], [16 * KiB, 3], 'no longer than the request');
  const beyond = await chunk(client, { type: CMD.BLOCK_STATUS, offsetBytes: MiB - 512, lengthBytes: 4096 });
  t.equal(beyond.payload.readUInt32BE(0), ERRNO.EINVAL, 'beyond the end: EINVAL');
  client.destroy();

  // SET_META_CONTEXT for one export, GO to another: the context does not carry over.
  const mismatch = await RawNbdClient.negotiate(nbd.port);
  await mismatch.option(OPT.STRUCTURED_REPLY);
  await mismatch.option(OPT.SET_META_CONTEXT, metaContextPayload('slow', ['base:allocation']));
  await mismatch.go('disk');
  const wrongExport = await chunk(mismatch, { type: CMD.BLOCK_STATUS, lengthBytes: 4096 });
  t.equal(wrongExport.payload.readUInt32BE(0), ERRNO.EINVAL, 'a context set for another export does not count');
  mismatch.destroy();
});

t.test('structured replies: OFFSET_DATA, error chunks, DF', async (t) => {
  disk.data.fill(0x42, 128 * KiB, 132 * KiB);
  const client = await transmit('disk', { structured: true });
  const read = await chunk(client, { type: CMD.READ, offsetBytes: 128 * KiB, lengthBytes: 4096 });
  t.equal(read.type, REPLY_TYPE.OFFSET_DATA);
  t.equal(read.flags & 1, 1, 'one final chunk');
  t.equal(Number(read.payload.readBigUInt64BE(0)), 128 * KiB, 'absolute offset');
  t.ok(read.payload.subarray(8).equals(Buffer.alloc(4096, 0x42)), 'the data');
  const df = await chunk(client, { type: CMD.READ, offsetBytes: 128 * KiB, lengthBytes: 64 * KiB, flags: CMD_FLAG.DF });
  t.equal(df.type, REPLY_TYPE.OFFSET_DATA, 'DF reads are one chunk');
  const bad = await chunk(client, { type: CMD.READ, offsetBytes: MiB, lengthBytes: 512 });
  t.equal(bad.type, REPLY_TYPE.ERROR, 'a refused read is an error chunk, never a simple reply');
  t.equal(bad.payload.readUInt32BE(0), ERRNO.EINVAL);
  client.destroy();
});

t.test('export failures map to NBD errors; anything unexpected is EIO', async (t) => {
  const client = await transmit('faulty');
  t.equal(await simple(client, { type: CMD.READ, offsetBytes: 4096, lengthBytes: 512 }), ERRNO.EIO, 'a thrown Error is EIO');
  t.equal(await simple(client, { type: CMD.WRITE, offsetBytes: 8192 }, Buffer.alloc(512)), ERRNO.ENOSPC, 'NbdError ENOSPC passes through');
  t.equal(await simple(client, { type: CMD.TRIM, lengthBytes: 4096 }), ERRNO.EINVAL, 'ENOTSUP outside FAST_ZERO becomes EINVAL');
  t.equal(await simple(client, { type: CMD.WRITE_ZEROES, lengthBytes: 4096, flags: CMD_FLAG.FAST_ZERO }), ERRNO.ENOTSUP, 'a slow export refuses FAST_ZERO with ENOTSUP');
  t.equal(await simple(client, { type: CMD.WRITE_ZEROES, lengthBytes: 4096 }), 0, 'and zeroes without it');
  t.equal(await simple(client, { type: CMD.READ, offsetBytes: 0, lengthBytes: 512 }), 0, 'the connection carries on');
  client.destroy();

  const structured = await transmit('faulty', { structured: true });
  const failed = await chunk(structured, { type: CMD.READ, offsetBytes: 4096, lengthBytes: 512 });
  t.equal(failed.type, REPLY_TYPE.ERROR);
  t.equal(failed.payload.readUInt32BE(0), ERRNO.EIO, 'EIO as an error chunk');
  structured.destroy();
});

t.test('many requests in flight are answered out of order with their own handles', async (t) => {
  const client = await transmit('slow');
  const sent = new Map<bigint, number>();
  for (let block = 0; block < SLOW_BLOCKS; block += 1) {
    const requestHandle = 1000n + BigInt(block);
    sent.set(requestHandle, block);
    client.sendRequest({ type: CMD.READ, handle: requestHandle, offsetBytes: block * 4096, lengthBytes: 4096 });
  }
  const order: number[] = [];
  for (let index = 0; index < SLOW_BLOCKS; index += 1) {
    const reply = await client.readSimpleReply(4096);
    const block = sent.get(reply.handle);
    if (block === undefined) throw new Error(`unknown handle ${reply.handle}`);
    sent.delete(reply.handle);
    if (!reply.data.equals(Buffer.alloc(4096, block))) t.fail(`block ${block} has the wrong data`);
    order.push(block);
  }
  t.equal(sent.size, 0, 'every request got exactly one reply');
  t.not(order.join(','), [...order].sort((a, b) => a - b).join(','), 'replies came out of order');
  t.ok(slow.activeCallsMax > 8, `requests ran concurrently (${slow.activeCallsMax} at once)`);
  client.destroy();
});

t.test('requestsInFlightMax bounds the work in flight; every request is still answered', async (t) => {
  const gated = new MemoryExport({ name: 'gated', sizeBytes: MiB, delayMs: () => 10 });
  const small = await startMemoryNbdServer([gated], { requestsInFlightMax: 4 });
  t.teardown(() => small.close());
  const client = await RawNbdClient.negotiate(small.port);
  await client.go('gated');
  for (let index = 0; index < 40; index += 1) {
    if (index % 2 === 0) client.sendRequest({ type: CMD.WRITE, handle: BigInt(index), offsetBytes: index * 4096 }, Buffer.alloc(4096, index));
    else client.sendRequest({ type: CMD.READ, handle: BigInt(index), offsetBytes: (index - 1) * 4096, lengthBytes: 4096 });
  }
  const handles = new Set<bigint>();
  for (let index = 0; index < 40; index += 1) {
    const reply = await client.readReply();
    if (reply.kind !== 'simple' || reply.error !== 0) throw new Error('request failed');
    if (reply.handle % 2n === 1n) await client.read(4096);
    handles.add(reply.handle);
  }
  t.equal(handles.size, 40, 'all answered');
  t.ok(gated.activeCallsMax <= 4, `at most 4 in the export at once (saw ${gated.activeCallsMax})`);
  client.destroy();
});

t.test('partial frames wait for the rest', async (t) => {
  const client = await transmit('disk');
  const header = Buffer.alloc(28);
  header.writeUInt32BE(0x25609513, 0);
  header.writeUInt16BE(CMD.WRITE, 6);
  header.writeBigUInt64BE(77n, 8);
  header.writeBigUInt64BE(BigInt(200 * KiB), 16);
  header.writeUInt32BE(3000, 24);
  const bytes = Buffer.concat([header, Buffer.alloc(3000, 0x99)]);
  for (let position = 0; position < bytes.length; position += 7 + (position % 13)) {
    client.write(bytes.subarray(position, Math.min(bytes.length, position + 7 + (position % 13))));
    if (position < 200) await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const reply = await client.readSimpleReply();
  t.same([reply.error, reply.handle], [0, 77n]);
  t.ok(disk.data.subarray(200 * KiB, 200 * KiB + 3000).every((byte) => byte === 0x99), 'the dribbled write landed');
  client.destroy();
});

t.test('DISC: requests in flight are answered, then the server closes', async (t) => {
  const client = await transmit('slow');
  client.sendRequest({ type: CMD.READ, handle: 5n, offsetBytes: 0, lengthBytes: 4096 });
  client.sendRequest({ type: CMD.DISC, handle: 6n });
  const reply = await client.readSimpleReply(4096);
  t.same([reply.error, reply.handle], [0, 5n], 'the read before DISC is answered');
  t.ok(await client.closesWithin(2000), 'then the server closes');
  t.equal(client.pendingBytes(), 0, 'DISC itself gets no reply');
  client.destroy();
});

t.test('a client that vanishes with requests in flight is cleaned up', async (t) => {
  const client = await transmit('slow');
  for (let block = 0; block < 16; block += 1) client.sendRequest({ type: CMD.READ, handle: BigInt(block), offsetBytes: block * 4096, lengthBytes: 4096 });
  client.sendRequest({ type: CMD.WRITE, handle: 99n, offsetBytes: 0, lengthBytes: 4096 }, Buffer.alloc(1000)); // cut mid-payload
  await new Promise((resolve) => setTimeout(resolve, 20));
  client.destroy();
  const deadline = Date.now() + 3000;
  while (nbd.server.connections() > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  t.equal(nbd.server.connections(), 0, 'the connection is gone');
  await new Promise((resolve) => setTimeout(resolve, SLOW_BLOCKS * 3 + 50)); // let the orphaned reads finish
  t.equal(slow.activeCalls, 0, 'orphaned work finished and was released');
});

t.test('close() answers work in flight before closing', async (t) => {
  const sluggish = new MemoryExport({ name: 'sluggish', sizeBytes: MiB, delayMs: () => 200 });
  const server = await startMemoryNbdServer([sluggish]);
  const client = await RawNbdClient.negotiate(server.port);
  await client.go('sluggish');
  client.sendRequest({ type: CMD.READ, handle: 1n, offsetBytes: 0, lengthBytes: 4096 });
  await new Promise((resolve) => setTimeout(resolve, 20));
  const closing = server.close();
  const reply = await client.readSimpleReply(4096);
  t.same([reply.error, reply.handle], [0, 1n], 'the in-flight read is answered');
  await closing;
  t.ok(await client.closesWithin(2000), 'then the connection closes');
  t.equal(server.server.connections(), 0);
});

t.test('after all that abuse a fresh client is served', async (t) => {
  const client = await transmit('disk', { structured: true, baseAllocation: true });
  t.equal(await simple(client, { type: CMD.WRITE, offsetBytes: 300 * KiB }, Buffer.alloc(4096, 0x61)), 0);
  const read = await chunk(client, { type: CMD.READ, offsetBytes: 300 * KiB, lengthBytes: 4096 });
  t.ok(read.payload.subarray(8).equals(Buffer.alloc(4096, 0x61)));
  client.destroy();
  const missing = await missingTools(['nbdinfo'], 0);
  if (missing.length === 0) {
    const info = await runTool('nbdinfo', ['--size', nbd.uri('disk')]);
    t.equal(info.stdout.trim(), String(MiB), 'nbdinfo agrees');
  }
});
