/**
 * Work that must run in the chain of epoch changes (fencing.ts `serialize`), batched: items added
 * while a task of theirs waits its turn share that task, up to `itemsMax` a task. One chain task
 * (with its network calls: epoch installs, rebuild orders) serves many rebuild jobs instead of
 * one, so the chain's round trips are paid per batch, not per chunk (issue 11).
 */
export class ChainBatch<T, R> {
  private waiting: { item: T; resolve: (result: R) => void; reject: (error: unknown) => void }[] = [];
  private scheduled = false;

  constructor(
    /** Runs `task` in the chain, after the tasks before it (Fencing.serialize). */
    private readonly serialize: (task: () => Promise<void>) => Promise<void>,
    /** Does the work for one batch, in the chain; one result per item, in order. */
    private readonly run: (items: readonly T[]) => Promise<readonly R[]>,
    private readonly itemsMax: number,
  ) {
    if (!(Number.isInteger(itemsMax) && itemsMax >= 1)) throw new Error(`ChainBatch: itemsMax must be a positive integer, got ${itemsMax}`);
  }

  /** Adds an item to the next batch; resolves with its result (rejects when its batch failed). */
  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.waiting.length === 0) return;
    this.scheduled = true;
    void this.serialize(async () => {
      this.scheduled = false;
      const batch = this.waiting.splice(0, this.itemsMax);
      this.schedule(); // more than one batch waits: the next task queues behind this one
      try {
        const results = await this.run(batch.map((entry) => entry.item));
        if (results.length !== batch.length) throw new Error(`ChainBatch: ${results.length} results for ${batch.length} items`);
        batch.forEach((entry, i) => entry.resolve(results[i]!));
      } catch (error) {
        for (const entry of batch) entry.reject(error);
      }
    });
  }
}
