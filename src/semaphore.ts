/**
 * A weighted, FIFO, prioritised, resizable counting semaphore.
 *
 * Model: a sack of `capacity` permits. `acquire({ weight })` takes `weight` of them, waiting in line
 * while there are not enough; releasing puts them back and serves the line from the front.
 *
 * Invariants (checked after every step by test/semaphore.model.test.ts):
 * - `held <= capacity`, except just after `capacity` was lowered, while the holders finish;
 * - a waiter is queued or granted or cancelled, never two of these; it settles exactly once;
 * - the line is served strictly in order: higher priority first, FIFO among equals. The front
 *   waiter blocks everyone behind it until it fits, even a lighter request that would fit now
 *   (no barging: otherwise a steady stream of small requests starves a large one forever);
 * - a cancelled waiter (abort, timeout) leaves the semaphore exactly as if it had never asked.
 *   It never holds permits while waiting, so there is nothing to give back but its place in line,
 *   and since it may have been the front blocking others, the line is served again at once.
 *
 * Implementation notes: each priority band is a ring-buffer deque. A cancelled waiter is marked
 * (`weight = 0`) and skipped when it reaches the front, so cancelling is O(1); the marks are swept
 * out when they outnumber the live waiters. Tasks queued by `run()` / `limit()` are their own
 * queue entries and carry their caller's async context (they extend `AsyncResource`), so a
 * queued task costs one small object and no closure.
 */
import { AsyncResource } from 'node:async_hooks';
import { Deque } from './_deque.ts';
import { systemClock, type Clock, type TimerHandle } from './_clock.ts';
import * as v from './_validate.ts';
import { ClosedError, TimeoutError } from './errors.ts';
import type { AcquireOptions, Gate, Permit, ReleaseOutcome } from './gate.ts';

/** A signal that never aborts: in-memory permits cannot be lost. */
const NEVER_ABORTED = new AbortController().signal;

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

interface Waiter {
  /** Permits wanted; 0 once the waiter was cancelled and is only a mark left in the line. */
  weight: number;
}

interface Band {
  priority: number;
  queue: Deque<Waiter>;
}

// Filled in by Semaphore's static blocks: module-private access to its private members.
let releaseHeld: (sem: Semaphore, weight: number) => void;
let cancelWaiter: (sem: Semaphore, waiter: Acquirer, reason: unknown, timedOut: boolean) => void;
let doneOf: (sem: Semaphore) => () => void;

/**
 * Calls `fn(...args)` holding one permit of `sem`, returning a promise of its result: the fast
 * path of `Semaphore.run()` and `limit()`. @internal
 */
export let schedule: (sem: Semaphore, fn: Task, args: unknown[] | undefined) => Promise<unknown>;

/** Rejects the tasks queued by `schedule()` with `reason`; returns how many. @internal */
export let clearTasks: (sem: Semaphore, reason: unknown) => number;

/** The permit `acquire()` resolves to. */
class SemaphorePermit implements Permit {
  #sem: Semaphore | undefined;
  readonly weight: number;

  constructor(sem: Semaphore, weight: number) {
    this.#sem = sem;
    this.weight = weight;
  }

  get signal(): AbortSignal {
    return NEVER_ABORTED;
  }

  /** Whether `release()` was called. */
  get released(): boolean {
    return this.#sem === undefined;
  }

  release(_outcome?: ReleaseOutcome): void {
    const sem = this.#sem;
    if (sem === undefined) return;
    this.#sem = undefined;
    releaseHeld(sem, this.weight);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.release();
    return Promise.resolve();
  }
}

/** A caller of `acquire()` waiting in line. */
class Acquirer implements Waiter {
  weight: number;
  readonly resolve: (permit: Permit) => void;
  readonly reject: (reason: unknown) => void;
  signal: AbortSignal | undefined = undefined;
  onAbort: (() => void) | undefined = undefined;
  timer: TimerHandle = undefined;

  constructor(weight: number, resolve: (permit: Permit) => void, reject: (reason: unknown) => void) {
    this.weight = weight;
    this.resolve = resolve;
    this.reject = reject;
  }

