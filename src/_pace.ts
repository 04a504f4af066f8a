/**
 * Rate windows as pure state machines over explicit instants: no timers, no queue. The gates ask
 * `delay(weight, now)` before a start and call `commit(weight, at)` when it happens.
 *
 * Two kinds of window:
 * - `Spacing` (GCRA, the default): starts are spaced `interval / limit` apart, with up to `burst`
 *   at once. In any window of `interval` there are at most `limit + burst - 1` starts.
 * - `SlidingLog` (`window: 'sliding'`): up to `limit` at once, and never more than `limit` in any
 *   window of `interval`: a ring of the last `limit` start instants.
 *
 * Invariant shared by both: a start admitted at `now` (delay 0) keeps its window's bound, counting
 * a start of weight w as w starts at the same instant. A refused check changes nothing.
 */
import type { Rate } from './_parse.ts';

/** An admission condition a gate consults before each start. */
export interface Pacer {
  /** The heaviest start it can ever admit (unlimited when absent). */
  readonly maxWeight?: number;
  /** Milliseconds until `weight` may start, seen at `now`: 0 for now, Infinity for "not on its own". */
  delay(weight: number, now: number): number;
  /** Records a start of `weight` at `at` (now, or the future instant a reservation booked). */
  commit(weight: number, at: number): void;
  /** Told when permits of a start it admitted are given back (for a pacer that lends slots). */
  release?(weight: number): void;
  /**
   * Told that a start committed at `bookedAt` really began at `startedAt` (later: its code ran
   * after the caller's own synchronous work, or after a preemption). Windows count it from then,
   * so the limit holds for starts as the code that makes them sees them.
   */
  restamp?(weight: number, bookedAt: number, startedAt: number): void;
  /**
   * True while neither `delay()` nor `commit()` depends on the instant given: the gate need not
   * read the clock for them (a start then has no `grantedAt` that matters).
   */
  readonly timeless?: boolean;
}

/** Undoes one commit, if nothing was committed after it. */
export type Undo = () => boolean;

export interface Window extends Pacer {
  restamp(weight: number, bookedAt: number, startedAt: number): void;
  readonly rate: Rate;
  /** The heaviest start this window can ever admit. */
  readonly maxWeight: number;
  /** Like `commit`, returning how to take it back. */
  book(weight: number, at: number): Undo;
}

/**
 * How long from `now` until `at`, such that `now + delay` is not before `at`: the difference
 * alone may round to an instant a hair before it (11.999999999999098 + 50 ms), and a start booked
 * there would share a window with the start that ends it. The one place where an instant a
 * window (or a shared rate's slot) allows becomes a delay.
 */
export function until(at: number, now: number): number {
  if (!(at > now)) return 0;
  const delay = at - now;
  return now + delay >= at ? delay : delay + Number.EPSILON * Math.abs(at);
}

/**
 * GCRA (the generic cell rate algorithm of ATM networks, the leaky bucket as a meter): a
 * theoretical arrival time `tat` advances by `interval / limit` per start. A start at `now` is
 * admitted when `max(tat, now) + (weight - burst) * T <= now`.
 */
export class Spacing implements Window {
  readonly rate: Rate;
  readonly maxWeight: number;
  /**
   * The emission interval, a hair above interval / limit so that rounding can never put `limit`
   * spacings under `interval` (that hair costs a billionth of the throughput).
   */
  readonly #t: number;
  #tat = -Infinity;
  #commits = 0;

  constructor(rate: Rate, burst: number) {
    this.rate = rate;
    this.maxWeight = burst;
    this.#t = (rate.interval / rate.limit) * (1 + 1e-9);
  }

