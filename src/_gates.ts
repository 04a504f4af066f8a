/**
 * Passing through several gates in a row, as one: what a limiter does with the gates it is given
 * (`new Limiter({ concurrency: gate, rate: [gate, …] })`) for each attempt and each `acquire()`.
 *
 * Each gate is asked in order, synchronously (`tryAcquire`) where it can answer so, else through
 * `acquire()`; a gate that cannot answer synchronously (a shared one, in Redis) has no
 * `tryAcquire`. The permits are held together and given back together, the last taken first.
 *
 * Invariants: on success, one permit per gate, in the gates' order; on failure (an abort, a
 * timeout, a gate's error), every permit taken so far is given back before the failure is told,
 * and a permit granted after the caller gave up is given back at once.
 */
import type { Clock } from './_clock.ts';
import * as v from './_validate.ts';
import { TimeoutError } from './errors.ts';
import type { AcquireOptions, Gate, Permit, ReleaseOutcome } from './gate.ts';

/** Whether `value` looks like a gate: an object with an `acquire` method. */
export function isGate(value: unknown): value is Gate {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { acquire?: unknown }).acquire === 'function'
  );
}

/** Checks that `value` is a gate; throws a TypeError naming `name` otherwise. */
export function checkGate(name: string, value: unknown): Gate {
  if (!isGate(value)) {
    throw new TypeError(
      `Expected \`${name}\` to be a gate (an object with an acquire() method), got ${v.describe(value)}`,
    );
  }
  return value;
}

/**
 * A concurrency option: an integer >= 1 or Infinity (returned as the capacity), or a gate that
 * keeps the concurrency instead (returned as the gate, with an Infinity capacity). `undefined`
 * is no limit.
 */
export function concurrencyOption(
  name: string,
  value: unknown,
): { capacity: number; gate: Gate | undefined } {
  if (value === undefined) return { capacity: Infinity, gate: undefined };
  if (typeof value === 'object' && value !== null) {
    return { capacity: Infinity, gate: checkGate(name, value) };
  }
  return { capacity: v.integer(name, value, 1, true), gate: undefined };
}

/** Gives the permits back, the last taken first. */
export function releaseAll(permits: readonly Permit[], outcome?: ReleaseOutcome): void {
  for (let i = permits.length - 1; i >= 0; i--) permits[i]!.release(outcome);
}

/** One timeout for a whole acquisition: the caller's `timeout`, ending at `at` on `clock`. */
export interface Deadline {
  clock: Clock;
  at: number;
  timeout: number;
}

/**
 * Takes a permit of every gate in `gates` from `from` on, appending them to `held`. Returns
 * `held` when every gate answered at once, else a promise of it. Throws (or rejects) after giving
 * back what it took, `held` included. With a `deadline`, each gate waits only for what is left of
 * it (not the whole timeout each), and a gate's timeout is told as the caller's.
 */
export function passGates(
  gates: readonly Gate[],
  options: AcquireOptions,
  held: Permit[] = [],
  from = 0,
  deadline?: Deadline,
): Permit[] | Promise<Permit[]> {
  const signal = options.signal;
  for (let i = from; i < gates.length; i++) {
    const gate = gates[i]!;
    let permit: Permit | undefined;
    try {
      if (signal?.aborted === true) throw signal.reason;
      permit = gate.tryAcquire?.(options.weight ?? 1);
    } catch (error) {
      releaseAll(held);
      throw error;
    }
    if (permit === undefined) {
      const left =
        deadline === undefined
          ? options.timeout
          : Math.max(0, Math.ceil(deadline.at - deadline.clock.now()));
      return gate.acquire(deadline === undefined ? options : { ...options, timeout: left }).then(
        (granted) => {
          held.push(granted);
          if (signal?.aborted === true) {
            releaseAll(held);
            throw signal.reason;
          }
          return passGates(gates, options, held, i + 1, deadline);
        },
        (error: unknown) => {
          releaseAll(held);
          if (deadline !== undefined && error instanceof TimeoutError && error.timeout === left) {
            throw new TimeoutError(
              `acquire timed out after ${deadline.timeout}ms (at gate ${i + 1} of ${gates.length}: ${error.message})`,
              deadline.timeout,
              { cause: error },
            );
          }
          throw error;
        },
      );
    }
    held.push(permit);
  }
  return held;
}

/**
 * Takes a permit of every gate in `gates` now, appending them to `held`, or nothing: returns
 * undefined (after giving back everything, `held` included) as soon as a gate cannot answer at
 * once, or has no room; throws (after the same) what a gate throws.
 */
export function tryPassGates(
  gates: readonly Gate[],
  weight: number,
  held: Permit[],
): Permit[] | undefined {
  for (const gate of gates) {
    let permit: Permit | undefined;
    try {
      permit = gate.tryAcquire?.(weight);
    } catch (error) {
      releaseAll(held);
      throw error;
    }
    if (permit === undefined) {
      releaseAll(held);
      return undefined;
    }
    held.push(permit);
  }
  return held;
}

/** Several permits held as one: released together, the last taken first. */
export class PermitGroup implements Permit {
  readonly weight: number;
  readonly #permits: readonly Permit[];
  #released = false;

  constructor(weight: number, permits: readonly Permit[]) {
    this.weight = weight;
    this.#permits = permits;
  }

  /** Aborts when any of its permits is lost. */
  get signal(): AbortSignal {
    const signals = this.#permits.map((permit) => permit.signal);
    return signals.length === 1 ? signals[0]! : AbortSignal.any(signals);
  }

  release(outcome?: ReleaseOutcome): void {
    if (this.#released) return;
    this.#released = true;
    releaseAll(this.#permits, outcome);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.release();
    return Promise.resolve();
  }
}
