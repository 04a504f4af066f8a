/**
 * `Limiter`: the policy object a service keeps for the life of the process. Concurrency, rate
 * windows, retries, honest timeouts, priorities and a bounded queue: which gates a task passes,
 * and how. What a task goes through — its admission, attempts, timeouts, retries, settlement —
 * is the task life cycle (`_lifecycle.ts`); this file turns options into one, and is its face:
 * the API, the events, the statistics.
 *
 * The limiter's own concurrency and rate are one in-memory gate (the engine: `_engine.ts`), asked
 * synchronously. Gates given instead (`concurrency: gate`, `rate: [gate, …]`: a shared one, an
 * adaptive one, one a test built) are passed after it, in that order, by every attempt.
 *
 * Invariants: those of the life cycle; and the limiter is a gate itself (`acquire()` takes the
 * permits of its own gate and of every gate given to it, `tryAcquire()` the same or nothing).
 *
 * Its size (about 480 lines) is its public face: the options, events and statistics types and the
 * documentation of each method are most of it; the behaviour is the life cycle's.
 */
import { EventEmitter } from 'node:events';
import { makePermit, parseRequest, request, tooHeavy } from './_acquire.ts';
import { systemClock, type Clock } from './_clock.ts';
import { concurrencyOption, isGate, passGates, PermitGroup, tryPassGates } from './_gates.ts';
import { Lifecycle } from './_lifecycle.ts';
import { Pace } from './_pace.ts';
import { formatRate, type RateSpec } from './_parse.ts';
import type { Overflow } from './_room.ts';
import type { Task, TaskContext, TaskInfo } from './_task.ts';
import * as v from './_validate.ts';
import { ClosedError } from './errors.ts';
import type { AcquireOptions, Gate, Permit, SyncGate } from './gate.ts';
import {
  buildWindows,
  parseRatesAndGates,
  replaceRate,
  type ParsedRate,
  type RateOptions,
} from './rate.ts';
import { RetryPolicy, type RetryInfo, type RetryOptions } from './retry.ts';

export type { Overflow } from './_room.ts';
export type { TaskContext, TaskInfo } from './_task.ts';

/** Options for {@link Limiter}. */
export interface LimiterOptions extends Omit<RateOptions, 'rate'> {
  /**
   * At most this many tasks (by weight) run at once: an integer >= 1, or Infinity; or a gate that
   * keeps the concurrency instead (a shared or adaptive one), which every attempt passes.
   * @default Infinity
   */
  concurrency?: number | Gate;
  /**
   * One rate or several (`'10/s'`, `['10/s', '500/min']`), every one of them kept at once; a gate
   * in their place (a `RateLimiter`, a shared one) is passed by every attempt, after the
   * concurrency.
   */
  rate?: RateSpec | Gate | readonly (RateSpec | Gate)[];
  /** Retry failed attempts: a number of retries, or the options of `retry()`. @default no retries */
  retry?: number | Omit<RetryOptions, 'signal' | 'clock'>;
  /** Milliseconds an attempt may run before it is aborted with a `TimeoutError`. @default Infinity */
  timeout?: number;
  /** At most this many tasks wait in line. @default Infinity */
  maxQueue?: number;
  /**
   * When the line is full: `'wait'`, the task waits for room before joining it (see `onRoom()`);
   * `'reject'`, it is rejected with a `QueueFullError`; `'drop-oldest'`, the task that has waited
   * longest (of the lowest priority) is rejected with a `QueueFullError` to make room.
   * @default 'wait'
   */
  overflow?: Overflow;
  /** The clock for rates, timeouts and backoffs. @default the system clock */
  clock?: Clock;
}

/** Options for {@link Limiter.schedule}. */
export interface ScheduleOptions {
  /** Higher first; FIFO within a priority. @default 0 */
  priority?: number;
  /** How much of the concurrency and of the rate this task uses. @default 1 */
  weight?: number;
  /** Aborting it rejects the task with `signal.reason` (and aborts the task's own signal). */
  signal?: AbortSignal | undefined;
  /** This task's attempt timeout, instead of the limiter's. */
  timeout?: number;
}

