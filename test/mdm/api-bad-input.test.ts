/**
 * MDM API: hostile and broken input over real HTTP. Every case must get a 4xx with an
 * {error:{code,message}} body (field errors naming the field), and the whole batch must leave
 * the database exactly as it was: /cluster/status and /event/list are compared before and
 * after, and the MDM must still answer /health.
 */
import t from 'tap';
import { startTestMdm } from '../helpers/mdm.js';
import { Api, addSds, assertApiError, listEvents, GiB, MiB, type ExpectedError, type RequestOptions, type Tap } from '../helpers/api.js';

const mdm = await startTestMdm();
t.teardown(() => mdm.stop());
const api = new Api(mdm.url, mdm.adminToken);
const anonymous = new Api(mdm.url);

// A small cluster, so that bad requests aimed at real objects reach past the lookups.
await api.must('/pd/create', { name: 'pd1' });
await api.must('/pool/create', { pd: 'pd1', name: 'pool1' });
await addSds(api, { name: 'sds1', pd: 'pd1', pool: 'pool1', capacityBytes: 4 * GiB, portIndex: 0 });
await addSds(api, { name: 'sds2', pd: 'pd1', pool: 'pool1', capacityBytes: 4 * GiB, portIndex: 1 });
await api.must('/sdc/add', { name: 'sdc1' });
const vol1 = await api.must('/vol/create', { name: 'vol1', pool: 'pool1', size_bytes: 64 * MiB, provisioning: 'thick' });
await api.must('/vol/map', { volume: 'vol1', sdc: 'sdc1' });

const statusBefore = await api.ok('/cluster/status');
const eventsBefore = await listEvents(api);

interface BadCase {
  readonly what: string;
  readonly method: string;
  readonly path: string;
  /** A value sent as JSON. */
  readonly json?: unknown;
  /** Text or bytes sent as they are, as application/json unless contentType says otherwise. */
  readonly raw?: string | Uint8Array | (() => ReadableStream<Uint8Array>);
  readonly contentType?: string;
  readonly anonymous?: boolean;
  readonly expect: ExpectedError;
}

async function send(c: BadCase) {
  const client = c.anonymous === true ? anonymous : api;
  const options: RequestOptions =
    c.json !== undefined
      ? { json: c.json }
      : c.raw !== undefined
        ? {
            raw: typeof c.raw === 'function' ? c.raw() : c.raw,
            headers: c.contentType === '' ? {} : { 'content-type': c.contentType ?? 'application/json' },
          }
        : {};
  return client.request(c.method, c.path, options);
}

async function runCases(t: Tap, cases: readonly BadCase[]): Promise<void> {
  for (const c of cases) {
    const response = await send(c);
    const shownPath = c.path.length > 80 ? `${c.path.slice(0, 77)}...` : c.path;
    assertApiError(t, response, c.expect, `${c.what} (${c.method} ${shownPath})`);
  }
}

const BAD_JSON: ExpectedError = { status: 400, code: 'PFLEX_ERR_BAD_JSON' };
const invalid = (field: string): ExpectedError => ({ status: 400, code: 'PFLEX_ERR_VALIDATION', field });

