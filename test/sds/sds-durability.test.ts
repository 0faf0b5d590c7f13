/**
 * What an acknowledgement promises, against a real `pflex sds` whose device IO goes through the
 * fault layer (PFLEX_FAULT_INJECTION=1) with its volatile write cache model: a power cut
 * (POST /debug/power-cut) drops every write no completed fdatasync covers, then kills the
 * process. After each cut the SDS restarts on its data dir, and the device file is read with a
 * plain pread at the slots sds_local.db names (a restarted SDS's crash-time chunks are suspect and
 * serve no read until the MDM decides, see sds-crash.test.ts).
 *
 * - the model itself: a write neither FUA nor flushed is gone after the cut; a flushed one stays
 * - FUA: durable when acknowledged
 * - issue 10, item 1: a FLUSH that arrives while an older sync runs waits for a sync that began
 *   after the writes it covers (it used to return at once: the device was no longer "dirty")
 * - a slot given to a new chunk is zeroed durably first: after a cut it never shows the bytes of
 *   the chunk that had it before
 * - issue 10, item 4: a request its client gave up on (its connection stalled, its bytes still in
 *   the SDS's socket) never applies after the client's retry on a new connection (HELLO)
 */
import t, { type Test } from 'tap';
import Database from 'better-sqlite3';
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { startSdsBed } from '../helpers/sds-bed.js';
import {
  controlAuthorization,
  httpCall,
  MiB,
  patternBytes,
  readSdsNodeFile,
  SdsDataClient,
  setupSdsCluster,
  sleep,
  startSdsProcess,
  TokenSession,
  type SdsProcess,
} from '../helpers/sds.js';
import { Status, statusName } from '../../src/common/sds-protocol.js';
import { DEVICE_HEADER_BYTES } from '../../src/sds/device-superblock.js';

const CHUNK_BYTES = MiB;
const BLOCK = 4096;
const FAULT_ENV = { PFLEX_FAULT_INJECTION: '1', PFLEX_FAULT_VOLATILE_CACHE: '1' };

const { dir, mdm, processes, clients } = await startSdsBed(t, 'pflex-sds-durability-');

// Two SDS; every test writes the first one only, behind the MDM's back, so rebuild is off.
const layout = await setupSdsCluster(mdm.admin, {
  baseDir: dir,
  sdsCount: 2,
  rebuildEnabled: false,
  chunkSizeBytes: CHUNK_BYTES,
  volumes: [{ name: 'dur', sizeBytes: 16 * CHUNK_BYTES }],
});
const record = layout.sds[0]!;
const start = (joinToken?: string): Promise<SdsProcess> =>
  startSdsProcess({ nodeId: record.name, mdmUrl: mdm.url, joinToken, dataDir: record.dataDir, ports: record.ports, env: FAULT_ENV, logFile: join(record.dataDir, 'sds.log') });
let sds = await start(layout.joinToken);
processes.push(sds, await startSdsProcess({ nodeId: layout.sds[1]!.name, mdmUrl: mdm.url, joinToken: layout.joinToken, dataDir: layout.sds[1]!.dataDir, ports: layout.sds[1]!.ports }));
const node = readSdsNodeFile(sds.dataDir);
const auth = controlAuthorization(node.signingKey);
let session = await TokenSession.authorize(mdm.admin, 'dur', layout.sdc, ['read', 'write', 'flush'], 0, 16);
const mine = session.answer.chunks.filter((chunk) => chunk.replicas.some((r) => r.sds_id === node.sds_id)).map((chunk) => chunk.index);

