/**
 * Admission of the MDM's heavy requests (IO authorizations): each runs from a FIFO, in slices of
 * at most ADMISSION_SLICE_MS of event-loop time, so whatever arrives meanwhile (heartbeats, health
 * probes, reports) is answered between slices instead of waiting behind a burst. A full queue, or
 * a request that waited longer than its caller would, is refused at once with PFLEX_ERR_BUSY and a
 * retry hint: work done for a caller that already gave up is what turns a burst into a storm.
 */
import { performance } from 'node:perf_hooks';
import { pflexError } from '../common/errors.js';

/** Requests waiting at most; past it new ones are refused (BUSY) without being read further. */
export const ADMISSION_QUEUE_LENGTH_MAX = 2048;
/** A request that waited this long is refused (BUSY): its caller (10 s timeout) is about to give up. */
export const ADMISSION_WAIT_MS_MAX = 5000;
/** Event-loop time a slice of queued work may take before the loop is given back. */
export const ADMISSION_SLICE_MS = 10;
/** Bounds of the retry hint sent with BUSY. */
export const BUSY_RETRY_AFTER_MS_MIN = 50;
export const BUSY_RETRY_AFTER_MS_MAX = 2000;

interface Waiting {
  readonly task: () => unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
  readonly queuedAtMs: number;
}

export interface AdmissionStats {
  queued: number;
  admitted_total: number;
  refused_full_total: number;
  refused_waited_total: number;
  /** Mean event-loop time of one task, recent (exponential average). */
  task_ms_mean: number;
}

export class Admission {
  private queue: Waiting[] = [];
  private head = 0;
  private scheduled = false;
  private taskMsMean = 1;
  private admittedTotal = 0;
  private refusedFullTotal = 0;
  private refusedWaitedTotal = 0;

  constructor(
    private readonly what: string,
    private readonly lengthMax = ADMISSION_QUEUE_LENGTH_MAX,
    private readonly waitMsMax = ADMISSION_WAIT_MS_MAX,
    /**
     * Runs each slice (its tasks, synchronously) inside this, e.g. one database transaction: the
     * tasks' writes are then committed with one fsync per slice instead of one each (group
     * commit). Tasks are answered only after it returned; when it throws (the commit failed),
     * every task of the slice fails with its error.
     */
    private readonly around: (slice: () => void) => void = (slice) => slice(),
  ) {}

  /** Runs `task` (synchronous) when its turn comes; rejects with BUSY when the queue is full. */
  run<T>(task: () => T): Promise<T> {
    const queued = this.queue.length - this.head;
    if (queued >= this.lengthMax) {
      this.refusedFullTotal += 1;
      return Promise.reject(this.busy(`${queued} ${this.what} requests are queued`));
    }
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ task, resolve: resolve as (value: unknown) => void, reject, queuedAtMs: performance.now() });
      this.schedule();
    });
  }

  stats(): AdmissionStats {
    return {
      queued: this.queue.length - this.head,
      admitted_total: this.admittedTotal,
      refused_full_total: this.refusedFullTotal,
      refused_waited_total: this.refusedWaitedTotal,
      task_ms_mean: Math.round(this.taskMsMean * 1000) / 1000,
    };
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // setImmediate: the loop polls its sockets (heartbeats) before every slice.
    setImmediate(() => {
      this.scheduled = false;
      this.slice();
    });
  }

  private slice(): void {
    const startMs = performance.now();
    /** What each task of this slice gave, delivered once the slice is committed. */
    const outcomes: { item: Waiting; ok: boolean; value: unknown }[] = [];
    const run = (): void => {
      while (this.head < this.queue.length && performance.now() - startMs < ADMISSION_SLICE_MS) {
        const item = this.queue[this.head]!;
        this.queue[this.head] = undefined as unknown as Waiting;
        this.head += 1;
        const taskStartMs = performance.now();
        if (taskStartMs - item.queuedAtMs > this.waitMsMax) {
          this.refusedWaitedTotal += 1;
          outcomes.push({ item, ok: false, value: this.busy(`an ${this.what} request waited ${Math.round(taskStartMs - item.queuedAtMs)} ms`) });
          continue;
        }
        try {
          outcomes.push({ item, ok: true, value: item.task() });
        } catch (error) {
          outcomes.push({ item, ok: false, value: error });
        }
        this.admittedTotal += 1;
        this.taskMsMean = this.taskMsMean * 0.95 + (performance.now() - taskStartMs) * 0.05;
      }
    };
    try {
      this.around(run);
      for (const { item, ok, value } of outcomes) (ok ? item.resolve : item.reject)(value);
    } catch (error) {
      for (const { item } of outcomes) item.reject(error);
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (this.head < this.queue.length) this.schedule();
  }

  private busy(why: string): Error {
    const queued = this.queue.length - this.head;
    const retryAfterMs = Math.round(Math.min(BUSY_RETRY_AFTER_MS_MAX, Math.max(BUSY_RETRY_AFTER_MS_MIN, queued * this.taskMsMean)));
    return pflexError('BUSY', `the MDM is busy (${why}); retry in ${retryAfterMs} ms`, { retry_after_ms: retryAfterMs });
  }
}
