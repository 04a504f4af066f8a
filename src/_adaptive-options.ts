/**
 * The options of `adaptive()`, checked in one place: each one that is wrong throws a TypeError
 * (a wrong type) or a RangeError (a wrong value) naming it, with what was expected and what came.
 * An option of another algorithm than the one chosen is refused rather than ignored.
 */
import { systemClock, type Clock } from './_clock.ts';
import { ALGORITHMS, type Algorithm, type ControlSettings } from './_control.ts';
import type { LimitStore } from './_limit-store.ts';
import * as v from './_validate.ts';

/** Options for {@link adaptive}. */
export interface AdaptiveOptions {
  /**
   * How the limit moves (each backs off by `backoff` on a drop, and grows only while in use):
   * - `'gradient2'`: toward `limit × baseline / latency` (Netflix's Gradient2, with its faults
   *   fixed): it settles where the latency is `tolerance` times the no-load latency;
   * - `'vegas'`: by the queue that the latency implies (TCP Vegas): it keeps between `alpha` and
   *   `beta` requests waiting at the server;
   * - `'aimd'`: one step up (`increase`) per round trip, a multiplicative step down when the
   *   latency passes `tolerance` times the no-load latency (as Vector's ARC does) or on a drop.
   * @default 'gradient2'
   */
  algorithm?: Algorithm;
  /** The least the limit can be: an integer >= 1. @default 1 */
  min?: number;
  /** The most it can be: an integer >= `min`. @default 200 */
  max?: number;
  /**
   * Where it starts: an integer from `min` to `max`. Low, so that several clients starting at
   * once do not swamp the server before they have measured it. @default 10, or `min` or `max`
   * if it is outside them
   */
  initial?: number;
  /** The factor a drop multiplies the limit by, in (0, 1). @default 0.9 */
  backoff?: number;
  /**
   * Over how many windows (about one round trip each) the no-load latency is the lowest seen: a
   * rise in latency that lasts longer is taken as the server's, not as a queue. @default 20
   */
  baselineWindows?: number;
  /** aimd: how much the limit grows after each round trip in which it was reached. @default 1 */
  increase?: number;
  /**
   * vegas: the queue (in requests) under which the limit grows; of a shared limit, the whole
   * fleet's (each client keeps its part). @default 2·log10(limit), at least 1
   */
  alpha?: number;
  /** vegas: the queue above which it shrinks. @default twice `alpha` */
  beta?: number;
  /**
   * gradient2 and aimd: how much slower than the no-load latency still counts as no queueing
   * (1.25: 25% slower). gradient2 settles about there; aimd backs off past it (Infinity: on drops
   * only). @default 1.25
   */
  tolerance?: number;
  /** gradient2: how far each window moves the limit toward its target, in (0, 1]. @default 0.2 */
  smoothing?: number;
  /**
   * Refuse requests here, with a `ThrottledError`, while the server refuses most of them
   * (Google's client-side throttling: over the last `window` ms, the odds of refusing are
   * `(requests − k × accepts) / (requests + 1)`). `true` for the defaults. @default false
   */
  throttle?: boolean | { k?: number; window?: number };
  /**
   * Where the limit is kept. A `RedisAdaptiveStore` (`sluice/redis`) shares it with every process
   * that names the same store: `min`, `max` and `initial` are then the bounds of their total,
   * and each process admits its part of it. @default this gate's own memory
   */
  store?: LimitStore;
  /** The clock that times windows and the throttle: the limiter's, in tests. @default the system clock */
  clock?: Clock;
  /** A source of uniform numbers in [0, 1), for the throttle's draws. @default Math.random */
  random?: () => number;
}

/** The options, checked, with their defaults: what a fork is made with. */
export interface Settings extends ControlSettings {
  algorithm: Algorithm;
  min: number;
  max: number;
  initial: number;
  baselineWindows: number;
  throttle: { k: number; window: number } | undefined;
  store: LimitStore | undefined;
  clock: Clock;
  random: () => number;
}

/** The options that only some algorithms take, and which. */
const OWN_OPTIONS: Readonly<Record<string, readonly Algorithm[]>> = {
  increase: ['aimd'],
  alpha: ['vegas'],
  beta: ['vegas'],
  tolerance: ['aimd', 'gradient2'],
  smoothing: ['gradient2'],
};

