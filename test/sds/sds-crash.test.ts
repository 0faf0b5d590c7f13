/**
 * kill -9 of a real `pflex sds` process in the middle of a write storm, then a restart on the same
 * data dir (DESIGN §6, §7): the SDS re-registers with its saved credential, sds_local.db passes
 * SQLite's integrity check, every write acknowledged before the kill is on the device exactly (a
 * killed process loses neither O_DIRECT writes nor the page cache, so FUA or not, every ack
 * counts), the blocks of writes in flight at the kill hold either their old or their new bytes,
 * and the chunks written during the storm come back as write intents (dirty in GET /chunks, "need
 * resync" logged). Those replicas are suspect: they serve no read, and since their peer is
 * current the MDM fences them at the registration, to be resynced from the peer.
 */
import t from 'tap';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { startSdsBed } from '../helpers/sds-bed.js';
import {
  controlAuthorization,
  httpCall,
  MiB,
  patternBytes,
  Prng,
  readSdsNodeFile,
  SdsDataClient,
  setupSdsCluster,
  sleep,
  startSdsProcess,
  TokenSession,
} from '../helpers/sds.js';
import { Status, statusName } from '../../src/common/sds-protocol.js';
import { DEVICE_HEADER_BYTES } from '../../src/sds/device-superblock.js';
import { closeSync, openSync, readSync } from 'node:fs';

const SEED = Number(process.env.PFLEX_CRASH_SEED ?? Date.now() % 1_000_000);
t.comment(`seed ${SEED} (PFLEX_CRASH_SEED to replay the write pattern; the kill timing is real)`);

const CHUNK_BYTES = 4 * MiB;
const CHUNKS = 4;
const BLOCK = 4096;
const BLOCKS_PER_CHUNK = CHUNK_BYTES / BLOCK;
const IN_FLIGHT = 64;
const CONNECTIONS = 4;
const KILL_AFTER_ACKS = 2000;

const { dir, mdm, processes, clients } = await startSdsBed(t, 'pflex-sds-crash-');

// Two SDS (a two-copy pool needs two); the storm and the kill are on the first. The storm writes
// one replica only, behind the MDM's back, so the pool's rebuild is off: a resync of the dirty
// chunks from the untouched peer would rightly overwrite the very bytes this test checks.
const layout = await setupSdsCluster(mdm.admin, {
  baseDir: dir,
  sdsCount: 2,
  rebuildEnabled: false,
  chunkSizeBytes: CHUNK_BYTES,
  volumes: [{ name: 'storm', sizeBytes: CHUNKS * CHUNK_BYTES }],
});
processes.push(
  ...(await Promise.all(
    layout.sds.map((r) => startSdsProcess({ nodeId: r.name, mdmUrl: mdm.url, joinToken: layout.joinToken, dataDir: r.dataDir, ports: r.ports })),
  )),
);
let sds = processes[0]!;
const record = layout.sds[0]!;
const node = readSdsNodeFile(sds.dataDir);

/** A write's bytes: a seeded pattern, each 4 KiB block tagged with the write id and block number. */
function writeData(writeId: number, length: number): Buffer {
  const data = patternBytes(SEED * 7919 + writeId, length);
  for (let block = 0; block * BLOCK < length; block += 1) {
    data.writeUInt32BE(writeId, block * BLOCK);
    data.writeUInt32BE(block, block * BLOCK + 4);
  }
  return data;
}

interface StormWrite {
  id: number;
  chunk: number;
  firstBlock: number;
  blocks: number;
  fua: boolean;
}

/** Per chunk and block: the last acknowledged write covering it (0: never written, zeros). */
const acked: Int32Array[] = Array.from({ length: CHUNKS }, () => new Int32Array(BLOCKS_PER_CHUNK));
/** Per chunk and block: the write in flight on it (0: none). In-flight writes never overlap. */
const inFlightOn: Int32Array[] = Array.from({ length: CHUNKS }, () => new Int32Array(BLOCKS_PER_CHUNK));
const writes = new Map<number, StormWrite>();
const ackedIds = new Set<number>();
/** Writes in flight when SIGKILL was sent and never acknowledged. */
const unackedAtKill = new Set<number>();
let killedAtAcks = 0;