/** A connection with a fresh token installed (chunks fenced by earlier cuts are not used again). */
async function connect(chunks: readonly number[], hello = false, timeoutMs = 20_000): Promise<SdsDataClient> {
  // After a cut the SDS's replicas may be fenced and resynced: a token taken meanwhile does not
  // name it (an authorization waits only for epoch installs in progress, not for the resync).
  // Wait until it is a target of the chunks the caller uses again.
  for (let attempt = 0; ; attempt += 1) {
    session = await TokenSession.authorize(mdm.admin, 'dur', layout.sdc, ['read', 'write', 'flush'], 0, 16);
    if (chunks.every((chunk) => session.targetsOf(chunk).includes(node.sds_id))) break;
    if (attempt >= 400) throw new Error(`the SDS under test is still not a target of chunks ${chunks.join(',')} after 20 s`);
    await sleep(50);
  }
  const client = new SdsDataClient('127.0.0.1', sds.dataPort, timeoutMs, undefined, hello);
  clients.push(client);
  const installed = await session.install(client);
  if (installed.status !== Status.OK) throw new Error(`token install: ${statusName(installed.status)}`);
  return client;
}

async function faults(config: Record<string, unknown>): Promise<void> {
  const answer = await httpCall(`${sds.controlUrl}/debug/faults`, { authorization: auth, json: config });
  if (answer.status !== 200) throw new Error(`POST /debug/faults: ${answer.status} ${answer.text}`);
}

/** Power cut: the SDS drops its unsynced writes and dies; then it starts again on its data dir. */
async function powerCutAndRestart(): Promise<void> {
  await httpCall(`${sds.controlUrl}/debug/power-cut`, { authorization: auth, json: {} }).catch(() => undefined);
  const exit = await sds.exited;
  if (exit.signal !== 'SIGKILL') throw new Error(`the power cut ended the SDS with ${JSON.stringify(exit)}`);
  for (const client of clients.splice(0)) client.close();
  sds = await start();
  processes[0] = sds;
}

/** Bytes of a chunk as they sit in the device file (undefined: no slot). */
function onDevice(chunk: number, offsetBytes: number, lengthBytes: number): Buffer | undefined {
  const db = new Database(join(sds.dataDir, 'sds_local.db'), { readonly: true, fileMustExist: true });
  const row = db.prepare('SELECT slot_index FROM chunks WHERE volume_id = ? AND chunk_index = ?').get(session.volumeId, chunk) as { slot_index: number | null } | undefined;
  db.close();
  if (row?.slot_index === null || row?.slot_index === undefined) return undefined;
  const fd = openSync(record.devicePath, 'r');
  try {
    const out = Buffer.alloc(lengthBytes);
    readSync(fd, out, 0, lengthBytes, DEVICE_HEADER_BYTES + row.slot_index * CHUNK_BYTES + offsetBytes);
    return out;
  } finally {
    closeSync(fd);
  }
}

function expectOk(tt: Test, status: number, what: string): void {
  tt.equal(statusName(status), 'OK', what);
}

t.test('setup', async (t) => {
  t.ok(mine.length >= 6, `the SDS under test holds at least 6 chunks of the volume (${mine.join(',')})`);
});

t.test('the cache model: an unsynced write is gone after a power cut, a flushed one stays', async (t) => {
  const chunk = mine[0]!;
  const client = await connect([chunk]);
  const flushed = patternBytes(11, BLOCK);
  const unsynced = patternBytes(12, BLOCK);
  expectOk(t, (await session.write(client, chunk, 0, flushed)).status, 'write block 0');
  expectOk(t, (await session.flush(client)).status, 'FLUSH');
  expectOk(t, (await session.write(client, chunk, BLOCK, unsynced)).status, 'write block 1, neither FUA nor flushed');
  await powerCutAndRestart();
  t.ok(onDevice(chunk, 0, BLOCK)?.equals(flushed), 'the flushed block survived the cut');
  t.ok(onDevice(chunk, BLOCK, BLOCK)?.equals(Buffer.alloc(BLOCK)), 'the unsynced block is gone (zeros again)');
});

