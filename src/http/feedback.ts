/**
 * What a server says about when to come back, read from a response's headers. In order of
 * precedence:
 *
 * 1. `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date (the three forms of
 *    RFC 9110 §5.6.7, all GMT), resolved against the response's own `Date` so that a client
 *    clock that is off does not matter;
 * 2. `RateLimit` / `RateLimit-Policy` (IETF httpapi draft): the structured-field form
 *    `RateLimit: "default";r=0;t=30` (several policies: the longest wait among the exhausted
 *    ones) and the older dictionary / split forms (`RateLimit: limit=100, remaining=0, reset=30`,
 *    `RateLimit-Remaining: 0` + `RateLimit-Reset`); a wait only when nothing remains;
 * 3. `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` (seconds to wait, or a Unix time in
 *    seconds or milliseconds, told apart by size, against the response's `Date`).
 *
 * A malformed header is ignored, never an error: the next source is tried. A well-formed
 * `RateLimit` that says there is quota left is an answer too: no X-RateLimit wait under it.
 */

/** Reads a header by name; `null` when absent (the shape of `Headers.get`). */
export type HeaderGetter = (name: string) => string | null;

/** A server's request to wait, in milliseconds, and where it came from. */
export interface ServerWait {
  ms: number;
  source: 'retry-after' | 'ratelimit' | 'x-ratelimit';
}

/** Whole seconds, as the specs write them (bounded, so a runaway value is refused, not infinite). */
const SECONDS = /^\s*(\d{1,10})\s*$/;

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAY = '(?:mon|tue|wed|thu|fri|sat|sun)';
const LONG_DAY = '(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)';
const MONTH = '(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)';
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';
/** Sun, 06 Nov 1994 08:49:37 GMT */
const IMF_FIXDATE = new RegExp(`^\\s*${DAY}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT\\s*$`, 'i');
/** Sunday, 06-Nov-94 08:49:37 GMT */
const RFC850 = new RegExp(`^\\s*${LONG_DAY}, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT\\s*$`, 'i');
/** Sun Nov  6 08:49:37 1994 */
const ASCTIME = new RegExp(`^\\s*${DAY} ${MONTH} ([ \\d]\\d) ${TIME} (\\d{4})\\s*$`, 'i');

function utc(
  year: number,
  month: string,
  day: number,
  h: string,
  m: string,
  s: string,
): number | undefined {
  const ms = Date.UTC(
    year,
    MONTHS.indexOf(month.toLowerCase()),
    day,
    Number(h),
    Number(m),
    Number(s),
  );
  const date = new Date(ms);
  // Date.UTC rolls 31 Feb over into March: refuse dates that do not exist.
  return date.getUTCDate() === day && Number(h) < 24 && Number(m) < 60 && Number(s) < 61
    ? ms
    : undefined;
}

/** Parses an HTTP-date in any of its three forms (all GMT), or undefined. */
export function parseHttpDate(value: string): number | undefined {
  let match = IMF_FIXDATE.exec(value);
  if (match !== null)
    return utc(Number(match[3]), match[2]!, Number(match[1]), match[4]!, match[5]!, match[6]!);
  match = RFC850.exec(value);
  if (match !== null) {
    // Two-digit years: RFC 9110 says a date more than 50 years ahead is in the past century.
    const yy = Number(match[3]);
    const thisYear = new Date().getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + yy;
    if (year > thisYear + 50) year -= 100;
    return utc(year, match[2]!, Number(match[1]), match[4]!, match[5]!, match[6]!);
  }
  match = ASCTIME.exec(value);
  if (match !== null)
    return utc(
      Number(match[6]),
      match[1]!,
      Number(match[2]!.trim()),
      match[3]!,
      match[4]!,
      match[5]!,
    );
  return undefined;
}

/** Parses `Retry-After`; `dateHeader` is the response's `Date`, `now` the local epoch ms. */
export function parseRetryAfter(
  value: string | null,
  dateHeader: string | null,
  now: number,
): number | undefined {
  if (value === null) return undefined;
  const seconds = SECONDS.exec(value);
  if (seconds !== null) return Number(seconds[1]) * 1000;
  const at = parseHttpDate(value);
  if (at === undefined) return undefined;
  const serverNow = dateHeader === null ? undefined : parseHttpDate(dateHeader);
  return Math.max(0, at - (serverNow ?? now));
}