  /** Stops listening for abort and timeout: called once, when the waiter leaves the line. */
  detach(clock: Clock): void {
    if (this.onAbort !== undefined) this.signal?.removeEventListener('abort', this.onAbort);
    if (this.timer !== undefined) clock.clearTimeout(this.timer);
    this.signal = this.onAbort = this.timer = undefined;
  }
}

/**
 * A task queued by `run()` / `limit()`: the function, its arguments and how to settle the
 * caller's promise. It is an `AsyncResource` so that the task runs in the async context
 * (AsyncLocalStorage) of the call that queued it, not of whichever task finished before it.
 * It holds `resolve` only: a failure is delivered by resolving with a rejecting thenable.
 */
class QueuedTask extends AsyncResource implements Waiter {
  declare weight: number;
  readonly fn: Task;
  readonly args: unknown[] | undefined;
  readonly resolve: (value: unknown) => void;
  readonly promise: Promise<unknown>;

  constructor(fn: Task, args: unknown[] | undefined, resolve: (value: unknown) => void, promise: Promise<unknown>) {
    super('sluice.task');
    this.fn = fn;
    this.args = args;
    this.resolve = resolve;
    this.promise = promise;
  }
}
// Always 1, and never marked cancelled: on the prototype, so it costs no memory per task.
QueuedTask.prototype.weight = 1;

/** Settles a promise as rejected through its `resolve` function. */
function rejectThenable(reason: unknown): PromiseLike<never> {
  return {
    then(_onFulfilled, onRejected) {
      onRejected?.(reason);
      return this as PromiseLike<never>;
    },
  } as PromiseLike<never>;
}

function noop(): void {
  // Marks a promise as handled.
}