t.test('garbage bodies: not JSON, truncated, arrays, strings, null, numbers', async (t) => {
  const cases: BadCase[] = [];
  for (const path of ['/vol/create', '/pd/create', '/vol/map', '/cluster/join-token']) {
    cases.push(
      { what: 'plain words', method: 'POST', path, raw: 'hello world', expect: BAD_JSON },
      { what: 'truncated JSON', method: 'POST', path, raw: '{"name":"vol9","pool":', expect: BAD_JSON },
      { what: 'trailing garbage', method: 'POST', path, raw: '{"name":"vol9"} xyz', expect: BAD_JSON },
      { what: 'single quotes', method: 'POST', path, raw: "{'name':'vol9'}", expect: BAD_JSON },
      { what: 'an empty body', method: 'POST', path, raw: '', expect: BAD_JSON },
      { what: 'binary bytes', method: 'POST', path, raw: new Uint8Array([0, 0xff, 0xfe, 0x7b, 0x80]), expect: BAD_JSON },
      { what: 'a JSON array', method: 'POST', path, raw: '[]', expect: { status: 400, code: 'PFLEX_ERR_VALIDATION' } },
      { what: 'an array of objects', method: 'POST', path, raw: '[{"name":"vol9"}]', expect: { status: 400, code: 'PFLEX_ERR_VALIDATION' } },
      { what: 'a JSON string', method: 'POST', path, raw: '"vol9"', expect: { status: 400, code: 'PFLEX_ERR_VALIDATION' } },
      { what: 'a JSON number', method: 'POST', path, raw: '42', expect: { status: 400, code: 'PFLEX_ERR_VALIDATION' } },
      { what: 'JSON true', method: 'POST', path, raw: 'true', expect: { status: 400, code: 'PFLEX_ERR_VALIDATION' } },
      { what: 'a __proto__ key', method: 'POST', path, raw: '{"__proto__":{"admin":true},"name":"vol9"}', expect: { status: 400 } },
      { what: 'constructor.prototype', method: 'POST', path, raw: '{"constructor":{"prototype":{"x":1}},"name":"vol9"}', expect: { status: 400 } },
      { what: 'nesting 300 000 deep', method: 'POST', path, raw: '['.repeat(300_000), expect: BAD_JSON },
      {
        what: 'balanced nesting 100 000 deep',
        method: 'POST',
        path,
        raw: '['.repeat(100_000) + ']'.repeat(100_000),
        expect: { status: 400, code: 'PFLEX_ERR_VALIDATION' },
      },
    );
  }
  // JSON null and {} mean "no fields": the first required field is named.
  cases.push(
    { what: 'JSON null', method: 'POST', path: '/vol/create', raw: 'null', expect: invalid('name') },
    { what: 'an empty object', method: 'POST', path: '/vol/create', json: {}, expect: invalid('name') },
    { what: 'JSON null', method: 'POST', path: '/vol/map', raw: 'null', expect: invalid('volume') },
    { what: 'JSON null to the public register', method: 'POST', path: '/discovery/register', raw: 'null', anonymous: true, expect: invalid('node_id') },
    { what: 'not JSON to the public register', method: 'POST', path: '/discovery/register', raw: '{{{{', anonymous: true, expect: BAD_JSON },
  );
  await runCases(t, cases);
});

