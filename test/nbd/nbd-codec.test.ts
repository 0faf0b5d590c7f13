/**
 * The pure parts of the NBD server (nbd/codec.ts, nbd/session.ts, request validation and extent
 * shaping in nbd/transmission.ts), checked without sockets.
 */
import t from 'tap';
import { decodeRequest, decodeString, encodeBlockStatusReply, parseInfoRequest, parseMetaContextRequest, truncateUtf8 } from '../../nbd/codec.js';
import { NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_DF, NBD_FLAG_SEND_FAST_ZERO, NBD_FLAG_SEND_TRIM } from '../../nbd/constants.js';
import { wireErrno } from '../../nbd/errors.js';
import { blockSizesOf, transmissionFlagsFor, type NbdSession } from '../../nbd/session.js';
import { blockDescriptors, validateRequest } from '../../nbd/transmission.js';
import { MemoryExport } from '../helpers/nbd-memory-export.js';
import { CMD, CMD_FLAG, infoPayload, metaContextPayload, u16, u32 } from '../helpers/nbd-raw-client.js';

const MiB = 1024 * 1024;

t.test('strings: UTF-8, no NUL, at most 4096 bytes', async (t) => {
  t.equal(decodeString(Buffer.from('vol-1 é')), 'vol-1 é');
  t.equal(decodeString(Buffer.from([0x61, 0, 0x62])), undefined, 'NUL');
  t.equal(decodeString(Buffer.from([0xff, 0xfe])), undefined, 'invalid UTF-8');
  t.equal(decodeString(Buffer.alloc(4097, 0x61)), undefined, 'too long');
  t.equal(truncateUtf8('ééé', 5).toString(), 'éé', 'cut on a character boundary');
});

t.test('INFO/GO payloads', async (t) => {
  t.same(parseInfoRequest(infoPayload('disk', [1, 3])), { ok: true, value: { name: 'disk', infoTypes: [1, 3] } });
  t.same(parseInfoRequest(infoPayload('', [])), { ok: true, value: { name: '', infoTypes: [] } });
  t.match(parseInfoRequest(Buffer.alloc(5)), { ok: false, tooBig: false });
  t.match(parseInfoRequest(Buffer.concat([u32(0xffffffff), u16(0)])), { ok: false });
  t.match(parseInfoRequest(Buffer.concat([u32(0), u16(2), u16(1)])), { ok: false }, 'count larger than the list');
});

t.test('meta context payloads', async (t) => {
  t.same(parseMetaContextRequest(metaContextPayload('disk', ['base:allocation', 'x-y:z'])), { ok: true, value: { name: 'disk', queries: ['base:allocation', 'x-y:z'] } });
  t.match(parseMetaContextRequest(Buffer.concat([u32(0), u32(1)])), { ok: false }, 'a query missing');
  t.match(parseMetaContextRequest(Buffer.concat([metaContextPayload('d', []), Buffer.from([1])])), { ok: false }, 'trailing bytes');
  t.match(parseMetaContextRequest(Buffer.concat([u32(0), u32(1000)])), { ok: false, tooBig: true }, 'too many queries');
});

t.test('request offsets beyond 2^53 stay out of range', async (t) => {
  const header = Buffer.alloc(28);
  header.writeBigUInt64BE(2n ** 64n - 1n, 16);
  const request = decodeRequest(header);
  t.ok(request.offsetBytes > Number.MAX_SAFE_INTEGER);
});

t.test('block sizes and transmission flags', async (t) => {
  t.same(blockSizesOf(new MemoryExport({ name: 'a', sizeBytes: MiB })), { minimumBytes: 1, preferredBytes: 4096, maximumBytes: 32 * MiB });
  t.throws(() => blockSizesOf(new MemoryExport({ name: 'b', sizeBytes: MiB, minimumBlockBytes: 3 })), 'minimum not a power of two');
  t.throws(() => blockSizesOf(new MemoryExport({ name: 'c', sizeBytes: MiB, minimumBlockBytes: 512, preferredBlockBytes: 256 })), 'preferred below minimum');
  t.throws(() => blockSizesOf(new MemoryExport({ name: 'd', sizeBytes: MiB, minimumBlockBytes: 512, maximumBlockBytes: 1000 })), 'maximum not a multiple');
  const writable = transmissionFlagsFor(new MemoryExport({ name: 'w', sizeBytes: MiB }), false);
  t.ok(writable & NBD_FLAG_SEND_TRIM && writable & NBD_FLAG_SEND_FAST_ZERO);
  t.notOk(writable & NBD_FLAG_SEND_DF, 'no DF without structured replies');
  const readOnly = transmissionFlagsFor(new MemoryExport({ name: 'r', sizeBytes: MiB, readOnly: true }), true);
  t.ok(readOnly & NBD_FLAG_READ_ONLY && readOnly & NBD_FLAG_SEND_DF);
  t.notOk(readOnly & NBD_FLAG_SEND_TRIM);
});

