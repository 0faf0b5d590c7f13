/**
 * The SDS chunk store (DESIGN §3, §7) against an in-memory reference model: a seeded random
 * sequence of aligned and unaligned writes, reads, trims/write_zeroes and flushes over several
 * chunks — lengths from 1 byte to 256 KiB, many straddling 4 KiB boundaries, some batches running
 * concurrently on neighbouring bytes of the same blocks — with every read compared to the model.
 * The store is the real one: the native O_DIRECT addon, a real device file on disk, a real
 * sds_local.db. Then: a deleted chunk's slot goes to a new chunk that reads zeros wherever it
 * was never written (on the device too); a full device answers NO_SPACE; and a store reopened on
 * the same database and device file shows every byte again.
 */
import t from 'tap';
import { closeSync, openSync, readSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ChunkStore, ChunkStoreError, type DeviceSpec } from '../../src/sds/chunk-store.js';
import { openSdsDatabase, sdsIncarnation, type SdsDb } from '../../src/sds/sds-database.js';
import { DEVICE_HEADER_BYTES } from '../../src/sds/device-superblock.js';
import { createLogger } from '../../src/common/logger.js';
import { directTempDir, KiB, MiB, Prng } from '../helpers/sds.js';

const SEED = Number(process.env.PFLEX_MODEL_SEED ?? 7_340_033);
const OPS = Number(process.env.PFLEX_MODEL_OPS ?? 2400);
t.comment(`seed ${SEED}, ${OPS} operations (PFLEX_MODEL_SEED / PFLEX_MODEL_OPS to replay)`);

const CHUNK_BYTES = MiB;
const SLOTS = 16;
const POOL = 7;
const EPOCH = 3;
const dir = directTempDir('pflex-chunk-model-');
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const dbPath = join(dir, 'sds_local.db');
const spec: DeviceSpec = { mdmDeviceId: 41, path: join(dir, 'devices', 'dev0.img'), poolId: POOL, capacityBytes: SLOTS * CHUNK_BYTES, slotBytes: CHUNK_BYTES };
const log = createLogger('sds-test', 'silent');

let db: SdsDb = openSdsDatabase(dbPath);
let store = openStore(db);

/** A store with this SDS's identity (what its superblocks name), as a registered SDS has. */
function openStore(database: SdsDb): ChunkStore {
  const opened = new ChunkStore(database, log);
  opened.setIdentity({ clusterId: 'model-test-cluster', sdsId: 1, incarnation: sdsIncarnation(database).incarnation });
  return opened;
}
t.teardown(async () => {
  await store.close().catch(() => undefined);
  if (db.open) db.close();
});

interface ChunkRef {
  volumeId: number;
  chunkIndex: number;
}
const CHUNKS: ChunkRef[] = [
  { volumeId: 1, chunkIndex: 0 },
  { volumeId: 1, chunkIndex: 1 },
  { volumeId: 1, chunkIndex: 2 },
  { volumeId: 1, chunkIndex: 9 },
  { volumeId: 2, chunkIndex: 0 },
  { volumeId: 2, chunkIndex: 1 },
];
const keyOf = (c: ChunkRef): string => `${c.volumeId}:${c.chunkIndex}`;
/** The model: every chunk's bytes as they must read. Unwritten chunks are zeros. */
const model = new Map<string, Buffer>();
const modelOf = (c: ChunkRef): Buffer => {
  let bytes = model.get(keyOf(c));
  if (bytes === undefined) {
    bytes = Buffer.alloc(CHUNK_BYTES);
    model.set(keyOf(c), bytes);
  }
  return bytes;
};

type Op =
  | { kind: 'write'; chunk: ChunkRef; offset: number; data: Buffer; fua: boolean }
  | { kind: 'read'; chunk: ChunkRef; offset: number; length: number }
  | { kind: 'zero'; chunk: ChunkRef; offset: number; length: number; fua: boolean }
  | { kind: 'flush' };