t.test('wrong types name the field', async (t) => {
  await runCases(t, [
    { what: 'name: 123', method: 'POST', path: '/pd/create', json: { name: 123 }, expect: invalid('name') },
    { what: 'name: null', method: 'POST', path: '/pd/create', json: { name: null }, expect: invalid('name') },
    { what: 'name: array', method: 'POST', path: '/pd/create', json: { name: ['pd9'] }, expect: invalid('name') },
    { what: 'description: object', method: 'POST', path: '/pd/create', json: { name: 'pd9', description: { a: 1 } }, expect: invalid('description') },
    { what: 'size_bytes: "big"', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: 'pool1', size_bytes: 'big' }, expect: invalid('size_bytes') },
    { what: 'size_bytes: "1048576"', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: 'pool1', size_bytes: '1048576' }, expect: invalid('size_bytes') },
    { what: 'size_bytes: true', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: 'pool1', size_bytes: true }, expect: invalid('size_bytes') },
    { what: 'size_bytes: null', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: 'pool1', size_bytes: null }, expect: invalid('size_bytes') },
    { what: 'size_bytes: [1]', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: 'pool1', size_bytes: [MiB] }, expect: invalid('size_bytes') },
    { what: 'pool: object', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: { id: 1 }, size_bytes: MiB }, expect: invalid('pool') },
    { what: 'provisioning: "fat"', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: 'pool1', size_bytes: MiB, provisioning: 'fat' }, expect: invalid('provisioning') },
    { what: 'access_mode: "rw"', method: 'POST', path: '/vol/map', json: { volume: 'vol1', sdc: 'sdc1', access_mode: 'rw' }, expect: invalid('access_mode') },
    { what: 'allow_multi_map: "yes"', method: 'POST', path: '/vol/map', json: { volume: 'vol1', sdc: 'sdc1', allow_multi_map: 'yes' }, expect: invalid('allow_multi_map') },
    { what: 'volume: 0', method: 'POST', path: '/vol/unmap', json: { volume: 0, sdc: 'sdc1' }, expect: invalid('volume') },
    { what: 'volume: 1.5', method: 'POST', path: '/vol/unmap', json: { volume: 1.5, sdc: 'sdc1' }, expect: invalid('volume') },
    { what: 'volume: 2^31', method: 'POST', path: '/vol/unmap', json: { volume: 2 ** 31, sdc: 'sdc1' }, expect: invalid('volume') },
    { what: 'sdc: -1', method: 'POST', path: '/vol/unmap', json: { volume: 'vol1', sdc: -1 }, expect: invalid('sdc') },
    { what: 'new_name: 7', method: 'POST', path: '/vol/rename', json: { volume: 'vol1', new_name: 7 }, expect: invalid('new_name') },
    { what: 'protection_policy: "five_copies"', method: 'POST', path: '/pool/create', json: { pd: 'pd1', name: 'pool9', protection_policy: 'five_copies' }, expect: invalid('protection_policy') },
    { what: 'chunk_size_bytes: 3 MiB', method: 'POST', path: '/pool/create', json: { pd: 'pd1', name: 'pool9', chunk_size_bytes: 3 * MiB }, expect: invalid('chunk_size_bytes') },
    { what: 'chunk_size_bytes: 512 KiB', method: 'POST', path: '/pool/create', json: { pd: 'pd1', name: 'pool9', chunk_size_bytes: 512 * 1024 }, expect: invalid('chunk_size_bytes') },
    { what: 'spare_percent: 51', method: 'POST', path: '/pool/create', json: { pd: 'pd1', name: 'pool9', spare_percent: 51 }, expect: invalid('spare_percent') },
    { what: 'rebuild_rate_mbps: 0', method: 'POST', path: '/pool/create', json: { pd: 'pd1', name: 'pool9', rebuild_rate_mbps: 0 }, expect: invalid('rebuild_rate_mbps') },
    {
      what: 'high alert above critical',
      method: 'POST',
      path: '/pool/create',
      json: { pd: 'pd1', name: 'pool9', capacity_alert_high_percent: 95, capacity_alert_critical_percent: 90 },
      expect: invalid('capacity_alert_high_percent'),
    },
    { what: 'modify spare_percent: "x"', method: 'POST', path: '/pool/pool1/modify', json: { spare_percent: 'x' }, expect: invalid('spare_percent') },
    { what: 'modify high alert above critical', method: 'POST', path: '/pool/pool1/modify', json: { capacity_alert_high_percent: 99 }, expect: invalid('capacity_alert_high_percent') },
    { what: 'data_port: 0', method: 'POST', path: '/sds/add', json: { name: 'sds9', pd: 'pd1', data_port: 0 }, expect: invalid('data_port') },
    { what: 'data_port: 70000', method: 'POST', path: '/sds/add', json: { name: 'sds9', pd: 'pd1', data_port: 70000 }, expect: invalid('data_port') },
    { what: 'devices: "x"', method: 'POST', path: '/sds/add', json: { name: 'sds9', pd: 'pd1', devices: 'x' }, expect: invalid('devices') },
    {
      what: 'relative device path',
      method: 'POST',
      path: '/sds/add',
      json: { name: 'sds9', pd: 'pd1', data_port: 9799, devices: [{ path: 'dev/sdb', capacity_bytes: GiB, pool: 'pool1' }] },
      expect: invalid('devices.0.path'),
    },
    {
      what: 'device capacity -1',
      method: 'POST',
      path: '/sds/add',
      json: { name: 'sds9', pd: 'pd1', data_port: 9799, devices: [{ path: '/dev/sdb', capacity_bytes: -1, pool: 'pool1' }] },
      expect: invalid('devices.0.capacity_bytes'),
    },
    {
      what: '65 devices',
      method: 'POST',
      path: '/sds/add',
      json: {
        name: 'sds9',
        pd: 'pd1',
        data_port: 9799,
        devices: Array.from({ length: 65 }, (_, i) => ({ path: `/dev/d${i}`, capacity_bytes: GiB, pool: 'pool1' })),
      },
      expect: invalid('devices'),
    },
    { what: 'device add capacity "1G"', method: 'POST', path: '/sds/sds1/device/add', json: { path: '/dev/sdq', capacity_bytes: '1G', pool: 'pool1' }, expect: invalid('capacity_bytes') },
    { what: 'roles: "sds"', method: 'POST', path: '/cluster/join-token', json: { roles: 'sds' }, expect: invalid('roles') },
    { what: 'roles: []', method: 'POST', path: '/cluster/join-token', json: { roles: [] }, expect: invalid('roles') },
    { what: 'roles: ["admin"]', method: 'POST', path: '/cluster/join-token', json: { roles: ['admin'] }, expect: invalid('roles.0') },
    { what: 'ttl_s: 0', method: 'POST', path: '/cluster/join-token', json: { ttl_s: 0 }, expect: invalid('ttl_s') },
    { what: 'ttl_s: 1e9', method: 'POST', path: '/cluster/join-token', json: { ttl_s: 1e9 }, expect: invalid('ttl_s') },
    { what: 'uses_max: -1', method: 'POST', path: '/cluster/join-token', json: { uses_max: -1 }, expect: invalid('uses_max') },
    { what: 'operations: "read"', method: 'POST', path: `/vol/${vol1.id}/io/authorize`, json: { operations: 'read', chunk_first: 0, chunk_count: 1, sdc: 'sdc1' }, expect: invalid('operations') },
    { what: 'operations: []', method: 'POST', path: `/vol/${vol1.id}/io/authorize`, json: { operations: [], chunk_first: 0, chunk_count: 1, sdc: 'sdc1' }, expect: invalid('operations') },
    { what: 'operations: ["format"]', method: 'POST', path: `/vol/${vol1.id}/io/authorize`, json: { operations: ['format'], chunk_first: 0, chunk_count: 1, sdc: 'sdc1' }, expect: invalid('operations.0') },
    { what: 'chunk_first: -1', method: 'POST', path: `/vol/${vol1.id}/io/authorize`, json: { operations: ['read'], chunk_first: -1, chunk_count: 1, sdc: 'sdc1' }, expect: invalid('chunk_first') },
    { what: 'chunk_count: 0', method: 'POST', path: `/vol/${vol1.id}/io/authorize`, json: { operations: ['read'], chunk_first: 0, chunk_count: 0, sdc: 'sdc1' }, expect: invalid('chunk_count') },
    { what: 'chunk_count: 1025', method: 'POST', path: `/vol/${vol1.id}/io/authorize`, json: { operations: ['read'], chunk_first: 0, chunk_count: 1025, sdc: 'sdc1' }, expect: invalid('chunk_count') },
    { what: 'sdc missing for an admin', method: 'POST', path: `/vol/${vol1.id}/io/authorize`, json: { operations: ['read'], chunk_first: 0, chunk_count: 1 }, expect: invalid('sdc') },
    { what: 'roles: ["root"]', method: 'POST', path: '/discovery/register', anonymous: true, json: { node_id: 'n1', roles: ['root'], host: '127.0.0.1' }, expect: invalid('roles.0') },
    { what: 'join_token of 300 chars', method: 'POST', path: '/discovery/register', anonymous: true, json: { join_token: 'x'.repeat(300), node_id: 'n1', roles: ['sdc'], host: '127.0.0.1' }, expect: invalid('join_token') },
  ]);
});

