/**
 * A small JSON-over-HTTP client for talking to pflex components (CLI → MDM, SDS/SDC → MDM,
 * MDM → SDS/SDC). Every call has a timeout; every failure becomes an HttpClientError that keeps
 * the server's {error:{code,message}} when there was one.
 */

export const HTTP_TIMEOUT_MS_DEFAULT = 10_000;
export const HTTP_RESPONSE_BYTES_MAX = 64 * 1024 * 1024;

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

  post<T = unknown>(path: string, body: unknown = {}): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  delete<T = unknown>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.credential !== undefined) headers.authorization = `Bearer ${this.credential}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const url = `${this.baseUrl}${path}`;
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      const cause = error as Error & { cause?: { code?: string } };
      if (cause.name === 'TimeoutError') {
        throw new HttpClientError(`${method} ${url}: no answer within ${this.timeoutMs} ms`, 'PFLEX_ERR_TIMEOUT');
      }
      const reason = cause.cause?.code ?? cause.message;
      throw new HttpClientError(`${method} ${url}: cannot connect (${reason})`, 'PFLEX_ERR_CONNECT');
    }
    const text = await response.text();
    if (text.length > HTTP_RESPONSE_BYTES_MAX) {
      throw new HttpClientError(`${method} ${url}: response too large`, 'PFLEX_ERR_RESPONSE_TOO_LARGE', response.status);
    }
    let parsed: unknown = undefined;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (response.ok) {
          throw new HttpClientError(`${method} ${url}: response is not JSON`, 'PFLEX_ERR_BAD_RESPONSE', response.status);
        }
      }
    }
    if (!response.ok) {
      const error = (parsed as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
      const code = typeof error?.code === 'string' ? error.code : `HTTP_${response.status}`;
      const message = typeof error?.message === 'string' ? error.message : `${method} ${path} failed: HTTP ${response.status}`;
      throw new HttpClientError(message, code, response.status, error?.details);
    }
    return parsed as T;
  }
}
