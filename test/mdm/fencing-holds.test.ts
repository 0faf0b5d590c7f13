/**
 * Epoch changes hold only the chunks they change (issue 11): while a fence installs its new
 * epochs, an authorization of one of its chunks waits for it and nothing else does; a burst of
 * fences of one SDS costs one fence. On a real powerflex.db; the SDS control plane is a recorder
 * whose answers the test releases (no network: this is the MDM's bookkeeping, not IO).
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { openDatabase } from '../../src/mdm/database.js';
import { populate } from '../helpers/mdm-db.js';
import { Fencing, FENCE_PAGE_CHUNKS, FENCE_SLICE_MS } from '../../src/mdm/fencing.js';
import { SdsOrders } from '../../src/mdm/sds-orders.js';
import type { SdsControl } from '../../src/mdm/sds-control.js';
import type { MdmContext } from '../../src/mdm/context.js';
import type { Logger } from '../../src/common/logger.js';

const SDS_COUNT = 4;
const CHUNK_COUNT = 40;

function freshContext(t: Test, chunkCount = CHUNK_COUNT): MdmContext {
  const dir = mkdtempSync(join(tmpdir(), 'pflex-holds-'));
  const db = openDatabase(join(dir, 'powerflex.db'));
  t.teardown(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  populate(db, SDS_COUNT, chunkCount);
  return {
    db,
    log: pino({ level: 'silent' }) as unknown as Logger,
    settings: { heartbeatIntervalMs: 1000, heartbeatMissesMax: 3, tokenTtlMs: 30_000 },
    signingKey: Buffer.alloc(32, 7),
    clusterId: 'test-cluster',
  };
}

/** Chunk i of vol1 has replicas on SDS (i % 4) + 1 and ((i + 1) % 4) + 1 (populate). */
/** A control plane whose calls wait until the test releases them. */
class HeldControl {
  readonly calls: { sdsId: number; path: string; body: unknown; release: () => void }[] = [];

  call(sdsId: number, path: string, body: unknown): Promise<unknown> {
    return new Promise((resolve) => this.calls.push({ sdsId, path, body, release: () => resolve({}) }));
  }

  releaseAll(): number {
    const calls = this.calls.splice(0);
    for (const call of calls) call.release();
    return calls.length;
  }
}

function onSds(index: number, sdsId: number): boolean {
  return index % SDS_COUNT === sdsId - 1 || (index + 1) % SDS_COUNT === sdsId - 1;
}

