import { setTimeout as delay } from 'node:timers/promises';

/** What {@link within} rejects with. */
export class Stalled extends Error {}

/** Rejects with `Stalled` if `promise` has not settled within `ms`, rather than letting a test hang. */
export async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  const timer = new AbortController();
  try {
    return await Promise.race([
      promise,
      delay(ms, undefined, { signal: timer.signal }).then(() => {
        throw new Stalled(`${what} did not happen within ${ms}ms`);
      }),
    ]);
  } finally {
    timer.abort();
  }
}