t.test('a write storm, SIGKILL in the middle of it', async (t) => {
  const session = await TokenSession.authorize(mdm.admin, 'storm', layout.sdc, ['read', 'write', 'flush'], 0, CHUNKS);
  for (let chunk = 0; chunk < CHUNKS; chunk += 1) t.ok(session.targetsOf(chunk).includes(node.sds_id), `chunk ${chunk} has a replica on ${record.name}`);
  for (let i = 0; i < CONNECTIONS; i += 1) {
    const client = new SdsDataClient('127.0.0.1', sds.dataPort, 20_000);
    clients.push(client);
    t.equal((await session.install(client)).status, Status.OK, `connection ${i}: token installed`);
  }
  const prng = new Prng(SEED);
  let nextId = 1;
  let killing = false;
  let errors = 0;
  const refusals: string[] = [];

  /** Picks a range overlapping no write in flight and marks it taken. */
  const pick = (): StormWrite | undefined => {
    for (let attempt = 0; attempt < 50; attempt += 1) {
      const chunk = prng.int(0, CHUNKS - 1);
      const blocks = prng.int(1, 16); // 4 .. 64 KiB
      const firstBlock = prng.int(0, BLOCKS_PER_CHUNK - blocks);
      let free = true;
      for (let b = firstBlock; b < firstBlock + blocks && free; b += 1) if (inFlightOn[chunk]![b] !== 0) free = false;
      if (!free) continue;
      const write = { id: nextId, chunk, firstBlock, blocks, fua: prng.int(0, 4) === 0 };
      nextId += 1;
      for (let b = firstBlock; b < firstBlock + blocks; b += 1) inFlightOn[chunk]![b] = write.id;
      writes.set(write.id, write);
      return write;
    }
    return undefined;
  };

  const worker = async (index: number): Promise<void> => {
    const client = clients[index % CONNECTIONS]!;
    while (!killing) {
      const write = pick();
      if (write === undefined) {
        await sleep(1);
        continue;
      }
      let ok = false;
      try {
        const reply = await session.write(client, write.chunk, write.firstBlock * BLOCK, writeData(write.id, write.blocks * BLOCK), { fua: write.fua });
        ok = reply.status === Status.OK;
        if (!ok) refusals.push(statusName(reply.status));
      } catch {
        errors += 1; // the connection died with the process
      }
      if (ok) {
        ackedIds.add(write.id);
        for (let b = write.firstBlock; b < write.firstBlock + write.blocks; b += 1) acked[write.chunk]![b] = write.id;
      } else if (killing) {
        unackedAtKill.add(write.id);
      }
      for (let b = write.firstBlock; b < write.firstBlock + write.blocks; b += 1) inFlightOn[write.chunk]![b] = 0;
      if (!ok) return;
    }
  };

  const started = Date.now();
  const workers = Array.from({ length: IN_FLIGHT }, (_, i) => worker(i));
  // Flush now and then, as an SDC would; the kill comes when enough writes have been acknowledged.
  const flusher = (async () => {
    const client = clients[0]!;
    while (!killing) {
      await sleep(100);
      if (killing) break;
      try {
        await session.flush(client);
      } catch {
        break;
      }
    }
  })();
  while (ackedIds.size < KILL_AFTER_ACKS && Date.now() - started < 20_000) await sleep(5);
  const inFlightAtKill = [...writes.keys()].filter((id) => !ackedIds.has(id)).length;
  killedAtAcks = ackedIds.size;
  killing = true;
  const exit = await sds.kill9();
  await Promise.all([...workers, flusher]);
  t.comment(
    `${Date.now() - started} ms: ${killedAtAcks} writes acked when SIGKILL was sent, ${inFlightAtKill} in flight; ` +
      `${ackedIds.size} acked in all, ${unackedAtKill.size} never acked; ${errors} connection errors`,
  );
  t.equal(exit.signal, 'SIGKILL', 'the SDS process died of SIGKILL');
  t.ok(killedAtAcks >= KILL_AFTER_ACKS, `at least ${KILL_AFTER_ACKS} writes were acknowledged before the kill`);
  t.ok(inFlightAtKill > 0, 'writes were in flight at the kill (mid-storm)');
  t.same(refusals, [], 'no write was refused before the kill');
  t.ok([...writes.values()].some((w) => w.fua) && [...writes.values()].some((w) => !w.fua), 'the storm mixed FUA and plain writes');
});

