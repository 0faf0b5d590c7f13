/**
 * The MDM's admission of heavy requests (src/mdm/admission.ts): first come first served, the
 * event loop given back between slices (a timer set meanwhile runs before the queue is done),
 * BUSY with a retry hint when the queue is full or a request waited too long.
 */
import t from 'tap';
import { Admission, ADMISSION_SLICE_MS, BUSY_RETRY_AFTER_MS_MAX, BUSY_RETRY_AFTER_MS_MIN } from '../../src/mdm/admission.js';
import { PflexError } from '../../src/common/errors.js';

function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy: stands for a synchronous authorization
  }
}

t.test('tasks run in arrival order and give the loop back between slices', async (t) => {
  const admission = new Admission('test');
  const order: number[] = [];
  let timerRanAfter = -1;
  const tasks = Array.from({ length: 40 }, (_, i) =>
    admission.run(() => {
      spin(2);
      order.push(i);
      return i * 10;
    }),
  );
  setTimeout(() => (timerRanAfter = order.length), 0);
  const results = await Promise.all(tasks);
  t.same(results, Array.from({ length: 40 }, (_, i) => i * 10), 'each task its own answer');
  t.same(order, Array.from({ length: 40 }, (_, i) => i), 'first come, first served');
  t.ok(timerRanAfter > 0 && timerRanAfter < 40, `a timer ran between slices (after ${timerRanAfter} of 40 tasks of 2 ms; slice ${ADMISSION_SLICE_MS} ms)`);
  t.equal(admission.stats().queued, 0);
  t.equal(admission.stats().admitted_total, 40);
});

t.test('a task that throws rejects its caller only', async (t) => {
  const admission = new Admission('test');
  const failing = admission.run(() => {
    throw new Error('bad input');
  });
  const fine = admission.run(() => 'ok');
  await t.rejects(failing, /bad input/);
  t.equal(await fine, 'ok');
});

t.test('a full queue answers BUSY at once, with a bounded retry hint', async (t) => {
  const admission = new Admission('test', 5);
  const queued = Array.from({ length: 5 }, () => admission.run(() => spin(1)));
  const refused = await admission.run(() => 'never').then(
    () => undefined,
    (error: unknown) => error,
  );
  t.ok(refused instanceof PflexError, 'refused with a PflexError');
  const pflex = refused as PflexError;
  t.equal(pflex.code, 'PFLEX_ERR_BUSY');
  t.equal(pflex.httpStatus, 503);
  const hint = (pflex.details as { retry_after_ms: number }).retry_after_ms;
  t.ok(hint >= BUSY_RETRY_AFTER_MS_MIN && hint <= BUSY_RETRY_AFTER_MS_MAX, `retry hint ${hint} ms within bounds`);
  await Promise.all(queued);
  t.equal(admission.stats().refused_full_total, 1);
  t.equal(await admission.run(() => 'room again'), 'room again', 'taken again once the queue drained');
});

t.test('a request that waited past the limit is refused instead of run', async (t) => {
  const admission = new Admission('test', 100, 30);
  let ran = 0;
  const first = admission.run(() => {
    spin(60); // longer than the wait limit: the ones behind it wait past it
    ran += 1;
  });
  const late = Array.from({ length: 3 }, () =>
    admission.run(() => {
      ran += 1;
    }),
  );
  await first;
  for (const promise of late) await t.rejects(promise, { code: 'PFLEX_ERR_BUSY' });
  t.equal(ran, 1, 'only the first ran');
  t.equal(admission.stats().refused_waited_total, 3);
});

t.test('a slice runs inside its wrapper (one transaction) and is answered after it; a failed commit fails the slice', async (t) => {
  const log: string[] = [];
  const committing = new Admission('test', undefined, undefined, (slice) => {
    log.push('begin');
    slice();
    log.push('commit');
  });
  const answers = await Promise.all([1, 2, 3].map((i) => committing.run(() => (log.push(`task ${i}`), i))));
  t.same(answers, [1, 2, 3]);
  t.same(log, ['begin', 'task 1', 'task 2', 'task 3', 'commit'], 'three tasks, one wrapper call');
  let answeredBeforeCommit = false;
  let committed = false;
  const watched = new Admission('test', undefined, undefined, (slice) => {
    slice();
    committed = true;
  });
  await watched.run(() => 1).then(() => (answeredBeforeCommit = !committed));
  t.equal(answeredBeforeCommit, false, 'nobody hears of a task before its slice committed');

  const failing = new Admission('test', undefined, undefined, (slice) => {
    slice();
    throw new Error('disk I/O error');
  });
  const results = await Promise.allSettled([1, 2].map((i) => failing.run(() => i)));
  t.same(results.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : r.value)), ['disk I/O error', 'disk I/O error'], 'every task of a slice whose commit failed fails');
});