/** An (offset, length) inside a chunk: aligned, unaligned, straddling a 4 KiB boundary, tiny, or large. */
function range(prng: Prng): { offset: number; length: number } {
  const shape = prng.int(0, 9);
  let offset: number;
  let length: number;
  switch (shape) {
    case 0:
    case 1: // aligned
      length = prng.int(1, 64) * 4096;
      offset = prng.int(0, (CHUNK_BYTES - length) / 4096) * 4096;
      break;
    case 2:
    case 3: {
      // straddles a 4 KiB boundary by a few bytes on each side
      const boundary = prng.int(1, CHUNK_BYTES / 4096 - 1) * 4096;
      const before = prng.int(1, 600);
      offset = boundary - before;
      length = before + prng.int(1, 600);
      break;
    }
    case 4: // one byte
      length = 1;
      offset = prng.int(0, CHUNK_BYTES - 1);
      break;
    case 5: // inside one block, unaligned
      offset = prng.int(0, CHUNK_BYTES / 4096 - 1) * 4096 + prng.int(1, 4000);
      length = prng.int(1, 4096 - (offset % 4096));
      break;
    case 6: // at the very end of the chunk
      length = prng.int(1, 256 * KiB);
      offset = CHUNK_BYTES - length;
      break;
    default: // anything up to 256 KiB
      length = prng.int(1, 256 * KiB);
      offset = prng.int(0, CHUNK_BYTES - length);
  }
  return { offset, length };
}

function randomOp(prng: Prng, chunk: ChunkRef): Op {
  const roll = prng.int(0, 99);
  const { offset, length } = range(prng);
  if (roll < 45) return { kind: 'write', chunk, offset, data: prng.bytes(length), fua: prng.int(0, 9) === 0 };
  if (roll < 80) return { kind: 'read', chunk, offset, length };
  if (roll < 95) return { kind: 'zero', chunk, offset, length, fua: prng.int(0, 9) === 0 };
  return { kind: 'flush' };
}

interface Mismatch {
  op: number;
  chunk: string;
  offset: number;
  length: number;
  firstBadByte: number;
}

const mismatches: Mismatch[] = [];
let reads = 0;

function compare(opNumber: number, chunk: ChunkRef, offset: number, length: number, got: Buffer, expected: Buffer): void {
  reads += 1;
  if (got.length === length && got.equals(expected)) return;
  let first = 0;
  while (first < length && got[first] === expected[first]) first += 1;
  mismatches.push({ op: opNumber, chunk: keyOf(chunk), offset, length, firstBadByte: offset + first });
}

/** Runs one op against the store; returns a function that applies it to the model. */
async function run(opNumber: number, op: Op, expectedForRead?: Buffer): Promise<() => void> {
  switch (op.kind) {
    case 'write':
      await store.write(op.chunk.volumeId, op.chunk.chunkIndex, POOL, EPOCH, op.offset, op.data, op.fua);
      return () => op.data.copy(modelOf(op.chunk), op.offset);
    case 'zero':
      await store.zero(op.chunk.volumeId, op.chunk.chunkIndex, EPOCH, op.offset, op.length, op.fua);
      return () => modelOf(op.chunk).fill(0, op.offset, op.offset + op.length);
    case 'read': {
      const expected = expectedForRead ?? Buffer.from(modelOf(op.chunk).subarray(op.offset, op.offset + op.length));
      const got = await store.read(op.chunk.volumeId, op.chunk.chunkIndex, op.offset, op.length);
      compare(opNumber, op.chunk, op.offset, op.length, got, expected);
      return () => undefined;
    }
    case 'flush':
      await store.flush();
      return () => undefined;
  }
}

/** Every chunk read whole through the store, against the model. */
async function verifyAll(opNumber: number, chunks: ChunkRef[] = CHUNKS): Promise<void> {
  for (const chunk of chunks) {
    const got = await store.read(chunk.volumeId, chunk.chunkIndex, 0, CHUNK_BYTES);
    compare(opNumber, chunk, 0, CHUNK_BYTES, got, modelOf(chunk));
  }
}

/** Slot of a chunk, from sds_local.db. */
function slotOf(chunk: ChunkRef): number | null {
  const row = db.prepare('SELECT slot_index FROM chunks WHERE volume_id = ? AND chunk_index = ?').get(chunk.volumeId, chunk.chunkIndex) as
    | { slot_index: number | null }
    | undefined;
  return row?.slot_index ?? null;
}

