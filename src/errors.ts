/**
 * The errors sluice throws. Each has a stable `code` to branch on and a `name` that matches its
 * class, so `err.name === 'TimeoutError'` and `err instanceof TimeoutError` agree.
 *
 * Argument errors are plain `TypeError` / `RangeError` (see `_validate.ts`); these classes are for
 * what happens at run time.
 */

/** The base class of every error sluice raises at run time. */
export class SluiceError extends Error {
  /** A stable, machine-readable identifier, e.g. `'ERR_SLUICE_TIMEOUT'`. */
  readonly code: string;

  constructor(message: string, code: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An operation took longer than its `timeout`. */
export class TimeoutError extends SluiceError {
  /** The timeout that elapsed, in milliseconds. */
  readonly timeout: number;

  constructor(message: string, timeout: number, options?: ErrorOptions) {
    super(message, 'ERR_SLUICE_TIMEOUT', options);
    this.timeout = timeout;
  }
}

/** The gate or limiter was closed before the operation could run. */
export class ClosedError extends SluiceError {
  constructor(message = 'closed', options?: ErrorOptions) {
    super(message, 'ERR_SLUICE_CLOSED', options);
  }
}

/** A bounded queue was full and its overflow policy said to refuse. */
export class QueueFullError extends SluiceError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'ERR_SLUICE_QUEUE_FULL', options);
  }
}

/**
 * A client-side throttle refused the request before it was sent: the server had been refusing
 * most requests (see the `throttle` option of `adaptive()`).
 */
export class ThrottledError extends SluiceError {
  /** The odds of a refusal when this one was drawn. */
  readonly probability: number;

  constructor(message: string, probability: number, options?: ErrorOptions) {
    super(message, 'ERR_SLUICE_THROTTLED', options);
    this.probability = probability;
  }
}

/** Every attempt failed; `cause` is the last attempt's error. */
export class RetryError extends SluiceError {
  /** How many attempts were made, the first one included. */
  readonly attempts: number;

  constructor(message: string, attempts: number, options?: ErrorOptions) {
    super(message, 'ERR_SLUICE_RETRY', options);
    this.attempts = attempts;
  }
}

/**
 * A shared permit was lost: its lease could not be renewed before its deadline (Redis did not
 * answer in time, or no longer had it). The permit's `signal` aborts with this error; the work
 * it guarded should stop, as another process may hold the permit now.
 */
export class LeaseLostError extends SluiceError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'ERR_SLUICE_LEASE_LOST', options);
  }
}

/**
 * The `AbortError` sluice uses when it cancels queued work itself (`clearQueue()`, a dropped task):
 * a `DOMException` like the one `AbortSignal.abort()` produces, so code that checks
 * `err.name === 'AbortError'` handles both alike.
 */
export function abortError(message: string): DOMException {
  return new DOMException(message, 'AbortError');
}
