/**
 * Waiting in an engine's line for permits, with an abort signal and a timeout: the `acquire()` of
 * every gate. Cancellation lives here, in one place: an aborted or timed-out request leaves the
 * line (the engine serves whoever it was holding back) and rejects, holding nothing.
 */
import { Timer } from './_clock.ts';
import type { Engine, Waiter } from './_engine.ts';
import { onAbort } from './_signals.ts';
import * as v from './_validate.ts';
import { TimeoutError } from './errors.ts';
import type { AcquireOptions, Permit, ReleaseOutcome } from './gate.ts';

/** A signal that never aborts: in-memory permits cannot be lost. */
export const NEVER_ABORTED: AbortSignal = new AbortController().signal;

/** Validated acquire options. */
export interface Request {
  weight: number;
  priority: number;
  signal: AbortSignal | undefined;
  timeout: number;
}

const DEFAULT_REQUEST: Request = Object.freeze({
  weight: 1,
  priority: 0,
  signal: undefined,
  timeout: Infinity,
});

/** Checks acquire options; throws a TypeError / RangeError naming the bad one. */
export function parseRequest(options: AcquireOptions | undefined): Request {
  if (options === undefined) return DEFAULT_REQUEST;
  v.options('options', options);
  return {
    weight: options.weight === undefined ? 1 : v.integer('weight', options.weight, 1),
    priority: options.priority === undefined ? 0 : v.finite('priority', options.priority),
    signal: v.signal('signal', options.signal),
    timeout:
      options.timeout === undefined ? Infinity : v.number('timeout', options.timeout, 0, true),
  };
}

/** The error for a request heavier than a gate's whole capacity: it could never be granted. */
export function aboveCapacity(capacity: number, weight: number): RangeError {
  return new RangeError(
    `Expected \`weight\` to be at most the capacity ${capacity}, got \`${weight}\` (number): it could never be granted`,
  );
}

/** The error for a request no gate of this size could ever serve, or undefined if it fits. */
export function tooHeavy(engine: Engine, weight: number): RangeError | undefined {
  // Capacities, rate limits and bursts are all integers of at least 1: one permit always fits.
  if (weight === 1) return undefined;
  if (weight > engine.capacity) return aboveCapacity(engine.capacity, weight);
  const maxWeight = engine.pacer?.maxWeight ?? Infinity;
  if (weight > maxWeight) {
    return new RangeError(
      `Expected \`weight\` to be at most ${maxWeight}, the most the rate admits at once, got \`${weight}\` (number): it could never be admitted`,
    );
  }
  return undefined;
}

/** The permit of an engine: gives its weight back once. */
export class EnginePermit implements Permit {
  #engine: Engine | undefined;
  readonly weight: number;

  constructor(engine: Engine, weight: number) {
    this.#engine = engine;
    this.weight = weight;
  }

  get signal(): AbortSignal {
    return NEVER_ABORTED;
  }

  /** Whether `release()` was called. */
  get released(): boolean {
    return this.#engine === undefined;
  }

  release(_outcome?: ReleaseOutcome): void {
    const engine = this.#engine;
    if (engine === undefined) return;
    // Released once the engine took the permits back: a release that throws (more than is held,
    // after a misuse of the gate's own release()) leaves the permit as it was.
    engine.release(this.weight);
    this.#engine = undefined;
  }

  [Symbol.dispose](): void {
    this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.release();
    return Promise.resolve();
  }
}

/** A caller of `acquire()` in line. */
class Acquirer<T> implements Waiter {
  weight: number;
  readonly #resolve: (value: T) => void;
  readonly #reject: (reason: unknown) => void;
  readonly #onGrant: (engine: Engine, weight: number) => T;
  #unwatch: (() => void) | undefined;
  #timer: Timer | undefined;
  #engine: Engine | undefined;
  /** Whether it was served. */
  granted = false;

  constructor(
    weight: number,
    onGrant: (engine: Engine, weight: number) => T,
    resolve: (value: T) => void,
    reject: (reason: unknown) => void,
  ) {
    this.weight = weight;
    this.#onGrant = onGrant;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  watch(engine: Engine, signal: AbortSignal | undefined, timeout: number, verb: string): void {
    this.#engine = engine;
    if (signal !== undefined) {
      this.#unwatch = onAbort(signal, () => {
        engine.aborted++;
        this.cancel(signal.reason);
      });
    }
    if (timeout !== Infinity) {
      this.#timer = new Timer(engine.clock, timeout, () => {
        this.#timer = undefined;
        engine.timedOut++;
        this.cancel(
          new TimeoutError(`${verb} timed out after ${timeout}ms (${engine.describe()})`, timeout),
        );
      });
    }
  }

  grant(engine: Engine): void {
    this.granted = true;
    this.#detach();
    const bookedAt = engine.grantedAt;
    this.#resolve(this.#onGrant(engine, this.weight));
    engine.restampLater(this.weight, bookedAt, 2);
  }

  fail(reason: unknown): void {
    this.#detach();
    this.#reject(reason);
  }

  /** The one place a request leaves the line unserved. */
  cancel(reason: unknown): void {
    if (this.weight === 0 || this.granted) return;
    this.#detach();
    (this.#engine as Engine).withdraw(this, () => {
      this.#reject(reason);
    });
  }

  #detach(): void {
    this.#unwatch?.();
    this.#timer?.cancel();
    this.#unwatch = this.#timer = undefined;
  }
}

/**
 * Waits in `engine`'s line for `request.weight` permits; once taken, resolves to what `onGrant`
 * makes of them. Rejects with the signal's reason, a `TimeoutError` (naming `verb`), the close
 * reason, or a RangeError for a request that could never be served.
 */
export function request<T>(
  engine: Engine,
  options: AcquireOptions | undefined,
  onGrant: (engine: Engine, weight: number) => T,
  verb = 'acquire',
): Promise<T> {
  let parsed: Request;
  try {
    parsed = parseRequest(options);
  } catch (error) {
    return Promise.reject(error);
  }
  const { weight, priority, signal, timeout } = parsed;
  if (engine.closed) return Promise.reject(engine.closeReason);
  if (signal?.aborted === true) return Promise.reject(signal.reason as unknown);
  const heavy = tooHeavy(engine, weight);
  if (heavy !== undefined) return Promise.reject(heavy);
  if (engine.tryTake(weight)) {
    const granted = Promise.resolve(onGrant(engine, weight));
    engine.restampLater(weight, engine.grantedAt, 2);
    return granted;
  }
  return new Promise<T>((resolve, reject) => {
    const waiter = new Acquirer(weight, onGrant, resolve, reject);
    waiter.watch(engine, signal, timeout === 0 ? Infinity : timeout, verb);
    const found = timeout === 0 ? engine.describe() : '';
    engine.enqueue(waiter, priority);
    // A timeout of 0 takes what joining the line gives at once (its priority may put it at the
    // front, where it fits) and nothing more.
    if (timeout === 0 && !waiter.granted) {
      engine.timedOut++;
      waiter.cancel(new TimeoutError(`${verb} timed out after 0ms (${found})`, 0));
    }
  });
}

/** Makes a permit of the weight just taken: the usual `onGrant`. */
export function makePermit(engine: Engine, weight: number): Permit {
  return new EnginePermit(engine, weight);
}