/** The nonnegative integer parameter `key=` of a dictionary or a parameter list item. */
function member(field: string, key: string): number | undefined {
  const match = new RegExp(`(?:^|[;,\\s])${key}\\s*=\\s*(\\d{1,10})(?=\\s*(?:[;,]|$))`, 'i').exec(
    field,
  );
  return match === null ? undefined : Number(match[1]);
}

/** Splits a structured-field list at its top-level commas (not inside quoted strings). */
function listItems(field: string): string[] {
  const items: string[] = [];
  let quoted = false;
  let start = 0;
  for (let i = 0; i < field.length; i++) {
    const c = field[i];
    if (c === '"' && field[i - 1] !== '\\') quoted = !quoted;
    else if (c === ',' && !quoted) {
      items.push(field.slice(start, i));
      start = i + 1;
    }
  }
  items.push(field.slice(start));
  return items.map((item) => item.trim()).filter((item) => item !== '');
}

/**
 * The IETF `RateLimit` headers' verdict: a wait (ms) when a policy has nothing left, 0 when they
 * say there is quota, undefined when they are absent or malformed.
 */
export function parseRateLimit(get: HeaderGetter): number | undefined {
  const field = get('ratelimit');
  if (field !== null) {
    if (/;\s*[rt]\s*=/i.test(field)) {
      // Structured fields (draft 7+): one list item per policy; r = remaining, t = seconds to reset.
      let wait: number | undefined;
      for (const item of listItems(field)) {
        const r = member(item, 'r');
        if (r === undefined) continue;
        const t = member(item, 't');
        if (r === 0 && t === undefined) return undefined; // exhausted, with no usable reset
        wait = Math.max(wait ?? 0, r === 0 ? (t as number) * 1000 : 0);
      }
      return wait;
    }
    // The earlier dictionary form, one policy.
    const remaining = member(field, 'remaining');
    const reset = member(field, 'reset');
    if (remaining === undefined || (remaining === 0 && reset === undefined)) return undefined;
    return remaining === 0 ? (reset as number) * 1000 : 0;
  }
  const r = get('ratelimit-remaining');
  const t = get('ratelimit-reset');
  const remaining = r === null ? undefined : SECONDS.exec(r)?.[1];
  const reset = t === null ? undefined : SECONDS.exec(t)?.[1];
  if (remaining === undefined || (Number(remaining) === 0 && reset === undefined)) return undefined;
  return Number(remaining) === 0 ? Number(reset) * 1000 : 0;
}

/** The wait `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset` ask for; `now` is the server's time if known. */
export function parseXRateLimit(get: HeaderGetter, now: number): number | undefined {
  const remaining = get('x-ratelimit-remaining');
  const reset = get('x-ratelimit-reset');
  if (remaining === null || reset === null) return undefined;
  const r = SECONDS.exec(remaining)?.[1];
  const value = /^\s*(\d{1,13})\s*$/.exec(reset)?.[1];
  if (r === undefined || Number(r) !== 0 || value === undefined) return undefined;
  const n = Number(value);
  // A Unix time in milliseconds, in seconds, or a number of seconds to wait (GitHub sends the
  // second kind, many others the last).
  if (n > 1e12) return Math.max(0, n - now);
  if (n > 1e9) return Math.max(0, n * 1000 - now);
  return n * 1000;
}

/** The server's wait, by the precedence above, or undefined. `now` is the local epoch ms. */
export function serverWait(get: HeaderGetter, now: number = Date.now()): ServerWait | undefined {
  // Most responses carry none of these: settle that with lookups alone (this runs per response).
  const retryAfterField = get('retry-after');
  if (retryAfterField !== null) {
    const retryAfter = parseRetryAfter(retryAfterField, get('date'), now);
    if (retryAfter !== undefined) return { ms: retryAfter, source: 'retry-after' };
  }
  if (get('ratelimit') !== null || get('ratelimit-remaining') !== null) {
    const rateLimit = parseRateLimit(get);
    if (rateLimit !== undefined) {
      return rateLimit > 0 ? { ms: rateLimit, source: 'ratelimit' } : undefined;
    }
  }
  if (get('x-ratelimit-remaining') === null) return undefined;
  const date = get('date');
  const serverNow = (date === null ? undefined : parseHttpDate(date)) ?? now;
  const xRateLimit = parseXRateLimit(get, serverNow);
  if (xRateLimit !== undefined) return { ms: xRateLimit, source: 'x-ratelimit' };
  return undefined;
}
