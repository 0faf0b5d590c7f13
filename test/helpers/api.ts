/**
 * Small helpers for MDM API tests: raw HTTP calls that never throw (so a test can assert the
 * status, the content type and the {error:{code,message}} body of a refusal), error-shape
 * assertions, polling, and the topology most tests start from.
 */
import { test } from 'tap';

/** The `t` a tap test callback receives. */
export type Tap = Parameters<Parameters<typeof test>[0]>[0];

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export interface ApiResponse {
  readonly status: number;
  readonly contentType: string | null;
  readonly text: string;
  /** The parsed JSON body, or undefined when the body was empty or not JSON. */
  readonly body: any;
}

export interface RequestOptions {
  /** A value sent as JSON (with content-type application/json). */
  readonly json?: unknown;
  /** Bytes or text sent as they are; give the content type in headers yourself. */
  readonly raw?: string | Uint8Array | ReadableStream<Uint8Array>;
  readonly headers?: Record<string, string>;
  /** Overrides the client's credential for this call; null sends no Authorization header. */
  readonly credential?: string | null;
}

/** A JSON-over-HTTP client for tests: returns every answer, 2xx or not, and never throws on a status. */
export class Api {
  constructor(
    readonly baseUrl: string,
    readonly credential?: string,
  ) {}

  withCredential(credential: string | undefined): Api {
    return new Api(this.baseUrl, credential);
  }

  async request(method: string, path: string, options: RequestOptions = {}): Promise<ApiResponse> {
    const headers: Record<string, string> = { accept: 'application/json' };
    const credential = options.credential === undefined ? this.credential : options.credential;
    if (credential !== undefined && credential !== null) headers.authorization = `Bearer ${credential}`;
    let body: string | Uint8Array | ReadableStream<Uint8Array> | undefined;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    } else if (options.raw !== undefined) {
      body = options.raw;
    }
    Object.assign(headers, options.headers ?? {});
    const init: RequestInit & { duplex?: 'half' } = {
      method,
      headers,
      signal: AbortSignal.timeout(10_000),
    };
    if (body !== undefined) {
      init.body = body as BodyInit;
      if (body instanceof ReadableStream) init.duplex = 'half';
    }
    const response = await fetch(`${this.baseUrl}${path}`, init);
    const text = await response.text();
    let parsed: unknown = undefined;
    try {
      parsed = text.length > 0 ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    return { status: response.status, contentType: response.headers.get('content-type'), text, body: parsed };
  }

  get(path: string, options?: RequestOptions): Promise<ApiResponse> {
    return this.request('GET', path, options);
  }

  post(path: string, json: unknown = {}, options: RequestOptions = {}): Promise<ApiResponse> {
    return this.request('POST', path, { ...options, json });
  }

  del(path: string, options?: RequestOptions): Promise<ApiResponse> {
    return this.request('DELETE', path, options);
  }

  /** GET that must answer 200; returns the body. */
  async ok(path: string): Promise<any> {
    const response = await this.get(path);
    if (response.status !== 200) throw new Error(`GET ${path}: HTTP ${response.status}: ${response.text}`);
    return response.body;
  }

  /** POST that must answer 2xx; returns the body. For setup steps, not for the behaviour under test. */
  async must(path: string, json: unknown = {}): Promise<any> {
    const response = await this.post(path, json);
    if (response.status < 200 || response.status > 299) {
      throw new Error(`POST ${path} ${JSON.stringify(json)}: HTTP ${response.status}: ${response.text}`);
    }
    return response.body;
  }
}

export interface ExpectedError {
  readonly status: number | readonly number[];
  readonly code?: string;
  /** A field the error must name, in error.details.field or in error.message. */
  readonly field?: string;
  readonly message?: RegExp;
}

/**
 * Asserts a refusal: the expected status, a JSON body of the shape {error:{code,message}},
 * and optionally the code, a named field and a message pattern.
 */
export function assertApiError(t: Tap, response: ApiResponse, expected: ExpectedError, label = ''): void {
  const prefix = label === '' ? '' : `${label}: `;
  const statuses = typeof expected.status === 'number' ? [expected.status] : expected.status;
  t.ok(statuses.includes(response.status), `${prefix}status ${response.status} is one of ${statuses.join('|')}`, {
    body: response.text.slice(0, 500),
  });
  t.match(response.contentType ?? '', /^application\/json/, `${prefix}answers JSON`);
  const error = response.body?.error;
  t.ok(error !== null && typeof error === 'object', `${prefix}body is {error:{…}}`, { body: response.text.slice(0, 500) });
  t.match(error?.code, /^PFLEX_ERR_[A-Z_]+$/, `${prefix}error.code is a PFLEX_ERR_ code`);
  t.ok(typeof error?.message === 'string' && error.message.length > 0, `${prefix}error.message is a non-empty string`);
  if (expected.code !== undefined) t.equal(error?.code, expected.code, `${prefix}error.code is ${expected.code}`);
  if (expected.field !== undefined) {
    const field = expected.field;
    const named =
      error?.details?.field === field || (typeof error?.message === 'string' && (error.message as string).includes(field));
    t.ok(named, `${prefix}the error names the field "${field}"`, { error });
  }
  if (expected.message !== undefined) t.match(error?.message, expected.message, `${prefix}error.message matches`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until check() returns a value other than undefined, or the deadline passes (then undefined). */
export async function waitFor<T>(check: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 50): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) return undefined;
    await sleep(intervalMs);
  }
}

export interface EventView {
  id: number;
  type: string;
  severity: string;
  message: string;
  sds_id: number | null;
  sdc_id: number | null;
  volume_id: number | null;
  pool_id: number | null;
  pd_id: number | null;
}

export async function listEvents(api: Api, query = ''): Promise<EventView[]> {
  return (await api.ok(`/event/list?limit=1000${query === '' ? '' : `&${query}`}`)) as EventView[];
}

export interface SdsSpec {
  readonly name: string;
  readonly pd: string;
  readonly pool: string;
  readonly capacityBytes: number;
  /** Distinct per SDS on one host: data 9700+n, control 9100+n, mgmt 9200+n. */
  readonly portIndex: number;
  readonly faultSet?: string;
}

export async function addSds(api: Api, spec: SdsSpec): Promise<any> {
  return api.must('/sds/add', {
    name: spec.name,
    pd: spec.pd,
    ...(spec.faultSet !== undefined ? { fault_set: spec.faultSet } : {}),
    host: '127.0.0.1',
    data_port: 9700 + spec.portIndex,
    control_port: 9100 + spec.portIndex,
    mgmt_port: 9200 + spec.portIndex,
    devices: [{ path: `/dev/disk-${spec.name}`, capacity_bytes: spec.capacityBytes, pool: spec.pool }],
  });
}
