/** Sizes and durations as people type them ("4MiB", "1.5GiB", "500MB") to exact bytes. */

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

const SIZE_UNITS_BYTES: Record<string, number> = {
  '': 1,
  b: 1,
  k: KiB,
  kb: 1000,
  kib: KiB,
  m: MiB,
  mb: 1000 * 1000,
  mib: MiB,
  g: GiB,
  gb: 1000 * 1000 * 1000,
  gib: GiB,
  t: TiB,
  tb: 1000 * 1000 * 1000 * 1000,
  tib: TiB,
  p: 1024 * TiB,
  pb: 1000 * 1000 * 1000 * 1000 * 1000,
  pib: 1024 * TiB,
};

/** Parses "4MiB" or "1.5g" or "4096" into bytes; returns undefined when it is not a size. */
export function parseSizeBytes(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (match === null) return undefined;
  const unit = SIZE_UNITS_BYTES[match[2]!.toLowerCase()];
  if (unit === undefined) return undefined;
  const bytes = Math.round(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes)) return undefined;
  return bytes;
}

/** Formats bytes the way storage people read them: binary units, three significant digits. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unitIndex = 0;
  while (Math.abs(value) >= 1024 && unitIndex < units.length - 1) {
    value /= 1024;
    unitIndex += 1;
  }
  let text = unitIndex === 0 ? String(value) : value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2);
  // Rounding can reach the next unit (1023.99 KiB prints as 1024): step up instead.
  if (unitIndex > 0 && unitIndex < units.length - 1 && Number(text) >= 1024) {
    value /= 1024;
    unitIndex += 1;
    text = value.toFixed(2);
  }
  if (text.includes('.')) text = text.replace(/0+$/, '').replace(/\.$/, '');
  return `${text} ${units[unitIndex]}`;
}
