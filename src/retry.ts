/**
 * `retry(fn, options)`: calls `fn` again after failures, backing off exponentially with jitter,
 * never sooner than a server asked, never after the caller gave up.
 *
 * Delay before retry n (n = 1, 2, …): `min(maxDelay, minDelay * factor^(n-1))`, then jittered:
 * - `'full'` (default): uniform in [0, d] — spreads a herd of clients best (AWS Architecture Blog,
 *   "Exponential Backoff And Jitter", 2015);
 * - `'equal'`: uniform in [d/2, d];
 * - `'none'`: exactly d.
 * An error carrying `retryAfterMs` (a server's Retry-After) raises the delay to at least that.
 */
import { systemClock, Timer, type Clock } from './_clock.ts';
import { onAbort } from './_signals.ts';
import * as v from './_validate.ts';
import { RetryError } from './errors.ts';

/** What each attempt receives. */
export interface AttemptContext {
  /** 1 for the first call, 2 for the first retry, … */
  readonly attempt: number;
  /** The caller's signal (a signal that never aborts when none was given). */
  readonly signal: AbortSignal;
}

/** Passed to `onRetry` before each retry. */
export interface RetryInfo {
  /** The error of the attempt that failed. */
  error: unknown;
  /** The attempt that failed (1-based). */
  attempt: number;
  /** How long until the next attempt, in milliseconds. */
  delay: number;
}

export type Jitter = 'full' | 'equal' | 'none';

export interface RetryOptions {
  /** Retries after the first attempt: an integer >= 0. @default 3 */
  retries?: number;
  /** The first backoff delay in milliseconds, before jitter. @default 100 */
  minDelay?: number;
  /** The largest backoff delay in milliseconds, before jitter. @default 30_000 */
  maxDelay?: number;
  /** How much the delay grows per retry. @default 2 */
  factor?: number;
  /** @default 'full' */
  jitter?: Jitter;
  /** Whether an error is worth retrying. @default every error */
  retryIf?: (error: unknown, attempt: number) => boolean | PromiseLike<boolean>;
  /**
   * The longest server-requested wait (`error.retryAfterMs`) to honour; a longer one fails at once
   * rather than retrying early. @default Infinity
   */
  maxRetryAfter?: number;
  /** A budget shared by many calls, so that retries stay a fraction of the traffic. */
  budget?: RetryBudget;
  /**
   * Aborting it stops at once, with its reason: during a backoff, or during an attempt (it is
   * passed on to `fn`; an attempt that ignores it is left to finish on its own).
   */
  signal?: AbortSignal | undefined;
  /** Called before each retry. */
  onRetry?: (info: RetryInfo) => void;
  /** The clock for the backoff timers. @default the system clock */
  clock?: Clock;
  /** A source of uniform numbers in [0, 1), for jitter. @default Math.random */
  random?: () => number;
}

/** What the retry policy decided about a failed attempt: wait `delay` ms and retry, or stop with `error`. */
export type RetryDecision = { delay: number } | { error: unknown };

type RetryIf = (error: unknown, attempt: number) => boolean | PromiseLike<boolean>;

/**
 * The one retry driver's rules: checked options, and the decision after each failed attempt.
 * `retry()`, the task life cycle (`Limiter`, `KeyedLimiter`, the HTTP client, `sluice exec`) all
 * decide through `decide()`, so attempts, backoff, jitter, server waits, budget and abort mean the
 * same everywhere. Internal: not exported by the package's entry points.
 */
export class RetryPolicy {
  readonly retries: number;
  readonly minDelay: number;
  readonly maxDelay: number;
  readonly factor: number;
  readonly jitter: Jitter;
  readonly retryIf: RetryIf | undefined;
  readonly maxRetryAfter: number;
  readonly budget: RetryBudget | undefined;
  readonly onRetry: ((info: RetryInfo) => void) | undefined;
  readonly random: () => number;

