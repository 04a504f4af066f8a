/**
 * The wall clock stepped by hand, as NTP, a resumed VM or an administrator steps it: `Date.now()`
 * (and `new Date()`) jump by `ms` while the monotonic clock and Node's timers go on untouched. What
 * measures an interval or a deadline must not notice.
 */

/** Steps this process's wall clock by `ms` (negative: back); returns a function that undoes it. */
export function stepWallClock(ms: number): () => void {
  const real = Date.now;
  Date.now = () => real() + ms;
  return () => {
    Date.now = real;
  };
}
