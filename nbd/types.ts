/** What the NBD server asks of the storage behind it: exports, and who names them. */
import type { Logger } from '../src/common/logger.js';

export interface NbdExtent {
  readonly lengthBytes: number;
  /** base:allocation flags: bit 0 NBD_STATE_HOLE, bit 1 NBD_STATE_ZERO; other bits are dropped. */
  readonly flags: number;
}

export interface NbdWriteZeroesOptions {
  readonly fua: boolean;
  /** The client wants the range provisioned, not punched. */
  readonly noHole: boolean;
  /** The client wants a fast failure (throw NbdError('ENOTSUP')) if zeroing is no faster than writing. */
  readonly fastZero: boolean;
}

/**
 * One exported block device. Offsets and lengths reaching a method are already validated: inside the
 * export, aligned to minimumBlockBytes, within maximumBlockBytes where the spec applies it, and nonzero.
 * Throw NbdError to choose the NBD error; anything else thrown is logged and answered with EIO.
 */
export interface NbdExport {
  readonly name: string;
  readonly description?: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Default 1; a power of two up to 64 KiB. */
  readonly minimumBlockBytes?: number;
  /** Default 4096; a power of two at least max(minimum, 512). */
  readonly preferredBlockBytes?: number;
  /** Default 32 MiB; READ/WRITE/CACHE/WRITE_ZEROES (without FAST_ZERO) above it get EINVAL. */
  readonly maximumBlockBytes?: number;
  /** Must resolve to exactly lengthBytes bytes. */
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number, options: NbdWriteZeroesOptions): Promise<void>;
  /** Optional prefetch hint; without it NBD_CMD_CACHE succeeds doing nothing. */
  cache?(offsetBytes: number, lengthBytes: number): Promise<void>;
  /**
   * base:allocation extents from offsetBytes, consecutive, covering [offset, offset+length) or stopping
   * early (at least one extent). Without it every range reports as allocated data (flags 0).
   */
  blockStatus?(offsetBytes: number, lengthBytes: number): Promise<NbdExtent[]>;
}

export interface NbdExportSummary {
  readonly name: string;
  readonly description?: string;
}

export interface NbdExportProvider {
  /** What NBD_OPT_LIST announces. */
  list(): NbdExportSummary[];
  /** Called on EXPORT_NAME, GO and INFO; may return a fresh object per connection. */
  open(name: string): NbdExport | undefined;
  /** The export an empty name means, if any. */
  defaultExportName?(): string | undefined;
}

export interface NbdServerOptions {
  readonly host: string;
  /** 0 picks a free port; the started server reports the real one. */
  readonly port: number;
  readonly provider: NbdExportProvider;
  readonly log: Logger;
  readonly connectionsMax?: number;
  /** Requests served concurrently per connection before it stops reading the socket. */
  readonly requestsInFlightMax?: number;
  /** From accept to the end of option haggling. */
  readonly handshakeTimeoutMs?: number;
}

export interface NbdServer {
  readonly port: number;
  /** Open connections, in handshake or transmission. */
  connections(): number;
  /** Stops listening, lets in-flight requests finish (bounded), then closes every connection. */
  close(): Promise<void>;
}