  /** Checks the options; `name` prefixes the option names in errors. */
  constructor(options: Omit<RetryOptions, 'signal' | 'clock'> | undefined, name = 'retry') {
    v.options(name, options);
    const o = options ?? {};
    this.retries = o.retries === undefined ? 3 : v.integer(`${name}.retries`, o.retries, 0, true);
    this.minDelay = o.minDelay === undefined ? 100 : v.number(`${name}.minDelay`, o.minDelay, 0);
    this.maxDelay =
      o.maxDelay === undefined ? 30_000 : v.number(`${name}.maxDelay`, o.maxDelay, 0, true);
    this.factor = o.factor === undefined ? 2 : v.number(`${name}.factor`, o.factor, 1);
    this.jitter =
      o.jitter === undefined
        ? 'full'
        : v.oneOf(`${name}.jitter`, o.jitter, ['full', 'equal', 'none'] as const);
    this.maxRetryAfter =
      o.maxRetryAfter === undefined
        ? Infinity
        : v.number(`${name}.maxRetryAfter`, o.maxRetryAfter, 0, true);
    if (o.retryIf !== undefined) v.fn(`${name}.retryIf`, o.retryIf);
    if (o.onRetry !== undefined) v.fn(`${name}.onRetry`, o.onRetry);
    if (o.random !== undefined) v.fn(`${name}.random`, o.random);
    if (o.budget !== undefined && !(o.budget instanceof RetryBudget)) {
      throw new TypeError(
        `Expected \`${name}.budget\` to be a RetryBudget, got ${v.describe(o.budget)}`,
      );
    }
    this.retryIf = o.retryIf;
    this.budget = o.budget;
    this.onRetry = o.onRetry;
    this.random = o.random ?? Math.random;
  }

  /** The jittered backoff before retry `retry` (1-based), before any server hint. */
  backoff(retry: number): number {
    const base = Math.min(this.maxDelay, this.minDelay * this.factor ** (retry - 1));
    switch (this.jitter) {
      case 'none':
        return base;
      case 'equal':
        return base / 2 + this.random() * (base / 2);
      case 'full':
        return this.random() * base;
    }
  }

  /**
   * Decides whether attempt `attempt` (1-based), which failed with `error`, is retried, and after
   * how long: never when `signal` has aborted, when `retryIf` (the caller's, or the policy's)
   * says no, when the retries are used up, when the server asked for a wait longer than
   * `maxRetryAfter`, or when the budget has no token left; otherwise after the backoff, and never
   * sooner than the server asked. Synchronous unless `retryIf` returns a promise. A retry takes
   * its token from the budget here.
   */
  decide(
    error: unknown,
    attempt: number,
    signal: AbortSignal | undefined,
    retryIf: RetryIf | undefined = this.retryIf,
  ): RetryDecision | Promise<RetryDecision> {
    if (signal?.aborted === true) return { error: signal.reason };
    if (retryIf === undefined) return this.#decide(error, attempt);
    const verdict = retryIf(error, attempt);
    if (typeof verdict === 'boolean') {
      return verdict ? this.#decide(error, attempt) : { error };
    }
    return Promise.resolve(verdict).then((yes): RetryDecision => {
      // `aborted` may have changed during the wait.
      if (signal?.aborted === true) return { error: signal.reason };
      return yes ? this.#decide(error, attempt) : { error };
    });
  }

  #decide(error: unknown, attempt: number): RetryDecision {
    const message = messageOf(error);
    const after = `${attempt} attempt${attempt === 1 ? '' : 's'}`;
    if (attempt > this.retries) {
      return {
        error: new RetryError(`failed after ${after}: ${message}`, attempt, { cause: error }),
      };
    }
    const hint = retryAfterOf(error);
    if (hint !== undefined && hint > this.maxRetryAfter) {
      return {
        error: new RetryError(
          `the server asked to wait ${Math.ceil(hint)}ms, more than maxRetryAfter (${this.maxRetryAfter}ms), after ${after}: ${message}`,
          attempt,
          { cause: error },
        ),
      };
    }
    if (this.budget !== undefined && !this.budget.tryRetry()) {
      return {
        error: new RetryError(`retry budget exhausted after ${after}: ${message}`, attempt, {
          cause: error,
        }),
      };
    }
    return { delay: Math.max(this.backoff(attempt), hint ?? 0) };
  }
}

/**
 * An error's message, with its cause's when that adds something ("fetch failed: other side
 * closed"). @internal
 */
export function messageOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? error.cause.message : '';
  return cause === '' || error.message.includes(cause)
    ? error.message
    : `${error.message}: ${cause}`;
}

/** The server's requested wait carried by an error, if any (`retryAfterMs`, milliseconds). */
export function retryAfterOf(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const hint = (error as { retryAfterMs?: unknown }).retryAfterMs;
  return typeof hint === 'number' && hint >= 0 && Number.isFinite(hint) ? hint : undefined;
}

