/**
 * `RateLimiter`: at most `limit` starts per `interval`, exactly, on an injectable clock.
 *
 * Built on the gate engine with an unlimited capacity and a pacer of rate windows (`_pace.ts`):
 * callers wait in a FIFO line, the front is admitted at the first instant every window allows,
 * and one timer (for the front only) wakes the line. A timer that fires early changes nothing:
 * the line re-reads the clock and the windows decide.
 */
import { NEVER_ABORTED, request, tooHeavy } from './_acquire.ts';
import { isGate } from './_gates.ts';
import { systemClock, type Clock } from './_clock.ts';
import { Engine } from './_engine.ts';
import { Pace, SlidingLog, Spacing, type Window } from './_pace.ts';
import { formatRate, parseRate, type Rate, type RateSpec } from './_parse.ts';
import * as v from './_validate.ts';
import { ClosedError } from './errors.ts';
import type { AcquireOptions, Gate, Permit, ReleaseOutcome, SyncGate } from './gate.ts';

export type { Rate, RateSpec } from './_parse.ts';

/** How a window counts. See {@link RateOptions.window}. */
export type WindowKind = 'spaced' | 'sliding';

/** The rate part of the options of `RateLimiter`, `Limiter` and `KeyedLimiter`. */
export interface RateOptions {
  /** One rate or several (`['10/s', '500/min']`), every one of them kept at once. */
  rate?: RateSpec | readonly RateSpec[];
  /**
   * With `window: 'spaced'`: how many may start at once. Starts are otherwise spaced
   * `interval / limit` apart; in any window of `interval` at most `limit + burst - 1` start.
   * @default 1
   */
  burst?: number;
  /**
   * `'spaced'`: starts are spread evenly (GCRA), safe with servers that refuse bursts (a leaky
   * bucket, nginx `limit_req`). `'sliding'`: up to `limit` at once, never more than `limit` in
   * any window of `interval` (a sliding log), for servers that count per window. @default 'spaced'
   */
  window?: WindowKind;
}

/** Options for {@link RateLimiter}. */
export interface RateLimiterOptions extends RateOptions {
  rate: RateSpec | readonly RateSpec[];
  /** The clock the windows are measured on. @default the system clock */
  clock?: Clock;
}

/** Options for {@link RateLimiter.wait}. */
export interface WaitOptions {
  /** How many starts this one counts as. @default 1 */
  weight?: number;
  /** Aborting it withdraws the request: the promise rejects with `signal.reason`. */
  signal?: AbortSignal | undefined;
  /** Milliseconds to wait before giving up with a `TimeoutError`. @default Infinity */
  timeout?: number;
}

/** A booked start: see {@link RateLimiter.reserve}. */
export interface Reservation {
  /** Milliseconds from the booking until the start may happen (0: at once). */
  readonly delay: number;
  /** The clock instant of the start. */
  readonly at: number;
  /**
   * Gives the slot back if its instant has not come and nothing was booked after it; returns
   * whether it did. A slot that cannot be given back stays used: the limit is never exceeded.
   */
  cancel(): boolean;
}

/** Parsed rate windows and how they count. @internal */
export interface ParsedRate {
  rates: Rate[];
  burst: number;
  window: WindowKind;
}

/** Checks the rate options (`name` prefixes the option names in errors). @internal */
export function parseRateOptions(options: RateOptions, name = ''): ParsedRate {
  const prefix = name === '' ? '' : `${name}.`;
  const specs =
    options.rate === undefined ? [] : Array.isArray(options.rate) ? options.rate : [options.rate];
  const rates = (specs as unknown[]).map((spec, i) =>
    parseRate(
      specs.length === 1 && !Array.isArray(options.rate) ? `${prefix}rate` : `${prefix}rate[${i}]`,
      spec,
    ),
  );
  const window =
    options.window === undefined
      ? 'spaced'
      : v.oneOf(`${prefix}window`, options.window, ['spaced', 'sliding'] as const);
  const burst = options.burst === undefined ? 1 : v.integer(`${prefix}burst`, options.burst, 1);
  if (window === 'sliding' && options.burst !== undefined) {
    throw new TypeError(
      `\`${prefix}burst\` applies to window 'spaced' only: a sliding window admits its whole limit at once`,
    );
  }
  for (const [i, rate] of rates.entries()) {
    if (window === 'spaced' && burst > rate.limit) {
      throw new RangeError(
        `Expected \`${prefix}burst\` to be at most the limit of every rate, got \`${burst}\` (number) for ${formatRate(rates[i]!)}`,
      );
    }
  }
  return { rates, burst, window };
}