/** A chunk's bytes read straight from the device file (plain buffered read, not the store). */
function deviceBytes(slot: number): Buffer {
  const fd = openSync(spec.path, 'r');
  try {
    const out = Buffer.alloc(CHUNK_BYTES);
    readSync(fd, out, 0, CHUNK_BYTES, DEVICE_HEADER_BYTES + slot * CHUNK_BYTES);
    return out;
  } finally {
    closeSync(fd);
  }
}

t.test('the device is attached with O_DIRECT, 16 free slots', async (t) => {
  store.attachDevice(spec);
  store.loadChunks();
  const [device] = store.deviceReport();
  t.equal(device?.direct, true, 'the real addon opened the device file with O_DIRECT');
  t.equal(device?.slots, SLOTS);
  t.equal(device?.slots_free, SLOTS);
  t.same(store.listChunks(), [], 'no chunks yet');
  const zeros = await store.read(1, 0, 12_345, 100);
  t.ok(zeros.equals(Buffer.alloc(100)), 'a chunk never written reads zeros');
  await store.zero(1, 5, 1, 0, 8192, false);
  t.same(store.listChunks(), [], 'zeroing an unknown chunk creates nothing');
});

t.test(`${OPS} seeded random operations agree with the model`, async (t) => {
  const prng = new Prng(SEED);
  let opNumber = 0;
  let batches = 0;
  while (opNumber < OPS) {
    const chunk = prng.pick(CHUNKS);
    if (prng.int(0, 9) === 0) {
      // A concurrent batch on one chunk: byte ranges never overlap, but they share 4 KiB
      // blocks, so read-modify-writes of neighbours must not lose each other's bytes.
      batches += 1;
      const base = prng.int(0, CHUNK_BYTES / 4096 - 8) * 4096 + prng.int(0, 4095);
      let cursor = base;
      const ops: Op[] = [];
      const count = prng.int(2, 8);
      for (let i = 0; i < count && cursor < CHUNK_BYTES - 1; i += 1) {
        const length = Math.min(prng.pick([1, 7, 100, 1000, 3000, 4096, 5000, 9000]), CHUNK_BYTES - cursor);
        const roll = prng.int(0, 9);
        if (roll < 6) ops.push({ kind: 'write', chunk, offset: cursor, data: prng.bytes(length), fua: roll === 0 });
        else if (roll < 8) ops.push({ kind: 'zero', chunk, offset: cursor, length, fua: false });
        else ops.push({ kind: 'read', chunk, offset: cursor, length });
        cursor += length + prng.int(0, 3);
      }
      // Reads see the bytes as before the batch: nothing else in it touches them.
      const expectations = ops.map((op) => (op.kind === 'read' ? Buffer.from(modelOf(op.chunk).subarray(op.offset, op.offset + op.length)) : undefined));
      const applies = await Promise.all(ops.map((op, i) => run(opNumber + i, op, expectations[i])));
      for (const apply of applies) apply();
      opNumber += ops.length;
    } else {
      const apply = await run(opNumber, randomOp(prng, chunk));
      apply();
      opNumber += 1;
    }
    if (opNumber % 400 < 8 && opNumber >= 400) await verifyAll(opNumber);
  }
  await verifyAll(opNumber);
  t.comment(`${opNumber} operations, ${batches} concurrent batches, ${reads} reads compared`);
  t.ok(opNumber >= 2000, 'at least 2000 operations ran');
  t.same(mismatches.slice(0, 5), [], 'every read matched the model');
  t.equal(mismatches.length, 0, 'no mismatches at all');
  t.equal(store.deviceReport()[0]?.slots_free, SLOTS - CHUNKS.length, 'one slot per written chunk');
});

t.test('the device file holds exactly the model at the slots sds_local.db names', async (t) => {
  await store.flush();
  const slots = new Set<number>();
  for (const chunk of CHUNKS) {
    const slot = slotOf(chunk);
    t.type(slot, 'number', `${keyOf(chunk)} has a slot`);
    slots.add(slot!);
    t.ok(deviceBytes(slot!).equals(modelOf(chunk)), `${keyOf(chunk)}: device bytes at slot ${slot} equal the model`);
  }
  t.equal(slots.size, CHUNKS.length, 'every chunk has its own slot');
});

