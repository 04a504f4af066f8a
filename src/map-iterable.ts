/**
 * `mapIterable()`: `map()` as a stream. Results come out as an async generator, in input order by
 * default, while the input is pulled only as fast as the work and the consumer allow.
 *
 * Invariants: at most `concurrency` calls in flight, and at most `concurrency` finished results
 * waiting for the consumer, so memory stays bounded whatever the input's length; when iteration
 * ends early (a `break`, a failure, the caller's abort), no further item is pulled, the signal
 * given to `fn` aborts, and the loop is left only after the work in flight has settled.
 */
import { Deque } from './_deque.ts';
import { DONE, Source, type Input } from './_source.ts';
import * as v from './_validate.ts';
import { abortError } from './errors.ts';
import type { MapContext, Mapper } from './map.ts';

/** Options for {@link mapIterable}. */
export interface MapIterableOptions {
  /** At most this many calls of `fn` in flight: an integer >= 1, or `Infinity`. @default 1 */
  concurrency?: number;
  /** `true`: results in input order. `false`: as soon as each is ready. @default true */
  ordered?: boolean;
  /** Aborting it ends the iteration: the loop throws the signal's reason. */
  signal?: AbortSignal | undefined;
}

class Pipeline<T, R> {
  readonly #source: Source<T>;
  readonly #fn: Mapper<T, R>;
  readonly #concurrency: number;
  readonly #ordered: boolean;
  readonly #signal: AbortSignal | undefined;
  readonly #controller = new AbortController();
  readonly #context: MapContext = { signal: this.#controller.signal };
  /** Finished results by index (ordered), or in completion order. */
  readonly #byIndex = new Map<number, R>();
  readonly #ready = new Deque<R>();
  #nextIndex = 0;
  #inFlight = 0;
  #pulling = false;
  #stopped = false;
  #failure: { error: unknown } | undefined;
  #wake: (() => void) | undefined;
  #listening = false;
  readonly #onAbort = (): void => {
    this.#fail((this.#signal as AbortSignal).reason);
  };

  constructor(
    source: Source<T>,
    fn: Mapper<T, R>,
    concurrency: number,
    ordered: boolean,
    signal: AbortSignal | undefined,
  ) {
    this.#source = source;
    this.#fn = fn;
    this.#concurrency = concurrency;
    this.#ordered = ordered;
    this.#signal = signal;
  }

  /** Starts listening to the caller's signal: on the first `next()`, so an unused iterator holds nothing. */
  #listen(): void {
    const signal = this.#signal;
    if (signal === undefined || this.#listening) return;
    this.#listening = true;
    if (signal.aborted) this.#fail(signal.reason);
    else signal.addEventListener('abort', this.#onAbort, { once: true });
  }

  get #buffered(): number {
    return this.#ordered ? this.#byIndex.size : this.#ready.size;
  }

  /** The next result, or `DONE`; throws the failure that ended the iteration. */
  async next(): Promise<R | typeof DONE> {
    this.#listen();
    for (;;) {
      if (this.#failure !== undefined) throw this.#failure.error;
      this.#pump();
      if (this.#ordered) {
        if (this.#byIndex.has(this.#nextIndex)) {
          const value = this.#byIndex.get(this.#nextIndex) as R;
          this.#byIndex.delete(this.#nextIndex++);
          return value;
        }
      } else if (this.#ready.size > 0) {
        return this.#ready.shift() as R;
      }
      if (this.#source.done && this.#inFlight === 0 && !this.#pulling) return DONE;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Ends the iteration: stops pulling, aborts the work in flight and waits for it to settle. */
  async close(): Promise<void> {
    this.#stop(abortError('The iteration was ended before the input was exhausted'));
    this.#signal?.removeEventListener('abort', this.#onAbort);
    await this.#source.close();
    while (this.#inFlight > 0 || this.#pulling) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  #pump(): void {
    const source = this.#source;
    while (
      !this.#stopped &&
      !source.done &&
      !this.#pulling &&
      this.#inFlight < this.#concurrency &&
      this.#inFlight + this.#buffered < this.#concurrency * 2
    ) {
      if (source.isAsync) {
        this.#pulling = true;
        source.nextAsync().then(
          (pulled) => {
            this.#pulling = false;
            if (pulled !== DONE && !this.#stopped) void this.#run(pulled.item, pulled.index);
            this.#pump();
            this.#notify();
          },
          (error: unknown) => {
            this.#pulling = false;
            this.#fail(error);
          },
        );
        return;
      }
      const index = source.index;
      let item: T | typeof DONE;
      try {
        item = source.nextSync();
      } catch (error) {
        this.#fail(error);
        return;
      }
      if (item === DONE) return;
      void this.#run(item, index);
    }
  }

  async #run(item: T, index: number): Promise<void> {
    this.#inFlight++;
    let value: R;
    try {
      value = await this.#fn(item, index, this.#context);
    } catch (error) {
      this.#inFlight--;
      this.#fail(error);
      return;
    }
    this.#inFlight--;
    if (!this.#stopped) {
      if (this.#ordered) this.#byIndex.set(index, value);
      else this.#ready.push(value);
      this.#pump();
    }
    this.#notify();
  }

  #fail(error: unknown): void {
    if (this.#failure === undefined && !this.#stopped) this.#failure = { error };
    this.#stop(error);
    this.#notify();
  }

  #stop(reason: unknown): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#controller.abort(reason);
    void this.#source.close();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

async function* drain<T, R>(pipeline: Pipeline<T, R>): AsyncGenerator<R, void, undefined> {
  try {
    for (;;) {
      const value = await pipeline.next();
      if (value === DONE) return;
      yield value;
    }
  } finally {
    await pipeline.close();
  }
}

/**
 * Calls `fn(item, index, { signal })` for every item of `input`, at most `concurrency` at once, and
 * yields the results as they are ready: in input order by default, in completion order with
 * `ordered: false`. The first failure ends the loop with that error. Leaving the loop early
 * (`break`, `return`, a throw) stops pulling input, aborts the in-flight calls' signal, and
 * returns once they have settled.
 *
 * @example
 * ```ts
 * for await (const size of mapIterable(paths, (path) => stat(path).then((s) => s.size), { concurrency: 8 })) {
 *   total += size;
 * }
 * ```
 */
export function mapIterable<T, R>(
  input: Input<T>,
  fn: Mapper<T, R>,
  options?: MapIterableOptions,
): AsyncGenerator<Awaited<R>, void, undefined> {
  v.fn('fn', fn);
  v.options('options', options);
  const concurrency =
    options?.concurrency === undefined ? 1 : v.integer('concurrency', options.concurrency, 1, true);
  const ordered = options?.ordered === undefined ? true : v.boolean('ordered', options.ordered);
  const signal = v.signal('signal', options?.signal);
  const source = new Source(input);
  return drain(new Pipeline(source, fn as Mapper<T, Awaited<R>>, concurrency, ordered, signal));
}
