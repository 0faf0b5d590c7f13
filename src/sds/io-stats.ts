/**
 * IO counters of this SDS: per volume and operation, requests, bytes and a latency histogram
 * (log2 buckets of microseconds) for percentiles; refusals by reason come from the TokenChecker.
 * Cheap enough for the hot path: a few additions and one Math.clz32 per request.
 */

const BUCKETS = 32; // bucket b holds latencies in [2^(b-1), 2^b) µs

export type IoKind = 'read' | 'write' | 'trim' | 'write_zeroes' | 'flush';

class Series {
  requests = 0;
  bytes = 0;
  errors = 0;
  readonly latencyBuckets = new Float64Array(BUCKETS);

  record(bytes: number, latencyUs: number, ok: boolean): void {
    this.requests += 1;
    this.bytes += bytes;
    if (!ok) this.errors += 1;
    const bucket = Math.min(BUCKETS - 1, 32 - Math.clz32(Math.max(1, Math.round(latencyUs))));
    this.latencyBuckets[bucket]! += 1;
  }

  /** The upper bound (µs) of the bucket holding the p-th percentile. */
  percentileUs(p: number): number {
    const total = this.latencyBuckets.reduce((sum, n) => sum + n, 0);
    if (total === 0) return 0;
    let seen = 0;
    for (let bucket = 0; bucket < BUCKETS; bucket += 1) {
      seen += this.latencyBuckets[bucket]!;
      if (seen >= total * p) return 2 ** bucket;
    }
    return 2 ** (BUCKETS - 1);
  }
}

export class IoStats {
  private readonly series = new Map<string, Series>();
  private readonly startedAtMs = Date.now();
  private lastSample = { atMs: Date.now(), requests: 0, bytes: 0 };
  private rate = { iops: 0, bytesPerSecond: 0 };

  record(volumeId: number, kind: IoKind, bytes: number, latencyUs: number, ok: boolean): void {
    const key = `${volumeId}|${kind}`;
    let series = this.series.get(key);
    if (series === undefined) {
      series = new Series();
      this.series.set(key, series);
    }
    series.record(bytes, latencyUs, ok);
  }

  /** Totals and the rate since the previous call (the heartbeat calls it every interval). */
  sampleRate(): { iops: number; bytes_per_second: number } {
    const now = Date.now();
    let requests = 0;
    let bytes = 0;
    for (const series of this.series.values()) {
      requests += series.requests;
      bytes += series.bytes;
    }
    const seconds = Math.max(0.001, (now - this.lastSample.atMs) / 1000);
    this.rate = { iops: (requests - this.lastSample.requests) / seconds, bytesPerSecond: (bytes - this.lastSample.bytes) / seconds };
    this.lastSample = { atMs: now, requests, bytes };
    return { iops: Math.round(this.rate.iops), bytes_per_second: Math.round(this.rate.bytesPerSecond) };
  }

  snapshot() {
    const volumes: Record<string, Record<string, { requests: number; bytes: number; errors: number; p50_us: number; p99_us: number; p999_us: number }>> = {};
    for (const [key, series] of this.series) {
      const [volumeId, kind] = key.split('|') as [string, string];
      volumes[volumeId] ??= {};
      volumes[volumeId]![kind] = {
        requests: series.requests,
        bytes: series.bytes,
        errors: series.errors,
        p50_us: series.percentileUs(0.5),
        p99_us: series.percentileUs(0.99),
        p999_us: series.percentileUs(0.999),
      };
    }
    return { uptime_s: Math.round((Date.now() - this.startedAtMs) / 1000), recent: { iops: Math.round(this.rate.iops), bytes_per_second: Math.round(this.rate.bytesPerSecond) }, volumes };
  }
}
