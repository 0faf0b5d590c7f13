/**
 * The request MAC (src/common/request-mac.ts): the pflex_mac addon computes exactly
 * HMAC-SHA256(key, header[0..64))[0..16) for keys of every length, verification refuses any
 * changed bit, and bad arguments to the addon throw instead of crashing.
 */
import t from 'tap';
import fc from 'fast-check';
import { createHmac, randomBytes } from 'node:crypto';
import { computeRequestMac, macKeyOf, nativeMacAvailable, requestMacValid, signRequestHeader, REQUEST_MAC_OFFSET } from '../../src/common/request-mac.js';
import { findAddon, loadAddon } from '../../src/common/native-addons.js';

const HEADER_BYTES = REQUEST_MAC_OFFSET + 16;

function reference(key: Buffer, header: Buffer): Buffer {
  return createHmac('sha256', key).update(header.subarray(0, REQUEST_MAC_OFFSET)).digest().subarray(0, 16);
}

t.test('the addon is built and used', async (t) => {
  t.ok(nativeMacAvailable, 'pflex_mac loaded (npm install builds it)');
});

t.test('sign and compute equal HMAC-SHA256 truncated, for keys of any length', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), fc.uint8Array({ minLength: HEADER_BYTES, maxLength: HEADER_BYTES }), (keyBytes, headerBytes) => {
      const key = Buffer.from(keyBytes);
      const header = Buffer.from(headerBytes);
      const expected = reference(key, header);
      if (!computeRequestMac(macKeyOf(key), header).equals(expected)) return false;
      if (!computeRequestMac(key, header).equals(expected)) return false; // a raw key too
      signRequestHeader(macKeyOf(key), header);
      return header.subarray(REQUEST_MAC_OFFSET).equals(expected) && requestMacValid(macKeyOf(key), header);
    }),
    { numRuns: 500 },
  );
  t.pass('500 keys and headers');
});

t.test('verification refuses every single-bit change and a wrong key', async (t) => {
  const key = macKeyOf(randomBytes(32));
  const header = randomBytes(HEADER_BYTES);
  signRequestHeader(key, header);
  t.ok(requestMacValid(key, header), 'the signed header verifies');
  let refused = 0;
  for (let bit = 0; bit < HEADER_BYTES * 8; bit += 1) {
    header[bit >> 3]! ^= 1 << (bit & 7);
    if (!requestMacValid(key, header)) refused += 1;
    header[bit >> 3]! ^= 1 << (bit & 7);
  }
  t.equal(refused, HEADER_BYTES * 8, 'every flipped bit, in the header or the MAC, is refused');
  t.notOk(requestMacValid(macKeyOf(randomBytes(32)), header), 'another key is refused');
  t.notOk(requestMacValid(key, header.subarray(0, HEADER_BYTES - 1)), 'a short header is refused');
});

t.test('the addon refuses bad arguments with exceptions', async (t) => {
  const path = findAddon('pflex_mac');
  t.ok(path !== undefined, 'found');
  const addon = loadAddon<{
    keyState(key: unknown): Buffer;
    sign(...args: unknown[]): void;
    verify(...args: unknown[]): boolean;
  }>(path!);
  const state = addon.keyState(randomBytes(16));
  const header = randomBytes(HEADER_BYTES);
  t.throws(() => addon.keyState('key'), TypeError, 'a string key');
  t.throws(() => addon.sign(Buffer.alloc(3), header, 64, 64, 16), RangeError, 'not a key state');
  t.throws(() => addon.sign(state, 'header', 64, 64, 16), TypeError, 'a string buffer');
  t.throws(() => addon.sign(state, header, 64, 70, 16), RangeError, 'tag past the end');
  t.throws(() => addon.sign(state, header, 81, 64, 16), RangeError, 'message past the end');
  t.throws(() => addon.sign(state, header, -1, 64, 16), RangeError, 'negative length');
  t.throws(() => addon.sign(state, header, 64, 64, 33), RangeError, 'tag longer than a digest');
  t.throws(() => addon.verify(state, header, 64, 64), TypeError, 'a missing argument');
  t.throws(() => addon.sign(state, Buffer.alloc(2000), 2000, 0, 16), RangeError, 'a message over the limit');
});