/**
 * Reads a rate limiter's first argument, a rate, several, or an options object (one with a `rate`
 * or another option: a `{ limit, interval }` is a rate), and checks its rates. @internal
 */
export function parseLimiterRate<O extends RateLimiterOptions>(
  options: RateSpec | readonly RateSpec[] | O,
): { options: O; parsed: ParsedRate } {
  const value: unknown = options;
  const isOptions =
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    ['rate', 'clock', 'burst', 'window'].some((key) => key in value);
  const o = (isOptions ? options : { rate: options }) as O;
  if ((o.rate as unknown) === undefined)
    throw new TypeError('Expected `rate` to be a rate like "10/s", got `undefined` (undefined)');
  const parsed = parseRateOptions(o);
  if (parsed.rates.length === 0)
    throw new RangeError('Expected `rate` to hold at least one rate, got `[array]` (array)');
  return { options: o, parsed };
}

/**
 * Rate options whose `rate` may hold gates among the rates (`[gate, '10/s']`): the rates parsed,
 * and the gates apart, in their order. @internal
 */
export function parseRatesAndGates(options: Omit<RateOptions, 'rate'> & { rate?: unknown }): {
  parsed: ParsedRate;
  gates: Gate[];
} {
  const rate = options.rate;
  if (rate === undefined || !(Array.isArray(rate) || isGate(rate))) {
    return { parsed: parseRateOptions(options as RateOptions), gates: [] };
  }
  const list: readonly unknown[] = Array.isArray(rate) ? rate : [rate];
  const specs = list.filter((spec) => !isGate(spec)) as RateSpec[];
  return { parsed: parseRateOptions({ ...options, rate: specs }), gates: list.filter(isGate) };
}

/** Builds fresh windows for parsed rates. @internal */
export function buildWindows(parsed: ParsedRate): Window[] {
  return parsed.rates.map((rate) =>
    parsed.window === 'sliding' ? new SlidingLog(rate) : new Spacing(rate, parsed.burst),
  );
}

/**
 * Changes a gate's rate: new windows that count the starts before the change (`Pace.replace`),
 * and the waiters too heavy for them failed (they could never be admitted). Returns the parsed
 * rate. @internal
 */
export function replaceRate(
  pace: Pace,
  engine: Engine,
  current: ParsedRate,
  rate: unknown,
): ParsedRate {
  const parsed = parseRateOptions({
    rate: rate as RateSpec,
    window: current.window,
    ...(current.window === 'spaced' ? { burst: current.burst } : {}),
  });
  pace.replace(buildWindows(parsed));
  engine.failHeavierThan(pace.maxWeight, `${pace.maxWeight}, the most the rate admits at once`);
  return parsed;
}

/**
 * A start admitted by a rate: it holds nothing, so its release gives nothing back. @internal
 */
export class StartPermit implements Permit {
  readonly weight: number;

  constructor(weight: number) {
    this.weight = weight;
  }

  get signal(): AbortSignal {
    return NEVER_ABORTED;
  }

  release(_outcome?: ReleaseOutcome): void {
    // A start is counted when it happens; there is nothing to give back.
  }