t.test('sds_local.db after the kill: intact, with the storm chunks as write intents', async (t) => {
  const db = new Database(join(sds.dataDir, 'sds_local.db'), { readonly: true, fileMustExist: true });
  try {
    t.equal(db.pragma('integrity_check', { simple: true }), 'ok', 'PRAGMA integrity_check = ok');
    t.same(db.pragma('foreign_key_check'), [], 'no foreign key violations');
    const chunks = db.prepare('SELECT chunk_index, slot_index FROM chunks ORDER BY chunk_index').all() as { chunk_index: number; slot_index: number | null }[];
    t.same(
      chunks.map((c) => c.chunk_index),
      [0, 1, 2, 3],
      'the four storm chunks are recorded',
    );
    t.ok(chunks.every((c) => c.slot_index !== null), 'each with a slot');
    const intents = db.prepare('SELECT chunk_index FROM write_intents ORDER BY chunk_index').all() as { chunk_index: number }[];
    t.same(
      intents.map((row) => row.chunk_index),
      [0, 1, 2, 3],
      'all four chunks have a durable write intent',
    );
  } finally {
    db.close();
  }
});

let firstChunksAnswer: any;

t.test('restart on the same data dir without a join token: it re-registers', async (t) => {
  const restarted = await startSdsProcess({
    nodeId: record.name,
    mdmUrl: mdm.url,
    dataDir: record.dataDir,
    ports: record.ports,
    logFile: sds.logFile,
    wait: 'none',
  });
  processes[0] = restarted;
  sds = restarted;
  // Ask the control plane as soon as it listens: the write intents found at start must be there.
  const auth = controlAuthorization(node.signingKey);
  const deadline = Date.now() + 15_000;
  while (firstChunksAnswer === undefined && Date.now() < deadline && sds.alive()) {
    try {
      const answer = await httpCall(`${sds.controlUrl}/chunks`, { authorization: auth });
      if (answer.status === 200) firstChunksAnswer = answer.body;
    } catch {
      await sleep(10);
    }
  }
  t.ok(firstChunksAnswer !== undefined, 'the control plane answered GET /chunks');
  const health = await sds.waitRegistered(15_000);
  t.equal(health.registered, true, 'mgmt /health says registered');
  t.equal(health.sds_id, node.sds_id, 'with the same SDS id');
  t.equal(readSdsNodeFile(sds.dataDir).sds_id, node.sds_id, 'node.json kept its identity');
  const list = await mdm.admin.get<{ name: string; state: string; data_port: number }[]>('/sds/list');
  const mine = list.find((s) => s.name === record.name);
  t.same([mine?.state, mine?.data_port], ['UP', record.ports.data], 'the MDM sees it UP on its data port');
});

