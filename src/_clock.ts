/**
 * Time as a parameter. Everything in sluice that waits takes a `Clock`, so tests can drive time by
 * hand (tables over named instants, never sleeps) and production uses the real one.
 */

/**
 * The longest delay a timer is armed for at once: what Node's timers take (2^31 - 1 ms, about 24.8
 * days). Node turns a longer delay into 1 ms, with a TimeoutOverflowWarning each time: a wait of 30
 * days would become a busy loop. Every timer of the library is armed here (`Timer`, and the system
 * clock's own), for at most this long, and re-armed for what is left when it fires.
 */
export const MAX_TIMER_DELAY = 2 ** 31 - 1;

/** An opaque timer handle, as returned by the clock's `setTimeout`. */
export type TimerHandle = unknown;

/** A source of time and timers. Durations and instants are milliseconds. */
export interface Clock {
  /** A monotonic reading in milliseconds (the default is `performance.now()`). */
  now(): number;
  /**
   * Calls `callback` after about `ms` milliseconds. A clock's timer may fire early or late: code
   * that must not act early re-reads `now()` when it fires. sluice never asks for more than
   * `MAX_TIMER_DELAY` at once.
   */
  setTimeout(callback: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

interface PreciseTimer {
  timeout: ReturnType<typeof setTimeout> | undefined;
  immediate: ReturnType<typeof setImmediate> | undefined;
}

/**
 * How long before its target a timer is set to fire, in ms. Node's timers have millisecond
 * resolution and fire up to ~1.5 ms early (typically ~0.3 ms early) or late against
 * `performance.now()`. A rate of 10 per 100 ms loses 10% of its starts to 1 ms of lateness, and
 * breaks its limit with 1 ms of earliness. So the timer is aimed a little before the target and
 * the rest is covered by `setImmediate` turns (I/O is still served). 0.6 ms halves the polling of
 * a 1 ms lead (10% of a core instead of 20% at 100 wake-ups a second, measured) with no loss of
 * rate; 0.3 ms started to lose starts to late timers.
 */
const SPIN = 0.6;

/**
 * A timer precise to the tens of microseconds: the system clock's. See `SPIN`.
 */
function preciseTimeout(callback: () => void, ms: number): PreciseTimer {
  const target = performance.now() + ms;
  const timer: PreciseTimer = { timeout: undefined, immediate: undefined };
  const check = (): void => {
    timer.timeout = timer.immediate = undefined;
    const remaining = target - performance.now();
    if (remaining <= 0) callback();
    else arm(remaining);
  };
  const arm = (left: number): void => {
    if (left > SPIN + 1) timer.timeout = setTimeout(check, Math.min(left - SPIN, MAX_TIMER_DELAY));
    else timer.immediate = setImmediate(check);
  };
  arm(ms);
  return timer;
}

/** The real clock: `performance.now()` and timers precise to about 20 µs. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: preciseTimeout,
  clearTimeout: (handle) => {
    const timer = handle as PreciseTimer;
    if (timer.timeout !== undefined) clearTimeout(timer.timeout);
    if (timer.immediate !== undefined) clearImmediate(timer.immediate);
    timer.timeout = timer.immediate = undefined;
  },
};

/**
 * The real clock with Node's own timers, no polling: a `Timer` on it is never early (it re-reads
 * `now()`) and may be late by a millisecond or two. For waits whose instant is decided and counted
 * elsewhere (a shared rate's slots, booked on Redis's clock), where the system clock's polling
 * would cost a share of a core for every hundred starts a second and buy nothing.
 */
export const coarseClock: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

/**
 * A timer that never fires before its time on `clock`: when the clock's timer fires early, it
 * re-reads `now()` and waits out the rest. (The system clock is already precise; an injected one
 * need not be.) A delay longer than `MAX_TIMER_DELAY` is waited out in steps of at most that, so
 * any clock's timer is asked only for delays it can keep. The one way the library waits.
 */
export class Timer {
  readonly #clock: Clock;
  readonly #callback: () => void;
  readonly #due: number;
  #handle: TimerHandle = undefined;

  constructor(clock: Clock, ms: number, callback: () => void) {
    this.#clock = clock;
    this.#callback = callback;
    this.#due = clock.now() + ms;
    this.#arm(ms);
  }

  /** Stops it; it will not fire. */
  cancel(): void {
    if (this.#handle !== undefined) this.#clock.clearTimeout(this.#handle);
    this.#handle = undefined;
  }

  #arm(ms: number): void {
    this.#handle = this.#clock.setTimeout(
      () => {
        const left = this.#due - this.#clock.now();
        if (left > 0) {
          this.#arm(left);
          return;
        }
        this.#handle = undefined;
        this.#callback();
      },
      Math.min(ms, MAX_TIMER_DELAY),
    );
  }
}

/** Stops a {@link later} or {@link every} timer (idempotent). */
export type Cancel = () => void;

/**
 * Calls `callback` once, about `ms` from now, on Node's own timer (no sub-millisecond precision:
 * for housekeeping, grace periods and timeouts of whole processes). A delay longer than
 * `MAX_TIMER_DELAY` is armed in steps. `unref`: the timer does not keep the process alive.
 * Counted on the monotonic clock, as Node's timers are: a step of the wall clock (NTP, a resumed
 * VM) must not postpone a renewal or a deadline (a lease would lapse while its holder runs).
 */
export function later(ms: number, callback: () => void, unref = false): Cancel {
  const due = performance.now() + ms;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = (left: number): void => {
    timer = setTimeout(fire, Math.min(Math.max(left, 0), MAX_TIMER_DELAY));
    if (unref) timer.unref();
  };
  const fire = (): void => {
    const left = due - performance.now();
    if (left > 0) arm(left);
    else {
      timer = undefined;
      callback();
    }
  };
  arm(ms);
  return () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
}

/** Calls `callback` every `ms` (at most `MAX_TIMER_DELAY`) until cancelled; see {@link later}. */
export function every(ms: number, callback: () => void, unref = false): Cancel {
  const timer = setInterval(callback, Math.min(ms, MAX_TIMER_DELAY));
  if (unref) timer.unref();
  return () => {
    clearInterval(timer);
  };
}
