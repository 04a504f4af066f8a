/**
 * The options of the HTTP client (`createFetch()`, `createRequest()`, `createExchange()`),
 * checked in one place, when the client is made: each one that is wrong throws a TypeError (a
 * wrong type) or a RangeError (a wrong value) that names it by its path (`perOrigin.rate`,
 * `origins["https://a.example"].rate`, `retry.methods[1]`), says what was expected and what came.
 * What an origin's Limiter would check at the origin's first request is checked here, for every
 * origin the options name, so that a bad rate is not found only when a request is made. @internal
 */
import type { Clock } from '../_clock.ts';
import { systemClock } from '../_clock.ts';
import * as v from '../_validate.ts';
import { concurrencyOption, isGate } from '../_gates.ts';
import type { RateSpec } from '../_parse.ts';
import type { Gate } from '../gate.ts';
import { parseRateOptions, parseRatesAndGates } from '../rate.ts';
import { RetryPolicy, type RetryOptions } from '../retry.ts';
import type {
  HttpOptions,
  HttpRetryOptions,
  OriginGates,
  OriginLimits,
  RequestReport,
} from './client.ts';
import { IDEMPOTENT, TOKEN } from './_h1.ts';

/** The options, checked, with their defaults. */
export interface CheckedOptions {
  concurrency: number | Gate;
  /** The global rate: specs and gates, as the keyed limiter takes them. */
  rate: readonly (RateSpec | Gate)[];
  perOrigin: OriginLimits;
  /** The limits of particular origins (over `perOrigin`), by origin. */
  origins: ReadonlyMap<string, OriginLimits>;
  originGates: ((origin: string) => OriginGates) | undefined;
  /** The retry rules, `maxRetryAfter` included. */
  policy: RetryPolicy;
  methods: ReadonlySet<string>;
  statuses: ReadonlySet<number>;
  timeout: number;
  signal: AbortSignal | undefined;
  onReport: ((report: RequestReport) => void) | undefined;
  clock: Clock;
}

/** Checks every option of `options`, and fills in the defaults. */
export function checkOptions(options: HttpOptions): CheckedOptions {
  v.options('options', options);
  const perOrigin = checkLimits('perOrigin', options.perOrigin);
  if (options.onReport !== undefined) v.fn('onReport', options.onReport);
  if (options.originGates !== undefined) v.fn('originGates', options.originGates);
  const { capacity, gate } = concurrencyOption('concurrency', options.concurrency);
  const { gates } = parseRatesAndGates({ rate: options.rate });
  const specs = options.rate === undefined ? [] : [options.rate].flat().filter((r) => !isGate(r));
  const maxRetryAfter =
    options.maxRetryAfter === undefined
      ? 60_000
      : v.number('maxRetryAfter', options.maxRetryAfter, 0, true);
  return {
    concurrency: gate ?? capacity,
    rate: [...(specs as RateSpec[]), ...gates],
    perOrigin,
    origins: checkOrigins(options.origins, perOrigin),
    originGates: options.originGates,
    ...checkRetry(options.retry ?? 2, maxRetryAfter),
    timeout:
      options.timeout === undefined ? Infinity : v.number('timeout', options.timeout, 0, true),
    signal: v.signal('signal', options.signal),
    onReport: options.onReport,
    clock: checkClock(options.clock),
  };
}

/**
 * `limits` (`given`, over `base`) checked now, as the origin's Limiter would check them at its
 * first request, so that a bad one is refused when the client is made, by its path (`name`).
 */
function checkLimits(name: string, given: unknown, base?: OriginLimits): OriginLimits {
  v.options(name, given);
  const limits: OriginLimits = { ...base, ...(given as OriginLimits | undefined) };
  const concurrency =
    limits.concurrency === undefined
      ? 6
      : (concurrencyOption(`${name}.concurrency`, limits.concurrency).gate ??
        v.integer(`${name}.concurrency`, limits.concurrency, 1, true));
  parseRateOptions(limits, name);
  return { ...limits, concurrency };
}

/** The origin a key of `origins` names (`"https://api.example.com"`), or a TypeError. */
function originOf(key: string): string {
  let url: URL | undefined;
  try {
    url = new URL(key);
  } catch {
    // below
  }
  if (
    url === undefined ||
    (url.protocol !== 'http:' && url.protocol !== 'https:') ||
    url.username !== '' ||
    url.password !== '' ||
    url.pathname !== '/' ||
    url.search !== '' ||
    url.hash !== ''
  ) {
    throw new TypeError(
      `Expected the keys of \`origins\` to be origins like "https://api.example.com", got ${v.describe(key)}`,
    );
  }
  return url.origin;
}

