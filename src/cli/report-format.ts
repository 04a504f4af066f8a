/** Numbers as the report writes them: counts with separators, durations in the unit that reads best. */

/** `1234567` → `1,234,567`; fractions to at most `digits` places. */
export function formatCount(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits });
}

/** Three significant digits at most, without trailing zeros: 0.123, 1.23, 12.3, 123. */
function sig3(n: number): string {
  if (n >= 100) return formatCount(Math.round(n));
  return formatCount(Number(n.toPrecision(3)), 2);
}

/** A duration in milliseconds: `420 µs`, `12.3 ms`, `4.56 s`, `3m 05s`, `2h 07m`. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return '–';
  if (ms === 0) return '0 s';
  if (ms < 1) return `${sig3(ms * 1000)} µs`;
  if (ms < 1000) return `${sig3(ms)} ms`;
  if (ms < 60_000) return `${sig3(ms / 1000)} s`;
  const totalSeconds = Math.round(ms / 1000);
  const pad = (n: number) => String(n).padStart(2, '0');
  if (totalSeconds < 3600) return `${Math.floor(totalSeconds / 60)}m ${pad(totalSeconds % 60)}s`;
  const totalMinutes = Math.round(totalSeconds / 60);
  return `${Math.floor(totalMinutes / 60)}h ${pad(totalMinutes % 60)}m`;
}

/** A rate per second: `8.33/s`, `1,200/s`. */
export function formatPerSecond(perSecond: number): string {
  return `${perSecond >= 100 ? formatCount(Math.round(perSecond)) : sig3(perSecond)}/s`;
}

/** Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? formatCount(value) : sig3(value)} ${units[unit]!}`;
}

/** A wall-clock time with its offset from UTC: `2025-06-01 14:03:12 +02:00`. */
export function formatClock(epochMs: number): string {
  const date = new Date(epochMs);
  if (Number.isNaN(date.getTime())) return '–';
  const pad = (n: number) => String(n).padStart(2, '0');
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const zone = `${sign}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())} ${zone}`
  );
}
