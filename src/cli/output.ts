/** How the CLI prints: --json prints the server's object as is; otherwise aligned tables with coloured health. */
import pc from 'picocolors';

export interface OutputOptions {
  json: boolean;
}

export type Column<T> = {
  header: string;
  value: (row: T) => string | number | null | undefined;
  align?: 'left' | 'right';
};

const STATE_COLOURS: Record<string, (text: string) => string> = {
  OK: pc.green,
  UP: pc.green,
  AVAILABLE: pc.green,
  IN_USE: pc.cyan,
  CURRENT: pc.green,
  DEGRADED: pc.yellow,
  NEW: pc.yellow,
  REBUILDING: pc.yellow,
  REMOVING: pc.yellow,
  STALE: pc.yellow,
  OFFLINE: pc.yellow,
  FAILED: pc.red,
  DOWN: pc.red,
  warning: pc.yellow,
  error: pc.red,
};

/** Colours a health or state word the way operators expect: green good, yellow degraded, red bad. */
export function colourState(text: string): string {
  const colour = STATE_COLOURS[text];
  return colour === undefined ? text : colour(text);
}

// eslint-disable-next-line no-control-regex
const ANSI_PATTERN = /\u001b\[[0-9;]*m/g;
function visibleLength(text: string): number {
  return text.replace(ANSI_PATTERN, '').length;
}

export function renderTable<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = rows.map((row) => columns.map((column) => String(column.value(row) ?? '-')));
  const widths = columns.map((column, i) => Math.max(column.header.length, ...cells.map((line) => visibleLength(line[i]!))));
  const pad = (text: string, i: number): string => {
    const gap = ' '.repeat(widths[i]! - visibleLength(text));
    return columns[i]!.align === 'right' ? gap + text : text + gap;
  };
  const header = pc.bold(columns.map((column, i) => pad(column.header, i)).join('  ').trimEnd());
  const body = cells.map((line) => line.map((cell, i) => pad(cell, i)).join('  ').trimEnd());
  if (rows.length === 0) return `${header}\n${pc.dim('(none)')}`;
  return [header, ...body].join('\n');
}

export function renderKeyValues(pairs: readonly [string, unknown][]): string {
  const width = Math.max(...pairs.map(([key]) => key.length));
  return pairs.map(([key, value]) => `${pc.bold(key.padEnd(width))}  ${value === null || value === undefined ? '-' : String(value)}`).join('\n');
}

export function print(options: OutputOptions, value: unknown, human: () => string): void {
  process.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}