t.test('a deleted chunk frees its slot; the next chunk in it never shows the old bytes', async (t) => {
  const victim = CHUNKS[2]!;
  const oldSlot = slotOf(victim)!;
  const oldBytes = Buffer.from(modelOf(victim));
  t.ok(oldBytes.some((b) => b !== 0), 'the victim chunk holds non-zero data');
  // Make it dense so leftovers could not hide: fill the whole slot with a pattern first.
  const dense = new Prng(SEED + 1).bytes(CHUNK_BYTES);
  await store.write(victim.volumeId, victim.chunkIndex, POOL, EPOCH, 0, dense, true);
  t.ok(deviceBytes(oldSlot).equals(dense), 'the dense pattern is on the device');
  const freeBefore = store.deviceReport()[0]!.slots_free;
  t.equal(store.deleteChunk(victim.volumeId, victim.chunkIndex), true, 'deleteChunk');
  t.equal(store.deleteChunk(victim.volumeId, victim.chunkIndex), false, 'deleting again finds nothing');
  model.delete(keyOf(victim));
  t.equal(store.deviceReport()[0]!.slots_free, freeBefore + 1, 'its slot is free again');
  t.notOk(store.listChunks().some((c) => c.volume_id === victim.volumeId && c.chunk_index === victim.chunkIndex), 'the chunk is forgotten');
  t.ok((await store.read(victim.volumeId, victim.chunkIndex, 0, 4096)).equals(Buffer.alloc(4096)), 'the deleted chunk reads zeros');

  // A new chunk's first write is unaligned (read-modify-write of its first block) and small.
  const fresh: ChunkRef = { volumeId: 3, chunkIndex: 77 };
  const data = Buffer.from('a reused slot must never show a previous volume\'s bytes');
  await store.write(fresh.volumeId, fresh.chunkIndex, POOL, EPOCH, 100 * KiB + 5, data, false);
  data.copy(modelOf(fresh), 100 * KiB + 5);
  t.equal(slotOf(fresh), oldSlot, 'the new chunk got the freed slot');
  const whole = await store.read(fresh.volumeId, fresh.chunkIndex, 0, CHUNK_BYTES);
  t.ok(whole.equals(modelOf(fresh)), 'the new chunk reads zeros wherever it was never written, through the store');
  await store.flush();
  t.ok(deviceBytes(oldSlot).equals(modelOf(fresh)), 'and in the device file: no byte of the old chunk is left');
  CHUNKS[2] = fresh;

  // A second reuse, this time after an aligned first write.
  const other = CHUNKS[4]!;
  const otherSlot = slotOf(other)!;
  store.deleteChunk(other.volumeId, other.chunkIndex);
  model.delete(keyOf(other));
  const fresh2: ChunkRef = { volumeId: 4, chunkIndex: 0 };
  const block = new Prng(SEED + 2).bytes(8192);
  await store.write(fresh2.volumeId, fresh2.chunkIndex, POOL, EPOCH, 512 * KiB, block, true);
  block.copy(modelOf(fresh2), 512 * KiB);
  t.equal(slotOf(fresh2), otherSlot, 'the second new chunk reuses the second freed slot');
  t.ok((await store.read(fresh2.volumeId, fresh2.chunkIndex, 0, CHUNK_BYTES)).equals(modelOf(fresh2)), 'it reads its block and zeros elsewhere');
  t.ok(deviceBytes(otherSlot).equals(modelOf(fresh2)), 'the device slot holds the same');
  CHUNKS[4] = fresh2;
});

t.test('a full device answers NO_SPACE and keeps every other chunk', async (t) => {
  const fillers: ChunkRef[] = [];
  const free = store.deviceReport()[0]!.slots_free;
  for (let i = 0; i < free; i += 1) {
    const chunk = { volumeId: 9, chunkIndex: i };
    await store.write(chunk.volumeId, chunk.chunkIndex, POOL, EPOCH, 0, Buffer.from([i + 1]), false);
    modelOf(chunk)[0] = i + 1;
    fillers.push(chunk);
  }
  t.equal(store.deviceReport()[0]!.slots_free, 0, 'every slot is used');
  let error: unknown;
  try {
    await store.write(9, 999, POOL, EPOCH, 0, Buffer.alloc(4096, 1), false);
  } catch (caught) {
    error = caught;
  }
  t.ok(error instanceof ChunkStoreError && error.kind === 'NO_SPACE', 'one more chunk: ChunkStoreError NO_SPACE', { error: String(error) });
  let wrongPool: unknown;
  try {
    await store.write(9, 1000, POOL + 1, EPOCH, 0, Buffer.alloc(4096, 1), false);
  } catch (caught) {
    wrongPool = caught;
  }
  t.ok(wrongPool instanceof ChunkStoreError && wrongPool.kind === 'NO_DEVICE', 'a pool without a device here: NO_DEVICE', { error: String(wrongPool) });
  t.ok((await store.read(9, 999, 0, 4096)).equals(Buffer.alloc(4096)), 'the refused chunk reads zeros');
  await verifyAll(-1, [...CHUNKS, ...fillers]);
  t.equal(mismatches.length, 0, 'every chunk still matches the model');
  for (const chunk of fillers) {
    store.deleteChunk(chunk.volumeId, chunk.chunkIndex);
    model.delete(keyOf(chunk));
  }
  store.deleteChunk(9, 999);
  store.deleteChunk(9, 1000);
});