/** A number in (0, 1) (`max` included when `closed`). */
function fraction(name: string, value: unknown, closed = false): number {
  const expected = closed ? 'a number > 0 and <= 1' : 'a number > 0 and < 1';
  if (typeof value !== 'number' || Number.isNaN(value))
    throw new TypeError(`Expected \`${name}\` to be ${expected}, got ${v.describe(value)}`);
  if (!(value > 0 && (closed ? value <= 1 : value < 1)))
    throw new RangeError(`Expected \`${name}\` to be ${expected}, got ${v.describe(value)}`);
  return value;
}

/** A finite number > 0. */
function positive(name: string, value: unknown): number {
  v.finite(name, value);
  if (!((value as number) > 0))
    throw new RangeError(`Expected \`${name}\` to be a number > 0, got ${v.describe(value)}`);
  return value as number;
}

export function checkOptions(options: AdaptiveOptions | undefined): Settings {
  v.options('options', options);
  const o = options ?? {};
  const algorithm =
    o.algorithm === undefined ? 'gradient2' : v.oneOf('algorithm', o.algorithm, ALGORITHMS);
  for (const [name, owners] of Object.entries(OWN_OPTIONS)) {
    const value = (o as Record<string, unknown>)[name];
    if (value !== undefined && !owners.includes(algorithm))
      throw new TypeError(
        `Expected \`${name}\` to be absent: it is an option of ${owners.map((a) => `'${a}'`).join(' and ')}, not of '${algorithm}', got ${v.describe(value)}`,
      );
  }
  const min = o.min === undefined ? 1 : v.integer('min', o.min, 1);
  const max = o.max === undefined ? Math.max(200, min) : v.integer('max', o.max, 1);
  if (min > max) {
    throw new RangeError(
      `Expected \`min\` to be at most \`max\` (${max}), got ${v.describe(o.min)}`,
    );
  }
  let initial = Math.min(max, Math.max(min, 10));
  if (o.initial !== undefined) {
    initial = v.integer('initial', o.initial, 1);
    if (initial < min || initial > max)
      throw new RangeError(
        `Expected \`initial\` to be an integer from \`min\` (${min}) to \`max\` (${max}), got ${v.describe(o.initial)}`,
      );
  }
  const alpha = o.alpha === undefined ? undefined : positive('alpha', o.alpha);
  const beta = o.beta === undefined ? undefined : positive('beta', o.beta);
  if (alpha !== undefined && beta !== undefined && beta < alpha)
    throw new RangeError(
      `Expected \`beta\` to be at least \`alpha\` (${alpha}), got ${v.describe(beta)}`,
    );
  let throttle: Settings['throttle'];
  if (o.throttle !== undefined && o.throttle !== false) {
    const t = o.throttle === true ? {} : o.throttle;
    if (typeof t !== 'object' || (t as unknown) === null)
      throw new TypeError(
        `Expected \`throttle\` to be a boolean or an object, got ${v.describe(o.throttle)}`,
      );
    throttle = {
      k: t.k === undefined ? 2 : v.number('throttle.k', t.k, 1),
      window: t.window === undefined ? 120_000 : positive('throttle.window', t.window),
    };
  }
  if (o.random !== undefined) v.fn('random', o.random);
  const store = o.store as Partial<LimitStore> | null | undefined;
  if (store !== undefined && typeof store?.change !== 'function')
    throw new TypeError(
      `Expected \`store\` to be a store with a \`change\` method (a RedisAdaptiveStore), got ${v.describe(o.store)}`,
    );
  return {
    algorithm,
    min,
    max,
    initial,
    backoff: o.backoff === undefined ? 0.9 : fraction('backoff', o.backoff),
    baselineWindows:
      o.baselineWindows === undefined ? 20 : v.integer('baselineWindows', o.baselineWindows, 1),
    increase: o.increase === undefined ? 1 : positive('increase', o.increase),
    alpha,
    beta,
    tolerance: o.tolerance === undefined ? 1.25 : v.number('tolerance', o.tolerance, 1, true),
    smoothing: o.smoothing === undefined ? 0.2 : fraction('smoothing', o.smoothing, true),
    throttle,
    store: o.store,
    clock: o.clock ?? systemClock,
    random: o.random ?? Math.random,
  };
}
