/**
 * A FIFO queue on a ring buffer: O(1) push and shift, no per-item node (a linked list costs an
 * object per item, `Array#shift` on a large array costs a copy), and it shrinks back after a burst.
 *
 * Invariants: `buf.length` is a power of two; the live items are `buf[head..head+size)` modulo
 * the length; every other slot is `undefined`, so a shifted item is never retained.
 */
export class Deque<T> {
  #buf: (T | undefined)[];
  #mask: number;
  #head = 0;
  #size = 0;

  constructor(initialCapacity = 16) {
    let cap = 16;
    while (cap < initialCapacity) cap *= 2;
    this.#buf = new Array<T | undefined>(cap);
    this.#mask = cap - 1;
  }

  get size(): number {
    return this.#size;
  }

  push(item: T): void {
    if (this.#size === this.#buf.length) this.#resize(this.#buf.length * 2);
    this.#buf[(this.#head + this.#size) & this.#mask] = item;
    this.#size++;
  }

  /** Puts `item` at the front, to be shifted out next. */
  unshift(item: T): void {
    if (this.#size === this.#buf.length) this.#resize(this.#buf.length * 2);
    this.#head = (this.#head - 1) & this.#mask;
    this.#buf[this.#head] = item;
    this.#size++;
  }

  /** Removes and returns the oldest item, or `undefined` when empty. */
  shift(): T | undefined {
    if (this.#size === 0) return undefined;
    const item = this.#buf[this.#head];
    this.#buf[this.#head] = undefined;
    this.#head = (this.#head + 1) & this.#mask;
    this.#size--;
    // Give the memory of a burst back, but not so eagerly that a queue hovering at one size
    // reallocates on every push/shift pair.
    if (this.#size < this.#buf.length >>> 2 && this.#buf.length > 1024) {
      this.#resize(this.#buf.length >>> 1);
    }
    return item;
  }

  /** The oldest item, without removing it. */
  peek(): T | undefined {
    return this.#size === 0 ? undefined : this.#buf[this.#head];
  }

  /** Keeps only the items for which `keep` returns true, in order. */
  filter(keep: (item: T) => boolean): void {
    const items: T[] = [];
    for (const item of this) if (keep(item)) items.push(item);
    this.clear();
    for (const item of items) this.push(item);
  }

  /** Removes every item and returns them, oldest first. */
  drain(): T[] {
    const items = [...this];
    this.clear();
    return items;
  }

  clear(): void {
    this.#buf = new Array<T | undefined>(16);
    this.#mask = 15;
    this.#head = 0;
    this.#size = 0;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = 0; i < this.#size; i++) yield this.#buf[(this.#head + i) & this.#mask] as T;
  }

  #resize(capacity: number): void {
    const next = new Array<T | undefined>(capacity);
    for (let i = 0; i < this.#size; i++) next[i] = this.#buf[(this.#head + i) & this.#mask];
    this.#buf = next;
    this.#mask = capacity - 1;
    this.#head = 0;
  }
}
