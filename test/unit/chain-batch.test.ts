/**
 * ChainBatch (src/mdm/chain-batch.ts): items added while their task waits for the chain share
 * it, at most itemsMax a task, each answered with its own result in order; a batch that fails
 * rejects its items and the chain goes on.
 */
import t from 'tap';
import { ChainBatch } from '../../src/mdm/chain-batch.js';

/** A chain as Fencing.serialize keeps it: one task at a time, in order. */
function chain(): { serialize: (task: () => Promise<void>) => Promise<void>; block: () => () => void } {
  let tail: Promise<void> = Promise.resolve();
  const serialize = (task: () => Promise<void>): Promise<void> => {
    const run = tail.then(task);
    tail = run.catch(() => undefined);
    return run;
  };
  // A task that holds the chain until released, as a fence with its network calls does.
  const block = (): (() => void) => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    void serialize(() => released);
    return release;
  };
  return { serialize, block };
}

t.test('items that wait together share one task; results in order; at most itemsMax a task', async (t) => {
  const { serialize, block } = chain();
  const batches: number[][] = [];
  const batch = new ChainBatch<number, string>(serialize, async (items) => {
    batches.push([...items]);
    return items.map((item) => `done ${item}`);
  }, 3);
  const release = block();
  const results = Promise.all([1, 2, 3, 4, 5].map((item) => batch.add(item)));
  await new Promise((resolve) => setImmediate(resolve));
  t.same(batches, [], 'nothing runs while the chain is held');
  release();
  t.same(await results, ['done 1', 'done 2', 'done 3', 'done 4', 'done 5'], 'each item its own result');
  t.same(batches, [[1, 2, 3], [4, 5]], 'five waiting items: two tasks of at most 3');
  t.same(await batch.add(6), 'done 6', 'a later item gets a task of its own');
  t.same(batches.at(-1), [6]);
});

t.test('a failed batch rejects its items only; the next batch runs', async (t) => {
  const { serialize, block } = chain();
  let calls = 0;
  const batch = new ChainBatch<number, number>(serialize, async (items) => {
    calls += 1;
    if (calls === 1) throw new Error('install failed');
    return items.map((item) => item * 10);
  }, 10);
  const release = block();
  const first = [batch.add(1), batch.add(2)];
  release();
  for (const pending of first) await t.rejects(pending, /install failed/, 'an item of the failed batch rejects');
  t.equal(await batch.add(3), 30, 'the chain goes on');
  const wrong = new ChainBatch<number, number>(serialize, async () => [], 10);
  await t.rejects(wrong.add(1), /0 results for 1 items/, 'a run that loses results is an error, not a silent undefined');
  t.throws(() => new ChainBatch(serialize, async () => [], 0), /itemsMax/, 'a batch size below 1 is refused');
});