t.test('negative, zero, fractional and absurd sizes', async (t) => {
  const create = (size: Record<string, unknown>) => ({ name: 'vol9', pool: 'pool1', provisioning: 'thick', ...size });
  await runCases(t, [
    { what: 'size_bytes 1e30', method: 'POST', path: '/vol/create', json: create({ size_bytes: 1e30 }), expect: invalid('size_bytes') },
    { what: 'size_bytes -1', method: 'POST', path: '/vol/create', json: create({ size_bytes: -1 }), expect: invalid('size_bytes') },
    { what: 'size_bytes 0', method: 'POST', path: '/vol/create', json: create({ size_bytes: 0 }), expect: invalid('size_bytes') },
    { what: 'size_bytes 0.5', method: 'POST', path: '/vol/create', json: create({ size_bytes: 0.5 }), expect: invalid('size_bytes') },
    { what: 'size_bytes 64 TiB + 1 MiB', method: 'POST', path: '/vol/create', json: create({ size_bytes: 64 * 1024 * GiB + MiB }), expect: invalid('size_bytes') },
    { what: 'size_bytes 2^53', method: 'POST', path: '/vol/create', json: create({ size_bytes: 2 ** 53 }), expect: invalid('size_bytes') },
    { what: 'size_bytes NaN (raw)', method: 'POST', path: '/vol/create', raw: '{"name":"vol9","pool":"pool1","size_bytes":NaN}', expect: BAD_JSON },
    { what: 'size_bytes Infinity (raw)', method: 'POST', path: '/vol/create', raw: '{"name":"vol9","pool":"pool1","size_bytes":Infinity}', expect: BAD_JSON },
    { what: 'size_bytes 1e309 (raw, parses to Infinity)', method: 'POST', path: '/vol/create', raw: '{"name":"vol9","pool":"pool1","size_bytes":1e309}', expect: invalid('size_bytes') },
    { what: 'size_bytes -0 (raw)', method: 'POST', path: '/vol/create', raw: '{"name":"vol9","pool":"pool1","size_bytes":-0}', expect: invalid('size_bytes') },
    { what: 'size_bytes 0x10 (raw)', method: 'POST', path: '/vol/create', raw: '{"name":"vol9","pool":"pool1","size_bytes":0x10}', expect: BAD_JSON },
    { what: 'size_gb -1', method: 'POST', path: '/vol/create', json: create({ size_gb: -1 }), expect: invalid('size_gb') },
    { what: 'size_gb 1e30', method: 'POST', path: '/vol/create', json: create({ size_gb: 1e30 }), expect: invalid('size_gb') },
    { what: 'both size_bytes and size_gb', method: 'POST', path: '/vol/create', json: create({ size_bytes: MiB, size_gb: 1 }), expect: invalid('size_bytes') },
    { what: 'no size at all', method: 'POST', path: '/vol/create', json: create({}), expect: invalid('size_bytes') },
    { what: 'extend to -1', method: 'POST', path: '/vol/extend', json: { volume: 'vol1', size_bytes: -1 }, expect: invalid('size_bytes') },
    { what: 'extend to 1e30', method: 'POST', path: '/vol/extend', json: { volume: 'vol1', size_bytes: 1e30 }, expect: invalid('size_bytes') },
    { what: 'extend to 0', method: 'POST', path: '/vol/extend', json: { volume: 'vol1', size_bytes: 0 }, expect: invalid('size_bytes') },
    { what: 'extend (shrink) to 1 MiB', method: 'POST', path: '/vol/extend', json: { volume: 'vol1', size_bytes: MiB }, expect: invalid('size_bytes') },
    {
      what: 'device capacity 1e30',
      method: 'POST',
      path: '/sds/add',
      json: { name: 'sds9', pd: 'pd1', data_port: 9799, devices: [{ path: '/dev/sdb', capacity_bytes: 1e30, pool: 'pool1' }] },
      expect: invalid('devices.0.capacity_bytes'),
    },
  ]);
});

