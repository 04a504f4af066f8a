/**
 * Time as a parameter. Everything in sluice that waits takes a `Clock`, so tests can drive time by
 * hand (tables over named instants, never sleeps) and production uses the real one.
 */

/** An opaque timer handle, as returned by the clock's `setTimeout`. */
export type TimerHandle = unknown;

/** A source of time and timers. Durations and instants are milliseconds. */
export interface Clock {
  /** A monotonic reading in milliseconds (the default is `performance.now()`). */
  now(): number;
  /** Calls `callback` after about `ms` milliseconds; may fire early or late. */
  setTimeout(callback: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** The real clock: `performance.now()` and the global timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};
