/**
 * One way to pull items from whatever `map()` and `mapIterable()` are given: an array (read by
 * index), a synchronous iterable, or an asynchronous one. Pulls are lazy: an item is read only
 * when a worker is ready for it.
 *
 * Invariant: once `done` is set, no `next()` is called on the underlying iterator again, and
 * `close()` calls its `return()` at most once (only if it was not exhausted).
 */
import { describe } from './_validate.ts';

/** Returned by a pull when the input is exhausted (or was closed). */
export const DONE: unique symbol = Symbol('done');

export type Input<T> = Iterable<T> | AsyncIterable<T>;

/** An item of an async input with its position. */
export interface Pulled<T> {
  item: T;
  index: number;
}

export class Source<T> {
  readonly isAsync: boolean;
  /** How many items have been pulled; the next item's index. */
  index = 0;
  done = false;
  #array: ArrayLike<T> | undefined;
  #iterator: Iterator<T> | undefined;
  #asyncIterator: AsyncIterator<T> | undefined;
  /** Serialises pulls from an async iterator: one `next()` outstanding at a time. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(input: Input<T>, name = 'input') {
    const value: unknown = input; // callers from JavaScript may pass anything
    if (Array.isArray(value)) {
      this.#array = value as T[];
      this.isAsync = false;
    } else if (value != null && typeof (value as Iterable<T>)[Symbol.iterator] === 'function') {
      this.#iterator = (value as Iterable<T>)[Symbol.iterator]();
      this.isAsync = false;
    } else if (
      value != null &&
      typeof (value as AsyncIterable<T>)[Symbol.asyncIterator] === 'function'
    ) {
      this.#asyncIterator = (value as AsyncIterable<T>)[Symbol.asyncIterator]();
      this.isAsync = true;
    } else {
      throw new TypeError(
        `Expected \`${name}\` to be an iterable or an async iterable, got ${describe(input)}`,
      );
    }
  }

  /** The number of items when it is known up front (arrays). */
  get length(): number | undefined {
    return this.#array?.length;
  }

  /** Pulls the next item of a synchronous input. Throws what the iterator throws. */
  nextSync(): T | typeof DONE {
    if (this.done) return DONE;
    const array = this.#array;
    if (array !== undefined) {
      if (this.index >= array.length) {
        this.done = true;
        return DONE;
      }
      return array[this.index++] as T;
    }
    let result: IteratorResult<T>;
    try {
      result = (this.#iterator as Iterator<T>).next();
    } catch (error) {
      this.done = true;
      throw error;
    }
    if (result.done === true) {
      this.done = true;
      return DONE;
    }
    this.index++;
    return result.value;
  }

  /** Pulls the next item of an asynchronous input, after any pull already under way. */
  nextAsync(): Promise<Pulled<T> | typeof DONE> {
    const pull = this.#tail.then(() => this.#pullAsync());
    this.#tail = pull.catch(() => undefined);
    return pull;
  }

  async #pullAsync(): Promise<Pulled<T> | typeof DONE> {
    if (this.done) return DONE;
    let result: IteratorResult<T>;
    try {
      result = await (this.#asyncIterator as AsyncIterator<T>).next();
    } catch (error) {
      this.done = true;
      throw error;
    }
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- close() may run during the await
    if (this.done) return DONE; // closed while the pull was under way
    if (result.done === true) {
      this.done = true;
      return DONE;
    }
    return { item: result.value, index: this.index++ };
  }

  /**
   * Stops pulling and lets the input clean up (`return()`, which runs a generator's `finally`).
   * Errors from `return()` are ignored: the caller is already leaving, usually with an error.
   */
  async close(): Promise<void> {
    if (this.done) return;
    this.done = true;
    try {
      if (this.#iterator !== undefined) {
        this.#iterator.return?.();
      } else if (this.#asyncIterator !== undefined) {
        const iterator = this.#asyncIterator;
        // Wait for a pull under way: async generators queue `return()` behind it anyway.
        await this.#tail;
        await iterator.return?.();
      }
    } catch {
      // see above
    }
  }
}
