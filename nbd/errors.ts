/**
 * The NBD error values (spec "Error values") and the one error class exports throw to choose them.
 * Anything else an export throws is a server fault and becomes EIO.
 */

export const NBD_ERRNO = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export type NbdErrno = keyof typeof NBD_ERRNO;

/** Thrown by an export (or by validation) to answer a request with a specific NBD error. */
export class NbdError extends Error {
  constructor(
    readonly errno: NbdErrno,
    message: string,
  ) {
    super(message);
    this.name = 'NbdError';
  }
}

export function isNbdError(error: unknown): error is NbdError {
  return error instanceof NbdError && Object.hasOwn(NBD_ERRNO, error.errno);
}

/**
 * The wire value for an error, with the spec's two SHOULD NOTs applied: ENOTSUP only answers a
 * FAST_ZERO request and EOVERFLOW only a DF read; elsewhere both become EINVAL.
 */
export function wireErrno(errno: NbdErrno, context: { fastZero: boolean; dontFragment: boolean }): number {
  if (errno === 'ENOTSUP' && !context.fastZero) return NBD_ERRNO.EINVAL;
  if (errno === 'EOVERFLOW' && !context.dontFragment) return NBD_ERRNO.EINVAL;
  return NBD_ERRNO[errno];
}

/** A protocol violation that ends the connection (bad magic, oversized payload, ...). */
export class NbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NbdProtocolError';
  }
}

/** The peer went away (EOF, reset, or we destroyed the socket) while we waited for bytes. */
export class NbdConnectionClosed extends Error {
  constructor(message = 'connection closed') {
    super(message);
    this.name = 'NbdConnectionClosed';
  }
}
