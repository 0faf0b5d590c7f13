/**
 * A lean JSON-over-HTTP client on node:http with keep-alive sockets, for the simulators and the
 * benchmark's admin calls: many nodes share one agent (per process), each request carries its
 * own credential, and every call is timed (milliseconds, from send to the last byte).
 */
import { Agent, request as httpRequest } from 'node:http';

export const RESPONSE_BYTES_MAX = 512 * 1024 * 1024;

export class JsonHttpError extends Error {
  constructor(
    message: string,
    /** The MDM's error code (PFLEX_ERR_*), or TIMEOUT, CONNECT, BAD_RESPONSE. */
    readonly code: string,
    readonly status: number | undefined,
    readonly ms: number,
    /** The MDM's error details (BUSY: retry_after_ms). */
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'JsonHttpError';
  }
}

export interface JsonAnswer<T> {
  readonly status: number;
  readonly body: T;
  readonly ms: number;
  readonly bytes: number;
}

export interface JsonHttpOptions {
  readonly baseUrl: string;
  readonly socketsMax: number;
  readonly timeoutMs: number;
}

export class JsonHttp {
  private readonly agent: Agent;
  private readonly host: string;
  private readonly port: number;
  readonly timeoutMs: number;

  constructor(private readonly options: JsonHttpOptions) {
    const url = new URL(options.baseUrl);
    if (url.protocol !== 'http:') throw new Error(`only http URLs: ${options.baseUrl}`);
    this.host = url.hostname;
    this.port = Number(url.port || 80);
    this.timeoutMs = options.timeoutMs;
    this.agent = new Agent({ keepAlive: true, maxSockets: options.socketsMax, maxFreeSockets: options.socketsMax, scheduling: 'lifo' });
  }

  /**
   * A client of the same MDM with connections of its own: one per simulated node, as each real
   * node (its own process, its own connection pool) never waits behind another node's requests.
   */
  ownConnections(socketsMax: number): JsonHttp {
    return new JsonHttp({ ...this.options, socketsMax });
  }

  get<T>(path: string, credential?: string, timeoutMs?: number): Promise<JsonAnswer<T>> {
    return this.request<T>('GET', path, undefined, credential, timeoutMs);
  }

  post<T>(path: string, body: unknown, credential?: string, timeoutMs?: number): Promise<JsonAnswer<T>> {
    return this.request<T>('POST', path, body ?? {}, credential, timeoutMs);
  }

  request<T>(method: string, path: string, body: unknown, credential?: string, timeoutMs = this.timeoutMs): Promise<JsonAnswer<T>> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = { accept: 'application/json' };
    if (credential !== undefined) headers.authorization = `Bearer ${credential}`;
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = payload.length;
    }
    const startedMs = performance.now();
    return new Promise<JsonAnswer<T>>((resolve, reject) => {
      let settled = false;
      const fail = (error: JsonHttpError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      };
      const req = httpRequest({ host: this.host, port: this.port, method, path, headers, agent: this.agent }, (res) => {
        const parts: Buffer[] = [];
        let bytes = 0;
        res.on('data', (part: Buffer) => {
          bytes += part.length;
          if (bytes > RESPONSE_BYTES_MAX) {
            req.destroy();
            fail(new JsonHttpError(`${method} ${path}: answer over ${RESPONSE_BYTES_MAX} bytes`, 'BAD_RESPONSE', res.statusCode, performance.now() - startedMs));
            return;
          }
          parts.push(part);
        });
        res.on('error', (error) => fail(new JsonHttpError(`${method} ${path}: ${error.message}`, 'CONNECT', res.statusCode, performance.now() - startedMs)));
        res.on('end', () => {
          if (settled) return;
          const ms = performance.now() - startedMs;
          const text = Buffer.concat(parts).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text.length === 0 ? undefined : JSON.parse(text);
          } catch {
            fail(new JsonHttpError(`${method} ${path}: answer is not JSON (HTTP ${res.statusCode})`, 'BAD_RESPONSE', res.statusCode, ms));
            return;
          }
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) {
            const error = (parsed as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)?.error;
            fail(new JsonHttpError(`${method} ${path}: HTTP ${status} ${error?.code ?? ''} ${error?.message ?? text.slice(0, 200)}`.trim(), error?.code ?? `HTTP_${status}`, status, ms, error?.details));
            return;
          }
          settled = true;
          clearTimeout(timer);
          resolve({ status, body: parsed as T, ms, bytes });
        });
      });
      const timer = setTimeout(() => {
        req.destroy();
        fail(new JsonHttpError(`${method} ${path}: no answer within ${timeoutMs} ms`, 'TIMEOUT', undefined, performance.now() - startedMs));
      }, timeoutMs);
      req.on('error', (error: Error & { code?: string }) => fail(new JsonHttpError(`${method} ${path}: ${error.code ?? error.message}`, 'CONNECT', undefined, performance.now() - startedMs)));
      if (payload !== undefined) req.end(payload);
      else req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** The error code of a failure (JsonHttpError's, or the error's name). */
export function errorCode(error: unknown): string {
  if (error instanceof JsonHttpError) return error.code;
  return error instanceof Error ? error.name : 'UNKNOWN';
}

/** Runs `task` over `items` with at most `concurrency` in flight; stops early when `stop()` says so. */
export async function forEachLimited<T>(items: readonly T[], concurrency: number, task: (item: T, index: number) => Promise<void>, stop: () => boolean = () => false): Promise<number> {
  let next = 0;
  let done = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, async () => {
    while (next < items.length && !stop()) {
      const index = next;
      next += 1;
      await task(items[index]!, index);
      done += 1;
    }
  });
  await Promise.all(workers);
  return done;
}
