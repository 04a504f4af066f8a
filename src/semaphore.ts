/**
 * A weighted, FIFO, prioritised, resizable counting semaphore.
 *
 * Model: a sack of `capacity` permits. `acquire({ weight })` takes `weight` of them, waiting in line
 * while there are not enough; releasing puts them back and serves the line from the front. The
 * line, the serving and the cancellation live in the shared gate engine (`_engine.ts`,
 * `_acquire.ts`); this file adds what a semaphore's callers see, and `run()`'s task waiters.
 *
 * Invariants (checked after every step by test/semaphore.model.test.ts):
 * - `held <= capacity`, except just after `capacity` was lowered, while the holders finish;
 * - the line is served strictly in order: higher priority first, FIFO among equals, and the front
 *   blocks lighter requests behind it (no barging);
 * - a cancelled request leaves the semaphore exactly as if it had never asked;
 * - every queued promise settles.
 *
 * Its size (about 430 lines): the `run()` / `limit()` fast path (one object per queued task, a
 * microtask for p-limit's timing) lives beside the class it serves, and would only be imported
 * back from a file of its own.
 */
import { AsyncResource } from 'node:async_hooks';
import { makePermit, request, tooHeavy } from './_acquire.ts';
import { systemClock, type Clock } from './_clock.ts';
import { Engine, type Deferred, type Waiter } from './_engine.ts';
import * as v from './_validate.ts';
import { ClosedError } from './errors.ts';
import type { AcquireOptions, Gate, Permit } from './gate.ts';

/** Options for the {@link Semaphore} constructor. */
export interface SemaphoreOptions {
  /** The clock used for acquire timeouts. @default the system clock */
  clock?: Clock;
}

/** A snapshot of a semaphore's state and lifetime counters. */
export interface SemaphoreStats {
  capacity: number;
  held: number;
  available: number;
  /** Requests in line. */
  waiting: number;
  /** Total weight of the requests in line. */
  waitingWeight: number;
  /** The most ever held at once. */
  peakHeld: number;
  /** Requests granted so far (tasks started by `run()` included). */
  granted: number;
  /** Requests withdrawn because their signal aborted. */
  aborted: number;
  /** Requests withdrawn because their timeout elapsed. */
  timedOut: number;
  closed: boolean;
}

type Task = (...args: never[]) => unknown;

function noop(): void {
  // Marks a promise as handled.
}

/** Settles a promise as rejected through its `resolve` function. */
function rejecting(reason: unknown): PromiseLike<never> {
  const thenable: PromiseLike<never> = {
    then(_onFulfilled, onRejected) {
      onRejected?.(reason);
      return thenable;
    },
  };
  return thenable;
}

