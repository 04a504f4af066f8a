/**
 * The one place user-facing strings become numbers: rates ("10/s", "500/min", "1/2s", "10/100ms")
 * and durations ("30s", "1.5min", "250ms"). Everything else in sluice takes milliseconds.
 */
import { describe, integer } from './_validate.ts';

/** A rate limit: at most `limit` starts per `interval` milliseconds. */
export interface Rate {
  limit: number;
  interval: number;
}

/** A rate as a string like `"10/s"`, `"500/min"`, `"1/2s"`, `"10/100ms"`, or as a `Rate`. */
export type RateSpec = string | Rate;

const UNITS: Record<string, number> = {
  ms: 1,
  millisecond: 1,
  milliseconds: 1,
  s: 1000,
  sec: 1000,
  second: 1000,
  seconds: 1000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hour: 3_600_000,
  hours: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
  days: 86_400_000,
};

const DURATION = /^\s*(\d+(?:\.\d+)?|\.\d+)?\s*([a-z]+)\s*$/i;

function unitMs(count: number, unit: string): number | undefined {
  const ms = UNITS[unit.toLowerCase()];
  return ms === undefined ? undefined : count * ms;
}

/**
 * Parses a duration: a number of milliseconds, or a string like `"30s"`, `"1.5min"`, `"250ms"`.
 * Throws a TypeError / RangeError naming `name` when it is not one.
 */
export function parseDuration(name: string, value: unknown): number {
  const expected = 'a duration in milliseconds (a number >= 0) or a string like "30s" or "250ms"';
  if (typeof value === 'number') {
    if (Number.isNaN(value) || value < 0)
      throw new RangeError(`Expected \`${name}\` to be ${expected}, got ${describe(value)}`);
    return value;
  }
  if (typeof value !== 'string')
    throw new TypeError(`Expected \`${name}\` to be ${expected}, got ${describe(value)}`);
  const match = DURATION.exec(value);
  const ms =
    match?.[1] !== undefined && match[2] !== undefined
      ? unitMs(Number(match[1]), match[2])
      : undefined;
  if (ms === undefined || !Number.isFinite(ms)) {
    throw new RangeError(`Expected \`${name}\` to be ${expected}, got ${describe(value)}`);
  }
  return ms;
}

const RATE = /^\s*(\d+)\s*\/\s*(\d+(?:\.\d+)?|\.\d+)?\s*([a-z]+)\s*$/i;

/**
 * Parses a rate: `"10/s"`, `"500/min"`, `"1/2s"`, `"10/100ms"`, or `{ limit, interval }` with
 * `limit` an integer >= 1 and `interval` milliseconds > 0. Throws naming `name` when malformed.
 */
export function parseRate(name: string, value: unknown): Rate {
  const expected = 'a rate like "10/s", "500/min", "1/2s" or { limit, interval }';
  if (typeof value === 'string') {
    const match = RATE.exec(value);
    if (match !== null) {
      const limit = Number(match[1]);
      const interval = unitMs(match[2] === undefined ? 1 : Number(match[2]), match[3] ?? '');
      if (
        interval !== undefined &&
        interval > 0 &&
        Number.isFinite(interval) &&
        limit >= 1 &&
        Number.isSafeInteger(limit)
      ) {
        return { limit, interval };
      }
    }
    throw new RangeError(`Expected \`${name}\` to be ${expected}, got ${describe(value)}`);
  }
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const { interval } = value as Partial<Rate>;
    const limit = integer(`${name}.limit`, (value as Partial<Rate>).limit, 1);
    if (typeof interval !== 'number' || !(interval > 0) || !Number.isFinite(interval)) {
      throw new RangeError(
        `Expected \`${name}.interval\` to be a number of milliseconds > 0, got ${describe(interval)}`,
      );
    }
    return { limit, interval };
  }
  throw new TypeError(`Expected \`${name}\` to be ${expected}, got ${describe(value)}`);
}

/** Formats a rate back the way people write it: `10/s`, `500/min`, `10/100ms`. */
export function formatRate({ limit, interval }: Rate): string {
  for (const [unit, ms] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['min', 60_000],
    ['s', 1000],
  ] as const) {
    if (interval === ms) return `${limit}/${unit}`;
    if (interval % ms === 0) return `${limit}/${interval / ms}${unit}`;
  }
  return `${limit}/${interval}ms`;
}
