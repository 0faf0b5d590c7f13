/**
 * The JSON client every node uses (src/common/http-client.ts, on node:http) against a real local
 * server: answers, the server's error table, a per-call timeout that does not wait for the
 * client's, an answer over the size bound, a refused connection; and the heartbeat's timing
 * (src/common/node-link.ts): one interval at most, the next at once after a timeout.
 */
import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exchange, HttpClient, HttpClientError, HTTP_TIMEOUT_MS_DEFAULT } from '../../src/common/http-client.js';
import { heartbeatTimeoutMs, HEARTBEAT_TIMEOUT_MS_MAX, HEARTBEAT_TIMEOUT_MS_MIN, nextHeartbeatDelayMs } from '../../src/common/node-link.js';

async function serve(t: Test, handler: (request: IncomingMessage, response: ServerResponse, body: string) => void): Promise<string> {
  const server = createServer((request, response) => {
    const parts: Buffer[] = [];
    request.on('data', (part: Buffer) => parts.push(part));
    request.on('end', () => handler(request, response, Buffer.concat(parts).toString('utf8')));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

t.test('a JSON answer, the request body and the credential arrive as sent', async (t) => {
  const seen: { method?: string; url?: string; auth?: string; body?: string }[] = [];
  const url = await serve(t, (request, response, body) => {
    seen.push({ method: request.method, url: request.url, auth: request.headers.authorization, body });
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ ok: true, echo: body.length }));
  });
  const client = new HttpClient({ baseUrl: `${url}/`, credential: 'secret-credential' });
  t.same(await client.post('/a/b?x=1', { hello: 'world' }), { ok: true, echo: 17 });
  t.same(await client.get('/c'), { ok: true, echo: 0 });
  t.same(seen[0], { method: 'POST', url: '/a/b?x=1', auth: 'Bearer secret-credential', body: '{"hello":"world"}' });
  t.equal(seen[1]?.method, 'GET');
});

t.test("the server's error code, message and details come back in an HttpClientError", async (t) => {
  const url = await serve(t, (_request, response) => {
    response.writeHead(409, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ error: { code: 'PFLEX_ERR_CONFLICT', message: 'volume vol1 exists', details: { name: 'vol1' } } }));
  });
  const error = await new HttpClient({ baseUrl: url }).post('/vol/create', {}).catch((caught: unknown) => caught);
  t.ok(error instanceof HttpClientError);
  t.match(error, { code: 'PFLEX_ERR_CONFLICT', status: 409, message: 'volume vol1 exists', details: { name: 'vol1' } });
});

t.test('a call with its own timeout gives up after it, not after the client default', async (t) => {
  const url = await serve(t, () => undefined); // never answers
  const client = new HttpClient({ baseUrl: url });
  const startedMs = performance.now();
  const error = await client.post('/discovery/heartbeat', {}, 300).catch((caught: unknown) => caught);
  const tookMs = performance.now() - startedMs;
  t.match(error, { code: 'PFLEX_ERR_TIMEOUT' });
  t.ok(tookMs >= 290 && tookMs < HTTP_TIMEOUT_MS_DEFAULT / 2, `gave up after ${Math.round(tookMs)} ms (asked 300)`);
  t.equal(nextHeartbeatDelayMs(2000, error), 0, 'a heartbeat that timed out is followed by the next at once');
});

t.test('an answer over the size bound and a refused connection are errors of their own', async (t) => {
  const url = await serve(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ blob: 'x'.repeat(4096) }));
  });
  await t.rejects(exchange('GET', `${url}/big`, {}, undefined, 2000, 1024), { code: 'PFLEX_ERR_RESPONSE_TOO_LARGE' });
  // A port nothing listens on: bind one and close it at once.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const freePort = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const error = await new HttpClient({ baseUrl: `http://127.0.0.1:${freePort}` }).get('/health').catch((caught: unknown) => caught);
  t.match(error, { code: 'PFLEX_ERR_CONNECT' });
  t.equal(nextHeartbeatDelayMs(2000, error), 2000, 'a refused heartbeat waits its interval (no tight loop against a dead MDM)');
  t.equal(nextHeartbeatDelayMs(2000, new HttpClientError('refused', 'PFLEX_ERR_BUSY', 503)), 2000);
});

t.test("a heartbeat's timeout is one interval, within bounds", async (t) => {
  t.equal(heartbeatTimeoutMs(2000), 2000, 'the default interval: 2 s, a third of the 3-miss window');
  t.equal(heartbeatTimeoutMs(10), HEARTBEAT_TIMEOUT_MS_MIN);
  t.equal(heartbeatTimeoutMs(60_000), HEARTBEAT_TIMEOUT_MS_MAX);
});
