/**
 * The MDM's fastify instance: body limits, the {error:{code,message}} shape for every failure,
 * and the access check each route declares (public, admin, node, or admin-or-node).
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import { ZodError } from 'zod';
import { PflexError, pflexError, ERRORS } from '../common/errors.js';
import { parseRef, type Ref } from '../common/names.js';
import type { Logger } from '../common/logger.js';
import { resolveCaller, type AdminCredentials, type Caller } from './auth.js';
import type { Db } from './database.js';

export const HTTP_BODY_BYTES_MAX = 1024 * 1024;
/**
 * Connections the MDM holds open at most: every node keeps a few (an SDC at most
 * AUTHORIZE_IN_FLIGHT_MAX for authorizations plus its heartbeats and reports), for thousands of nodes.
 */
export const HTTP_CONNECTIONS_MAX = 8192;
/**
 * Connections waiting to be accepted (the kernel caps it at net.core.somaxconn). Node's 511 was
 * too few: a hundred SDCs starting while the MDM was busy overflowed it, and every dropped SYN
 * is retried after 1, 3, 7 s, so requests timed out before the MDM ever saw them.
 */
export const HTTP_LISTEN_BACKLOG = 4096;
export const HTTP_REQUEST_TIMEOUT_MS = 30_000;

export type Access = 'public' | 'admin' | 'node' | 'admin-or-node';

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | undefined;
  }
  interface FastifyContextConfig {
    access?: Access;
  }
}

/** Error text echoes input (unknown keys, bad values): bounded so a huge body cannot make a huge answer. */
export const ERROR_TEXT_LENGTH_MAX = 300;
const ERROR_ISSUES_MAX = 10;

function bounded(text: string): string {
  return text.length <= ERROR_TEXT_LENGTH_MAX ? text : `${text.slice(0, ERROR_TEXT_LENGTH_MAX)}…`;
}

export function zodErrorToPflex(error: ZodError): PflexError {
  const issue = error.issues[0];
  const field = issue === undefined || issue.path.length === 0 ? '(body)' : bounded(issue.path.join('.'));
  const message = issue === undefined ? 'invalid input' : `${field}: ${bounded(issue.message)}`;
  return pflexError('VALIDATION', message, {
    field,
    issues: error.issues.slice(0, ERROR_ISSUES_MAX).map((i) => ({ path: bounded(i.path.join('.')), message: bounded(i.message) })),
  });
}

export function toPflexError(error: unknown): PflexError {
  if (error instanceof PflexError) return error;
  if (error instanceof ZodError) return zodErrorToPflex(error);
  const fastifyError = error as { statusCode?: number; code?: string; message?: string };
  const status = fastifyError.statusCode;
  if (status === 413) return pflexError('PAYLOAD_TOO_LARGE', `request body larger than ${HTTP_BODY_BYTES_MAX} bytes`);
  if (status === 415) return pflexError('UNSUPPORTED_MEDIA_TYPE', 'send request bodies as application/json');
  if (fastifyError.code?.startsWith('FST_ERR_CTP_') || (error instanceof SyntaxError && status === 400)) {
    return pflexError('BAD_JSON', bounded(`request body is not valid JSON: ${fastifyError.message ?? ''}`.trim()));
  }
  if (status !== undefined && status >= 400 && status < 500) {
    return new PflexError('BAD_REQUEST', bounded(fastifyError.message ?? 'bad request'));
  }
  return pflexError('INTERNAL', 'internal error; see the MDM log');
}

export function buildHttpServer(log: Logger, db: Db, admin: AdminCredentials): FastifyInstance {
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    bodyLimit: HTTP_BODY_BYTES_MAX,
    requestTimeout: HTTP_REQUEST_TIMEOUT_MS,
    routerOptions: { maxParamLength: 200 },
    // Per-request lines would drown the log; refusals are logged by the onResponse hook.
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
    // Malformed URLs and over-long parameters fail in the router, before any hook: same error shape.
    frameworkErrors: (error, _request, reply) => {
      const pflex = toPflexError(error);
      void (reply as unknown as { status(code: number): { send(body: unknown): unknown } }).status(pflex.httpStatus).send(pflex.toBody());
    },
  });
  app.server.maxConnections = HTTP_CONNECTIONS_MAX;
  // Only JSON bodies: a text/plain body gets 415, not a confusing validation error.
  app.removeContentTypeParser('text/plain');
  app.decorateRequest('caller', undefined);

  app.addHook('onRequest', async (request) => {
    const access = request.routeOptions.config.access ?? 'admin';
    request.caller = resolveCaller(db, admin, request.headers.authorization);
    if (access === 'public') return;
    const caller = request.caller;
    const allowed =
      (caller?.kind === 'admin' && access !== 'node') || (caller?.kind === 'node' && access !== 'admin');
    if (caller === undefined) {
      throw pflexError('UNAUTHORIZED', 'missing or unknown credential: send "Authorization: Bearer <token>"');
    }
    if (!allowed) throw pflexError('FORBIDDEN', `this endpoint needs ${access} credentials`);
  });

  app.addHook('onResponse', async (request, reply) => {
    if (reply.statusCode >= 400) {
      // BUSY answers come in bursts by nature (admission.ts counts them): not one line each.
      const level = reply.statusCode === ERRORS.BUSY.httpStatus ? 'debug' : 'info';
      request.log[level]({ method: request.method, url: request.url, status: reply.statusCode }, 'request refused');
    }
  });

  app.setErrorHandler((error, request, reply) => {
    const pflex = toPflexError(error);
    if (pflex.httpStatus >= 500 && pflex.code !== ERRORS.BUSY.code) request.log.error({ err: error, url: request.url }, 'request failed');
    void reply.status(pflex.httpStatus).send(pflex.toBody());
  });

  app.setNotFoundHandler((request, reply) => {
    const body = new PflexError('NOT_FOUND', `no such endpoint: ${request.method} ${request.url.split('?')[0]}`).toBody();
    void reply.status(ERRORS.NOT_FOUND.httpStatus).send(body);
  });

  return app;
}

/** A "{id}" path parameter as an id or a name, or a 400 naming the parameter. */
export function refParam(request: FastifyRequest, name = 'id'): Ref {
  const raw = (request.params as Record<string, string | undefined>)[name] ?? '';
  const ref = parseRef(raw);
  if (ref === undefined) {
    throw pflexError('VALIDATION', `${name}: must be a numeric id or a valid name`, { field: name });
  }
  return ref;
}

/** The body of a POST, defaulting to {} when the client sent none. */
export function bodyOf(request: FastifyRequest): unknown {
  return request.body ?? {};
}
