/**
 * Timeouts of many things at once, on one timer: a list kept in order of when each is due, and a
 * single `Timer` for the first. A limiter's attempts share one timeout, so each new one is due
 * last and joins at the tail in O(1); leaving is an unlink in O(1). A timer per attempt (what this
 * replaces) cost a timer object, two closures and a timer-list insertion and removal for every
 * request, a measurable share of a fast HTTP request's cost.
 *
 * Invariants: the list is in order of `due` (ties in the order they were added); the timer is
 * armed while the list is not empty, for a time no later than the first entry's `due`, and not
 * armed while it is empty; an entry expires at its `due` on the clock, never before.
 */
import { Timer, type Clock } from './_clock.ts';

/** What a {@link Deadlines} list holds: the links live in the entry, so joining allocates nothing. */
export class Due {
  /** When it expires, on the list's clock. */
  due = 0;
  /** Whether it is in a list. */
  listed = false;
  prevDue: Due | undefined = undefined;
  nextDue: Due | undefined = undefined;
}

export class Deadlines<T extends Due> {
  readonly #clock: Clock;
  readonly #expire: (entry: T) => void;
  #head: Due | undefined = undefined;
  #tail: Due | undefined = undefined;
  #timer: Timer | undefined = undefined;
  /** When the timer fires (Infinity when it is not armed). */
  #armedFor = Infinity;

  /** `expire(entry)` is called when an entry's time comes; the entry has left the list by then. */
  constructor(clock: Clock, expire: (entry: T) => void) {
    this.#clock = clock;
    this.#expire = expire;
  }

  /** Puts `entry` in the list, due `ms` from now. */
  add(entry: T, ms: number): void {
    const due = this.#clock.now() + ms;
    entry.due = due;
    entry.listed = true;
    let before = this.#tail;
    while (before !== undefined && before.due > due) before = before.prevDue;
    entry.prevDue = before;
    entry.nextDue = before === undefined ? this.#head : before.nextDue;
    if (entry.nextDue === undefined) this.#tail = entry;
    else entry.nextDue.prevDue = entry;
    if (before === undefined) {
      this.#head = entry;
      if (due < this.#armedFor) this.#arm(due);
    } else {
      before.nextDue = entry;
    }
  }

  /** Takes `entry` out of the list (it will not expire); nothing if it is not in one. */
  remove(entry: T): void {
    if (!entry.listed) return;
    this.#unlink(entry);
    // The timer is left for the next entry's time to check, unless nothing is left to time.
    if (this.#head === undefined && this.#timer !== undefined) {
      this.#timer.cancel();
      this.#timer = undefined;
      this.#armedFor = Infinity;
    }
  }

  #unlink(entry: Due): void {
    entry.listed = false;
    const { prevDue, nextDue } = entry;
    if (prevDue === undefined) this.#head = nextDue;
    else prevDue.nextDue = nextDue;
    if (nextDue === undefined) this.#tail = prevDue;
    else nextDue.prevDue = prevDue;
    entry.prevDue = entry.nextDue = undefined;
  }

  #arm(due: number): void {
    this.#timer?.cancel();
    this.#armedFor = due;
    this.#timer = new Timer(this.#clock, due - this.#clock.now(), this.#fire);
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#armedFor = Infinity;
    const now = this.#clock.now();
    let entry = this.#head;
    while (entry !== undefined && entry.due <= now) {
      this.#unlink(entry);
      this.#expire(entry as T);
      entry = this.#head;
    }
    if (entry !== undefined && entry.due < this.#armedFor) this.#arm(entry.due);
  };
}
