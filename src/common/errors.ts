/**
 * The one error table of pflex (after fastify's lib/errors.js): every error a component
 * returns over HTTP or a frame has a stable code, an HTTP status and a human message.
 * Codes never change meaning once released; scripts match on them.
 */

export interface ErrorSpec {
  readonly code: string;
  readonly httpStatus: number;
}

export const ERRORS = {
  BAD_REQUEST: { code: 'PFLEX_ERR_BAD_REQUEST', httpStatus: 400 },
  BAD_JSON: { code: 'PFLEX_ERR_BAD_JSON', httpStatus: 400 },
  VALIDATION: { code: 'PFLEX_ERR_VALIDATION', httpStatus: 400 },
  UNAUTHORIZED: { code: 'PFLEX_ERR_UNAUTHORIZED', httpStatus: 401 },
  FORBIDDEN: { code: 'PFLEX_ERR_FORBIDDEN', httpStatus: 403 },
  NOT_FOUND: { code: 'PFLEX_ERR_NOT_FOUND', httpStatus: 404 },
  METHOD_NOT_ALLOWED: { code: 'PFLEX_ERR_METHOD_NOT_ALLOWED', httpStatus: 405 },
  NAME_TAKEN: { code: 'PFLEX_ERR_NAME_TAKEN', httpStatus: 409 },
  NOT_EMPTY: { code: 'PFLEX_ERR_NOT_EMPTY', httpStatus: 409 },
  VOLUME_MAPPED: { code: 'PFLEX_ERR_VOLUME_MAPPED', httpStatus: 409 },
  NOT_MAPPED: { code: 'PFLEX_ERR_NOT_MAPPED', httpStatus: 409 },
  ALREADY_MAPPED: { code: 'PFLEX_ERR_ALREADY_MAPPED', httpStatus: 409 },
  MULTI_MAP_NOT_ALLOWED: { code: 'PFLEX_ERR_MULTI_MAP_NOT_ALLOWED', httpStatus: 409 },
  MULTI_WRITER: { code: 'PFLEX_ERR_MULTI_WRITER', httpStatus: 409 },
  CONFLICT: { code: 'PFLEX_ERR_CONFLICT', httpStatus: 409 },
  /** A lease renewal whose plan changed (or that this MDM cannot vouch for): authorize afresh. */
  PLAN_CHANGED: { code: 'PFLEX_ERR_PLAN_CHANGED', httpStatus: 409 },
  PAYLOAD_TOO_LARGE: { code: 'PFLEX_ERR_PAYLOAD_TOO_LARGE', httpStatus: 413 },
  UNSUPPORTED_MEDIA_TYPE: { code: 'PFLEX_ERR_UNSUPPORTED_MEDIA_TYPE', httpStatus: 415 },
  RANGE: { code: 'PFLEX_ERR_RANGE', httpStatus: 416 },
  INSUFFICIENT_CAPACITY: { code: 'PFLEX_ERR_INSUFFICIENT_CAPACITY', httpStatus: 507 },
  PLACEMENT_IMPOSSIBLE: { code: 'PFLEX_ERR_PLACEMENT_IMPOSSIBLE', httpStatus: 507 },
  JOIN_TOKEN_INVALID: { code: 'PFLEX_ERR_JOIN_TOKEN_INVALID', httpStatus: 401 },
  UNAVAILABLE: { code: 'PFLEX_ERR_UNAVAILABLE', httpStatus: 503 },
  /** Overloaded for now: retry after `details.retry_after_ms`. */
  BUSY: { code: 'PFLEX_ERR_BUSY', httpStatus: 503 },
  INTERNAL: { code: 'PFLEX_ERR_INTERNAL', httpStatus: 500 },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorName = keyof typeof ERRORS;

/** An error meant for the caller: it carries a stable code and a status. */
export class PflexError extends Error {
  readonly code: string;
  readonly httpStatus: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(name: ErrorName, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'PflexError';
    this.code = ERRORS[name].code;
    this.httpStatus = ERRORS[name].httpStatus;
    this.details = details;
  }

  toBody(): { error: { code: string; message: string; details?: Record<string, unknown> } } {
    const error: { code: string; message: string; details?: Record<string, unknown> } = {
      code: this.code,
      message: this.message,
    };
    if (this.details !== undefined) error.details = this.details;
    return { error };
  }
}

export function pflexError(name: ErrorName, message: string, details?: Record<string, unknown>): PflexError {
  return new PflexError(name, message, details);
}

/** Asserts an invariant of our own code (TIGER_STYLE): a failure is a bug, never bad input. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