const ticks = async (count = 5): Promise<void> => {
  for (let i = 0; i < count; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

t.test('a fence holds exactly the chunks of the fenced SDS, until their new epochs are installed', async (t) => {
  const context = freshContext(t);
  const control = new HeldControl();
  const fencing = new Fencing(context, control as unknown as SdsControl, new SdsOrders(context, control as unknown as SdsControl));
  context.db.prepare(`UPDATE sds SET state = 'DOWN' WHERE id = 1`).run();
  const fenced = fencing.fence(1, 'test');
  await ticks();
  t.ok(control.calls.length > 0, 'the fence is installing epochs on the survivors');
  t.ok(control.calls.every((call) => call.path === '/chunks/epoch' && call.sdsId !== 1), 'only survivors are told');
  const onFenced = [...Array(CHUNK_COUNT).keys()].filter((index) => onSds(index, 1));
  const elsewhere = [...Array(CHUNK_COUNT).keys()].filter((index) => !onSds(index, 1));
  t.equal(fencing.heldCount(), onFenced.length, 'every chunk of the fenced SDS is held, no other');
  for (const index of onFenced) t.ok(fencing.heldIn(1, index, 1) !== undefined, `chunk ${index} (on the fenced SDS) waits`);
  for (const index of elsewhere) t.equal(fencing.heldIn(1, index, 1), undefined, `chunk ${index} (not on it) does not wait`);
  t.ok(fencing.heldIn(1, 0, CHUNK_COUNT) !== undefined, 'a window over the whole volume waits');
  t.equal(fencing.heldIn(2, 0, CHUNK_COUNT), undefined, 'another volume does not');
  // The epochs are already in powerflex.db (a token must not carry them yet: that is the hold).
  const epochs = context.db.prepare('SELECT chunk_index, epoch FROM chunks WHERE volume_id = 1 ORDER BY chunk_index').all() as { chunk_index: number; epoch: number }[];
  for (const row of epochs) t.equal(row.epoch, onSds(row.chunk_index, 1) ? 2 : 1, `chunk ${row.chunk_index} epoch`);

  let waited = false;
  const wait = fencing.heldIn(1, onFenced[0]!, 1)!.then(() => (waited = true));
  await ticks();
  t.equal(waited, false, 'the hold lasts while the install is unanswered');
  control.releaseAll();
  await fenced;
  await wait;
  t.equal(waited, true, 'released when the fence ends');
  t.equal(fencing.heldCount(), 0, 'nothing held afterwards');
  t.equal(fencing.heldIn(1, 0, CHUNK_COUNT), undefined);
});

t.test('a fence of many chunks goes in pages that give the loop back; the epochs are sent once per survivor', async (t) => {
  // 1 200 chunks on 4 SDS: SDS 1 holds 600 (chunks 4k with SDS 2, chunks 4k+3 with SDS 4).
  const chunkCount = 1200;
  const context = freshContext(t, chunkCount);
  const control = new HeldControl();
  // A slice of 0 ms: the loop runs after every page.
  const fencing = new Fencing(context, control as unknown as SdsControl, new SdsOrders(context, control as unknown as SdsControl), 0);
  context.db.prepare(`UPDATE sds SET state = 'DOWN' WHERE id = 1`).run();
  const staleCount = (): number => (context.db.prepare(`SELECT COUNT(*) AS n FROM replicas WHERE sds_id = 1 AND state = 'STALE'`).get() as { n: number }).n;
  const owed = (): number => (context.db.prepare(`SELECT COUNT(*) AS n FROM sds_orders WHERE kind = 'epoch'`).get() as { n: number }).n;
  const fenced = fencing.fence(1, 'test');
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(staleCount(), FENCE_PAGE_CHUNKS, `the loop ran after the first page of ${FENCE_PAGE_CHUNKS}: only those are fenced yet`);
  t.equal(fencing.heldCount(), FENCE_PAGE_CHUNKS, 'and held, in the turn they were committed');
  t.equal(owed(), FENCE_PAGE_CHUNKS, 'their epoch orders owed in the same commit');
  t.equal(control.calls.length, 0, 'nothing sent before the last page');
  await ticks();
  t.equal(staleCount(), 600, 'then the rest');
  t.equal(fencing.heldCount(), 600, 'every chunk of the fenced SDS held');
  t.same(control.calls.map((call) => call.sdsId).sort(), [2, 4], 'one epoch call per survivor, not one per page');
  t.same(control.calls.map((call) => (call.body as { chunks: unknown[] }).chunks.length), [300, 300], '300 new epochs each');
  control.releaseAll();
  await fenced;
  t.equal(fencing.heldCount(), 0, 'released when the fence ends');
  t.equal(owed(), 0, 'no order owed once the survivors took them');
  const bumped = context.db.prepare(`SELECT COUNT(*) AS n FROM chunks WHERE epoch = 2`).get() as { n: number };
  t.equal(bumped.n, 600, 'each fenced chunk went up one epoch, once');
  const event = context.db.prepare(`SELECT message FROM events WHERE type = 'SDS_FENCED'`).all() as { message: string }[];
  t.equal(event.length, 1, 'one SDS_FENCED event');
  t.match(event[0]?.message ?? '', /600 chunk\(s\)/, 'counting every page');
});

t.test('fence pages run back to back within a slice of loop time (FENCE_SLICE_MS), not one per loop turn', async (t) => {
  const context = freshContext(t, 1200);
  const control = new HeldControl();
  // A slice longer than the whole fence: every page in the first turn, then the epochs go out.
  const fencing = new Fencing(context, control as unknown as SdsControl, new SdsOrders(context, control as unknown as SdsControl), 60_000);
  t.ok(FENCE_SLICE_MS > 0 && FENCE_SLICE_MS <= 100, `the default slice (${FENCE_SLICE_MS} ms) keeps a loop turn short`);
  context.db.prepare(`UPDATE sds SET state = 'DOWN' WHERE id = 1`).run();
  const staleCount = (): number => (context.db.prepare(`SELECT COUNT(*) AS n FROM replicas WHERE sds_id = 1 AND state = 'STALE'`).get() as { n: number }).n;
  const fenced = fencing.fence(1, 'test');
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(staleCount(), 600, `all ${Math.ceil(600 / FENCE_PAGE_CHUNKS)} pages in one turn`);
  t.equal(fencing.heldCount(), 600, 'every chunk held');
  t.same(control.calls.map((call) => call.sdsId).sort(), [2, 4], 'one epoch call per survivor');
  control.releaseAll();
  await fenced;
  t.equal(fencing.heldCount(), 0, 'released when the fence ends');
});

t.test('fences of an SDS that wait their turn are one fence; the chain goes on after it', async (t) => {
  const context = freshContext(t);
  const control = new HeldControl();
  const fencing = new Fencing(context, control as unknown as SdsControl, new SdsOrders(context, control as unknown as SdsControl));
  context.db.prepare(`UPDATE sds SET state = 'DOWN' WHERE id IN (1, 3)`).run();
  const first = fencing.fence(1, 'first');
  const waiting = [fencing.fence(3, 'report a'), fencing.fence(3, 'report b'), fencing.fence(3, 'report c')];
  t.equal(waiting[0], waiting[1], 'the same queued fence');
  t.equal(waiting[1], waiting[2], 'the same queued fence');
  t.not(first, waiting[0], 'another SDS is a fence of its own');
  for (let round = 0; round < 20 && (control.calls.length > 0 || round < 2); round += 1) {
    await ticks();
    control.releaseAll();
  }
  await Promise.all([first, ...waiting]);
  const events = context.db.prepare(`SELECT message FROM events WHERE type = 'SDS_FENCED' ORDER BY id`).all() as { message: string }[];
  t.equal(events.length, 2, `one fence per SDS: ${events.map((event) => event.message).join(' | ')}`);
  t.match(events[1]?.message ?? '', /sds-3 fenced \(report a\)/, 'the queued fence ran once, for the first report');
  // Chunk 2 has replicas on SDS 3 and 4 and chunk 1 on SDS 2 and 3: both fenced from SDS 3.
  const stale = context.db.prepare(`SELECT COUNT(*) AS n FROM replicas WHERE sds_id = 3 AND state = 'STALE'`).get() as { n: number };
  t.ok(stale.n > 0, 'SDS 3 was fenced');
  t.equal(fencing.heldCount(), 0);
  // A later fence of the same SDS runs again (and finds nothing left to fence).
  await fencing.fence(3, 'later');
  t.equal((context.db.prepare(`SELECT COUNT(*) AS n FROM events WHERE type = 'SDS_FENCED'`).get() as { n: number }).n, 2, 'nothing more to fence');
});
