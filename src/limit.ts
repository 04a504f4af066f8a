/**
 * `limit(concurrency)`: the one-liner, a drop-in for p-limit 7 built on a {@link Semaphore}.
 *
 * Differences from p-limit, all on the side of not losing work:
 * - `clearQueue()` always settles what it clears: the promises reject with an `AbortError` (each
 *   gets a no-op handler first, so a caller that dropped them gets no unhandled rejection).
 *
 * As with p-limit 7, a call that finds a slot free takes it at once (`activeCount` counts it) and
 * calls `fn` one microtask later, so the code right after the call runs first (and `fn` sees what
 * it changed). A call that waits is called as soon as a slot frees, in the async context of the
 * call that queued it. Calls begin in the order they were made.
 */
import { systemClock } from './_clock.ts';
import { Engine, StartLine } from './_engine.ts';
import * as v from './_validate.ts';
import { abortError } from './errors.ts';
import { clearTasks, schedule } from './semaphore.ts';

/** Options for {@link limit}, in p-limit's shape. */
export interface LimitOptions {
  /** At most this many calls run at once: an integer >= 1, or `Infinity`. */
  readonly concurrency: number;
  /**
   * Accepted for compatibility with p-limit. sluice always rejects cleared promises (with an
   * `AbortError`), so that nothing waits forever. @default true
   */
  readonly rejectOnClear?: boolean;
}

/** A function that runs what it is given with limited concurrency. See {@link limit}. */
export interface LimitFunction {
  /**
   * Calls `fn(...args)` when a slot is free and returns a promise of its result.
   *
   * Warning: calling a limit function from inside a function it limits can deadlock (the outer call
   * holds the slot the inner one waits for). Use a separate limit for the inner work.
   */
  <Args extends unknown[], R>(fn: (...args: Args) => PromiseLike<R> | R, ...args: Args): Promise<R>;
  /** Calls running now. */
  readonly activeCount: number;
  /** Calls waiting for a slot (their `fn` not called yet). */
  readonly pendingCount: number;
  /** The limit; raising it starts waiting calls at once, lowering it lets running calls finish. */
  concurrency: number;
  /**
   * Rejects every waiting call with an `AbortError`. Calls already running are not affected.
   * A function property, not a method, so it can be passed around on its own.
   */
  readonly clearQueue: () => void;
  /**
   * Calls `fn(item, index)` for every item, limited like any other call; resolves to the results
   * in input order. If iterating `input` throws, rejects with that error (the calls already
   * queued still run).
   */
  readonly map: <T, R>(
    input: Iterable<T>,
    fn: (item: T, index: number) => PromiseLike<R> | R,
  ) => Promise<R[]>;
}

function parseOptions(options: number | LimitOptions): number {
  const value: unknown = options; // callers from JavaScript may pass anything
  if (typeof value === 'object' && value !== null) {
    if (Array.isArray(value)) v.notInteger('concurrency', 1, true, 'an array');
    if (!('concurrency' in value)) {
      v.notInteger('concurrency', 1, true, 'an object without `concurrency`');
    }
    const { concurrency, rejectOnClear } = value as LimitOptions;
    if (rejectOnClear !== undefined) v.boolean('rejectOnClear', rejectOnClear);
    return v.integer('concurrency', concurrency, 1, true);
  }
  return v.integer('concurrency', value, 1, true);
}

/**
 * Returns a function that runs at most `concurrency` of the calls given to it at once, the rest
 * waiting in line (FIFO).
 *
 * @example
 * ```ts
 * const run = limit(2);
 * const sizes = await Promise.all(files.map((file) => run(() => stat(file))));
 * ```
 */
export function limit(concurrency: number | LimitOptions): LimitFunction {
  const engine = new Engine(parseOptions(concurrency), systemClock);
  engine.starts = new StartLine(engine);

  function limited(fn: (...args: never[]) => unknown, ...args: unknown[]): Promise<unknown> {
    if (typeof fn !== 'function') {
      return Promise.reject(
        new TypeError(`Expected \`fn\` to be a function, got ${v.describe(fn)}`),
      );
    }
    return schedule(engine, fn, args.length === 0 ? undefined : args);
  }

  Object.defineProperties(limited, {
    activeCount: { get: () => engine.held },
    pendingCount: { get: () => engine.line.size },
    concurrency: {
      get: () => engine.capacity,
      set: (value: number) => {
        engine.capacity = v.integer('concurrency', value, 1, true);
      },
    },
    clearQueue: {
      value: () => {
        clearTasks(engine, abortError('The queue was cleared'));
      },
    },
    map: {
      value: (input: Iterable<unknown>, fn: (item: unknown, index: number) => unknown) => {
        if (typeof fn !== 'function') {
          return Promise.reject(
            new TypeError(`Expected \`fn\` to be a function, got ${v.describe(fn)}`),
          );
        }
        const promises: Promise<unknown>[] = [];
        try {
          let index = 0;
          for (const item of input) promises.push(limited(fn, item, index++));
        } catch (error) {
          for (const promise of promises) promise.catch(() => undefined);
          return Promise.reject(error);
        }
        return Promise.all(promises);
      },
    },
    toString: {
      value: () => `limit(${engine.held}/${engine.capacity} active, ${engine.line.size} pending)`,
    },
  });
  return limited as LimitFunction;
}

/**
 * Returns `fn` wrapped so that at most `concurrency` calls of it run at once.
 *
 * @example
 * ```ts
 * const getUser = limitFunction((id: string) => api.getUser(id), { concurrency: 4 });
 * const users = await Promise.all(ids.map((id) => getUser(id)));
 * ```
 */
export function limitFunction<Args extends unknown[], R>(
  fn: (...args: Args) => PromiseLike<R> | R,
  options: LimitOptions,
): ((...args: Args) => Promise<R>) & Pick<LimitFunction, 'clearQueue'> {
  v.fn('fn', fn);
  const run = limit(options);
  const limitedFunction = (...args: Args): Promise<R> => run(fn, ...args);
  Object.defineProperty(limitedFunction, 'clearQueue', {
    value: () => {
      run.clearQueue();
    },
  });
  return limitedFunction as ((...args: Args) => Promise<R>) & Pick<LimitFunction, 'clearQueue'>;
}
