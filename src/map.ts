/**
 * Bounded-concurrency batch helpers: `all`, `map`, `mapSettled`, `mapIterable`.
 *
 * They run a pool of at most `concurrency` workers over a lazily pulled input: a worker pulls an
 * item only when it is free, so a generator or a stream is never read further ahead than the work
 * (plus one pending pull for an async input). A worker is an async loop, so an item costs one
 * `await` and no closure; results land in an array by index, which keeps input order.
 *
 * Invariants: every item pulled is passed to `fn` exactly once; the returned promise settles
 * exactly once; when the batch stops early (first error, caller's abort) the signal given to `fn`
 * aborts, no further item is pulled, and the input's `return()` is called.
 */
import { DONE, Source, type Input } from './_source.ts';
import * as v from './_validate.ts';

/** What `fn` receives besides the item and its index. */
export interface MapContext {
  /** Aborts when the batch stops: on the first error (with `stopOnError`), or the caller's abort. */
  readonly signal: AbortSignal;
}

export type Mapper<T, R> = (item: T, index: number, context: MapContext) => R | PromiseLike<R>;

/** Options for {@link map}, {@link mapSettled} and {@link all}. */
export interface MapOptions {
  /** At most this many calls of `fn` in flight: an integer >= 1, or `Infinity`. @default Infinity */
  concurrency?: number;
  /** Aborting it stops the batch: no new item starts and the promise rejects with its reason. */
  signal?: AbortSignal | undefined;
  /**
   * `true`: the first failure stops the batch and rejects with that error. `false`: every item
   * runs, and if any failed the promise rejects with an `AggregateError` of the failures in input
   * order. @default true
   */
  stopOnError?: boolean;
}

interface Parsed {
  concurrency: number;
  signal: AbortSignal | undefined;
  stopOnError: boolean;
}

function parse(options: MapOptions | undefined): Parsed {
  v.options('options', options);
  return {
    concurrency:
      options?.concurrency === undefined
        ? Infinity
        : v.integer('concurrency', options.concurrency, 1, true),
    signal: v.signal('signal', options?.signal),
    stopOnError:
      options?.stopOnError === undefined ? true : v.boolean('stopOnError', options.stopOnError),
  };
}

const enum Mode {
  /** Results are values; a failure stops or is collected. */
  Values,
  /** Results are `PromiseSettledResult`s; nothing fails. */
  Settled,
}

/** One run of `map()` / `mapSettled()`: the shared state of its workers. */
class Batch<T, R> {
  readonly results: unknown[];
  readonly #source: Source<T>;
  readonly #fn: Mapper<T, R>;
  readonly #options: Parsed;
  readonly #mode: Mode;
  readonly #controller = new AbortController();
  readonly #context: MapContext = { signal: this.#controller.signal };
  readonly #resolve: (value: unknown[]) => void;
  readonly #reject: (reason: unknown) => void;
  #workers = 0;
  #stopped = false;
  #errors: { index: number; error: unknown }[] | undefined;
  #onCallerAbort: (() => void) | undefined;

  constructor(
    source: Source<T>,
    fn: Mapper<T, R>,
    options: Parsed,
    mode: Mode,
    resolve: (value: unknown[]) => void,
    reject: (reason: unknown) => void,
  ) {
    this.#source = source;
    this.#fn = fn;
    this.#options = options;
    this.#mode = mode;
    this.#resolve = resolve;
    this.#reject = reject;
    const length = source.length;
    this.results = length === undefined ? [] : new Array<unknown>(length);
  }