/** The events of a {@link Limiter}, with their arguments. */
export interface LimiterEvents {
  /** An attempt started. */
  active: [task: TaskInfo];
  /** A task succeeded. */
  completed: [task: TaskInfo, value: unknown];
  /** A task failed for good (after its retries). */
  failed: [task: TaskInfo, error: unknown];
  /** An attempt failed and will be retried after `info.delay` ms. */
  retry: [task: TaskInfo, info: RetryInfo];
  /** A task was dropped from a full queue (`overflow: 'drop-oldest'`). */
  dropped: [task: TaskInfo];
  /** Nothing runs, waits or backs off any more. */
  idle: [];
  /**
   * A gate given to this limiter could not be paused by `pauseFor()` (a shared rate whose Redis
   * failed): the other processes sharing it are not held; this one's own pause still holds.
   */
  pauseFailed: [error: unknown];
}

/** A snapshot of a limiter's state and lifetime counters. */
export interface LimiterStats {
  concurrency: number;
  /** Attempts holding permits, including those that timed out but have not settled yet. */
  active: number;
  /** Permits out, by weight (tasks' and `acquire()`'s). */
  held: number;
  /** Attempts that timed out (their task moved on) but still hold their permits. */
  timedOutActive: number;
  /** Tasks waiting: in line, or taking the permits of the gates given to the limiter. */
  pending: number;
  /** Tasks waiting for room in a full line (`overflow: 'wait'`). */
  waitingForRoom: number;
  /** Tasks between attempts (deciding whether to retry, or backing off). */
  retrying: number;
  completed: number;
  failed: number;
  retries: number;
  timedOut: number;
  dropped: number;
  paused: boolean;
  rate: string[];
  closed: boolean;
}

/** Options for {@link Limiter.close}. */
export interface CloseOptions {
  /** Let the queued tasks run (true) or reject them at once (false). @default false */
  drain?: boolean;
  /** Milliseconds after which whatever is left is rejected and running tasks are aborted. @default Infinity */
  deadline?: number;
}

/** A gate that can stop admitting for a while: a shared rate limiter's pause. */
export interface Pausable {
  pauseFor(ms: number): unknown;
}

/**
 * Gates a keyed limiter adds to each key's limiter (its global gates), around the key's own:
 * see `OUTER_GATES`. @internal
 */
export interface OuterGates {
  /** Passed right after the key's own concurrency gate (a global concurrency gate). */
  concurrency: readonly Gate[];
  /** Passed after the key's own rate gates (global rate gates). */
  rate: readonly Gate[];
}

/**
 * The option under which a keyed limiter hands its global gates to the limiter of a key: not a
 * public option (no user sets it), a symbol so that it cannot be set by accident. @internal
 */
export const OUTER_GATES: unique symbol = Symbol('sluice.outerGates');

/** A limiter's options as a keyed limiter may give them. @internal */
export interface KeyLimiterOptions extends LimiterOptions {
  [OUTER_GATES]?: OuterGates;
}

/** The options of `concurrency` and `rate` split into what the engine keeps and the gates. */
interface SplitOptions {
  capacity: number;
  /** The concurrency gate given, if one was. */
  concurrencyGate: Gate | undefined;
  parsedRate: ParsedRate;
  gates: Gate[];
  /** The gates given to this limiter itself (not a keyed limiter's global ones). */
  own: Gate[];
}

function splitOptions(options: KeyLimiterOptions): SplitOptions {
  const { capacity, gate: concurrencyGate } = concurrencyOption('concurrency', options.concurrency);
  const { parsed: parsedRate, gates: rateGates } = parseRatesAndGates(options);
  const outer = options[OUTER_GATES];
  const gates = [
    ...(concurrencyGate === undefined ? [] : [concurrencyGate]),
    ...(outer?.concurrency ?? []),
    ...rateGates,
    ...(outer?.rate ?? []),
  ];
  const own = [...(concurrencyGate === undefined ? [] : [concurrencyGate]), ...rateGates];
  return { capacity, concurrencyGate, parsedRate, gates, own };
}

function parseRetry(retry: LimiterOptions['retry']): RetryPolicy | undefined {
  if (retry === undefined) return undefined;
  const policy =
    typeof retry === 'number'
      ? new RetryPolicy({ retries: v.integer('retry', retry, 0, true) })
      : new RetryPolicy(retry, 'retry');
  // `retry: 0` is no retry at all: failures reject as they are, not wrapped in a RetryError.
  return policy.retries === 0 ? undefined : policy;
}

