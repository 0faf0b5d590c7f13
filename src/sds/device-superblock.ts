/**
 * A device's identity (DESIGN §6): the first 4 KiB of every SDS device hold a superblock naming
 * the cluster, the SDS, the MDM's device id, the device's own id and the SDS incarnation that
 * formatted it, under a SHA-256 checksum. The SDS reads it before it trusts a byte of the device:
 * a device that is missing, blank, foreign or from another incarnation of this SDS never serves
 * its chunks, and is never silently recreated (docs/PROTOCOL.md §7 has the layout).
 *
 * Chunk slots start after DEVICE_HEADER_BYTES, so the superblock never shares a slot.
 */
import { createHash, randomBytes } from 'node:crypto';

export const SUPERBLOCK_MAGIC = 'PFLXDEV1';
export const SUPERBLOCK_VERSION = 1;
export const SUPERBLOCK_BYTES = 4096;
/** Reserved at the start of every device: the superblock, then room; slot 0 begins here. */
export const DEVICE_HEADER_BYTES = 1024 * 1024;
const CLUSTER_ID_BYTES_MAX = 64;
const CHECKSUM_BYTES = 32;
const CHECKSUM_OFFSET = SUPERBLOCK_BYTES - CHECKSUM_BYTES;

export interface Superblock {
  readonly clusterId: string;
  readonly sdsId: number;
  readonly mdmDeviceId: number;
  /** 32 hex digits, made when the device is formatted. */
  readonly deviceUuid: string;
  /** 32 hex digits: the incarnation of the SDS (its sds_local.db) that formatted the device. */
  readonly sdsIncarnation: string;
  readonly slotBytes: number;
  readonly capacityBytes: number;
  readonly formattedAtMs: number;
}

export function newUuidHex(): string {
  return randomBytes(16).toString('hex');
}

/** Encodes a superblock into `target` (at least SUPERBLOCK_BYTES; the rest of the 4 KiB is zeroed). */
export function encodeSuperblock(block: Superblock, target: Buffer): Buffer {
  if (target.length < SUPERBLOCK_BYTES) throw new RangeError(`a superblock needs ${SUPERBLOCK_BYTES} bytes`);
  const clusterId = Buffer.from(block.clusterId, 'utf8');
  if (clusterId.length === 0 || clusterId.length > CLUSTER_ID_BYTES_MAX) throw new RangeError('cluster id must be 1..64 bytes');
  if (!/^[0-9a-f]{32}$/.test(block.deviceUuid) || !/^[0-9a-f]{32}$/.test(block.sdsIncarnation)) throw new RangeError('uuids are 32 hex digits');
  const region = target.subarray(0, SUPERBLOCK_BYTES);
  region.fill(0);
  region.write(SUPERBLOCK_MAGIC, 0, 'ascii');
  region.writeUInt32BE(SUPERBLOCK_VERSION, 8);
  region.writeUInt32BE(DEVICE_HEADER_BYTES, 12);
  region.writeUInt32BE(block.sdsId, 16);
  region.writeUInt32BE(block.mdmDeviceId, 20);
  Buffer.from(block.deviceUuid, 'hex').copy(region, 24);
  Buffer.from(block.sdsIncarnation, 'hex').copy(region, 40);
  region.writeDoubleBE(block.slotBytes, 56);
  region.writeDoubleBE(block.capacityBytes, 64);
  region.writeDoubleBE(block.formattedAtMs, 72);
  region.writeUInt8(clusterId.length, 80);
  clusterId.copy(region, 81);
  checksum(region).copy(region, CHECKSUM_OFFSET);
  return target;
}

export type SuperblockRead = { kind: 'blank' } | { kind: 'invalid'; reason: string } | { kind: 'ok'; block: Superblock };

/**
 * Reads the first SUPERBLOCK_BYTES of a device. Blank: every byte zero (a new file or a wiped
 * device). Invalid: anything else that is not a well-formed pflex superblock.
 */
export function decodeSuperblock(bytes: Buffer): SuperblockRead {
  if (bytes.length < SUPERBLOCK_BYTES) return { kind: 'invalid', reason: 'shorter than a superblock' };
  const region = bytes.subarray(0, SUPERBLOCK_BYTES);
  if (region.every((byte) => byte === 0)) return { kind: 'blank' };
  if (region.toString('ascii', 0, 8) !== SUPERBLOCK_MAGIC) return { kind: 'invalid', reason: 'no pflex superblock (other data on the device)' };
  if (!checksum(region).equals(region.subarray(CHECKSUM_OFFSET))) return { kind: 'invalid', reason: 'superblock checksum mismatch' };
  const version = region.readUInt32BE(8);
  if (version !== SUPERBLOCK_VERSION) return { kind: 'invalid', reason: `superblock version ${version}, this pflex reads ${SUPERBLOCK_VERSION}` };
  if (region.readUInt32BE(12) !== DEVICE_HEADER_BYTES) return { kind: 'invalid', reason: 'superblock with another header size' };
  const clusterIdBytes = region.readUInt8(80);
  if (clusterIdBytes === 0 || clusterIdBytes > CLUSTER_ID_BYTES_MAX) return { kind: 'invalid', reason: 'superblock with a bad cluster id' };
  return {
    kind: 'ok',
    block: {
      sdsId: region.readUInt32BE(16),
      mdmDeviceId: region.readUInt32BE(20),
      deviceUuid: region.subarray(24, 40).toString('hex'),
      sdsIncarnation: region.subarray(40, 56).toString('hex'),
      slotBytes: region.readDoubleBE(56),
      capacityBytes: region.readDoubleBE(64),
      formattedAtMs: region.readDoubleBE(72),
      clusterId: region.toString('utf8', 81, 81 + clusterIdBytes),
    },
  };
}

function checksum(region: Buffer): Buffer {
  return createHash('sha256').update(region.subarray(0, CHECKSUM_OFFSET)).digest();
}
