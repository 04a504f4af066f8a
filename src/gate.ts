/**
 * The gate contract: what every limiting primitive (in-memory or shared) promises, and all that the
 * layers above it use. Swapping one gate for another is a constructor argument, not a rewrite.
 */

/** Options for {@link Gate.acquire}. */
export interface AcquireOptions {
  /** How many permits to take at once. @default 1 */
  weight?: number;
  /** Higher priorities are served first; FIFO among equals. @default 0 */
  priority?: number;
  /** Aborting it withdraws the request: the promise rejects with `signal.reason`. */
  signal?: AbortSignal | undefined;
  /** Milliseconds to wait before giving up with a `TimeoutError`. @default Infinity */
  timeout?: number;
}

/** What a holder reports on release, so an adaptive gate can learn from it. */
export interface ReleaseOutcome {
  /** Whether the guarded work succeeded. */
  ok: boolean;
  /** The remote side refused or shed the work (a 429, a 503, a timeout). */
  dropped?: boolean;
  /** How long the guarded work took, in milliseconds. */
  latencyMs?: number;
}

/**
 * A permission to proceed, held until released. Releasing is idempotent, and `using` releases it
 * at the end of the block: `using permit = await gate.acquire();`.
 */
export interface Permit extends Disposable, AsyncDisposable {
  /** Gives the permit back. Calling it again does nothing. */
  release(outcome?: ReleaseOutcome): void;
  /** How many permits this one stands for. */
  readonly weight: number;
  /** Aborted if the permit is lost before release (a shared lease that could not be renewed). */
  readonly signal: AbortSignal;
}

/**
 * A limiting primitive: something you acquire before doing work and release after. A gate whose
 * backend cannot answer at once (a shared one, in Redis) has only the asynchronous path,
 * `acquire()`; an in-memory gate also answers synchronously (`tryAcquire`, see {@link SyncGate}).
 * The layers above ask `tryAcquire` where there is one, and `acquire()` otherwise.
 */
export interface Gate {
  /**
   * Waits for permission. Rejects with `signal.reason` when aborted and with a `TimeoutError` when
   * the timeout elapses, leaving the gate exactly as if it had never been called.
   */
  acquire(options?: AcquireOptions): Promise<Permit>;
  /**
   * Takes a permit only if one is free now and nobody is waiting; never barges past waiters.
   * Absent on gates that cannot answer synchronously.
   */
  tryAcquire?(weight?: number): Permit | undefined;
  /**
   * The same as `tryAcquire`, for a gate that must ask its backend (a shared one, in Redis): one
   * round trip, then a permit, or undefined when none is free now or someone is waiting.
   */
  tryAcquireAsync?(weight?: number): Promise<Permit | undefined>;
}

/** A gate that can also answer synchronously: every in-memory gate of sluice. */
export interface SyncGate extends Gate {
  tryAcquire(weight?: number): Permit | undefined;
}