t.test('injection-looking strings and odd characters are refused as names and references', async (t) => {
  const names = [
    "vol1'; DROP TABLE volumes;--",
    '../../etc',
    '..',
    '/etc/passwd',
    'a\u0000b',
    'line1\nline2',
    'tab\there',
    'vol\u00e9',
    '\u{1F4BE}disk',
    '\u202Evol',
    'vol 1',
    '',
    '123',
    'x'.repeat(65),
    '<script>alert(1)</script>',
    '${process.exit()}',
  ];
  const cases: BadCase[] = [];
  for (const name of names) {
    const shown = JSON.stringify(name).slice(0, 40);
    cases.push(
      { what: `volume name ${shown}`, method: 'POST', path: '/vol/create', json: { name, pool: 'pool1', size_bytes: MiB }, expect: invalid('name') },
      { what: `pd name ${shown}`, method: 'POST', path: '/pd/create', json: { name }, expect: invalid('name') },
      { what: `rename to ${shown}`, method: 'POST', path: '/vol/rename', json: { volume: 'vol1', new_name: name }, expect: invalid('new_name') },
    );
  }
  cases.push(
    { what: 'pool reference with SQL', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: "pool1' OR '1'='1", size_bytes: MiB }, expect: invalid('pool') },
    { what: 'volume reference with SQL', method: 'POST', path: '/vol/extend', json: { volume: "vol1'; DROP TABLE volumes;--", size_bytes: GiB }, expect: invalid('volume') },
    { what: 'sdc reference with a path', method: 'POST', path: '/vol/map', json: { volume: 'vol1', sdc: '../../sdc1' }, expect: invalid('sdc') },
    { what: 'host with a shell command', method: 'POST', path: '/sds/add', json: { name: 'sds9', pd: 'pd1', host: '127.0.0.1; rm -rf /' }, expect: invalid('host') },
    { what: 'host as a URL', method: 'POST', path: '/sdc/add', json: { name: 'sdc9', host: 'http://evil.example/' }, expect: invalid('host') },
    { what: 'device path with NUL', method: 'POST', path: '/sds/sds1/device/add', json: { path: '/dev/sdb\u0000x', capacity_bytes: GiB, pool: 'pool1' }, expect: invalid('path') },
    { what: 'device path with newline', method: 'POST', path: '/sds/sds1/device/add', json: { path: '/dev/sdb\nx', capacity_bytes: GiB, pool: 'pool1' }, expect: invalid('path') },
    { what: 'node_id with a path', method: 'POST', path: '/discovery/register', anonymous: true, json: { node_id: '../../etc', roles: ['sdc'], host: '127.0.0.1' }, expect: invalid('node_id') },
    { what: 'query pool with SQL', method: 'GET', path: `/vol/list?pool=${encodeURIComponent("x' OR 1=1--")}`, expect: invalid('pool') },
    { what: 'query pd with a path', method: 'GET', path: '/sds/list?pd=..%2F..%2Fetc', expect: invalid('pd') },
    { what: 'query pd with NUL', method: 'GET', path: '/pool/list?pd=%00', expect: invalid('pd') },
    { what: 'event type with SQL', method: 'GET', path: `/event/list?type=${encodeURIComponent("X'; DROP TABLE events;--")}`, expect: invalid('type') },
    { what: 'event limit abc', method: 'GET', path: '/event/list?limit=abc', expect: invalid('limit') },
    { what: 'event limit -1', method: 'GET', path: '/event/list?limit=-1', expect: invalid('limit') },
    { what: 'event limit 1e9', method: 'GET', path: '/event/list?limit=1000000000', expect: invalid('limit') },
    { what: 'event since_id -5', method: 'GET', path: '/event/list?since_id=-5', expect: invalid('since_id') },
    { what: 'peers of role admin', method: 'GET', path: '/discovery/peers/admin', expect: invalid('role') },
  );
  await runCases(t, cases);
});

