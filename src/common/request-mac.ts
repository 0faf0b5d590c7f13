/**
 * The request MAC (docs/PROTOCOL.md §1.2): the first 16 bytes of HMAC-SHA256(key, header bytes
 * 0..63), stored in header bytes 64..79. Computed by the pflex_mac addon (native/pflex_mac.cc) from
 * per-key precomputed SHA-256 states: about 0.3 µs against 2.5 µs for crypto.createHmac, on every
 * request the SDC sends and every one an SDS checks. Where the addon was not built, Node's crypto
 * computes the same bytes.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { findAddon, loadAddon } from './native-addons.js';

export const REQUEST_MAC_OFFSET = 64;
export const REQUEST_MAC_BYTES = 16;

interface NativeMac {
  keyState(key: Uint8Array): Buffer;
  sign(keyState: Buffer, buffer: Uint8Array, messageBytes: number, tagOffset: number, tagBytes: number): void;
  verify(keyState: Buffer, buffer: Uint8Array, messageBytes: number, tagOffset: number, tagBytes: number): boolean;
}

const addonPath = findAddon('pflex_mac');
const native: NativeMac | undefined = addonPath === undefined ? undefined : loadAddon<NativeMac>(addonPath);

/** Whether MACs are computed natively (logged by the roles at start). */
export const nativeMacAvailable = native !== undefined;

/** A key prepared once for the hot path. */
export interface MacKey {
  readonly key: Buffer;
  /** The addon's precomputed HMAC states; undefined without the addon. */
  readonly state: Buffer | undefined;
}

export function macKeyOf(key: Buffer): MacKey {
  return { key, state: native?.keyState(key) };
}

function prepared(key: MacKey | Buffer): MacKey {
  return Buffer.isBuffer(key) ? macKeyOf(key) : key;
}

/** The 16-byte MAC of a request header (a copy). */
export function computeRequestMac(key: MacKey | Buffer, header: Buffer): Buffer {
  const mac = prepared(key);
  if (mac.state !== undefined && native !== undefined) {
    const scratch = Buffer.allocUnsafe(REQUEST_MAC_OFFSET + REQUEST_MAC_BYTES);
    header.copy(scratch, 0, 0, REQUEST_MAC_OFFSET);
    native.sign(mac.state, scratch, REQUEST_MAC_OFFSET, REQUEST_MAC_OFFSET, REQUEST_MAC_BYTES);
    return scratch.subarray(REQUEST_MAC_OFFSET);
  }
  return createHmac('sha256', mac.key).update(header.subarray(0, REQUEST_MAC_OFFSET)).digest().subarray(0, REQUEST_MAC_BYTES);
}

/** Writes the MAC into the header's last 16 bytes. */
export function signRequestHeader(key: MacKey | Buffer, header: Buffer): void {
  const mac = prepared(key);
  if (mac.state !== undefined && native !== undefined) native.sign(mac.state, header, REQUEST_MAC_OFFSET, REQUEST_MAC_OFFSET, REQUEST_MAC_BYTES);
  else computeRequestMac(mac, header).copy(header, REQUEST_MAC_OFFSET);
}

/** Whether the header's MAC is right, compared in constant time. */
export function requestMacValid(key: MacKey | Buffer, header: Buffer): boolean {
  const mac = prepared(key);
  if (header.length < REQUEST_MAC_OFFSET + REQUEST_MAC_BYTES) return false;
  if (mac.state !== undefined && native !== undefined) return native.verify(mac.state, header, REQUEST_MAC_OFFSET, REQUEST_MAC_OFFSET, REQUEST_MAC_BYTES);
  return timingSafeEqual(computeRequestMac(mac, header), header.subarray(REQUEST_MAC_OFFSET, REQUEST_MAC_OFFSET + REQUEST_MAC_BYTES));
}
