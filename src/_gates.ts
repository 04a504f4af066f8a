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
 * and a permit granted after the caller gave up is given back at once. A caller whose signal
 * aborts stops waiting then at a gate with no synchronous path (a user's, a shared one), whether
 * it heeds the signal or not; one whose timeout passed, a second later at most. A gate is any
 * object with `acquire()`, so "a gate's error" is whatever it does: throw where it should
 * reject, answer with something that is not a permit (a TypeError then), or throw as a permit is
 * released (every other permit is still given back).
 * The giving back on failure is in one place (`passGates`, around the steps that only take), and
 * `releaseAll` never throws.
 */
import { Timer, type Clock } from './_clock.ts';
import { onAbort } from './_signals.ts';
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

/**
 * Gives the permits back, the last taken first. Never throws: a permit whose `release()` throws
 * (a gate breaking its contract) keeps none of the others held, and its error is thrown again on
 * its own, out of the caller's path (it is the gate's fault, not the task's), as a listener's is.
 */
export function releaseAll(permits: readonly Permit[], outcome?: ReleaseOutcome): void {
  for (let i = permits.length - 1; i >= 0; i--) {
    try {
      permits[i]!.release(outcome);
    } catch (error) {
      v.rethrowLater(error);
    }
  }
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
 * back what it took, `held` included, whatever the failing gate did: threw, rejected, or
 * answered with something that is not a permit. With a `deadline`, each gate waits only for what
 * is left of it (not the whole timeout each), and a gate's timeout is told as the caller's.
 *
 * The one place that gives back on failure: the steps (`passFrom`) only take.
 */
export function passGates(
  gates: readonly Gate[],
  options: AcquireOptions,
  held: Permit[] = [],
  from = 0,
  deadline?: Deadline,
): Permit[] | Promise<Permit[]> {
  let passed: Permit[] | Promise<Permit[]>;
  try {
    passed = passFrom(gates, options, held, from, deadline);
  } catch (error) {
    releaseAll(held);
    throw error;
  }
  if (Array.isArray(passed)) return passed;
  return passed.then(undefined, (error: unknown) => {
    releaseAll(held);
    throw error;
  });
}

/** `passGates` without the giving back: it throws (or rejects) with `held` as it stands. */
function passFrom(
  gates: readonly Gate[],
  options: AcquireOptions,
  held: Permit[],
  from: number,
  deadline: Deadline | undefined,
): Permit[] | Promise<Permit[]> {
  const signal = options.signal;
  for (let i = from; i < gates.length; i++) {
    if (signal?.aborted === true) throw signal.reason;
    const gate = gates[i]!;
    const permit = tryGate(gates, i, options.weight ?? 1);
    if (permit !== undefined) {
      held.push(permit);
      continue;
    }
    const left =
      deadline === undefined
        ? options.timeout
        : Math.max(0, Math.ceil(deadline.at - deadline.clock.now()));
    const granting: unknown = gate.acquire(
      deadline === undefined ? options : { ...options, timeout: left },
    );
    if (!v.isThenable(granting)) {
      throw new TypeError(
        `Expected \`acquire()\` of ${gateOf(gates, i)} to return a promise of a permit, got ${v.describe(granting)}`,
      );
    }
    // Only a gate with no synchronous path is raced with the signal and the deadline: every
    // in-memory gate of sluice has one and heeds both (the contract suite checks), and the race
    // costs a promise and a watch per wait where thousands may wait at once (8% to 60% of a
    // contended in-memory gate's throughput, in noisy runs); a user's gate or a shared one waits
    // a round trip anyway.
    const raced = gate.tryAcquire === undefined;
    const bound =
      raced && deadline !== undefined ? { clock: deadline.clock, ms: left! } : undefined;
    return answerOf(granting, raced ? signal : undefined, bound).then(
      (granted) => {
        if (!isPermit(granted)) {
          throw new TypeError(
            `Expected \`acquire()\` of ${gateOf(gates, i)} to resolve to ${PERMIT}, got ${v.describe(granted)}`,
          );
        }
        held.push(granted);
        // Granted after its caller gave up: it is given back with the others.
        if (signal?.aborted === true) throw signal.reason;
        return passFrom(gates, options, held, i + 1, deadline);
      },
      (error: unknown) => {
        if (deadline !== undefined && error instanceof TimeoutError && error.timeout === left) {
          throw new TimeoutError(
            `acquire timed out after ${deadline.timeout}ms (at ${gateOf(gates, i)}: ${error.message})`,
            deadline.timeout,
            { cause: error },
          );
        }
        throw error;
      },
    );
  }
  return held;
}

/**
 * How long past the timeout it was given a gate may take to answer before its caller stops
 * waiting. One that heeds its timeout has answered by then, as a rule, so that its own error is
 * what the caller sees: a shared one answers once Redis has withdrawn the request, a round trip
 * later (if Redis is slower than this, the caller stops waiting first; the withdrawal goes on).
 */
const TIMEOUT_GRACE_MS = 1000;

/**
 * What a gate answers, or its caller's signal's reason as soon as it aborts, or a TimeoutError
 * (of `bound.ms`, the timeout the gate was given) once that timeout and `TIMEOUT_GRACE_MS` have
 * passed, whether the gate heeds the signal and its timeout or not (one that does not would keep
 * the permits taken before it until it answers, perhaps never). A permit it grants after that is
 * given back at once.
 */
function answerOf(
  granting: PromiseLike<unknown>,
  signal: AbortSignal | undefined,
  bound: { clock: Clock; ms: number } | undefined,
): Promise<unknown> {
  if (signal === undefined && bound === undefined) return Promise.resolve(granting);
  return new Promise((resolve, reject) => {
    let gaveUp = false;
    const giveUp = (reason: unknown): void => {
      if (gaveUp) return;
      gaveUp = true;
      stop();
      reject(reason);
    };
    let unwatch: (() => void) | undefined;
    let timer: Timer | undefined;
    const stop = (): void => {
      unwatch?.();
      timer?.cancel();
    };
    if (signal?.aborted === true) {
      giveUp(signal.reason); // as the gate was asked: it may not have looked
    } else {
      if (signal !== undefined)
        unwatch = onAbort(signal, () => {
          giveUp(signal.reason);
        });
      if (bound !== undefined) {
        timer = new Timer(bound.clock, bound.ms + TIMEOUT_GRACE_MS, () => {
          giveUp(
            new TimeoutError(
              `it did not answer within its timeout of ${bound.ms}ms, nor ${TIMEOUT_GRACE_MS}ms after`,
              bound.ms,
            ),
          );
        });
      }
    }
    granting.then(
      (granted) => {
        stop();
        if (!gaveUp) resolve(granted);
        else if (isPermit(granted)) releaseAll([granted]);
      },
      (error: unknown) => {
        stop();
        reject(error); // nothing once it gave up
      },
    );
  });
}

/** Asks gate `i` of `gates` for a permit now, if it can answer so; checks what it answers. */
function tryGate(gates: readonly Gate[], i: number, weight: number): Permit | undefined {
  const permit: unknown = gates[i]!.tryAcquire?.(weight);
  if (permit === undefined || isPermit(permit)) return permit;
  throw new TypeError(
    `Expected \`tryAcquire()\` of ${gateOf(gates, i)} to return ${PERMIT} or undefined, got ${v.describe(permit)}`,
  );
}

/** What a permit must have for the layers above: they release it and watch its signal. */
const PERMIT = 'a permit (release() and an AbortSignal `signal`)';

function isPermit(value: unknown): value is Permit {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { release?: unknown }).release === 'function' &&
    (value as { signal?: unknown }).signal instanceof AbortSignal
  );
}

