/** Random credentials and their stored form. Secrets are never stored, only their SHA-256. */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const SECRET_BYTES = 32;

/** A printable secret with a prefix that says what it is (pfa_ admin, pfj_ join, pfn_ node). */
export function newSecret(prefix: 'pfa' | 'pfj' | 'pfn'): string {
  return `${prefix}_${randomBytes(SECRET_BYTES).toString('base64url')}`;
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** Compares two equal-length hex digests in constant time. */
export function digestsEqual(aHex: string, bHex: string): boolean {
  const a = Buffer.from(aHex, 'hex');
  const b = Buffer.from(bHex, 'hex');
  return a.length === b.length && a.length > 0 && timingSafeEqual(a, b);
}

export function newSigningKey(): Buffer {
  return randomBytes(SECRET_BYTES);
}