t.test('unknown extra fields are refused (strict bodies) and the message names them', async (t) => {
  await runCases(t, [
    { what: 'pd admin flag', method: 'POST', path: '/pd/create', json: { name: 'pd9', admin: true }, expect: invalid('admin') },
    { what: 'volume owner', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: 'pool1', size_bytes: MiB, owner: 'root' }, expect: invalid('owner') },
    { what: 'camelCase sizeBytes', method: 'POST', path: '/vol/create', json: { name: 'vol9', pool: 'pool1', sizeBytes: MiB }, expect: { status: 400, code: 'PFLEX_ERR_VALIDATION' } },
    { what: 'map force', method: 'POST', path: '/vol/map', json: { volume: 'vol1', sdc: 'sdc1', force: true }, expect: invalid('force') },
    { what: 'unmap force', method: 'POST', path: '/vol/unmap', json: { volume: 'vol1', sdc: 'sdc1', force: true }, expect: invalid('force') },
    { what: 'extend delta', method: 'POST', path: '/vol/extend', json: { volume: 'vol1', size_bytes: GiB, delta: true }, expect: invalid('delta') },
    { what: 'rebuild_enabled: 1', method: 'POST', path: '/pool/pool1/modify', json: { rebuild_enabled: 1 }, expect: invalid('rebuild_enabled') },
    { what: 'pool modify name', method: 'POST', path: '/pool/pool1/modify', json: { name: 'pool-renamed' }, expect: invalid('name') },
    { what: 'pool create id', method: 'POST', path: '/pool/create', json: { pd: 'pd1', name: 'pool9', id: 1 }, expect: invalid('id') },
    { what: 'join token forever', method: 'POST', path: '/cluster/join-token', json: { roles: ['sdc'], forever: true }, expect: invalid('forever') },
    { what: 'authorize sign_with', method: 'POST', path: `/vol/${vol1.id}/io/authorize`, json: { operations: ['read'], chunk_first: 0, chunk_count: 1, sdc: 'sdc1', sign_with: 'x' }, expect: invalid('sign_with') },
    { what: 'device extra field', method: 'POST', path: '/sds/add', json: { name: 'sds9', pd: 'pd1', data_port: 9799, devices: [{ path: '/dev/sdb', capacity_bytes: GiB, pool: 'pool1', raid: 5 }] }, expect: invalid('raid') },
    { what: 'register is_admin', method: 'POST', path: '/discovery/register', anonymous: true, json: { node_id: 'n1', roles: ['sdc'], host: '127.0.0.1', is_admin: true }, expect: invalid('is_admin') },
  ]);
});