  delay(weight: number, now: number): number {
    const allowAt = Math.max(this.#tat, now) + (weight - this.maxWeight) * this.#t;
    return until(allowAt, now);
  }

  commit(weight: number, at: number): void {
    this.#tat = Math.max(this.#tat, at) + weight * this.#t;
    this.#commits++;
  }

  restamp(weight: number, _bookedAt: number, startedAt: number): void {
    // What the commit would have made of it, had it been made at `startedAt`; later commits
    // only ever moved `tat` further.
    this.#tat = Math.max(this.#tat, startedAt + weight * this.#t);
  }

  book(weight: number, at: number): Undo {
    const before = this.#tat;
    this.commit(weight, at);
    const after = this.#tat;
    const commits = this.#commits;
    return () => {
      if (this.#commits !== commits || this.#tat !== after) return false;
      this.#tat = before;
      this.#commits++;
      return true;
    };
  }
}

/**
 * A sliding log: the instants of the last `limit` unit starts, oldest first, in a ring. A start of
 * weight w is admitted when the w-th oldest of them has left the window (and never before the
 * newest, so that booked future starts keep the log in order).
 */
export class SlidingLog implements Window {
  readonly rate: Rate;
  readonly maxWeight: number;
  readonly #log: Float64Array;
  #head = 0;
  #commits = 0;

  constructor(rate: Rate) {
    this.rate = rate;
    this.maxWeight = rate.limit;
    this.#log = new Float64Array(rate.limit).fill(-Infinity);
  }

  delay(weight: number, now: number): number {
    const log = this.#log;
    if (weight > log.length) return Infinity; // heavier than the limit: never (callers reject it)
    const wthOldest = log[(this.#head + weight - 1) % log.length]!;
    const newest = log[(this.#head + log.length - 1) % log.length]!;
    const allowAt = Math.max(wthOldest + this.rate.interval, newest);
    return until(allowAt, now);
  }

  commit(weight: number, at: number): void {
    const log = this.#log;
    for (let i = 0; i < weight; i++) {
      log[this.#head] = at;
      this.#head = (this.#head + 1) % log.length;
    }
    this.#commits++;
  }

  restamp(_weight: number, bookedAt: number, startedAt: number): void {
    // Every entry booked at or after `bookedAt` but stamped before `startedAt` moves up to it:
    // later, so never less strict, and the log stays in order.
    const log = this.#log;
    for (let i = 1; i <= log.length; i++) {
      const at = (this.#head + log.length - i) % log.length;
      const entry = log[at]!;
      if (entry < bookedAt) break;
      if (entry < startedAt) log[at] = startedAt;
    }
  }

  book(weight: number, at: number): Undo {
    const log = this.#log;
    const overwritten = Array.from(
      { length: weight },
      (_, i) => log[(this.#head + i) % log.length]!,
    );
    this.commit(weight, at);
    const commits = this.#commits;
    return () => {
      if (this.#commits !== commits) return false;
      for (let i = weight; i > 0; i--) {
        this.#head = (this.#head + log.length - 1) % log.length;
        log[this.#head] = overwritten[i - 1]!;
      }
      this.#commits++;
      return true;
    };
  }

  /** The instants logged, a unit start each, in the order they were committed. */
  starts(): number[] {
    const log = this.#log;
    const starts: number[] = [];
    for (let i = 0; i < log.length; i++) {
      const at = log[(this.#head + i) % log.length]!;
      if (at !== -Infinity) starts.push(at);
    }
    return starts;
  }

  /** A log for another limit over the same history: the most recent starts carry over. */
  resized(rate: Rate): SlidingLog {
    const next = new SlidingLog(rate);
    const log = this.#log;
    const keep = Math.min(log.length, rate.limit);
    for (let i = keep; i > 0; i--) {
      const at = log[(this.#head + log.length - i) % log.length]!;
      if (at !== -Infinity) next.commit(1, at);
    }
    return next;
  }
}

/**
 * How many of the latest starts a pace remembers for the windows of a later rate change: at
 * least `HISTORY_MIN` (a raised limit over a longer interval needs more than the current largest
 * limit), twice the largest limit, and never more than `HISTORY_MAX` (a change to a rate of more
 * than that per window counts only that many of the starts before it).
 */
const HISTORY_MIN = 64;
const HISTORY_MAX = 4096;

function historyFor(windows: readonly Window[], previous?: SlidingLog): SlidingLog {
  let limit = HISTORY_MIN;
  for (const window of windows) limit = Math.max(limit, 2 * window.rate.limit);
  const rate = { limit: Math.min(limit, HISTORY_MAX), interval: Infinity };
  return previous === undefined ? new SlidingLog(rate) : previous.resized(rate);
}

/**
 * Several windows checked and committed together: a start is admitted only when every window
 * allows it, and a refused window consumes nothing. Plus a pause, for a server's Retry-After.
 *
 * It remembers the latest starts (as many as the largest limit), so that windows that replace its
 * own (a rate changed at run time) count them: see `replace()`.
 */
export class Pace implements Pacer {
  windows: Window[];
  /** No start before this instant (Infinity: paused until resumed). */
  pausedUntil = -Infinity;
  /** The latest starts, booked reservations included, a unit each (made with the first window). */
  #history: SlidingLog | undefined;

  constructor(windows: Window[]) {
    this.windows = windows;
    if (windows.length > 0) this.#history = historyFor(windows);
  }

  /**
   * Puts fresh windows (of a new rate) in place of the current ones, each made to count the
   * starts remembered as if it had been in force for them, in the order they happened: a start
   * after the change keeps the new bound in every window that holds it, starts before the change
   * and reservations already booked included. One step: nothing is admitted between the two.
   */
  replace(windows: Window[]): void {
    const starts = this.#history?.starts().sort((a, b) => a - b) ?? [];
    for (const window of windows) for (const at of starts) window.commit(1, at);
    this.windows = windows;
    this.#history = historyFor(windows, this.#history);
  }

  /** The heaviest start every window can admit. */
  get maxWeight(): number {
    let max = Infinity;
    for (const window of this.windows) max = Math.min(max, window.maxWeight);
    return max;
  }

  /** No window, and no pause ever set: see `Pacer.timeless`. */
  get timeless(): boolean {
    return this.windows.length === 0 && this.pausedUntil === -Infinity;
  }

  // Indexed loops: these run on every start, and a `for … of` costs an iterator each time until
  // the code is optimised.
  delay(weight: number, now: number): number {
    let delay = until(this.pausedUntil, now);
    const windows = this.windows;
    for (let i = 0; i < windows.length; i++) {
      const d = windows[i]!.delay(weight, now);
      if (d > delay) delay = d;
    }
    return delay;
  }

  commit(weight: number, at: number): void {
    const windows = this.windows;
    if (windows.length === 0) return;
    for (let i = 0; i < windows.length; i++) windows[i]!.commit(weight, at);
    this.#history?.commit(weight, at);
  }

  restamp(weight: number, bookedAt: number, startedAt: number): void {
    if (startedAt <= bookedAt) return;
    for (const window of this.windows) window.restamp(weight, bookedAt, startedAt);
    this.#history?.restamp(weight, bookedAt, startedAt);
  }

  /** Whether, from `now` on, this pace remembers nothing that could hold a start back. */
  settledBy(now: number): boolean {
    if (this.pausedUntil > now) return false;
    for (const window of this.windows) if (window.delay(window.maxWeight, now) > 0) return false;
    return true;
  }

  book(weight: number, at: number): Undo {
    const windows = this.windows;
    const undos = windows.map((window) => window.book(weight, at));
    if (this.#history !== undefined) undos.push(this.#history.book(weight, at));
    // Windows replaced since (a new rate) counted this booking as a start: it stays one.
    return () => this.windows === windows && undos.map((undo) => undo()).every(Boolean);
  }
}