/** The per-origin limits of `origins`, by the origin each key names, over `perOrigin`. */
function checkOrigins(origins: unknown, perOrigin: OriginLimits): Map<string, OriginLimits> {
  v.options('origins', origins);
  const overrides = new Map<string, OriginLimits>();
  for (const [key, limits] of Object.entries(origins ?? {})) {
    const origin = originOf(key);
    if (overrides.has(origin)) {
      throw new RangeError(
        `Expected the keys of \`origins\` to name each origin once, got ${v.describe(key)} for ${origin}, named before`,
      );
    }
    overrides.set(origin, checkLimits(`origins[${JSON.stringify(key)}]`, limits, perOrigin));
  }
  return overrides;
}

const RETRY_STATUSES = [408, 429, 500, 502, 503, 504];

/**
 * `retry` checked, as the options it stands for (a number is a number of retries), with the
 * client's `maxRetryAfter` in the policy.
 */
function checkRetry(
  retry: unknown,
  maxRetryAfter: number,
): {
  policy: RetryPolicy;
  methods: ReadonlySet<string>;
  statuses: ReadonlySet<number>;
} {
  if (typeof retry !== 'number' && (typeof retry !== 'object' || retry === null)) {
    throw new TypeError(
      `Expected \`retry\` to be a number of retries or an object, got ${v.describe(retry)}`,
    );
  }
  const options: HttpRetryOptions & Pick<RetryOptions, 'retryIf' | 'maxRetryAfter'> =
    typeof retry === 'number' ? { retries: v.integer('retry', retry, 0, true) } : retry;
  const { methods, statuses, ...rest } = options;
  // Options of `retry()` that the client has its own way to say: taking them silently would
  // let them do nothing.
  if (rest.maxRetryAfter !== undefined) {
    absent('retry.maxRetryAfter', rest.maxRetryAfter, 'the HTTP client’s is `maxRetryAfter`');
  }
  if (rest.retryIf !== undefined) {
    absent(
      'retry.retryIf',
      rest.retryIf,
      'the HTTP client retries by `retry.methods` and `retry.statuses`',
    );
  }
  return {
    policy: new RetryPolicy({ ...rest, maxRetryAfter }, 'retry'),
    methods: new Set(
      list('retry.methods', methods ?? IDEMPOTENT, 'an array of HTTP methods').map((m, i) => {
        if (typeof m !== 'string' || !TOKEN.test(m)) {
          throw new TypeError(
            `Expected \`retry.methods[${i}]\` to be an HTTP method (a token, such as "GET"), got ${v.describe(m)}`,
          );
        }
        return m.toUpperCase();
      }),
    ),
    statuses: new Set(
      list('retry.statuses', statuses ?? RETRY_STATUSES, 'an array of status codes').map(
        (status, i) => {
          if (typeof status !== 'number' || !Number.isInteger(status)) {
            throw new TypeError(
              `Expected \`retry.statuses[${i}]\` to be an integer from 100 to 599, got ${v.describe(status)}`,
            );
          }
          if (status < 100 || status > 599) {
            throw new RangeError(
              `Expected \`retry.statuses[${i}]\` to be an integer from 100 to 599, got ${v.describe(status)}`,
            );
          }
          return status;
        },
      ),
    ),
  };
}

/** Throws unless `value` is an array (`expected` says of what). */
function list(name: string, value: unknown, expected: string): readonly unknown[] {
  if (!Array.isArray(value)) {
    throw new TypeError(`Expected \`${name}\` to be ${expected}, got ${v.describe(value)}`);
  }
  return value;
}

/** Refuses an option that is set but means nothing here (`why` says what to use instead). */
function absent(name: string, value: unknown, why: string): never {
  throw new TypeError(`Expected \`${name}\` to be absent (${why}), got ${v.describe(value)}`);
}

/** `clock` checked: an object with `now()`, `setTimeout()` and `clearTimeout()`. */
function checkClock(clock: unknown): Clock {
  if (clock === undefined) return systemClock;
  if (typeof clock !== 'object' || clock === null) {
    throw new TypeError(`Expected \`clock\` to be an object, got ${v.describe(clock)}`);
  }
  const { now, setTimeout, clearTimeout } = clock as Partial<Clock>;
  v.fn('clock.now', now);
  v.fn('clock.setTimeout', setTimeout);
  v.fn('clock.clearTimeout', clearTimeout);
  return clock as Clock;
}