/**
 * Runs tasks within a concurrency, one or more rates, with retries, honest timeouts, priorities and
 * a bounded queue. It is also a gate: `acquire()` / `tryAcquire()` take permits of the same
 * concurrency and rate.
 *
 * ## Honest timeouts
 * A task's `timeout` aborts its signal and rejects its promise with a `TimeoutError` (or retries),
 * but its permits stay held until the task's own promise settles: the concurrency limit counts
 * what really runs. `stats().timedOutActive` counts such tasks.
 *
 * ## Fairness
 * Higher priority first, FIFO within a priority, no barging. A retry joins the back of the line.
 *
 * ## Every attempt passes every limit
 * A retry goes back into the line and through every gate, as the first attempt did: the
 * concurrency, the rates, a pause, and the gates given in their place.
 *
 * @example
 * ```ts
 * const api = new Limiter({ concurrency: 5, rate: ['10/s', '500/min'], retry: 3, timeout: 30_000 });
 * const user = await api.schedule(({ signal }) => getUser(id, { signal }), { priority: 1 });
 * ```
 */
export class Limiter extends EventEmitter<LimiterEvents> implements SyncGate {
  /** The task life cycle this limiter is the face of. @internal */
  readonly lifecycle: Lifecycle;
  readonly #concurrencyGate: Gate | undefined;
  #parsedRate: ParsedRate;
  /** `pause()` was called (and not `resume()`). */
  #paused = false;
  /** Its own gates that can be paused (a shared rate limiter): `pauseFor()` pauses them too. */
  readonly #pausable: (Gate & Pausable)[];
  /** The end of the latest `pauseFor()`. */
  #pausedUntil = -Infinity;

