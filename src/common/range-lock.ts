/**
 * Serializes overlapping byte ranges within one key (a chunk): a read-modify-write must not
 * interleave with another write to the same blocks. Non-overlapping ranges proceed in parallel;
 * waiters are served in arrival order.
 */

interface Held {
  readonly start: number;
  readonly end: number;
}

interface Waiter extends Held {
  readonly grant: () => void;
}

export class RangeLock {
  private readonly held = new Map<string, Held[]>();
  private readonly waiting = new Map<string, Waiter[]>();

  /** Resolves with a release function once [start, end) overlaps nothing held or queued before it. */
  acquire(key: string, start: number, end: number): Promise<() => void> {
    const range = { start, end };
    return new Promise((resolve) => {
      const grant = (): void => {
        let list = this.held.get(key);
        if (list === undefined) {
          list = [];
          this.held.set(key, list);
        }
        list.push(range);
        resolve(() => this.release(key, range));
      };
      if (this.conflicts(key, range, undefined)) {
        let queue = this.waiting.get(key);
        if (queue === undefined) {
          queue = [];
          this.waiting.set(key, queue);
        }
        queue.push({ ...range, grant });
      } else {
        grant();
      }
    });
  }

  private conflicts(key: string, range: Held, stopAt: Waiter | undefined): boolean {
    const overlaps = (other: Held): boolean => other.start < range.end && range.start < other.end;
    if ((this.held.get(key) ?? []).some(overlaps)) return true;
    for (const waiter of this.waiting.get(key) ?? []) {
      if (waiter === stopAt) break;
      if (overlaps(waiter)) return true;
    }
    return false;
  }

  private release(key: string, range: Held): void {
    const list = this.held.get(key)!;
    list.splice(list.indexOf(range), 1);
    if (list.length === 0) this.held.delete(key);
    const queue = this.waiting.get(key);
    if (queue === undefined) return;
    for (const waiter of [...queue]) {
      if (!this.conflicts(key, waiter, waiter)) {
        queue.splice(queue.indexOf(waiter), 1);
        waiter.grant();
      }
    }
    if (queue.length === 0) this.waiting.delete(key);
  }
}
