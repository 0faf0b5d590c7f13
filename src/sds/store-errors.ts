/** The chunk store's one error type: what the data port turns into a reply status. */

export type ChunkStoreErrorKind = 'NO_SPACE' | 'NO_DEVICE' | 'IO' | 'LOST';

export const ERRNO_EIO = 5;
export const ERRNO_ENODEV = 19;
export const ERRNO_ENOSPC = 28;

export class ChunkStoreError extends Error {
  constructor(
    message: string,
    /** LOST: the chunk's device is missing or foreign; its replica here must never serve. */
    readonly kind: ChunkStoreErrorKind,
    readonly errno = 0,
  ) {
    super(message);
    this.name = 'ChunkStoreError';
  }
}
