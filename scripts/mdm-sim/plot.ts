/**
 * Plots of `npm run bench:mdm`'s figures against raw capacity, from its JSON report: one SVG per
 * figure (x: raw TiB on a log2 scale; y: the figure, from 0), written to a folder, and the
 * Markdown that shows them printed to stdout. No dependency: the SVG is written by hand.
 *
 *     npm run bench:mdm:plot -- /var/tmp/bench-mdm.json docs/scale
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

interface Summary {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

interface Phase {
  readonly name: string;
  readonly mdm?: { readonly rss_bytes?: number; readonly cpu_percent?: number };
  readonly db?: { readonly total_bytes?: number };
  readonly probe?: { readonly passes?: Record<string, Summary> };
  readonly sds?: { readonly report: { readonly heartbeats: { readonly rtt_ms: Summary } } };
  readonly sdc?: { readonly report: { readonly authorize: { readonly ms: Record<string, Summary> } } };
}

interface Run {
  readonly kind: string;
  readonly raw_tib: number;
  readonly phases: readonly Phase[];
  readonly placement: { readonly per_s: number } | null;
  readonly failure: { readonly fenced_s: number | null; readonly planned_s: number | null; readonly rebuilt_s: number | null; readonly rebuild: { readonly chunks_per_s: number } } | null;
}

export interface Figure {
  readonly file: string;
  readonly title: string;
  readonly unit: string;
  readonly value: (run: Run) => number | null | undefined;
  /** A goal line (same unit), when the issue sets one. */
  readonly goal?: number;
}

const MIB = 2 ** 20;
const phase = (run: Run, name: string): Phase | undefined => run.phases.find((p) => p.name === name);

const FIGURES: readonly Figure[] = [
  { file: 'mdm-rss', title: 'MDM RSS at the end of steady', unit: 'MiB', value: (run) => (phase(run, 'steady')?.mdm?.rss_bytes ?? NaN) / MIB, goal: 1024 },
  { file: 'db-bytes', title: 'powerflex.db + -wal at the end of steady', unit: 'MiB', value: (run) => (phase(run, 'steady')?.db?.total_bytes ?? NaN) / MIB },
  { file: 'idle-rebuild-pass', title: 'idle: rebuild pass (planPool) max', unit: 'ms', value: (run) => phase(run, 'idle')?.probe?.passes?.['rebuild.planPool.sync']?.max, goal: 50 },
  { file: 'renew-p99', title: 'steady: renew request p99', unit: 'ms', value: (run) => phase(run, 'steady')?.sdc?.report.authorize.ms['renew-batch']?.p99, goal: 20 },
  { file: 'heartbeat-rtt-p99', title: 'steady: SDS heartbeat round trip p99', unit: 'ms', value: (run) => phase(run, 'steady')?.sds?.report.heartbeats.rtt_ms.p99 },
  { file: 'thin-placements', title: 'thin placements', unit: 'chunks/s', value: (run) => run.placement?.per_s, goal: 2000 },
  { file: 'time-to-fenced', title: 'failure: time to fenced', unit: 's', value: (run) => run.failure?.fenced_s, goal: 2 },
  { file: 'time-to-planned', title: 'failure: time to every chunk planned', unit: 's', value: (run) => run.failure?.planned_s, goal: 10 },
  { file: 'rebuild-rate', title: 'failure: rebuild rate', unit: 'chunks/s', value: (run) => run.failure?.rebuild.chunks_per_s },
];

const WIDTH = 420;
const HEIGHT = 260;
const LEFT = 58;
const RIGHT = 16;
const TOP = 30;
const BOTTOM = 40;

