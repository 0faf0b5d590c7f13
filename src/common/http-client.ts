/**
 * A small JSON-over-HTTP client for talking to pflex components (CLI → MDM, SDS/SDC → MDM,
 * MDM → SDS/SDC). Every call has a timeout; every failure becomes an HttpClientError that keeps
 * the server's {error:{code,message}} when there was one.
 *
 * On node:http with one keep-alive agent per process, not fetch: a CPU profile of the MDM during
 * a rebuild found undici's fetch machinery (web streams, AbortSignal, Response) at 12% of the
 * MDM's busy time for about a thousand small control calls a second; http.request does the
 * same exchange for a fraction of that.
 */
import { Agent, request as httpRequest } from 'node:http';

export const HTTP_TIMEOUT_MS_DEFAULT = 10_000;
export const HTTP_RESPONSE_BYTES_MAX = 64 * 1024 * 1024;
/** Connections kept open to one host:port at most; further requests wait for one (within their timeout). */
export const HTTP_SOCKETS_PER_ORIGIN_MAX = 64;
const HTTP_IDLE_SOCKET_MS = 4000;

const agent = new Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: HTTP_SOCKETS_PER_ORIGIN_MAX, timeout: HTTP_IDLE_SOCKET_MS, scheduling: 'lifo' });

export interface RawAnswer {
  readonly status: number;
  readonly text: string;
}

/**
 * One HTTP exchange: the answer's status and text, or an HttpClientError (PFLEX_ERR_TIMEOUT,
 * PFLEX_ERR_CONNECT, PFLEX_ERR_RESPONSE_TOO_LARGE). `url` is http://host:port/path.
 */
export function exchange(method: string, url: string, headers: Record<string, string>, body: string | undefined, timeoutMs: number, responseBytesMax = HTTP_RESPONSE_BYTES_MAX): Promise<RawAnswer> {
  const parsed = new URL(url);
  if (parsed.protocol !== 'http:') return Promise.reject(new HttpClientError(`${method} ${url}: only http:// URLs`, 'PFLEX_ERR_CONNECT'));
  const payload = body === undefined ? undefined : Buffer.from(body);
  const allHeaders: Record<string, string | number> = { ...headers };
  if (payload !== undefined) allHeaders['content-length'] = payload.length;
  return new Promise<RawAnswer>((resolve, reject) => {
    let done = false;
    const finish = (error: HttpClientError | undefined, answer?: RawAnswer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (error !== undefined) reject(error);
      else resolve(answer!);
    };
    const req = httpRequest(
      {
        host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: Number(parsed.port || 80),
        method,
        path: `${parsed.pathname}${parsed.search}`,
        headers: allHeaders,
        agent,
      },
      (res) => {
        const parts: Buffer[] = [];
        let bytes = 0;
        res.on('data', (part: Buffer) => {
          bytes += part.length;
          if (bytes > responseBytesMax) {
            req.destroy();
            finish(new HttpClientError(`${method} ${url}: response too large`, 'PFLEX_ERR_RESPONSE_TOO_LARGE', res.statusCode));
            return;
          }
          parts.push(part);
        });
        res.on('error', (error) => finish(new HttpClientError(`${method} ${url}: connection lost (${error.message})`, 'PFLEX_ERR_CONNECT')));
        res.on('end', () => finish(undefined, { status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') }));
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      finish(new HttpClientError(`${method} ${url}: no answer within ${timeoutMs} ms`, 'PFLEX_ERR_TIMEOUT'));
    }, timeoutMs);
    req.on('error', (error: Error & { code?: string }) => finish(new HttpClientError(`${method} ${url}: cannot connect (${error.code ?? error.message})`, 'PFLEX_ERR_CONNECT')));
    req.end(payload);
  });
}

export class HttpClientError extends Error {
  readonly status: number | undefined;
  readonly code: string;
  readonly details: unknown;

  constructor(message: string, code: string, status?: number, details?: unknown) {
    super(message);
    this.name = 'HttpClientError';
    this.code = code;
    this.status = status;
    this.details = details;
  }
}

export interface HttpClientOptions {
  readonly baseUrl: string;
  /** Sent as "Authorization: Bearer <credential>". */
  readonly credential?: string | undefined;
  readonly timeoutMs?: number;
}

export class HttpClient {
  readonly baseUrl: string;
  readonly credential: string | undefined;
  private readonly timeoutMs: number;

  constructor(options: HttpClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.credential = options.credential;
    this.timeoutMs = options.timeoutMs ?? HTTP_TIMEOUT_MS_DEFAULT;
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  /** `timeoutMs`: this call's own timeout (a heartbeat's is shorter than the client's). */
  post<T = unknown>(path: string, body: unknown = {}, timeoutMs?: number): Promise<T> {
    return this.request<T>('POST', path, body, timeoutMs);
  }

  delete<T = unknown>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  async request<T>(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.credential !== undefined) headers.authorization = `Bearer ${this.credential}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const url = `${this.baseUrl}${path}`;
    const response = await exchange(method, url, headers, body === undefined ? undefined : JSON.stringify(body), timeoutMs);
    const ok = response.status >= 200 && response.status < 300;
    let parsed: unknown = undefined;
    if (response.text.length > 0) {
      try {
        parsed = JSON.parse(response.text);
      } catch {
        if (ok) {
          throw new HttpClientError(`${method} ${url}: response is not JSON`, 'PFLEX_ERR_BAD_RESPONSE', response.status);
        }
      }
    }
    if (!ok) {
      const error = (parsed as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
      const code = typeof error?.code === 'string' ? error.code : `HTTP_${response.status}`;
      const message = typeof error?.message === 'string' ? error.message : `${method} ${path} failed: HTTP ${response.status}`;
      throw new HttpClientError(message, code, response.status, error?.details);
    }
    return parsed as T;
  }
}