/** Waits `ms` on `clock`; rejects with the signal's reason as soon as it aborts. @internal */
export function sleep(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      timer.cancel();
      reject((signal as AbortSignal).reason as Error);
    };
    // Never sooner than asked: the timer re-reads the clock if it fires early.
    const timer = new Timer(clock, ms, () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const NEVER_ABORTED = new AbortController().signal;

/** Settles like `value`, or rejects with the signal's reason as soon as it aborts. */
function untilAborted<T>(value: T | PromiseLike<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const stop = onAbort(signal, () => {
      reject(signal.reason as Error);
    });
    Promise.resolve(value).then(
      (result) => {
        stop();
        resolve(result);
      },
      (error: unknown) => {
        stop();
        reject(error);
      },
    );
  });
}

/**
 * Calls `fn` until it succeeds, a failure is not worth retrying, or the retries run out; then
 * rejects with a {@link RetryError} whose `cause` is the last error and `attempts` the count.
 * An error for which `retryIf` says no is rethrown as it is. Aborting `signal` stops at once.
 *
 * @example
 * ```ts
 * const user = await retry(({ signal }) => getUser(id, { signal }), { retries: 5, minDelay: 200 });
 * ```
 */
export async function retry<T>(
  fn: (context: AttemptContext) => T | PromiseLike<T>,
  options?: RetryOptions,
): Promise<Awaited<T>> {
  v.fn('fn', fn);
  const policy = new RetryPolicy(options, 'options');
  const signal = v.signal('options.signal', options?.signal);
  const clock = options?.clock ?? systemClock;
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted === true) throw signal.reason;
    policy.budget?.recordCall();
    try {
      const result = fn({ attempt, signal: signal ?? NEVER_ABORTED });
      return await (signal === undefined ? result : untilAborted(result, signal));
    } catch (error) {
      const next = await policy.decide(error, attempt, signal);
      if (!('delay' in next)) throw next.error;
      policy.onRetry?.({ error, attempt, delay: next.delay });
      await sleep(clock, next.delay, signal);
    }
  }
}

/** Options for a {@link RetryBudget}. */
export interface RetryBudgetOptions {
  /** Retries allowed per call made, over the window. @default 0.2 */
  ratio?: number;
  /** Retries allowed per second regardless of traffic, so a quiet client can still retry. @default 1 */
  minPerSecond?: number;
  /** How far back calls and retries count, in milliseconds. @default 10_000 */
  window?: number;
  clock?: Clock;
}

/**
 * Caps retries at a fraction of recent calls, shared by every `retry()` given it: when a
 * dependency is down, clients stop multiplying its load (the budget of Finagle and gRPC).
 * Over the last `window` ms: retries <= minPerSecond * window/1000 + ratio * calls.
 */
export class RetryBudget {
  readonly #ratio: number;
  readonly #minRetries: number;
  readonly #bucketMs: number;
  readonly #clock: Clock;
  readonly #calls = new Float64Array(10);
  readonly #retries = new Float64Array(10);
  #bucket = 0;
  #bucketStart = -Infinity;

  constructor(options?: RetryBudgetOptions) {
    v.options('options', options);
    this.#ratio = options?.ratio === undefined ? 0.2 : v.number('ratio', options.ratio, 0);
    const minPerSecond =
      options?.minPerSecond === undefined ? 1 : v.number('minPerSecond', options.minPerSecond, 0);
    const window = options?.window === undefined ? 10_000 : v.number('window', options.window, 1);
    this.#minRetries = (minPerSecond * window) / 1000;
    this.#bucketMs = window / 10;
    this.#clock = options?.clock ?? systemClock;
  }

  /** Counts a call (each attempt, the first one included). */
  recordCall(): void {
    this.#advance();
    this.#calls[this.#bucket]! += 1;
  }

  /** Takes one retry from the budget if there is one left. */
  tryRetry(): boolean {
    this.#advance();
    let calls = 0;
    let retries = 0;
    for (let i = 0; i < 10; i++) {
      calls += this.#calls[i]!;
      retries += this.#retries[i]!;
    }
    if (retries + 1 > this.#minRetries + this.#ratio * calls) return false;
    this.#retries[this.#bucket]! += 1;
    return true;
  }

  #advance(): void {
    const now = this.#clock.now();
    if (now < this.#bucketStart + this.#bucketMs) return;
    const elapsed = Math.floor((now - this.#bucketStart) / this.#bucketMs);
    for (let i = 0; i < Math.min(elapsed, 10); i++) {
      this.#bucket = (this.#bucket + 1) % 10;
      this.#calls[this.#bucket] = 0;
      this.#retries[this.#bucket] = 0;
    }
    this.#bucketStart = Number.isFinite(this.#bucketStart)
      ? this.#bucketStart + elapsed * this.#bucketMs
      : now;
  }
}