// `new Promise(capture)` hands its resolvers over without allocating a closure per call.
let capturedResolve: (value: unknown) => void = noop;
let capturedReject: (reason: unknown) => void = noop;
function capture(resolve: (value: unknown) => void, reject: (reason: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

/**
 * A weighted counting semaphore: at most `capacity` permits out at once, the rest of the callers
 * waiting in line.
 *
 * ## Fairness
 * Strict FIFO within a priority, higher priorities first. A waiting request for 3 permits blocks a
 * later request for 1 even when 1 is free (no barging), and `tryAcquire` fails while anyone waits.
 *
 * ## Cancel safety
 * `acquire({ signal, timeout })` that aborts or times out rejects (with `signal.reason` or a
 * {@link TimeoutError}) and leaves the semaphore as if it had never been called. Once the promise
 * has resolved, the permit is yours: release it, even if the signal aborts afterwards.
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
  #capacity: number;
  #held = 0;
  #waiting = 0;
  #waitingWeight = 0;
  /** Cancelled waiters still sitting in the deques. */
  #marks = 0;
  /** Sorted by descending priority; `#band0` (priority 0) always among them. */
  readonly #bands: Band[];
  readonly #band0: Band;
  #draining = false;
  #closed = false;
  #closeReason: unknown = undefined;
  readonly #clock: Clock;
  /** Releases one permit when a task started by `run()` settles; one closure per semaphore. */
  readonly #done: () => void;
  #peakHeld = 0;
  #granted = 0;
  #aborted = 0;
  #timedOut = 0;

  static {
    releaseHeld = (sem, weight) => {
      sem.#release(weight);
    };
    cancelWaiter = (sem, waiter, reason, timedOut) => {
      sem.#cancel(waiter, reason, timedOut);
    };
  }

  /**
   * @param permits How many permits there are: an integer >= 1, or `Infinity`.
   */
  constructor(permits: number, options?: SemaphoreOptions) {
    this.#capacity = v.integer('permits', permits, 1, true);
    v.options('options', options);
    this.#clock = options?.clock ?? systemClock;
    this.#band0 = { priority: 0, queue: new Deque() };
    this.#bands = [this.#band0];
    this.#done = () => {
      this.#release(1);
    };
  }

  /** How many permits there are. Settable: see "Resizing" above. */
  get capacity(): number {
    return this.#capacity;
  }

  set capacity(permits: number) {
    this.#capacity = v.integer('capacity', permits, 1, true);
    if (this.#waitingWeight > 0) this.#rejectTooHeavy();
    this.#drain();
  }

  /** Permits free now (0 while `held` exceeds a lowered capacity). */
  get available(): number {
    return Math.max(0, this.#capacity - this.#held);
  }

  /** Permits out now. */
  get held(): number {
    return this.#held;
  }

  /** Requests in line. */
  get waiting(): number {
    return this.#waiting;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Waits for `weight` permits. Resolves to a {@link Permit}; release it when done, or declare it
   * with `using` so that the end of the block releases it.
   */
  acquire(options?: AcquireOptions): Promise<Permit> {
    let weight = 1;
    let priority = 0;
    let signal: AbortSignal | undefined;
    let timeout = Infinity;
    if (options !== undefined) {
      try {
        v.options('options', options);
        if (options.weight !== undefined) weight = v.integer('weight', options.weight, 1);
        if (options.priority !== undefined) priority = v.finite('priority', options.priority);
        signal = v.signal('signal', options.signal);
        if (options.timeout !== undefined) timeout = v.number('timeout', options.timeout, 0, true);
      } catch (error) {
        return Promise.reject(error as Error);
      }
    }
    if (this.#closed) return Promise.reject(this.#closeReason as Error);
    if (signal?.aborted === true) return Promise.reject(signal.reason as Error);
    if (weight > this.#capacity) return Promise.reject(this.#tooHeavy(weight));
    if (this.#waiting === 0 && this.#held + weight <= this.#capacity) {
      this.#take(weight);
      return Promise.resolve(new SemaphorePermit(this, weight));
    }
    if (timeout === 0) return Promise.reject(this.#timeoutError(0));

    const promise = new Promise<unknown>(capture) as Promise<Permit>;
    const waiter = new Acquirer(weight, capturedResolve, capturedReject);
    if (signal !== undefined) {
      const onAbort = () => {
        cancelWaiter(this, waiter, signal.reason, false);
      };
      waiter.signal = signal;
      waiter.onAbort = onAbort;
      signal.addEventListener('abort', onAbort, { once: true });
    }
    if (timeout !== Infinity) {
      waiter.timer = this.#clock.setTimeout(() => {
        waiter.timer = undefined;
        cancelWaiter(this, waiter, this.#timeoutError(timeout), true);
      }, timeout);
    }
    this.#enqueue(waiter, priority);
    // Its priority may have put this request at the front, where it may fit now.
    this.#drain();
    return promise;
  }

  /**
   * Takes `weight` permits if they are free now and nobody is waiting; otherwise returns
   * `undefined`. Never barges past waiters. Throws the close reason once closed.
   */
  tryAcquire(weight = 1): Permit | undefined {
    v.integer('weight', weight, 1);
    if (this.#closed) throw this.#closeReason;
    if (this.#waiting > 0 || this.#held + weight > this.#capacity) return undefined;
    this.#take(weight);
    return new SemaphorePermit(this, weight);
  }

  /**
   * Gives back `weight` permits taken without keeping the Permit (prefer `permit.release()`).
   * Throws a `RangeError` when that is more than is held.
   */
  release(weight = 1): void {
    v.integer('weight', weight, 1);
    this.#release(weight);
  }

  /**
   * Runs `fn` holding permits: acquires, calls `fn`, and releases when its promise settles, whatever
   * the outcome. A synchronous throw becomes a rejection. `fn` runs in the async context of this
   * call. The options bound the wait for permits, not `fn` itself.
   */
  run<T>(fn: () => T | PromiseLike<T>, options?: AcquireOptions): Promise<Awaited<T>> {
    if (options !== undefined) return this.#runWithOptions(fn, options);
    if (typeof fn !== 'function') return Promise.reject(new TypeError(`Expected \`fn\` to be a function, got ${v.describe(fn)}`));
    return schedule(this, fn, undefined) as Promise<Awaited<T>>;
  }

  async #runWithOptions<T>(fn: () => T | PromiseLike<T>, options: AcquireOptions): Promise<Awaited<T>> {
    v.fn('fn', fn);
    const permit = await this.acquire(options);
    try {
      return await fn();
    } finally {
      permit.release();
    }
  }

  /**
   * Stops the semaphore: every waiter, and every later request, rejects with `reason` (a
   * {@link ClosedError} by default). Holders keep their permits and may still release them.
   */
  close(reason: unknown = new ClosedError('the semaphore is closed')): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    this.#rejectWaiters(reason, true);
  }

  /** A snapshot of the current state and the lifetime counters. */
  stats(): SemaphoreStats {
    return {
      capacity: this.#capacity,
      held: this.#held,
      available: this.available,
      waiting: this.#waiting,
      waitingWeight: this.#waitingWeight,
      peakHeld: this.#peakHeld,
      granted: this.#granted,
      aborted: this.#aborted,
      timedOut: this.#timedOut,
      closed: this.#closed,
    };
  }

  /** Like `Semaphore(2/8 held, 5 waiting)`. */
  toString(): string {
    return `${this.constructor.name}(${this.#describe()})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  #describe(): string {
    const closed = this.#closed ? ', closed' : '';
    return `${this.#held}/${this.#capacity} held, ${this.#waiting} waiting${closed}`;
  }

  #take(weight: number): void {
    this.#held += weight;
    this.#granted++;
    if (this.#held > this.#peakHeld) this.#peakHeld = this.#held;
  }

  #release(weight: number): void {
    if (weight > this.#held) {
      throw new RangeError(
        `Cannot release ${weight} permit${weight === 1 ? '' : 's'}: only ${this.#held} held (${this.#describe()})`,
      );
    }
    this.#held -= weight;
    if (this.#waiting > 0) this.#drain();
  }

  #enqueue(waiter: Waiter, priority: number): void {
    this.#waiting++;
    this.#waitingWeight += waiter.weight;
    if (priority === 0) {
      this.#band0.queue.push(waiter);
      return;
    }
    const bands = this.#bands;
    let i = 0;
    while (i < bands.length && bands[i]!.priority > priority) i++;
    let band = bands[i];
    if (band?.priority !== priority) {
      band = { priority, queue: new Deque() };
      bands.splice(i, 0, band);
    }
    band.queue.push(waiter);
  }

  /** The first live waiter in line, sweeping cancelled marks off the fronts on the way. */
  #front(): { waiter: Waiter; band: Band } | undefined {
    const bands = this.#bands;
    for (let i = 0; i < bands.length; i++) {
      const band = bands[i]!;
      const queue = band.queue;
      let waiter = queue.peek();
      while (waiter?.weight === 0) {
        queue.shift();
        this.#marks--;
        waiter = queue.peek();
      }
      if (waiter !== undefined) return { waiter, band };
      if (band !== this.#band0) {
        bands.splice(i, 1);
        i--;
      }
    }
    return undefined;
  }

  /**
   * Serves the line from the front while the front fits. Granting a task runs user code, which
   * may release or acquire synchronously: a nested call only updates the counts and leaves the
   * serving to this loop, so a long line of synchronously failing tasks does not recurse.
   */
  #drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    try {
      while (this.#waiting > 0) {
        // The common case, one band with a live front, without allocating.
        let waiter: Waiter | undefined;
        let queue: Deque<Waiter>;
        if (this.#bands.length === 1 && this.#marks === 0) {
          queue = this.#band0.queue;
          waiter = queue.peek();
        } else {
          const front = this.#front();
          waiter = front?.waiter;
          queue = front?.band.queue ?? this.#band0.queue;
        }
        if (waiter === undefined || waiter.weight > this.#capacity - this.#held) break;
        queue.shift();
        this.#waiting--;
        this.#waitingWeight -= waiter.weight;
        this.#take(waiter.weight);
        if (waiter instanceof QueuedTask) {
          waiter.runInAsyncScope(startQueued, waiter, this);
        } else {
          const acquirer = waiter as Acquirer;
          acquirer.detach(this.#clock);
          acquirer.resolve(new SemaphorePermit(this, acquirer.weight));
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  /** The one place a waiter leaves the line without being served. */
  #cancel(waiter: Acquirer, reason: unknown, timedOut: boolean): void {
    if (waiter.weight === 0) return;
    waiter.detach(this.#clock);
    this.#waiting--;
    this.#waitingWeight -= waiter.weight;
    waiter.weight = 0;
    this.#marks++;
    if (timedOut) this.#timedOut++;
    else this.#aborted++;
    waiter.reject(reason);
    if (this.#marks > 32 && this.#marks > this.#waiting) this.#sweep();
    // It may have been the front, holding back waiters that fit now.
    this.#drain();
  }

  #sweep(): void {
    for (const band of this.#bands) band.queue.filter((w) => w.weight !== 0);
    this.#marks = 0;
  }

  #rejectTooHeavy(): void {
    for (const band of this.#bands) {
      for (const waiter of band.queue) {
        if (waiter.weight > this.#capacity && waiter instanceof Acquirer) {
          this.#cancelWith(waiter, this.#tooHeavy(waiter.weight));
        }
      }
    }
  }

  #cancelWith(waiter: Acquirer, reason: unknown): void {
    waiter.detach(this.#clock);
    this.#waiting--;
    this.#waitingWeight -= waiter.weight;
    waiter.weight = 0;
    this.#marks++;
    waiter.reject(reason);
  }

  /**
   * Rejects every waiter with `reason`. With `acquirers` false, only queued tasks (limit's
   * `clearQueue()`); their promises get a no-op handler first, so a caller that dropped them is
   * not hurt by an unhandled rejection, while one that awaits them still sees the error.
   */
  #rejectWaiters(reason: unknown, acquirers: boolean): number {
    let count = 0;
    for (const band of this.#bands) {
      for (const waiter of band.queue.drain()) {
        if (waiter.weight === 0) continue;
        if (waiter instanceof QueuedTask) {
          if (!acquirers) waiter.promise.catch(noop);
          waiter.resolve(rejectThenable(reason));
        } else if (acquirers) {
          (waiter as Acquirer).detach(this.#clock);
          (waiter as Acquirer).reject(reason);
        } else {
          band.queue.push(waiter);
          continue;
        }
        this.#waiting--;
        this.#waitingWeight -= waiter.weight;
        count++;
      }
    }
    this.#marks = 0;
    return count;
  }

  #tooHeavy(weight: number): RangeError {
    return new RangeError(
      `Expected \`weight\` to be at most the capacity ${this.#capacity}, got \`${weight}\` (number): it could never be granted`,
    );
  }

  #timeoutError(timeout: number): TimeoutError {
    return new TimeoutError(`acquire timed out after ${timeout}ms (${this.#describe()})`, timeout);
  }

  static {
    schedule = (sem, fn, args) => {
      const promise = new Promise(capture);
      const resolve = capturedResolve;
      if (sem.#closed) {
        capturedReject(sem.#closeReason);
      } else if (sem.#waiting === 0 && sem.#held < sem.#capacity) {
        sem.#take(1);
        startTask(sem, fn, args, resolve, capturedReject);
      } else {
        sem.#enqueue(new QueuedTask(fn, args, resolve, promise), 0);
      }
      return promise;
    };
    clearTasks = (sem, reason) => sem.#rejectWaiters(reason, false);
    doneOf = (sem) => sem.#done;
  }
}

function startQueued(this: QueuedTask, sem: Semaphore): void {
  startTask(sem, this.fn, this.args, this.resolve, undefined);
}

/** Runs a task that holds one permit, and releases the permit when the task's result settles. */
function startTask(
  sem: Semaphore,
  fn: Task,
  args: unknown[] | undefined,
  resolve: (value: unknown) => void,
  reject: ((reason: unknown) => void) | undefined,
): void {
  let result: unknown;
  try {
    result = args === undefined ? fn() : fn(...(args as never[]));
  } catch (error) {
    releaseHeld(sem, 1);
    if (reject === undefined) resolve(rejectThenable(error));
    else reject(error);
    return;
  }
  // Register the release before the caller's promise adopts `result`, so the permit is back
  // by the time the caller's `await` resumes.
  if (isThenable(result)) {
    // A foreign thenable is read once: some (query builders) do their work on every `then`.
    const promise = result instanceof Promise ? result : Promise.resolve(result);
    const done = doneOf(sem);
    promise.then(done, done);
    resolve(promise);
  } else {
    resolve(result);
    releaseHeld(sem, 1);
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
  runExclusive<T>(fn: () => T | PromiseLike<T>, options?: Omit<AcquireOptions, 'weight'>): Promise<Awaited<T>> {
    return this.run(fn, options);
  }
}