t.test('bodies over 1 MiB answer 413 PFLEX_ERR_PAYLOAD_TOO_LARGE', async (t) => {
  const TOO_LARGE: ExpectedError = { status: 413, code: 'PFLEX_ERR_PAYLOAD_TOO_LARGE' };
  await runCases(t, [
    { what: '1.5 MiB description', method: 'POST', path: '/pd/create', json: { name: 'pd9', description: 'x'.repeat(1.5 * MiB) }, expect: TOO_LARGE },
    { what: '2 MiB of whitespace around a valid body', method: 'POST', path: '/vol/create', raw: `${' '.repeat(2 * MiB)}{"name":"vol9","pool":"pool1","size_bytes":1048576}`, expect: TOO_LARGE },
    { what: '4 MiB of devices', method: 'POST', path: '/sds/add', json: { name: 'sds9', pd: 'pd1', devices: [{ path: `/${'d'.repeat(4 * MiB)}`, capacity_bytes: GiB, pool: 'pool1' }] }, expect: TOO_LARGE },
    {
      what: '2 MiB chunked, without content-length',
      method: 'POST',
      path: '/vol/create',
      raw: () =>
        new ReadableStream<Uint8Array>({
          start(controller) {
            const piece = new TextEncoder().encode(' '.repeat(64 * 1024));
            for (let i = 0; i < 32; i += 1) controller.enqueue(piece);
            controller.close();
          },
        }),
      expect: TOO_LARGE,
    },
    { what: '2 MiB to the public register', method: 'POST', path: '/discovery/register', anonymous: true, json: { node_id: 'n1', roles: ['sdc'], host: '127.0.0.1', capabilities: ['x'.repeat(2 * MiB)] }, expect: TOO_LARGE },
  ]);
});

t.test('an error answer stays bounded however many unknown keys the body has', async (t) => {
  const body: Record<string, unknown> = { name: 'pd9' };
  for (let i = 0; i < 50_000; i += 1) body[`k${i}`] = 1;
  const response = await api.post('/pd/create', body);
  assertApiError(t, response, { status: 400, code: 'PFLEX_ERR_VALIDATION' }, '50 000 unknown keys');
  t.ok(response.text.length < 64 * 1024, `the error body is under 64 KiB (got ${response.text.length} bytes)`);
});

t.test('wrong content types answer 415 PFLEX_ERR_UNSUPPORTED_MEDIA_TYPE', async (t) => {
  const UNSUPPORTED: ExpectedError = { status: 415, code: 'PFLEX_ERR_UNSUPPORTED_MEDIA_TYPE' };
  const valid = '{"name":"pd-ctype"}';
  await runCases(t, [
    { what: 'text/plain with a valid JSON body', method: 'POST', path: '/pd/create', raw: valid, contentType: 'text/plain', expect: UNSUPPORTED },
    { what: 'text/plain; charset=utf-8', method: 'POST', path: '/pd/create', raw: valid, contentType: 'text/plain; charset=utf-8', expect: UNSUPPORTED },
    { what: 'a form', method: 'POST', path: '/pd/create', raw: 'name=pd-ctype', contentType: 'application/x-www-form-urlencoded', expect: UNSUPPORTED },
    { what: 'XML', method: 'POST', path: '/pd/create', raw: '<pd><name>pd-ctype</name></pd>', contentType: 'application/xml', expect: UNSUPPORTED },
    { what: 'multipart', method: 'POST', path: '/pd/create', raw: '--b\r\n\r\npd-ctype\r\n--b--', contentType: 'multipart/form-data; boundary=b', expect: UNSUPPORTED },
    { what: 'octet-stream', method: 'POST', path: '/vol/create', raw: new TextEncoder().encode(valid), contentType: 'application/octet-stream', expect: UNSUPPORTED },
    { what: 'no content-type with a body', method: 'POST', path: '/pd/create', raw: new TextEncoder().encode(valid), contentType: '', expect: UNSUPPORTED },
    { what: 'application/jsonx', method: 'POST', path: '/pd/create', raw: valid, contentType: 'application/jsonx', expect: UNSUPPORTED },
    { what: 'text/plain to the public register', method: 'POST', path: '/discovery/register', anonymous: true, raw: '{"node_id":"n1","roles":["sdc"],"host":"h"}', contentType: 'text/plain', expect: UNSUPPORTED },
  ]);
});