t.test('write intents after the restart: the storm chunks need resync', async (t) => {
  const dirty = (firstChunksAnswer?.chunks ?? []) as { volume_id: number; chunk_index: number; dirty: boolean; stored: boolean }[];
  t.same(
    dirty
      .filter((c) => c.dirty)
      .map((c) => c.chunk_index)
      .sort(),
    [0, 1, 2, 3],
    'GET /chunks right after the restart shows every storm chunk dirty:true',
  );
  t.ok(dirty.every((c) => c.stored), 'and stored');
  let warning: { msg: string; chunks: number } | undefined;
  for (let i = 0; i < 60 && warning === undefined; i += 1) {
    warning = sds
      .log()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { msg: string; chunks: number; level: number })
      .find((entry) => /need resync/.test(entry.msg));
    if (warning === undefined) await sleep(50);
  }
  t.ok(warning !== undefined, 'the SDS log warns that chunks need resync');
  t.equal(warning?.chunks, CHUNKS, 'naming the four storm chunks');
});

t.test('the suspect replicas serve no read: the MDM fences them, their peer is current', async (t) => {
  const old = await TokenSession.authorize(mdm.admin, 'storm', layout.sdc, ['read'], 0, CHUNKS);
  t.notOk(old.targetsOf(0).includes(node.sds_id), 'a new token no longer names the restarted SDS for a storm chunk');
  // The event is recorded when the fence's epochs are installed: soon after the token changes.
  let named = false;
  for (let i = 0; i < 100 && !named; i += 1) {
    const events = await mdm.admin.get<{ type: string; message: string }[]>('/event/list?type=REPLICAS_SUSPECT');
    named = events.some((event) => event.message.includes(record.name));
    if (!named) await sleep(50);
  }
  t.ok(named, 'a REPLICAS_SUSPECT event names the SDS');
});

/** A chunk's bytes as they sit in the device file (plain pread at the slot sds_local.db names). */
function deviceChunk(chunk: number): Buffer {
  const db = new Database(join(sds.dataDir, 'sds_local.db'), { readonly: true, fileMustExist: true });
  const row = db.prepare('SELECT slot_index FROM chunks WHERE chunk_index = ?').get(chunk) as { slot_index: number };
  db.close();
  const fd = openSync(record.devicePath, 'r');
  try {
    const out = Buffer.alloc(CHUNK_BYTES);
    readSync(fd, out, 0, CHUNK_BYTES, DEVICE_HEADER_BYTES + row.slot_index * CHUNK_BYTES);
    return out;
  } finally {
    closeSync(fd);
  }
}

t.test('every acknowledged write is on the device exactly; in-flight blocks hold old or new bytes', async (t) => {
  const cache = new Map<number, Buffer>();
  const blockOf = (writeId: number, block: number): Buffer => {
    const write = writes.get(writeId)!;
    let data = cache.get(writeId);
    if (data === undefined) {
      data = writeData(writeId, write.blocks * BLOCK);
      cache.set(writeId, data);
    }
    const index = block - write.firstBlock;
    return data.subarray(index * BLOCK, (index + 1) * BLOCK);
  };
  const zero = Buffer.alloc(BLOCK);
  let exact = 0;
  const ackedBad: string[] = [];
  let inFlightNew = 0;
  let inFlightOld = 0;
  const inFlightBad: string[] = [];
  // Blocks of never-acknowledged writes: per chunk and block, that write's id.
  const unackedOn = Array.from({ length: CHUNKS }, () => new Map<number, number>());
  for (const id of unackedAtKill) {
    const write = writes.get(id)!;
    for (let b = write.firstBlock; b < write.firstBlock + write.blocks; b += 1) unackedOn[write.chunk]!.set(b, id);
  }
  for (let chunk = 0; chunk < CHUNKS; chunk += 1) {
    const bytes = deviceChunk(chunk);
    for (let b = 0; b < BLOCKS_PER_CHUNK; b += 1) {
      const got = bytes.subarray(b * BLOCK, (b + 1) * BLOCK);
      const ackedId = acked[chunk]![b]!;
      const expected = ackedId === 0 ? zero : blockOf(ackedId, b);
      const unacked = unackedOn[chunk]!.get(b);
      if (unacked === undefined) {
        if (got.equals(expected)) exact += 1;
        else ackedBad.push(`chunk ${chunk} block ${b}: expected write ${ackedId}, found tag ${got.readUInt32BE(0)}/${got.readUInt32BE(4)}`);
      } else if (got.equals(blockOf(unacked, b))) inFlightNew += 1;
      else if (got.equals(expected)) inFlightOld += 1;
      else inFlightBad.push(`chunk ${chunk} block ${b}: neither write ${ackedId} nor in-flight write ${unacked}`);
    }
  }
  t.comment(`${exact} blocks exact; blocks of unacknowledged writes: ${inFlightNew} new, ${inFlightOld} old`);
  t.same(ackedBad.slice(0, 10), [], 'every block of every acknowledged write (and every untouched block) reads back exactly');
  t.equal(ackedBad.length, 0, `no acknowledged block lost (${ackedBad.length})`);
  t.same(inFlightBad.slice(0, 10), [], 'each block of an unacknowledged write holds its old or its new bytes, nothing else');
  t.ok(exact > 0 && ackedIds.size >= KILL_AFTER_ACKS, 'the check covered the storm');
});