function niceMax(value: number): number {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function plotSvg(figure: Figure, points: readonly { x: number; y: number }[]): string {
  const xs = points.map((p) => Math.log2(p.x));
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs, xMin + 1);
  const yMax = niceMax(Math.max(...points.map((p) => p.y), figure.goal ?? 0));
  const round = (value: number): number => Math.round(value * 10) / 10;
  const px = (x: number): number => round(LEFT + ((Math.log2(x) - xMin) / (xMax - xMin)) * (WIDTH - LEFT - RIGHT));
  const py = (y: number): number => round(HEIGHT - BOTTOM - (y / yMax) * (HEIGHT - TOP - BOTTOM));
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="11">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="16" text-anchor="middle" font-size="12">${escape(`${figure.title} (${figure.unit})`)}</text>`,
    `<line x1="${LEFT}" y1="${HEIGHT - BOTTOM}" x2="${WIDTH - RIGHT}" y2="${HEIGHT - BOTTOM}" stroke="black"/>`,
    `<line x1="${LEFT}" y1="${TOP}" x2="${LEFT}" y2="${HEIGHT - BOTTOM}" stroke="black"/>`,
  ];
  for (let i = 0; i <= 4; i += 1) {
    const y = (yMax * i) / 4;
    parts.push(`<text x="${LEFT - 6}" y="${py(y) + 4}" text-anchor="end">${escape(String(Math.round(y * 100) / 100))}</text>`);
    parts.push(`<line x1="${LEFT}" y1="${py(y)}" x2="${WIDTH - RIGHT}" y2="${py(y)}" stroke="#ddd"/>`);
  }
  for (const point of points) parts.push(`<text x="${px(point.x)}" y="${HEIGHT - BOTTOM + 16}" text-anchor="middle">${point.x}</text>`);
  parts.push(`<text x="${WIDTH / 2}" y="${HEIGHT - 6}" text-anchor="middle">raw capacity (TiB, log scale)</text>`);
  if (figure.goal !== undefined && figure.goal <= yMax) {
    parts.push(`<line x1="${LEFT}" y1="${py(figure.goal)}" x2="${WIDTH - RIGHT}" y2="${py(figure.goal)}" stroke="#c00" stroke-dasharray="5,4"/>`);
    parts.push(`<text x="${WIDTH - RIGHT}" y="${py(figure.goal) - 4}" text-anchor="end" fill="#c00">goal ${figure.goal}</text>`);
  }
  parts.push(`<polyline fill="none" stroke="#1f5fa8" stroke-width="2" points="${points.map((p) => `${px(p.x)},${py(p.y)}`).join(' ')}"/>`);
  for (const point of points) {
    parts.push(`<circle cx="${px(point.x)}" cy="${py(point.y)}" r="3.5" fill="#1f5fa8"/>`);
    parts.push(`<text x="${px(point.x)}" y="${py(point.y) - 8}" text-anchor="middle">${escape(String(Math.round(point.y * 10) / 10))}</text>`);
  }
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function main(argv: readonly string[]): number {
  const [jsonPath, outDir] = argv;
  if (jsonPath === undefined || outDir === undefined || jsonPath === '--help') {
    process.stderr.write('usage: node dist/scripts/mdm-sim/plot.js BENCH_MDM_JSON OUT_DIR\n  writes one SVG per figure against raw capacity and prints the Markdown that shows them\n');
    return jsonPath === '--help' ? 0 : 2;
  }
  const report = JSON.parse(readFileSync(jsonPath, 'utf8')) as { runs: Run[]; commit?: string };
  const runs = report.runs.filter((run) => run.kind === 'scale').sort((a, b) => a.raw_tib - b.raw_tib);
  if (runs.length < 2) {
    process.stderr.write(`${jsonPath}: ${runs.length} scale run(s); a plot needs at least two\n`);
    return 1;
  }
  mkdirSync(outDir, { recursive: true });
  for (const figure of FIGURES) {
    const points = runs.map((run) => ({ x: run.raw_tib, y: Number(figure.value(run)) })).filter((point) => Number.isFinite(point.y));
    if (points.length < 2) {
      process.stderr.write(`${figure.file}: fewer than two measured points, not plotted\n`);
      continue;
    }
    writeFileSync(join(outDir, `${figure.file}.svg`), plotSvg(figure, points));
    process.stdout.write(`![${figure.title}](${basename(outDir)}/${figure.file}.svg)\n`);
  }
  return 0;
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = main(process.argv.slice(2));