t.test('validateRequest', async (t) => {
  const nbdExport = new MemoryExport({ name: 'v', sizeBytes: MiB });
  const session: NbdSession = {
    export: nbdExport,
    sizeBytes: MiB,
    blockSizes: blockSizesOf(nbdExport),
    transmissionFlags: transmissionFlagsFor(nbdExport, true),
    structuredReplies: true,
    baseAllocationContextId: 1,
  };
  const check = (type: number, offsetBytes: number, lengthBytes: number, flags = 0): string | undefined =>
    validateRequest({ magic: 0x25609513, type, flags, handle: 1n, offsetBytes, lengthBytes }, session)?.errno;
  t.equal(check(CMD.READ, 0, 4096), undefined);
  t.equal(check(CMD.READ, MiB - 1, 2), 'EINVAL');
  t.equal(check(CMD.WRITE, MiB - 1, 2), 'ENOSPC');
  t.equal(check(CMD.READ, 0, 33 * MiB), 'EINVAL');
  t.equal(check(CMD.WRITE_ZEROES, 0, MiB, CMD_FLAG.FAST_ZERO | CMD_FLAG.NO_HOLE), undefined);
  t.equal(check(CMD.BLOCK_STATUS, 0, MiB, CMD_FLAG.REQ_ONE), undefined);
  t.equal(check(CMD.READ, 0, 512, CMD_FLAG.DF), undefined);
  t.equal(check(CMD.FLUSH, 0, 0, CMD_FLAG.FUA), undefined);
  t.equal(check(CMD.DISC, 0, 0), 'EINVAL', 'DISC never reaches validation');
  t.equal(check(42, 0, 0), 'EINVAL');
});

t.test('block descriptors from extents', async (t) => {
  t.same(blockDescriptors([{ lengthBytes: 100, flags: 3 }, { lengthBytes: 100, flags: 3 }, { lengthBytes: 100, flags: 0 }], 250, false), [
    { lengthBytes: 200, flags: 3 },
    { lengthBytes: 50, flags: 0 },
  ], 'merged and clamped to the request');
  t.same(blockDescriptors([{ lengthBytes: 1000, flags: 0xff }], 10, true), [{ lengthBytes: 10, flags: 3 }], 'REQ_ONE, reserved bits dropped');
  t.same(blockDescriptors([{ lengthBytes: 5, flags: 0 }], 10, false), [{ lengthBytes: 5, flags: 0 }], 'stopping early is allowed');
  t.throws(() => blockDescriptors([], 10, false));
  t.throws(() => blockDescriptors([{ lengthBytes: 0, flags: 0 }], 10, false));
  t.throws(() => blockDescriptors([{ lengthBytes: 1.5, flags: 0 }], 10, false));
  const reply = encodeBlockStatusReply(9n, 1, [{ lengthBytes: 4096, flags: 3 }]);
  t.equal(reply.length, 20 + 4 + 8);
  t.equal(reply.readUInt32BE(16), 12, 'payload length');
});

t.test('error values on the wire', async (t) => {
  t.equal(wireErrno('ENOTSUP', { fastZero: true, dontFragment: false }), 95);
  t.equal(wireErrno('ENOTSUP', { fastZero: false, dontFragment: false }), 22, 'ENOTSUP only for FAST_ZERO');
  t.equal(wireErrno('EOVERFLOW', { fastZero: false, dontFragment: true }), 75);
  t.equal(wireErrno('EOVERFLOW', { fastZero: false, dontFragment: false }), 22, 'EOVERFLOW only for DF');
  t.equal(wireErrno('ESHUTDOWN', { fastZero: false, dontFragment: false }), 108);
});