t.test('sds_local.db of the running, restarted SDS is intact', async (t) => {
  const db = new Database(join(sds.dataDir, 'sds_local.db'), { readonly: true, fileMustExist: true });
  try {
    t.equal(db.pragma('integrity_check', { simple: true }), 'ok', 'PRAGMA integrity_check = ok');
    const slots = db.prepare('SELECT COUNT(DISTINCT slot_index) AS n FROM chunks WHERE slot_index IS NOT NULL').get() as { n: number };
    t.equal(slots.n, CHUNKS, 'still one slot per chunk (no slot handed out twice across the crash)');
  } finally {
    db.close();
  }
  t.ok(sds.alive(), 'the restarted SDS is alive');
});

t.test("rebuild off: the dirty chunks wait; switched on, they are resynced from the peer's copy", async (t) => {
  type PoolStatus = { pool: string; state: string; chunks_pending: number };
  const poolStatus = async (): Promise<PoolStatus | undefined> =>
    (await mdm.admin.get<{ pools: PoolStatus[] }>('/rebuild/status')).pools.find((pool) => pool.pool === 't-pool');
  let status: PoolStatus | undefined;
  for (let i = 0; i < 100 && status?.state !== 'disabled'; i += 1) {
    status = await poolStatus();
    if (status?.state !== 'disabled') await sleep(100);
  }
  t.same([status?.state, status?.chunks_pending], ['disabled', CHUNKS], 'rebuild status: the pool is disabled with the four dirty chunks pending');

  const modified = await mdm.admin.post<{ rebuild_enabled: boolean }>('/pool/t-pool/modify', { rebuild_enabled: true });
  t.equal(modified.rebuild_enabled, true, 'pool modify switches rebuild on');
  for (let i = 0; i < 300 && status?.state !== 'idle'; i += 1) {
    await sleep(100);
    status = await poolStatus();
  }
  t.equal(status?.state, 'idle', 'the resync finishes');
  // The storm wrote this SDS only; its peer never saw a byte, so the resynced replica is zeros.
  const session = await TokenSession.authorize(mdm.admin, 'storm', layout.sdc, ['read'], 0, CHUNKS);
  const client = new SdsDataClient('127.0.0.1', sds.dataPort, 20_000);
  clients.push(client);
  t.equal((await session.install(client)).status, Status.OK, 'a token at the new epoch');
  t.ok(session.targetsOf(0).includes(node.sds_id), 'the resynced replicas are current again: the token names the SDS');
  const zeros = Buffer.alloc(CHUNK_BYTES);
  for (let chunk = 0; chunk < CHUNKS; chunk += 1) {
    const reply = await session.read(client, chunk, 0, CHUNK_BYTES);
    t.ok(reply.status === Status.OK && reply.payload?.equals(zeros), `chunk ${chunk} now holds the peer's bytes`);
  }
});
