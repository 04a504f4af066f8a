/**
 * Axis ticks at round values: 1, 2 or 5 times a power of ten for counts, and steps people read
 * easily for time (1, 2, 5, 10, 15, 30 s, 1, 2, 5 min, ...).
 */
import { formatCount } from './report-format.ts';

/** The time axis of a run that took no time. */
export const EMPTY_SPAN = 1000;

export interface Tick {
  at: number;
  label: string;
}

/** 1, 2 or 5 times a power of ten, at least `raw`. */
export function niceStep(raw: number): number {
  if (!(raw > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
}

/** Ticks from 0 to a round top at or above `max`, about `count` of them. */
export function linearTicks(
  max: number,
  { count = 5, integer = false } = {},
): { top: number; ticks: Tick[] } {
  let step = niceStep((max > 0 ? max : 1) / count);
  if (integer) step = Math.max(1, step);
  const top = Math.max(step, Math.ceil((max > 0 ? max : 1) / step - 1e-9) * step);
  const ticks: Tick[] = [];
  for (let i = 0; i * step <= top + step / 1e6; i++) {
    const at = Number((i * step).toPrecision(12));
    ticks.push({ at, label: formatCount(at, 3) });
  }
  return { top, ticks };
}

const TIME_STEPS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000,
  300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000,
  86_400_000,
];

/** Ticks for a time axis over [0, spanMs], labelled in seconds, m:ss or h:mm, and its title. */
export function timeTicks(spanMs: number): { ticks: Tick[]; title: string } {
  const span = spanMs > 0 ? spanMs : EMPTY_SPAN;
  const step = TIME_STEPS.find((s) => span / s <= 8) ?? niceStep(span / 8);
  const pad = (n: number) => String(n).padStart(2, '0');
  let title: string;
  let label: (ms: number) => string;
  if (span < 120_000) {
    title = 'seconds since the start';
    const digits = Math.max(0, Math.ceil(-Math.log10(step / 1000) - 1e-9));
    label = (ms) => (ms / 1000).toFixed(digits);
  } else if (span < 7_200_000) {
    title = 'minutes:seconds since the start';
    label = (ms) => `${Math.floor(ms / 60_000)}:${pad(Math.round(ms / 1000) % 60)}`;
  } else {
    title = 'hours:minutes since the start';
    label = (ms) => `${Math.floor(ms / 3_600_000)}:${pad(Math.round(ms / 60_000) % 60)}`;
  }
  const ticks: Tick[] = [];
  for (let at = 0; at <= span + step / 1e6; at += step) ticks.push({ at, label: label(at) });
  return { ticks, title };
}