function gateOf(gates: readonly Gate[], i: number): string {
  return `gate ${i + 1} of ${gates.length}`;
}

/**
 * Takes a permit of every gate in `gates` now, appending them to `held`, or nothing: returns
 * undefined (after giving back everything, `held` included) as soon as a gate cannot answer at
 * once, or has no room; throws (after the same) what a gate throws, or a TypeError for an answer
 * that is not a permit.
 */
export function tryPassGates(
  gates: readonly Gate[],
  weight: number,
  held: Permit[],
): Permit[] | undefined {
  try {
    for (let i = 0; i < gates.length; i++) {
      const permit = tryGate(gates, i, weight);
      if (permit === undefined) {
        releaseAll(held);
        return undefined;
      }
      held.push(permit);
    }
  } catch (error) {
    releaseAll(held);
    throw error;
  }
  return held;
}

/**
 * Several permits held as one: released together, the last taken first. `release()` begins every
 * member's release and waits for none (a shared permit's is sent, not confirmed);
 * `[Symbol.asyncDispose]` (`await using`) begins them in the same order and resolves once every
 * member that has an asynchronous release has had it confirmed, or rejects with what failed
 * (an AggregateError when several did), never before every member is given back.
 */
export class PermitGroup implements Permit {
  readonly weight: number;
  readonly #permits: readonly Permit[];
  #released = false;
  /** What the asynchronous release came to, once asked. */
  #disposed: Promise<void> | undefined;

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
    if (this.#released) return this.#disposed ?? Promise.resolve();
    this.#released = true;
    const permits = this.#permits;
    const confirmed: Promise<void>[] = [];
    for (let i = permits.length - 1; i >= 0; i--) {
      const permit = permits[i]!;
      try {
        // A member without one (a gate breaking the contract) is released synchronously.
        if (typeof permit[Symbol.asyncDispose] === 'function') {
          confirmed.push(Promise.resolve(permit[Symbol.asyncDispose]()));
        } else permit.release();
      } catch (error) {
        confirmed.push(Promise.reject(error));
      }
    }
    this.#disposed = Promise.allSettled(confirmed).then((results) => {
      const failed = results.flatMap((result) =>
        result.status === 'rejected' ? [result.reason as unknown] : [],
      );
      if (failed.length === 1) throw failed[0];
      if (failed.length > 1) {
        throw new AggregateError(
          failed,
          `${failed.length} permits of ${permits.length} failed to release`,
        );
      }
    });
    return this.#disposed;
  }
}