  constructor(options: LimiterOptions = {}) {
    super();
    v.options('options', options);
    const { capacity, concurrencyGate, parsedRate, gates, own } = splitOptions(options);
    this.#concurrencyGate = concurrencyGate;
    this.#pausable = own.filter(
      (gate): gate is Gate & Pausable => typeof (gate as Partial<Pausable>).pauseFor === 'function',
    );
    this.#parsedRate = parsedRate;
    const retry = parseRetry(options.retry);
    const timeout =
      options.timeout === undefined ? Infinity : v.number('timeout', options.timeout, 0, true);
    const maxQueue =
      options.maxQueue === undefined ? Infinity : v.integer('maxQueue', options.maxQueue, 0, true);
    const overflow =
      options.overflow === undefined
        ? 'wait'
        : v.oneOf('overflow', options.overflow, ['wait', 'reject', 'drop-oldest'] as const);
    const clock: Clock = options.clock ?? systemClock;
    this.lifecycle = new Lifecycle(
      {
        capacity,
        pace: new Pace(buildWindows(parsedRate)),
        gates,
        retry,
        timeout,
        maxQueue,
        overflow,
        clock,
      },
      this,
    );
  }

  /**
   * At most this many run at once: the concurrency given, or the capacity of the gate given in
   * its place (Infinity if it has none to read). Settable when it is a number: a raise starts
   * waiting tasks at once.
   */
  get concurrency(): number {
    const gate = this.#concurrencyGate;
    if (gate === undefined) return this.lifecycle.engine.capacity;
    const capacity = (gate as { capacity?: unknown }).capacity;
    return typeof capacity === 'number' ? capacity : Infinity;
  }

  set concurrency(concurrency: number) {
    if (this.#concurrencyGate !== undefined) {
      throw new TypeError('Cannot set `concurrency`: it is kept by a gate; resize the gate itself');
    }
    this.lifecycle.engine.capacity = v.integer('concurrency', concurrency, 1, true);
  }

  /** The rates kept, as written: `['10/s', '500/min']`. Settable, with the same forms. */
  get rate(): string[] {
    return this.#parsedRate.rates.map(formatRate);
  }

  set rate(rate: RateSpec | readonly RateSpec[] | undefined) {
    const specs: readonly unknown[] = Array.isArray(rate) ? rate : [rate];
    if (specs.some(isGate)) {
      throw new TypeError('Cannot set `rate` to a gate: give rate gates to the constructor');
    }
    const lifecycle = this.lifecycle;
    this.#parsedRate = replaceRate(lifecycle.pace, lifecycle.engine, this.#parsedRate, rate);
    lifecycle.syncPacer();
  }

  /** Attempts holding permits (those that timed out but have not settled included). */
  get activeCount(): number {
    return this.lifecycle.active;
  }

  /** Permits out now, by weight: those of running tasks and those taken with `acquire()`. */
  get held(): number {
    return this.lifecycle.engine.held;
  }

  /** Tasks waiting in line, for room in it, or for the gates given to the limiter. */
  get pendingCount(): number {
    return this.lifecycle.pendingCount;
  }

  /** Whether nothing runs, waits or backs off. */
  get isIdle(): boolean {
    return this.lifecycle.isIdle();
  }

  /** Whether `pause()` holds the line (or `pauseFor()` until a later instant). */
  get isPaused(): boolean {
    return this.#paused || this.#pausedUntil > this.lifecycle.engine.clock.now();
  }

  /**
   * Runs `fn({ signal, attempt })` within the limits, and resolves or rejects with its outcome
   * (after retries). `fn` runs in the async context of this call.
   */
  schedule<T>(
    fn: (context: TaskContext) => T | PromiseLike<T>,
    options?: ScheduleOptions,
  ): Promise<Awaited<T>> {
    const lifecycle = this.lifecycle;
    let task: Task;
    try {
      v.fn('fn', fn);
      const { weight, priority, signal } = parseRequest(options);
      const timeout =
        options?.timeout === undefined
          ? lifecycle.timeout
          : v.number('timeout', options.timeout, 0, true);
      task = lifecycle.newTask(fn, undefined, weight, priority, timeout, signal);
    } catch (error) {
      return Promise.reject(error);
    }
    const promise = new Promise<Awaited<T>>((resolve, reject) => {
      task.resolve = resolve as (value: unknown) => void;
      task.reject = reject;
    });
    lifecycle.enter(task);
    return promise;
  }

  /**
   * Takes permits of the same concurrency and rate, and of every gate given in their place, as
   * any gate does (see `Semaphore`).
   */
  acquire(options?: AcquireOptions): Promise<Permit> {
    const lifecycle = this.lifecycle;
    if (lifecycle.closing !== undefined) return Promise.reject(lifecycle.closing);
    const own = request(lifecycle.engine, options, makePermit);
    if (lifecycle.gates.length === 0) return own;
    const { weight, priority, signal, timeout } = parseRequest(options);
    const clock = lifecycle.engine.clock;
    const asked = timeout === Infinity ? 0 : clock.now();
    return own.then(async (permit) => {
      // The gates have what is left of the timeout, all of them together.
      const deadline = timeout === Infinity ? undefined : { clock, at: asked + timeout, timeout };
      const held = await passGates(
        lifecycle.gates,
        { weight, priority, signal },
        [permit],
        0,
        deadline,
      );
      return new PermitGroup(weight, held);
    });
  }

  /**
   * Takes permits now if they are free, the rate allows it, nobody waits, and every gate given in
   * their place answers at once with one (never, then, when one of them has no synchronous path).
   */
  tryAcquire(weight = 1): Permit | undefined {
    v.integer('weight', weight, 1);
    const lifecycle = this.lifecycle;
    if (lifecycle.closing !== undefined) throw lifecycle.closing;
    const engine = lifecycle.engine;
    const heavy = tooHeavy(engine, weight);
    if (heavy !== undefined) throw heavy; // as acquire() rejects: it could never be granted
    if (!engine.tryTake(weight)) return undefined;
    engine.restampLater(weight, engine.grantedAt, 1);
    const permit = makePermit(engine, weight);
    if (lifecycle.gates.length === 0) return permit;
    const held = tryPassGates(lifecycle.gates, weight, [permit]);
    return held === undefined ? undefined : new PermitGroup(weight, held);
  }

  /** Stops starting tasks until `resume()`. Running tasks go on. */
  pause(): void {
    this.#paused = true;
    this.lifecycle.pace.pausedUntil = Infinity;
    this.lifecycle.syncPacer();
  }

  /** Ends `pause()`. A `pauseFor()` still running goes on to its end. */
  resume(): void {
    this.#paused = false;
    this.lifecycle.pace.pausedUntil = this.#pausedUntil;
    this.lifecycle.syncPacer();
  }

  /** A gate's `pauseFor()` failed (see the `pauseFailed` event). */
  readonly #pauseFailed = (error: unknown): void => {
    this.emit('pauseFailed', error);
  };

  /**
   * Starts no task for `ms` milliseconds (what a 429 with Retry-After calls for). A later
   * `pauseFor` that ends sooner does not shorten the pause; `resume()` does not end it. The gates
   * given to this limiter that can pause themselves (`pauseFor(ms)`: a rate shared through Redis)
   * are paused too; should that fail, a `pauseFailed` event tells it. `ms` is finite, as a shared
   * rate takes it: to pause until told otherwise, `pause()`.
   */
  pauseFor(ms: number): void {
    v.number('ms', ms, 0);
    const lifecycle = this.lifecycle;
    this.#pausedUntil = Math.max(this.#pausedUntil, lifecycle.engine.clock.now() + ms);
    if (!this.#paused) lifecycle.pace.pausedUntil = this.#pausedUntil;
    lifecycle.syncPacer();
    // A gate that can pause (a rate shared with other processes) pauses for everyone sharing it:
    // one process's 429 holds them all.
    // Its promise (a round trip) is not waited for; should it fail, this process's own pause
    // still holds, and the event says the others are not held.
    for (const gate of this.#pausable) {
      const paused = gate.pauseFor(ms);
      if (v.isThenable(paused)) paused.then(undefined, this.#pauseFailed);
    }
  }

  /** Resolves when nothing runs, waits or backs off. */
  onIdle(): Promise<void> {
    return this.lifecycle.onIdle();
  }

  /** Resolves when no task waits to start (some may still run). */
  onEmpty(): Promise<void> {
    return this.lifecycle.onEmpty();
  }

  /** Resolves when the line has room for one more task: backpressure for a producer. */
  onRoom(): Promise<void> {
    return this.lifecycle.onRoom();
  }

  /**
   * Stops admitting tasks (`schedule()` rejects with a `ClosedError`). Without `drain`, the tasks
   * waiting are rejected at once with a `ClosedError`, and no retry starts; with it, they run. At
   * the `deadline`, whatever is left is rejected and the running tasks' signals abort. Resolves
   * when every task's promise has settled.
   */
  async close(options?: CloseOptions): Promise<void> {
    v.options('options', options);
    const drain = options?.drain === undefined ? false : v.boolean('drain', options.drain);
    const deadline =
      options?.deadline === undefined ? Infinity : v.number('deadline', options.deadline, 0, true);
    const lifecycle = this.lifecycle;
    lifecycle.closing ??= new ClosedError('the limiter is closed');
    lifecycle.closeDrain = drain;
    const reason = lifecycle.closing;
    lifecycle.notifyRoom(true);
    if (!drain) lifecycle.rejectWaiting(reason);
    if (!lifecycle.isIdle() && deadline > 0) {
      await lifecycle.waitUntil(lifecycle.onIdle(), deadline);
    }
    lifecycle.rejectWaiting(reason);
    lifecycle.abandonRunning(reason);
    lifecycle.engine.close(reason);
  }

  /** A snapshot of the current state and the lifetime counters. */
  stats(): LimiterStats {
    const lifecycle = this.lifecycle;
    const engine = lifecycle.engine;
    return {
      concurrency: this.concurrency,
      active: lifecycle.active,
      held: engine.held,
      timedOutActive: lifecycle.zombies,
      pending: engine.line.size + lifecycle.admitting,
      waitingForRoom: lifecycle.parkedLive,
      retrying: lifecycle.between,
      completed: lifecycle.completed,
      failed: lifecycle.failed,
      retries: lifecycle.retries,
      timedOut: lifecycle.timedOut,
      dropped: lifecycle.dropped,
      paused: this.isPaused,
      rate: this.rate,
      closed: lifecycle.closing !== undefined,
    };
  }

  /** Like `Limiter(3/5 active, 7 pending, 10/s)`. */
  override toString(): string {
    const rate = this.#parsedRate.rates.length > 0 ? `, ${this.rate.join(' and ')}` : '';
    const flags =
      (this.isPaused ? ', paused' : '') + (this.lifecycle.closing !== undefined ? ', closed' : '');
    return `Limiter(${this.lifecycle.active}/${this.concurrency} active, ${this.pendingCount} pending${rate}${flags})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

export type { RetryInfo };
