/**
 * A replica being rebuilt (DESIGN §6) on two real chunk stores (native O_DIRECT addon, device
 * files, sds_local.db): the target takes client writes while it copies from the source, and the
 * copy never overwrites what a client wrote, even when the copied piece was read from the source
 * before that write. Partial writes to blocks not copied yet pull those blocks from the source
 * first. At the end the two replicas are equal byte for byte. A restart in the middle keeps the
 * replica out of service.
 */
import t from 'tap';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ChunkStore, type DeviceSpec } from '../../src/sds/chunk-store.js';
import { openSdsDatabase, sdsIncarnation, type SdsDb } from '../../src/sds/sds-database.js';
import { createLogger } from '../../src/common/logger.js';
import { directTempDir, KiB, MiB, Prng } from '../helpers/sds.js';

const SEED = Number(process.env.PFLEX_MODEL_SEED ?? 90_210);
const CHUNK_BYTES = MiB;
const PIECE_BYTES = 128 * KiB;
const POOL = 3;
const VOLUME = 5;
const CHUNK = 2;
const log = createLogger('sds-test', 'silent');
const dir = directTempDir('pflex-rebuild-copy-');
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

interface Side {
  db: SdsDb;
  store: ChunkStore;
  dbPath: string;
  spec: DeviceSpec;
}

function open(name: string): Side {
  const dbPath = join(dir, name, 'sds_local.db');
  const spec: DeviceSpec = { mdmDeviceId: 1, path: join(dir, name, 'dev0.img'), poolId: POOL, capacityBytes: 8 * CHUNK_BYTES, slotBytes: CHUNK_BYTES };
  const side = { dbPath, spec } as Side;
  reopen(side);
  return side;
}

function reopen(side: Side): void {
  side.db = openSdsDatabase(side.dbPath);
  side.store = new ChunkStore(side.db, log);
  side.store.setIdentity({ clusterId: 'rebuild-copy-test', sdsId: side.spec.path.includes('source') ? 1 : 2, incarnation: sdsIncarnation(side.db).incarnation });
  side.store.attachDevice(side.spec);
  side.store.loadChunks();
}

async function close(side: Side): Promise<void> {
  await side.store.close();
  side.db.close();
}

const source = open('source');
const target = open('target');
t.teardown(async () => {
  await Promise.allSettled([close(source), close(target)]);
});
const prng = new Prng(SEED);
t.comment(`seed ${SEED} (PFLEX_MODEL_SEED to replay)`);

function randomBytes(length: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i += 1) bytes[i] = prng.int(0, 255);
  return bytes;
}

/** A client write as the SDC sends it: the same bytes to both replicas, in parallel. */
async function clientWrite(epoch: number, offsetBytes: number, data: Buffer): Promise<void> {
  await Promise.all([
    source.store.write(VOLUME, CHUNK, POOL, epoch, offsetBytes, data, false),
    target.store.write(VOLUME, CHUNK, POOL, epoch, offsetBytes, data, false),
  ]);
}

