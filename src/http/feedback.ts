/**
 * What a server says about when to come back, read from a response's headers. In order of
 * precedence:
 *
 * 1. `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date, resolved against the
 *    response's own `Date` so that a client clock that is off does not matter;
 * 2. `RateLimit` / `RateLimit-Policy` (IETF httpapi draft): the structured-field form
 *    `RateLimit: "default";r=0;t=30` and the older dictionary / split forms
 *    (`RateLimit: limit=100, remaining=0, reset=30`, `RateLimit-Remaining: 0` + `RateLimit-Reset`);
 *    a wait only when nothing remains;
 * 3. `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` (seconds to wait, or a Unix time in
 *    seconds or milliseconds, told apart by size).
 *
 * A malformed header is ignored, never an error: the next source is tried.
 */

/** Reads a header by name; `null` when absent (the shape of `Headers.get`). */
export type HeaderGetter = (name: string) => string | null;

/** A server's request to wait, in milliseconds, and where it came from. */
export interface ServerWait {
  ms: number;
  source: 'retry-after' | 'ratelimit' | 'x-ratelimit';
}

const DELAY_SECONDS = /^\s*(\d+(?:\.\d+)?)\s*$/;

/** Parses `Retry-After`; `dateHeader` is the response's `Date`, `now` the local epoch ms. */
export function parseRetryAfter(
  value: string | null,
  dateHeader: string | null,
  now: number,
): number | undefined {
  if (value === null) return undefined;
  const seconds = DELAY_SECONDS.exec(value);
  if (seconds !== null) return Number(seconds[1]) * 1000;
  const at = parseHttpDate(value);
  if (at === undefined) return undefined;
  const serverNow = dateHeader === null ? undefined : parseHttpDate(dateHeader);
  return Math.max(0, at - (serverNow ?? now));
}

/** An IMF-fixdate (or the obsolete forms Date.parse accepts), with a weekday or a comma. */
function parseHttpDate(value: string): number | undefined {
  if (!/[a-z]{3}/i.test(value) || !/\d{4}|\d{2}:\d{2}/.test(value)) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

/** The nonnegative number of a `key=value` member, in a dictionary or a parameter list. */
function member(field: string, key: string): number | undefined {
  const match = new RegExp(
    `(?:^|[;,\\s])${key}\\s*=\\s*(\\d+(?:\\.\\d+)?)(?=\\s*(?:[;,]|$))`,
    'i',
  ).exec(field);
  return match === null ? undefined : Number(match[1]);
}

/** The wait the IETF `RateLimit` headers ask for, if nothing remains. */
export function parseRateLimit(get: HeaderGetter): number | undefined {
  const field = get('ratelimit');
  let remaining: number | undefined;
  let reset: number | undefined;
  if (field !== null) {
    // Structured fields (draft 7+): r = remaining, t = seconds to reset. Dictionary (earlier).
    remaining = member(field, 'r') ?? member(field, 'remaining');
    reset = member(field, 't') ?? member(field, 'reset');
  } else {
    const r = get('ratelimit-remaining');
    const t = get('ratelimit-reset');
    remaining = r !== null && DELAY_SECONDS.test(r) ? Number(r) : undefined;
    reset = t !== null && DELAY_SECONDS.test(t) ? Number(t) : undefined;
  }
  if (remaining !== 0 || reset === undefined) return undefined;
  return reset * 1000;
}

/** The wait `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset` ask for. */
export function parseXRateLimit(get: HeaderGetter, now: number): number | undefined {
  const remaining = get('x-ratelimit-remaining');
  const reset = get('x-ratelimit-reset');
  if (
    remaining === null ||
    reset === null ||
    !DELAY_SECONDS.test(remaining) ||
    Number(remaining) !== 0
  )
    return undefined;
  if (!DELAY_SECONDS.test(reset)) return undefined;
  const value = Number(reset);
  // A Unix time in milliseconds, in seconds, or a number of seconds to wait (GitHub sends the
  // first kind of seconds, many others the last).
  if (value > 1e12) return Math.max(0, value - now);
  if (value > 1e9) return Math.max(0, value * 1000 - now);
  return value * 1000;
}

/** The server's wait, by the precedence above, or undefined. `now` is the local epoch ms. */
export function serverWait(get: HeaderGetter, now: number = Date.now()): ServerWait | undefined {
  const retryAfter = parseRetryAfter(get('retry-after'), get('date'), now);
  if (retryAfter !== undefined) return { ms: retryAfter, source: 'retry-after' };
  const rateLimit = parseRateLimit(get);
  if (rateLimit !== undefined) return { ms: rateLimit, source: 'ratelimit' };
  const xRateLimit = parseXRateLimit(get, now);
  if (xRateLimit !== undefined) return { ms: xRateLimit, source: 'x-ratelimit' };
  return undefined;
}