// `new Promise(capture)` hands its resolvers over without allocating a closure per call.
let capturedResolve: (value: unknown) => void = noop;
let capturedReject: (reason: unknown) => void = noop;
function capture(resolve: (value: unknown) => void, reject: (reason: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/**
 * A task queued by `run()` / `limit()`: the function, its arguments and how to settle the caller's
 * promise. It is an `AsyncResource`, so the task runs in the async context (AsyncLocalStorage) of
 * the call that queued it, not of whichever task finished before it. It keeps `resolve` only (a
 * failure is delivered by resolving with a rejecting thenable): a queued task costs one object.
 */
class QueuedTask extends AsyncResource implements Waiter, Deferred {
  declare weight: number;
  declare own: boolean;
  readonly fn: Task;
  readonly args: unknown[] | undefined;
  readonly resolve: (value: unknown) => void;
  readonly promise: Promise<unknown>;

  constructor(
    fn: Task,
    args: unknown[] | undefined,
    resolve: (value: unknown) => void,
    promise: Promise<unknown>,
  ) {
    super('sluice.task');
    this.fn = fn;
    this.args = args;
    this.resolve = resolve;
    this.promise = promise;
  }

  grant(engine: Engine): void {
    // Behind a task that has not begun yet, it waits its turn (see `StartLine`).
    const starts = engine.starts;
    if (starts !== undefined && starts.size > 0) starts.push(this);
    else this.begin(engine);
  }

  begin(engine: Engine): void {
    this.runInAsyncScope(startQueued, this, engine);
  }

  fail(reason: unknown): void {
    this.resolve(rejecting(reason));
  }
}
// Always 1 while queued: on the prototype, so it costs no memory per task. Withdrawing (which
// writes 0) makes an own property; `run()` tasks are only ever cleared, never withdrawn one by one.
QueuedTask.prototype.weight = 1;
QueuedTask.prototype.own = false;

function startQueued(this: QueuedTask, engine: Engine): void {
  startTask(engine, this.fn, this.args, this.resolve, undefined);
}

/** Runs a task holding one permit, and releases the permit when the task's result settles. */
function startTask(
  engine: Engine,
  fn: Task,
  args: unknown[] | undefined,
  resolve: (value: unknown) => void,
  reject: ((reason: unknown) => void) | undefined,
): void {
  let result: unknown;
  try {
    result = args === undefined ? fn() : fn(...(args as never[]));
  } catch (error) {
    engine.release(1);
    if (reject === undefined) resolve(rejecting(error));
    else reject(error);
    return;
  }
  if (v.isThenable(result)) {
    // A foreign thenable is read once: some (query builders) do their work on every `then`.
    const promise = result instanceof Promise ? result : Promise.resolve(result);
    // Registered before the caller's promise adopts the result, so the permit is back by the
    // time the caller's `await` resumes.
    promise.then(engine.releaseOne, engine.releaseOne);
    resolve(promise);
  } else {
    resolve(result);
    engine.release(1);
  }
}

/** A task granted a permit at once, to begin a microtask later (see `schedule`). */
class Start implements Deferred {
  declare own: boolean;
  readonly fn: Task;
  readonly args: unknown[] | undefined;
  readonly resolve: (value: unknown) => void;
  readonly reject: (reason: unknown) => void;

  constructor(
    fn: Task,
    args: unknown[] | undefined,
    resolve: (value: unknown) => void,
    reject: (reason: unknown) => void,
  ) {
    this.fn = fn;
    this.args = args;
    this.resolve = resolve;
    this.reject = reject;
  }

  begin(engine: Engine): void {
    startTask(engine, this.fn, this.args, this.resolve, this.reject);
  }
}
Start.prototype.own = true;

/** Queues microtasks: a reaction on a settled promise runs in the async context that added it. */
const SETTLED: Promise<void> = Promise.resolve();

/**
 * Calls `fn(...args)` holding one permit of `engine`, returning a promise of its result: the fast
 * path of `Semaphore.run()` and `limit()`. When the engine keeps `starts` (`limit()`), a task
 * granted a permit at once takes it now and begins one microtask later, as p-limit 7 does: the
 * code right after the call runs first. Tasks granted while such a task has not begun wait
 * behind it, so tasks always begin in the order they were granted. @internal
 */
export function schedule(engine: Engine, fn: Task, args: unknown[] | undefined): Promise<unknown> {
  const promise = new Promise(capture);
  const resolve = capturedResolve;
  const reject = capturedReject;
  if (engine.closed) reject(engine.closeReason);
  else if (!engine.tryTake(1)) engine.enqueue(new QueuedTask(fn, args, resolve, promise), 0);
  else if (engine.starts === undefined) startTask(engine, fn, args, resolve, reject);
  else {
    const starts = engine.starts;
    starts.push(new Start(fn, args, resolve, reject));
    void SETTLED.then(starts.beginNext);
  }
  return promise;
}

/**
 * Rejects the tasks queued by `schedule()` with `reason`; their promises get a no-op handler first,
 * so a caller that dropped them gets no unhandled rejection. Returns how many. @internal
 */
export function clearTasks(engine: Engine, reason: unknown): number {
  for (const waiter of engine.line) if (waiter instanceof QueuedTask) waiter.promise.catch(noop);
  return engine.failAll(reason, (waiter) => !(waiter instanceof QueuedTask));
}

/**
 * A weighted counting semaphore: at most `capacity` permits out at once, the rest of the callers
 * waiting in line.
 *
 * ## Fairness
 * Strict FIFO within a priority, higher priorities first. A waiting request for 3 permits blocks a
 * later request for 1 even when 1 is free (no barging: otherwise a steady stream of small
 * requests starves a large one forever), and `tryAcquire` fails while anyone waits.
 *
 * ## Cancel safety
 * `acquire({ signal, timeout })` that aborts or times out rejects (with `signal.reason` or a
 * `TimeoutError`) and leaves the semaphore as if it had never been called; the waiters behind it
 * that now fit are served. Once the promise has resolved, the permit is yours: release it, even if
 * the signal aborts afterwards.
 *
 * ## Errors
 * Asking for more than `capacity` rejects at once with a `RangeError` (it could never be served).
 * Releasing more than is held throws a `RangeError`. After `close()`, every waiter and every new
 * request rejects with the close reason.
 *
 * ## Resizing
 * Setting `capacity` higher serves the line at once. Setting it lower lets the holders finish;
 * new grants wait until `held` is below the new capacity. Waiters heavier than the new capacity
 * could never be served, so they are rejected with a `RangeError`.
 *
 * @example
 * ```ts
 * const sem = new Semaphore(2);
 * {
 *   using permit = await sem.acquire();
 *   // at most two callers are here at once
 * }
 * const result = await sem.run(() => work()); // acquire, call, release
 * ```
 */
export class Semaphore implements Gate {
  readonly #engine: Engine;

  /**
   * @param permits How many permits there are: an integer >= 1, or `Infinity`.
   */
  constructor(permits: number, options?: SemaphoreOptions) {
    v.integer('permits', permits, 1, true);
    v.options('options', options);
    this.#engine = new Engine(permits, options?.clock ?? systemClock);
  }

  /** How many permits there are. Settable: see "Resizing" above. */
  get capacity(): number {
    return this.#engine.capacity;
  }

  set capacity(permits: number) {
    this.#engine.capacity = v.integer('capacity', permits, 1, true);
  }

  /** Permits free now (0 while `held` exceeds a lowered capacity). */
  get available(): number {
    return Math.max(0, this.#engine.capacity - this.#engine.held);
  }

  /** Permits out now. */
  get held(): number {
    return this.#engine.held;
  }

  /** Requests in line. */
  get waiting(): number {
    return this.#engine.line.size;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#engine.closed;
  }

  /**
   * Waits for `weight` permits. Resolves to a {@link Permit}; release it when done, or declare it
   * with `using` so that the end of the block releases it.
   */
  acquire(options?: AcquireOptions): Promise<Permit> {
    return request(this.#engine, options, makePermit);
  }

  /**
   * Takes `weight` permits if they are free now and nobody is waiting; otherwise returns
   * `undefined`. Never barges past waiters. Throws the close reason once closed, and a
   * `RangeError` for a weight above the capacity (as `acquire()` rejects with one).
   */
  tryAcquire(weight = 1): Permit | undefined {
    v.integer('weight', weight, 1);
    const engine = this.#engine;
    if (engine.closed) throw engine.closeReason;
    const heavy = tooHeavy(engine, weight);
    if (heavy !== undefined) throw heavy; // as acquire() rejects: it could never be granted
    return engine.tryTake(weight) ? makePermit(engine, weight) : undefined;
  }

  /**
   * Gives back `weight` permits taken without keeping the Permit (prefer `permit.release()`).
   * Throws a `RangeError` when that is more than is held.
   */
  release(weight = 1): void {
    this.#engine.release(v.integer('weight', weight, 1));
  }

  /**
   * Runs `fn` holding permits: acquires, calls `fn`, and releases when its promise settles, whatever
   * the outcome. A synchronous throw becomes a rejection. `fn` runs in the async context of this
   * call. The options bound the wait for permits, not `fn` itself.
   */
  run<T>(fn: () => T | PromiseLike<T>, options?: AcquireOptions): Promise<Awaited<T>> {
    if (typeof fn !== 'function') {
      return Promise.reject(
        new TypeError(`Expected \`fn\` to be a function, got ${v.describe(fn)}`),
      );
    }
    if (options !== undefined) return this.#runWithOptions(fn, options);
    return schedule(this.#engine, fn, undefined) as Promise<Awaited<T>>;
  }

  async #runWithOptions<T>(
    fn: () => T | PromiseLike<T>,
    options: AcquireOptions,
  ): Promise<Awaited<T>> {
    const permit = await this.acquire(options);
    try {
      return await fn();
    } finally {
      permit.release();
    }
  }

  /**
   * Stops the semaphore: every waiter, and every later request, rejects with `reason` (a
   * `ClosedError` by default). Holders keep their permits and may still release them.
   */
  close(reason: unknown = new ClosedError('the semaphore is closed')): void {
    this.#engine.close(reason);
  }

  /** A snapshot of the current state and the lifetime counters. */
  stats(): SemaphoreStats {
    const engine = this.#engine;
    return {
      capacity: engine.capacity,
      held: engine.held,
      available: this.available,
      waiting: engine.line.size,
      waitingWeight: engine.line.weight,
      peakHeld: engine.peakHeld,
      granted: engine.granted,
      aborted: engine.aborted,
      timedOut: engine.timedOut,
      closed: engine.closed,
    };
  }

  /** Like `Semaphore(2/8 held, 5 waiting)`. */
  toString(): string {
    return `${this.constructor.name}(${this.#engine.describe()})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

/**
 * A semaphore of one permit: mutual exclusion for async code.
 *
 * @example
 * ```ts
 * const mutex = new Mutex();
 * await mutex.runExclusive(async () => {
 *   // one caller at a time
 * });
 * ```
 */
export class Mutex extends Semaphore {
  constructor(options?: SemaphoreOptions) {
    super(1, options);
  }

  override get capacity(): number {
    return 1;
  }

  override set capacity(_permits: number) {
    throw new TypeError('A Mutex has exactly one permit; use a Semaphore to change the capacity');
  }

  /** Whether someone holds the lock. */
  get isLocked(): boolean {
    return this.held > 0;
  }

  /** Waits for the lock; the same as `acquire()`. */
  lock(options?: Omit<AcquireOptions, 'weight'>): Promise<Permit> {
    return this.acquire(options);
  }

  /** Takes the lock if it is free and nobody waits. */
  tryLock(): Permit | undefined {
    return this.tryAcquire(1);
  }

  /** Runs `fn` holding the lock; the same as `run()`. */
  runExclusive<T>(
    fn: () => T | PromiseLike<T>,
    options?: Omit<AcquireOptions, 'weight'>,
  ): Promise<Awaited<T>> {
    return this.run(fn, options);
  }
}