t.test('bad path ids answer 400 (or 404) naming the parameter', async (t) => {
  const BAD_ID: ExpectedError = { status: [400, 404], field: 'id' };
  const cases: BadCase[] = [];
  for (const id of [
    'abc%27',
    '0',
    '00',
    '99999999999',
    '2147483648',
    '-1',
    '1.5',
    '1e3',
    '%20',
    'vol1%00',
    'vol1%0A',
    '%F0%9F%92%BE',
    '..%2F..%2Fetc',
    encodeURIComponent("vol1'; DROP TABLE volumes;--"),
  ]) {
    cases.push(
      { what: `volume id ${id}`, method: 'GET', path: `/vol/${id}`, expect: BAD_ID },
      { what: `volume id ${id}`, method: 'DELETE', path: `/vol/${id}`, expect: BAD_ID },
    );
  }
  cases.push(
    { what: 'pd 0', method: 'GET', path: '/pd/0', expect: BAD_ID },
    { what: 'pd 0', method: 'DELETE', path: '/pd/0', expect: BAD_ID },
    { what: 'pool quote', method: 'GET', path: '/pool/abc%27/health', expect: BAD_ID },
    { what: 'pool quote', method: 'POST', path: '/pool/abc%27/modify', json: { spare_percent: 5 }, expect: BAD_ID },
    { what: 'sds huge', method: 'DELETE', path: '/sds/99999999999', expect: BAD_ID },
    { what: 'sds quote', method: 'POST', path: '/sds/abc%27/device/add', json: { path: '/dev/sdq', capacity_bytes: GiB, pool: 'pool1' }, expect: BAD_ID },
    { what: 'sdc quote', method: 'DELETE', path: '/sdc/abc%27', expect: BAD_ID },
    { what: 'fault set 0', method: 'DELETE', path: '/fault_set/0', expect: BAD_ID },
    { what: 'volume quote', method: 'GET', path: '/vol/abc%27/chunks', expect: BAD_ID },
    { what: 'volume quote', method: 'POST', path: '/vol/abc%27/io/authorize', json: { operations: ['read'], chunk_first: 0, chunk_count: 1, sdc: 'sdc1' }, expect: BAD_ID },
    { what: 'volume 0', method: 'POST', path: '/vol/0/io/authorize', json: { operations: ['write'], chunk_first: 0, chunk_count: 1, sdc: 'sdc1' }, expect: BAD_ID },
  );
  await runCases(t, cases);
});

t.test('malformed URLs also answer 4xx in the {error:{code,message}} shape', async (t) => {
  await runCases(t, [
    { what: 'a broken percent-escape', method: 'GET', path: '/vol/%E0%A4%A', expect: { status: 400 } },
    { what: 'a lone percent sign', method: 'DELETE', path: '/vol/%', expect: { status: 400 } },
    { what: 'an id longer than the router allows', method: 'GET', path: `/vol/${'a'.repeat(300)}`, expect: { status: [400, 404, 414] } },
  ]);
});

t.test('after the whole batch the database is unchanged and the MDM still answers', async (t) => {
  t.same(await api.ok('/cluster/status'), statusBefore, '/cluster/status deep-equals the snapshot');
  t.same(await listEvents(api), eventsBefore, '/event/list deep-equals the snapshot (no event for any refusal)');
  t.same(
    (await api.ok('/vol/list')).map((v: { name: string; size_bytes: number }) => [v.name, v.size_bytes]),
    [['vol1', 64 * MiB]],
    'still exactly vol1, at its size',
  );
  const health = await anonymous.get('/health');
  t.equal(health.status, 200);
  t.equal(health.body.status, 'ok');
  const stillWorks = await api.post('/pd/create', { name: 'pd-after' });
  t.equal(stillWorks.status, 201, 'a valid request right after the batch succeeds');
});
