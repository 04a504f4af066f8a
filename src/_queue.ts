/**
 * A line of waiters: higher priority first, FIFO within a priority, O(1) to join, to leave from
 * the front, and to withdraw from anywhere.
 *
 * Each priority band is a ring-buffer deque. Withdrawing marks the entry (`weight = 0`) instead of
 * searching for it; marks are skipped when they reach the front and swept out when they outnumber
 * the live entries, so a line where most requests time out does not grow without bound.
 *
 * Invariants: `size` counts live entries only; `weight` sums their weights; an entry is live
 * exactly when its weight is > 0; band 0 always exists, other bands only while non-empty.
 */
import { Deque } from './_deque.ts';

/** An entry of the line; `weight` 0 marks one that was withdrawn. */
export interface Entry {
  weight: number;
}

interface Band<T> {
  priority: number;
  items: Deque<T>;
}

export class PriorityQueue<T extends Entry> {
  /** Sorted by descending priority; `#band0` is always among them. */
  readonly #bands: Band<T>[];
  readonly #band0: Band<T>;
  #size = 0;
  #weight = 0;
  #marks = 0;

  constructor() {
    this.#band0 = { priority: 0, items: new Deque() };
    this.#bands = [this.#band0];
  }

  /** Live entries in line. */
  get size(): number {
    return this.#size;
  }

  /** Total weight of the live entries. */
  get weight(): number {
    return this.#weight;
  }

  push(entry: T, priority = 0): void {
    this.#size++;
    this.#weight += entry.weight;
    if (priority === 0) {
      this.#band0.items.push(entry);
      return;
    }
    const bands = this.#bands;
    let i = 0;
    while (i < bands.length && bands[i]!.priority > priority) i++;
    let band = bands[i];
    if (band?.priority !== priority) {
      band = { priority, items: new Deque() };
      bands.splice(i, 0, band);
    }
    band.items.push(entry);
  }

  /** The first live entry, without removing it. */
  peek(): T | undefined {
    // The common case, one band and no marks, without a loop.
    if (this.#marks === 0 && this.#bands.length === 1) return this.#band0.items.peek();
    return this.#frontBand()?.items.peek();
  }

  /** Removes and returns the first live entry. */
  shift(): T | undefined {
    const band = this.#marks === 0 && this.#bands.length === 1 ? this.#band0 : this.#frontBand();
    const entry = band?.items.shift();
    if (entry !== undefined) {
      this.#size--;
      this.#weight -= entry.weight;
    }
    return entry;
  }

  /** Withdraws a live entry from wherever it stands; sets its weight to 0. */
  withdraw(entry: T): void {
    if (entry.weight === 0) return;
    this.#size--;
    this.#weight -= entry.weight;
    entry.weight = 0;
    this.#marks++;
    if (this.#marks > 32 && this.#marks > this.#size) this.#sweep();
  }

  /** The live entry of the lowest priority that has waited longest, with its priority. */
  oldestOfLowest(): { entry: T; priority: number } | undefined {
    for (let i = this.#bands.length - 1; i >= 0; i--) {
      const band = this.#bands[i]!;
      for (const entry of band.items)
        if (entry.weight > 0) return { entry, priority: band.priority };
    }
    return undefined;
  }

  /** Removes and returns every live entry, in line order. */
  drain(): T[] {
    const entries: T[] = [];
    for (const band of this.#bands)
      for (const entry of band.items.drain()) if (entry.weight > 0) entries.push(entry);
    this.#bands.length = 0;
    this.#bands.push(this.#band0);
    this.#size = this.#weight = this.#marks = 0;
    return entries;
  }

  /** Live entries in line order. */
  *[Symbol.iterator](): IterableIterator<T> {
    for (const band of this.#bands)
      for (const entry of band.items) if (entry.weight > 0) yield entry;
  }

  /** The first band with a live entry at its front, sweeping marks off fronts on the way. */
  #frontBand(): Band<T> | undefined {
    const bands = this.#bands;
    for (let i = 0; i < bands.length; i++) {
      const band = bands[i]!;
      let entry = band.items.peek();
      while (entry?.weight === 0) {
        band.items.shift();
        this.#marks--;
        entry = band.items.peek();
      }
      if (entry !== undefined) return band;
      if (band !== this.#band0) {
        bands.splice(i, 1);
        i--;
      }
    }
    return undefined;
  }

  #sweep(): void {
    for (const band of this.#bands) band.items.filter((entry) => entry.weight > 0);
    this.#marks = 0;
  }
}
