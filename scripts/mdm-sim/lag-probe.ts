/**
 * How long the MDM cannot answer, measured from outside: GET /health (public, trivial) every
 * `intervalMs` on one keep-alive connection, one at a time. Its round trip is near nothing unless
 * the MDM's event loop is busy, so a slow answer is a stall and its length the stall's (within
 * an interval). Stalls that recur show their period (the rebuild pass ticks at 500 ms, the
 * health monitor at half the heartbeat interval).
 */
import { JsonHttp } from './http-json.js';
import { Samples, sleep, type Summary } from './stats.js';

/** A /health round trip above this is a stall. */
export const STALL_MS_MIN = 50;
const PROBE_TIMEOUT_MS = 120_000;

export interface LagReport {
  readonly probes: number;
  readonly rtt_ms: Summary;
  readonly stalls: number;
  readonly stall_ms: Summary;
  /** Median time between the starts of successive stalls (0 with fewer than 3). */
  readonly stall_period_ms_median: number;
  readonly errors: number;
}

export class LagProbe {
  private readonly client: JsonHttp;
  private running = false;
  private loop: Promise<void> | undefined;
  private rtt = new Samples(51);
  private stallMs = new Samples(53);
  private stallStarts: number[] = [];
  private errors = 0;

  constructor(
    url: string,
    private readonly intervalMs: number,
  ) {
    this.client = new JsonHttp({ baseUrl: url, socketsMax: 1, timeoutMs: PROBE_TIMEOUT_MS });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const sentMs = performance.now();
        try {
          await this.client.get('/health');
        } catch {
          this.errors += 1;
        }
        const rttMs = performance.now() - sentMs;
        this.rtt.add(rttMs);
        if (rttMs >= STALL_MS_MIN) {
          this.stallMs.add(rttMs);
          this.stallStarts.push(sentMs);
        }
        await sleep(Math.max(0, this.intervalMs - rttMs));
      }
    })();
  }

  /** The figures since the last take, and a fresh window. */
  take(): LagReport {
    const starts = this.stallStarts;
    const gaps = starts.slice(1).map((start, i) => start - starts[i]!).sort((a, b) => a - b);
    const report: LagReport = {
      probes: this.rtt.count,
      rtt_ms: this.rtt.summary(),
      stalls: this.stallMs.count,
      stall_ms: this.stallMs.summary(),
      stall_period_ms_median: gaps.length >= 2 ? Math.round(gaps[Math.floor(gaps.length / 2)]!) : 0,
      errors: this.errors,
    };
    this.rtt = new Samples(51);
    this.stallMs = new Samples(53);
    this.stallStarts = [];
    this.errors = 0;
    return report;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    this.client.close();
  }
}
