/**
 * What the handshake hands to transmission: the export, its checked block sizes, the transmission
 * flags advertised for it on this connection, and the negotiated reply style and meta context.
 */
import assert from 'node:assert/strict';
import {
  BLOCK_BYTES_MAXIMUM_DEFAULT,
  BLOCK_BYTES_MINIMUM_DEFAULT,
  BLOCK_BYTES_MINIMUM_LIMIT,
  BLOCK_BYTES_PREFERRED_DEFAULT,
  BLOCK_BYTES_PREFERRED_FLOOR,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  UINT32_MAX,
} from './constants.js';
import type { NbdExport } from './types.js';

export interface BlockSizes {
  readonly minimumBytes: number;
  readonly preferredBytes: number;
  readonly maximumBytes: number;
}

export interface NbdSession {
  readonly export: NbdExport;
  readonly sizeBytes: number;
  readonly blockSizes: BlockSizes;
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  /** The base:allocation context id, when SET_META_CONTEXT selected it for this very export. */
  readonly baseAllocationContextId: number | undefined;
}

function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && (value & (value - 1)) === 0;
}

/**
 * The export's block sizes with defaults filled in, checked against the spec's rules. A broken export
 * is a programming error of the storage side, so it fails an assertion (which ends only this connection).
 */
export function blockSizesOf(nbdExport: NbdExport): BlockSizes {
  const sizeBytes = nbdExport.sizeBytes;
  assert.ok(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0, `export ${nbdExport.name}: sizeBytes is a byte count`);
  const minimumBytes = nbdExport.minimumBlockBytes ?? BLOCK_BYTES_MINIMUM_DEFAULT;
  const preferredBytes = nbdExport.preferredBlockBytes ?? Math.max(BLOCK_BYTES_PREFERRED_DEFAULT, minimumBytes);
  const maximumBytes = nbdExport.maximumBlockBytes ?? BLOCK_BYTES_MAXIMUM_DEFAULT;
  assert.ok(isPowerOfTwo(minimumBytes) && minimumBytes <= BLOCK_BYTES_MINIMUM_LIMIT, `export ${nbdExport.name}: minimum block is a power of two ≤ 64 KiB`);
  assert.ok(
    isPowerOfTwo(preferredBytes) && preferredBytes >= Math.max(minimumBytes, BLOCK_BYTES_PREFERRED_FLOOR),
    `export ${nbdExport.name}: preferred block is a power of two ≥ max(minimum, 512)`,
  );
  assert.ok(
    Number.isSafeInteger(maximumBytes) && maximumBytes <= UINT32_MAX && maximumBytes % minimumBytes === 0,
    `export ${nbdExport.name}: maximum block is a u32 multiple of the minimum`,
  );
  assert.ok(maximumBytes >= Math.min(preferredBytes, sizeBytes), `export ${nbdExport.name}: maximum block ≥ min(preferred, size)`);
  return { minimumBytes, preferredBytes, maximumBytes };
}

/**
 * Transmission flags for an export on this connection. Read-only exports do not advertise the write
 * features (FUA, TRIM, WRITE_ZEROES, FAST_ZERO) so clients do not offer them; writes still get EPERM.
 * DF is only legal once structured replies are on; every read reply here is a single chunk anyway.
 */
export function transmissionFlagsFor(nbdExport: NbdExport, structuredReplies: boolean): number {
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN;
  if (nbdExport.readOnly) flags |= NBD_FLAG_READ_ONLY;
  else flags |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
  if (structuredReplies) flags |= NBD_FLAG_SEND_DF;
  return flags;
}