t.test('a store reopened on the same sds_local.db and device file shows every byte', async (t) => {
  const slotsBefore = CHUNKS.map(slotOf);
  const reportBefore = store.deviceReport();
  await store.close();
  db.close();
  db = openSdsDatabase(dbPath);
  store = openStore(db);
  store.attachKnownDevices();
  store.loadChunks();
  t.same(CHUNKS.map(slotOf), slotsBefore, 'the slot map is the same');
  t.same(store.deviceReport(), reportBefore, 'the device report (free slots included) is the same');
  t.same(
    store
      .listChunks()
      .map((c) => `${c.volume_id}:${c.chunk_index}@${c.epoch}:${c.stored}`)
      .sort(),
    CHUNKS.map((c) => `${keyOf(c)}@${EPOCH}:true`).sort(),
    'the chunk records (epochs, stored) are the same',
  );
  // A clean close (writes finished, devices flushed) leaves nothing to resync; sds-crash.test.ts
  // shows intents surviving a kill -9.
  t.same(store.intentsAtStart(), [], 'a clean close leaves no write intent');
  await verifyAll(-2);
  t.equal(mismatches.length, 0, 'every chunk reads back exactly after the reopen');

  // And the reopened store keeps working.
  const prng = new Prng(SEED + 3);
  for (let i = 0; i < 300; i += 1) (await run(OPS + i, randomOp(prng, prng.pick(CHUNKS))))();
  await verifyAll(-3);
  t.equal(mismatches.length, 0, '300 more operations after the reopen agree with the model');
  t.same(mismatches.slice(0, 5), []);
});

t.test('epochs only grow, and old records without data are swept', async (t) => {
  const chunk = CHUNKS[0]!;
  const held = store.epochOf(chunk.volumeId, chunk.chunkIndex)!;
  t.equal(store.setEpoch(chunk.volumeId, chunk.chunkIndex, POOL, held - 1), false, 'a lower epoch is refused');
  t.equal(store.epochOf(chunk.volumeId, chunk.chunkIndex), held, 'and the epoch held stays');
  const refused = store.setEpochs([{ volume_id: chunk.volumeId, chunk_index: chunk.chunkIndex, pool_id: POOL, epoch: held - 1 }]);
  t.same(refused.map((r) => r.held), [held], 'setEpochs names what it kept');
  const tomb = { volumeId: 77, chunkIndex: 3 };
  await store.write(tomb.volumeId, tomb.chunkIndex, POOL, EPOCH, 0, Buffer.alloc(4096, 9), false);
  t.ok(store.deleteChunk(tomb.volumeId, tomb.chunkIndex, EPOCH + 5), 'a chunk deleted with a tombstone');
  t.equal(store.epochOf(tomb.volumeId, tomb.chunkIndex), EPOCH + 5, 'the tombstone holds the epoch');
  t.equal(store.sweepTombstones(Date.now()), 0, 'a fresh tombstone is kept (old-epoch tokens may still be valid)');
  const swept = store.sweepTombstones(Date.now() + 3 * 3_600_000);
  t.ok(swept >= 1, `hours later it is forgotten (${swept} swept)`);
  t.equal(store.epochOf(tomb.volumeId, tomb.chunkIndex), undefined, 'the tombstone is gone');
  t.equal(store.epochOf(chunk.volumeId, chunk.chunkIndex), held, 'a chunk with data is never swept');
});