  [Symbol.dispose](): void {
    this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Admits at most `limit` starts per `interval`, on an injectable clock. Callers `wait()` in a
 * FIFO line; several rates are kept at once, and a start is admitted only when all allow it.
 *
 * ## Exactness
 * Starts are measured with the clock (`performance.now()` by default). With the default spaced
 * window, no window of `interval` ever holds more than `limit + burst - 1` starts; with
 * `window: 'sliding'`, never more than `limit`. A timer that fires early admits nothing: the line
 * re-reads the clock.
 *
 * ## Fairness
 * FIFO, no barging: a waiting heavy request blocks later lighter ones, and `tryTake` fails while
 * anyone waits. `reserve()` does not wait in line: it books the next free slot directly.
 *
 * @example
 * ```ts
 * const rate = new RateLimiter('10/s');
 * for (const url of urls) {
 *   await rate.wait();
 *   void fetch(url);
 * }
 * ```
 */
export class RateLimiter implements SyncGate {
  readonly #engine: Engine;
  readonly #pace: Pace;
  #parsed: ParsedRate;

  constructor(options: RateSpec | readonly RateSpec[] | RateLimiterOptions) {
    const { options: o, parsed } = parseLimiterRate(options);
    this.#parsed = parsed;
    this.#pace = new Pace(buildWindows(this.#parsed));
    this.#engine = new Engine(Infinity, o.clock ?? systemClock);
    this.#engine.setPacer(this.#pace);
    // Messages (a wait's timeout) describe the rate, not a capacity.
    this.#engine.describe = () =>
      `${this.rate.join(' and ')}, ${this.#engine.line.size} waiting${this.#engine.closed ? ', closed' : ''}`;
  }

  /** The rates kept, as written: `['10/s', '500/min']`. Settable, with the same forms. */
  get rate(): string[] {
    return this.#parsed.rates.map(formatRate);
  }

  set rate(rate: RateSpec | readonly RateSpec[]) {
    if (Array.isArray(rate) && rate.length === 0) {
      throw new RangeError('Expected `rate` to hold at least one rate, got `[array]` (array)');
    }
    this.#parsed = replaceRate(this.#pace, this.#engine, this.#parsed, rate);
    this.#engine.kick();
  }

  /** Requests waiting in line. */
  get waiting(): number {
    return this.#engine.line.size;
  }

  /** Milliseconds until a start of weight 1 would be admitted, ignoring the line (0: now). */
  get retryAfter(): number {
    return this.#pace.delay(1, this.#engine.clock.now());
  }

  /**
   * The gate contract's way in: waits as `wait()` does, and resolves to a permit whose release
   * gives nothing back (a rate counts starts; the window's passing makes room). What lets a
   * `RateLimiter` stand where a gate is expected: `new Limiter({ rate: rateLimiter })`.
   */
  acquire(options?: AcquireOptions): Promise<Permit> {
    return request(
      this.#engine,
      options,
      (engine, weight) => {
        engine.release(weight); // a rate holds nothing: the start is all it counts
        return new StartPermit(weight);
      },
      'wait',
    );
  }

  /** Admits a start of `weight` now, as `tryTake()` does, as a permit; `undefined` if it cannot. */
  tryAcquire(weight = 1): Permit | undefined {
    return this.tryTake(weight) ? new StartPermit(weight) : undefined;
  }

  /**
   * Waits in line until a start of `weight` is admitted. Rejects with `signal.reason` if aborted,
   * a `TimeoutError` if `timeout` elapses first (either way nothing is consumed), and a
   * `RangeError` at once if `weight` exceeds what the rate can ever admit at once.
   */
  wait(options?: WaitOptions): Promise<void> {
    return request(
      this.#engine,
      options,
      (engine, weight) => {
        engine.release(weight); // a rate holds nothing: the start is all it counts
      },
      'wait',
    );
  }

  /** Admits a start of `weight` now if the rate allows it and nobody waits; returns whether it did. */
  tryTake(weight = 1): boolean {
    v.integer('weight', weight, 1);
    const engine = this.#engine;
    if (engine.closed) throw engine.closeReason;
    const heavy = tooHeavy(engine, weight);
    if (heavy !== undefined) throw heavy;
    if (!engine.tryTake(weight)) return false;
    engine.release(weight);
    // The caller starts right after this returns: count the start once that code has run.
    engine.restampLater(weight, engine.grantedAt, 1);
    return true;
  }

  /**
   * Books the earliest start the rate allows for `weight`, and says when it is: the caller waits
   * `delay` ms, then starts. One call, no line, no polling. It does not queue behind callers of
   * `wait()`: mixing the two lets reservations go first.
   */
  reserve(weight = 1): Reservation {
    v.integer('weight', weight, 1);
    const engine = this.#engine;
    if (engine.closed) throw engine.closeReason;
    const heavy = tooHeavy(engine, weight);
    if (heavy !== undefined) throw heavy;
    const now = engine.clock.now();
    const delay = this.#pace.delay(weight, now);
    const at = now + delay;
    const undo = this.#pace.book(weight, at);
    engine.kick(); // the windows moved: the front's timer may be due later now
    let cancelled = false;
    return {
      delay,
      at,
      cancel: () => {
        if (cancelled || engine.clock.now() >= at) return false;
        cancelled = undo();
        if (cancelled) engine.kick();
        return cancelled;
      },
    };
  }

  /** Rejects every waiter, and every later request, with `reason` (a `ClosedError` by default). */
  close(reason: unknown = new ClosedError('the rate limiter is closed')): void {
    this.#engine.close(reason);
  }

  /** Like `RateLimiter(10/s, 3 waiting)`. */
  toString(): string {
    return `RateLimiter(${this.#engine.describe()})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}