  start(): void {
    const signal = this.#options.signal;
    if (signal !== undefined) {
      if (signal.aborted) {
        this.#stop(signal.reason);
        return;
      }
      this.#onCallerAbort = () => {
        this.#stop(signal.reason);
      };
      signal.addEventListener('abort', this.#onCallerAbort, { once: true });
    }
    if (this.#source.isAsync) {
      // The length is unknown and pulls are asynchronous: start one worker, and let each worker
      // that receives an item start another while there is room.
      this.#spawn();
    } else {
      // A synchronous worker runs until its first await; then the next one starts. A loop, not
      // recursion, so an unlimited concurrency over a long input does not grow the stack.
      const max = Math.min(this.#options.concurrency, this.#source.length ?? Infinity);
      while (this.#workers < max && !this.#source.done && !this.#stopped) this.#spawn();
      this.#finishIfIdle();
    }
  }

  #spawn(): void {
    this.#workers++;
    void this.#worker();
  }

  /** Pulls and runs items until the input is exhausted or the batch stops. Never rejects. */
  async #worker(): Promise<void> {
    const source = this.#source;
    const fn = this.#fn;
    const context = this.#context;
    const settled = this.#mode === Mode.Settled;
    while (!this.#stopped) {
      let item: T | typeof DONE;
      let index: number;
      try {
        if (source.isAsync) {
          const pulled = await source.nextAsync();
          if (pulled === DONE) break;
          ({ item, index } = pulled);
          // Each worker that receives an item makes room for one more puller.
          // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- may stop during the await
          if (this.#workers < this.#options.concurrency && !source.done && !this.#stopped)
            this.#spawn();
        } else {
          index = source.index;
          item = source.nextSync();
          if (item === DONE) break;
        }
      } catch (error) {
        this.#stop(error);
        break;
      }
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- may stop during the pull
      if (this.#stopped) break;
      let value: unknown;
      try {
        value = fn(item, index, context);
        if (v.isThenable(value)) value = await value;
      } catch (error) {
        this.#fail(index, error);
        continue;
      }
      this.results[index] = settled ? { status: 'fulfilled', value } : value;
    }
    this.#workers--;
    this.#finishIfIdle();
  }

  #fail(index: number, error: unknown): void {
    if (this.#mode === Mode.Settled) {
      this.results[index] = { status: 'rejected', reason: error };
    } else if (this.#options.stopOnError) {
      this.#stop(error);
    } else {
      (this.#errors ??= []).push({ index, error });
    }
  }

  /** Ends the batch early: rejects with `reason`, aborts the work in flight, closes the input. */
  #stop(reason: unknown): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#cleanup();
    this.#reject(reason);
    this.#controller.abort(reason);
    void this.#source.close();
  }

  #finishIfIdle(): void {
    if (this.#workers > 0 || this.#stopped) return;
    this.#stopped = true;
    this.#cleanup();
    const errors = this.#errors;
    if (errors === undefined) {
      this.results.length = this.#source.index;
      this.#resolve(this.results);
    } else {
      errors.sort((a, b) => a.index - b.index);
      this.#reject(
        new AggregateError(
          errors.map((e) => e.error),
          `${errors.length} of ${this.#source.index} item${this.#source.index === 1 ? '' : 's'} failed`,
        ),
      );
    }
  }

  #cleanup(): void {
    if (this.#onCallerAbort !== undefined) {
      this.#options.signal?.removeEventListener('abort', this.#onCallerAbort);
      this.#onCallerAbort = undefined;
    }
  }
}

function runBatch<T, R>(
  input: Input<T>,
  fn: Mapper<T, R>,
  options: MapOptions | undefined,
  mode: Mode,
): Promise<unknown[]> {
  let source: Source<T>;
  let parsed: Parsed;
  try {
    source = new Source(input);
    v.fn('fn', fn);
    parsed = parse(options);
  } catch (error) {
    return Promise.reject(error);
  }
  return new Promise((resolve, reject) => {
    new Batch(source, fn, parsed, mode, resolve, reject).start();
  });
}

/**
 * Calls `fn(item, index, { signal })` for every item of `input` with at most `concurrency` calls
 * in flight, and resolves to the results in input order. `input` may be an array, an iterable or
 * an async iterable; it is pulled lazily, as workers free up.
 *
 * @example
 * ```ts
 * const pages = await map(urls, (url, i, { signal }) => fetch(url, { signal }).then((r) => r.text()), {
 *   concurrency: 4,
 * });
 * ```
 */
export function map<T, R>(
  input: Input<T>,
  fn: Mapper<T, R>,
  options?: MapOptions,
): Promise<Awaited<R>[]> {
  return runBatch(input, fn, options, Mode.Values) as Promise<Awaited<R>[]>;
}

/**
 * Like {@link map}, but never rejects for a failing item: resolves to a `PromiseSettledResult` per
 * item, in input order (as `Promise.allSettled` does). Still rejects if the caller's signal aborts
 * or the input itself throws.
 */
export function mapSettled<T, R>(
  input: Input<T>,
  fn: Mapper<T, R>,
  options?: Omit<MapOptions, 'stopOnError'>,
): Promise<PromiseSettledResult<Awaited<R>>[]> {
  return runBatch(input, fn, options, Mode.Settled) as Promise<PromiseSettledResult<Awaited<R>>[]>;
}

function callThunk<T>(
  thunk: (context: MapContext) => T | PromiseLike<T>,
  _index: number,
  context: MapContext,
): T | PromiseLike<T> {
  if (typeof thunk !== 'function') {
    throw new TypeError(
      `Expected every item of \`thunks\` to be a function, got ${v.describe(thunk)}`,
    );
  }
  return thunk(context);
}

/**
 * Runs the functions in `thunks` with at most `concurrency` in flight and resolves to their results
 * in input order: `Promise.all` with a limit. Each thunk receives `{ signal }`.
 *
 * @example
 * ```ts
 * const titles = await all(urls.map((url) => () => fetchTitle(url)), { concurrency: 5 });
 * ```
 */
export function all<T>(
  thunks: Input<(context: MapContext) => T | PromiseLike<T>>,
  options?: MapOptions,
): Promise<Awaited<T>[]> {
  return map(thunks, callThunk, options);
}
