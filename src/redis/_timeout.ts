/**
 * The one bound on a Redis call, for every shared gate: a connection that stays open while Redis
 * says nothing (a stopped or overloaded server, a half-open connection after a partition) never
 * fails a call by itself, and every promise must settle.
 *
 * Invariant: the promise returned settles within about `ms` (a timer on the monotonic clock); an
 * answer that comes later goes to `late` (what Redis did still happened), an error that comes later
 * is dropped (the call was already failed).
 */
import { later } from '../_clock.ts';
import { TimeoutError } from '../errors.ts';

/**
 * Resolves with `call`'s answer, or rejects with its error, or with a `TimeoutError` ("Redis did
 * not answer within `ms`ms (`what`)") if it is not answered within `ms`.
 */
export function answerWithin<T>(
  call: Promise<T>,
  ms: number,
  what: string,
  late?: (answer: T) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timedOut = false;
    const stopTimer = later(
      ms,
      () => {
        timedOut = true;
        reject(new TimeoutError(`Redis did not answer within ${ms}ms (${what})`, ms));
      },
      true,
    );
    call.then(
      (answer) => {
        stopTimer();
        if (timedOut) late?.(answer);
        else resolve(answer);
      },
      (error: unknown) => {
        stopTimer();
        reject(error);
      },
    );
  });
}