t.test('client writes during the copy land, copied data never overwrites them, the replicas end equal', async (t) => {
  // The source holds the chunk; the target knows nothing yet.
  await source.store.write(VOLUME, CHUNK, POOL, 1, 0, randomBytes(CHUNK_BYTES), false);
  source.store.setEpoch(VOLUME, CHUNK, POOL, 2);
  let pulls = 0;
  await target.store.beginRebuild(
    VOLUME,
    CHUNK,
    POOL,
    2,
    async (offsetBytes, lengthBytes) => {
      pulls += 1;
      return source.store.read(VOLUME, CHUNK, offsetBytes, lengthBytes);
    },
    () => undefined,
  );
  t.ok(target.store.isRebuilding(VOLUME, CHUNK), 'the target is rebuilding');
  t.notOk(source.store.isRebuilding(VOLUME, CHUNK));

  // A partial write to a block nobody copied yet: the target pulls the block first.
  await clientWrite(2, 5000, Buffer.from('partial write before any copy'));
  t.equal(pulls, 1, 'the partial write pulled its block from the source');

  // Every piece is read from the source first, then client writes hit its range, then the stale
  // piece is copied in: the blocks those writes covered must keep the client's bytes.
  let written = 0;
  let skippedPieces = 0;
  for (let offset = 0; offset < CHUNK_BYTES; offset += PIECE_BYTES) {
    const stale = await source.store.read(VOLUME, CHUNK, offset, PIECE_BYTES);
    const writes: Promise<void>[] = [];
    for (let n = prng.int(0, 3); n > 0; n -= 1) {
      const aligned = prng.next() < 0.5;
      const length = aligned ? 4 * KiB * prng.int(1, 4) : prng.int(1, 9000);
      const start = offset + (aligned ? 4 * KiB * prng.int(0, PIECE_BYTES / (4 * KiB) - 4) : prng.int(0, PIECE_BYTES - length));
      writes.push(clientWrite(2, start, randomBytes(length)));
    }
    await Promise.all(writes);
    const wrote = await target.store.copyIn(VOLUME, CHUNK, offset, stale);
    if (wrote < PIECE_BYTES) skippedPieces += 1;
    written += wrote;
  }
  t.ok(skippedPieces > 0, `the copy skipped blocks clients had written (${CHUNK_BYTES - written} bytes in ${skippedPieces} pieces)`);
  t.equal(await target.store.finishRebuild(VOLUME, CHUNK), true, 'every block is final: the rebuild ends');
  t.notOk(target.store.isRebuilding(VOLUME, CHUNK), 'the target may serve now');
  const [a, b] = await Promise.all([source.store.read(VOLUME, CHUNK, 0, CHUNK_BYTES), target.store.read(VOLUME, CHUNK, 0, CHUNK_BYTES)]);
  t.ok(a.equals(b), 'source and target are equal byte for byte');
});

t.test('a rebuild cut short by a restart keeps the replica out of service', async (t) => {
  const other = CHUNK + 1;
  await source.store.write(VOLUME, other, POOL, 1, 0, randomBytes(64 * KiB), false);
  await target.store.beginRebuild(VOLUME, other, POOL, 1, async (offsetBytes, lengthBytes) => source.store.read(VOLUME, other, offsetBytes, lengthBytes), () => undefined);
  await target.store.copyIn(VOLUME, other, 0, await source.store.read(VOLUME, other, 0, PIECE_BYTES));
  t.equal(await target.store.finishRebuild(VOLUME, other), false, 'an incomplete copy cannot end the rebuild');
  await close(target);
  reopen(target);
  t.ok(target.store.isRebuilding(VOLUME, other), 'after the restart the half-copied replica is still marked rebuilding');
  t.notOk(target.store.isRebuilding(VOLUME, CHUNK), 'the finished one is not');
  await t.rejects(target.store.write(VOLUME, other, POOL, 1, 100, Buffer.from('x'), false), /no source/, 'a partial write without a source fails instead of mixing stale bytes');
  t.ok(target.store.deleteChunk(VOLUME, other), 'the MDM deletes it');
  t.notOk(target.store.isRebuilding(VOLUME, other));
});

t.test('an epoch install waits for writes admitted under the old epoch', async (t) => {
  const chunk = CHUNK + 2;
  source.store.setEpoch(VOLUME, chunk, POOL, 4);
  const slowWrite = source.store.write(VOLUME, chunk, POOL, 4, 0, randomBytes(CHUNK_BYTES), true);
  source.store.setEpoch(VOLUME, chunk, POOL, 5);
  let drained = false;
  const drain = source.store.drainWritesBefore(VOLUME, chunk, 5, 10_000).then((ok) => {
    drained = ok;
    return ok;
  });
  t.notOk(drained, 'not drained while the epoch-4 write is in flight');
  await slowWrite;
  t.equal(await drain, true, 'drained once it completed');
  t.equal(await source.store.drainWritesBefore(VOLUME, chunk, 5, 10), true, 'nothing older in flight: at once');
});