t.test('FUA: durable when acknowledged', async (t) => {
  const chunk = mine[1]!;
  const client = await connect([chunk]);
  const data = patternBytes(21, 2 * BLOCK);
  expectOk(t, (await session.write(client, chunk, 0, data, { fua: true })).status, 'FUA write');
  await powerCutAndRestart();
  t.ok(onDevice(chunk, 0, 2 * BLOCK)?.equals(data), 'the FUA write survived the cut');
});

t.test('a FLUSH arriving while an older sync runs waits for a sync that covers it', async (t) => {
  const chunk = mine[2]!;
  const client = await connect([chunk]);
  await faults({ volatile_cache: true, device_latency: [{ op: 'sync', ms: 1500 }] });
  const data = patternBytes(31, BLOCK);
  expectOk(t, (await session.write(client, chunk, 0, data)).status, 'write, acknowledged, not yet durable');
  const startedMs = Date.now();
  const first = session.flush(client).catch(() => undefined); // its sync takes 1.5 s (the cut may end it)
  await sleep(100);
  const second = await session.flush(client);
  const secondMs = Date.now() - startedMs;
  expectOk(t, second.status, 'the second FLUSH');
  t.comment(`the second FLUSH answered after ${secondMs} ms (the first sync takes 1500 ms)`);
  // Power goes the moment the second FLUSH is acknowledged: the write it covers must be on disk.
  await powerCutAndRestart();
  await first;
  t.ok(onDevice(chunk, 0, BLOCK)?.equals(data), 'the write covered by the acknowledged FLUSH survived the cut');
});

t.test('a reused slot never shows the previous chunk after a power cut', async (t) => {
  const [old, fresh] = [mine[3]!, mine[4]!];
  const client = await connect([old, fresh]);
  const oldBytes = patternBytes(41, CHUNK_BYTES);
  expectOk(t, (await session.write(client, old, 0, oldBytes, { fua: true })).status, 'the old chunk, written whole and durable');
  const forget = await httpCall(`${sds.controlUrl}/chunks/delete`, { authorization: auth, json: { chunks: [{ volume_id: session.volumeId, chunk_index: old }] } });
  t.equal(forget.body?.deleted, 1, 'the old chunk is deleted here: its slot is free');
  const block = patternBytes(42, BLOCK);
  expectOk(t, (await session.write(client, fresh, 0, block)).status, 'a new chunk takes the slot with one unsynced block');
  await powerCutAndRestart();
  const bytes = onDevice(fresh, 0, CHUNK_BYTES);
  t.ok(bytes !== undefined, 'the new chunk still has its slot');
  t.ok(bytes?.subarray(BLOCK).equals(Buffer.alloc(CHUNK_BYTES - BLOCK)), 'beyond its block the slot is zeros: nothing of the old chunk came back');
});

t.test('a request given up on never lands after its retry: a stalled connection', async (t) => {
  const chunk = mine[5]!;
  const client = await connect([chunk], true, 1000); // HELLO on every connection; 1 s request timeout
  const before = patternBytes(51, BLOCK);
  expectOk(t, (await session.write(client, chunk, 0, before, { fua: true })).status, 'a first write');
  await faults({ volatile_cache: true, data: [{ kind: 'stall', ms: 3000 }] }); // the SDS stops reading this connection
  const abandoned = await session.write(client, chunk, 0, patternBytes(52, BLOCK)).then(
    (reply) => statusName(reply.status),
    (error: Error) => error.message,
  );
  t.match(abandoned, /no reply within 1000 ms/, 'the client gives up on the stalled write (its bytes wait in the SDS socket)');
  const retry = patternBytes(53, BLOCK);
  expectOk(t, (await session.write(client, chunk, 0, retry, { fua: true })).status, 'the retry, on a new connection, is acknowledged');
  await sleep(3500); // the stall is over: the old connection's bytes would be read now
  const reply = await session.read(client, chunk, 0, BLOCK);
  t.ok(reply.status === Status.OK && reply.payload?.equals(retry), 'the block holds the retry, not the abandoned write');
});
