/**
 * Numbers for the MDM benchmark: bounded sample sets with exact percentiles (a seeded reservoir
 * once full), a gauge integrated over time (average and peak concurrency), and a gap tracker for
 * periodic events (heartbeats: late and missed).
 */
import { Prng } from '../../src/common/prng.js';

export interface Summary {
  readonly count: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

export const EMPTY_SUMMARY: Summary = { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, max: 0 };

/** Samples kept before the reservoir starts replacing them (per recorder). */
export const SAMPLES_KEPT_MAX = 200_000;

function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

/** Nearest-rank percentile of sorted values (q in 0..1). */
export function percentileOfSorted(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

export function summarize(values: ArrayLike<number>, count = values.length, sum?: number, max?: number): Summary {
  if (values.length === 0) return EMPTY_SUMMARY;
  const sorted = Float64Array.from(values).sort();
  let total = 0;
  for (let i = 0; i < sorted.length; i += 1) total += sorted[i]!;
  return {
    count,
    mean: round3((sum ?? total) / (sum === undefined ? sorted.length : count)),
    p50: round3(percentileOfSorted(sorted, 0.5)),
    p90: round3(percentileOfSorted(sorted, 0.9)),
    p99: round3(percentileOfSorted(sorted, 0.99)),
    max: round3(max ?? sorted[sorted.length - 1]!),
  };
}

/**
 * A set of samples (milliseconds, usually). Exact up to `capacity` samples; beyond that a
 * seeded reservoir keeps a uniform subset (count, mean and max stay exact).
 */
export class Samples {
  private values: number[] = [];
  private seen = 0;
  private sum = 0;
  private maximum = 0;
  private readonly prng: Prng;

  constructor(
    seed = 1,
    private readonly capacity = SAMPLES_KEPT_MAX,
  ) {
    this.prng = new Prng(seed);
  }

  get count(): number {
    return this.seen;
  }

  add(value: number): void {
    this.seen += 1;
    this.sum += value;
    if (value > this.maximum || this.seen === 1) this.maximum = value;
    if (this.values.length < this.capacity) {
      this.values.push(value);
      return;
    }
    const slot = Math.floor(this.prng.next() * this.seen);
    if (slot < this.capacity) this.values[slot] = value;
  }

  summary(): Summary {
    if (this.seen === 0) return EMPTY_SUMMARY;
    return summarize(this.values, this.seen, this.sum, this.maximum);
  }
}

/** Samples per name (say, per phase or per route), made on first use. */
export class SampleSets {
  private readonly sets = new Map<string, Samples>();

  constructor(private readonly seed = 1) {}

  of(name: string): Samples {
    let set = this.sets.get(name);
    if (set === undefined) {
      set = new Samples(this.seed + this.sets.size);
      this.sets.set(name, set);
    }
    return set;
  }

  add(name: string, value: number): void {
    this.of(name).add(value);
  }

  summaries(): Record<string, Summary> {
    return Object.fromEntries([...this.sets.entries()].map(([name, set]) => [name, set.summary()]));
  }
}

/**
 * A level that goes up and down (copies in flight), integrated over time: its peak, and its
 * average over the window from the first rise to the last fall.
 */
export class TimeWeightedGauge {
  private level = 0;
  private peak = 0;
  private area = 0;
  private lastChangeMs = 0;
  private firstRiseMs: number | undefined;
  private lastFallMs: number | undefined;

  inc(nowMs = performance.now()): void {
    this.advance(nowMs);
    this.level += 1;
    this.firstRiseMs ??= nowMs;
    if (this.level > this.peak) this.peak = this.level;
  }

  dec(nowMs = performance.now()): void {
    this.advance(nowMs);
    this.level = Math.max(0, this.level - 1);
    this.lastFallMs = nowMs;
  }

  get current(): number {
    return this.level;
  }

  /** Peak and time-weighted average since the last reset (average over [first rise, last fall or now]). */
  snapshot(nowMs = performance.now()): { peak: number; average: number; windowMs: number } {
    if (this.firstRiseMs === undefined) return { peak: 0, average: 0, windowMs: 0 };
    const end = this.level > 0 ? nowMs : (this.lastFallMs ?? nowMs);
    const area = this.area + this.level * Math.max(0, nowMs - this.lastChangeMs);
    const windowMs = Math.max(0.001, end - this.firstRiseMs);
    return { peak: this.peak, average: round3(area / windowMs), windowMs: Math.round(windowMs) };
  }

  reset(nowMs = performance.now()): void {
    this.advance(nowMs);
    this.area = 0;
    this.peak = this.level;
    this.firstRiseMs = this.level > 0 ? nowMs : undefined;
    this.lastFallMs = undefined;
  }

  private advance(nowMs: number): void {
    this.area += this.level * Math.max(0, nowMs - this.lastChangeMs);
    this.lastChangeMs = nowMs;
  }
}

/**
 * Gaps between successive events of one source (a node's answered heartbeats): a gap above
 * `lateFactor` intervals is late; one at or above `missedIntervals` intervals is what the MDM
 * would judge a missed window (a node marked DOWN unless the MDM saw its own stall).
 */
export interface GapCounts {
  readonly late: number;
  readonly missed: number;
}

export function classifyGap(gapMs: number, intervalMs: number, lateFactor: number, missedIntervals: number): 'ok' | 'late' | 'missed' {
  if (gapMs >= intervalMs * missedIntervals) return 'missed';
  if (gapMs > intervalMs * lateFactor) return 'late';
  return 'ok';
}

/** Counters by name, for errors by code, calls by path and the like. */
export class Counters {
  private readonly counts = new Map<string, number>();

  add(name: string, by = 1): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + by);
  }

  get(name: string): number {
    return this.counts.get(name) ?? 0;
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.counts.entries()].sort((a, b) => b[1] - a[1]));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
