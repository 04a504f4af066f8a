/**
 * `Limiter`: the policy object a service keeps for the life of the process. Concurrency, rate
 * windows, retries, honest timeouts, priorities and a bounded queue, composed over one gate engine.
 *
 * A task's life: it waits in the engine's line (or, with `overflow: 'wait'` and a full line, in a
 * room queue before it); when the front fits the concurrency and the rate allows, an attempt
 * starts, holding `weight` permits until its promise really settles. A failed attempt may be
 * retried after a backoff, during which it holds nothing, then waits in line again.
 *
 * Invariants:
 * - a task is in exactly one state: parked (waiting for room), queued, running, deciding or
 *   sleeping (between attempts), or done; its promise settles exactly once, when it becomes done;
 * - an attempt holds its permits until its own promise settles, even after its task has moved on
 *   (timed out, aborted, closed): the limit counts what really runs;
 * - no timer runs while the limiter is idle.
 */
import { AsyncResource } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import { makePermit, parseRequest, request, tooHeavy } from './_acquire.ts';
import { Deadlines, Due } from './_deadlines.ts';
import { Deque } from './_deque.ts';
import { systemClock, Timer, type Clock } from './_clock.ts';
import { Engine, type Waiter } from './_engine.ts';
import { Pace, type Pacer } from './_pace.ts';
import { formatRate, type RateSpec } from './_parse.ts';
import { watchAbort, type AbortListener, type Watch } from './_signals.ts';
import * as v from './_validate.ts';
import { ClosedError, QueueFullError, TimeoutError } from './errors.ts';
import type { AcquireOptions, Gate, Permit } from './gate.ts';
import {
  buildWindows,
  parseRateOptions,
  replaceRate,
  type ParsedRate,
  type RateOptions,
} from './rate.ts';
import {
  nextDelay,
  retryPolicy,
  type RetryInfo,
  type RetryOptions,
  type RetryPolicy,
} from './retry.ts';

/** What a full queue does with one more task. */
export type Overflow = 'wait' | 'reject' | 'drop-oldest';

/** Options for {@link Limiter}. */
export interface LimiterOptions extends RateOptions {
  /** At most this many tasks (by weight) run at once: an integer >= 1, or Infinity. @default Infinity */
  concurrency?: number;
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

/** What a task receives. */
export interface TaskContext {
  /** Aborts when the attempt times out, the caller aborts, or the limiter closes. */
  readonly signal: AbortSignal;
  /** 1 for the first attempt, 2 for the first retry, … */
  readonly attempt: number;
}

/** A task as events describe it. */
export interface TaskInfo {
  /** A number unique within this limiter, in the order of `schedule()` calls. */
  readonly id: number;
  readonly attempt: number;
  readonly priority: number;
  readonly weight: number;
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
  /** Tasks waiting in line. */
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

const enum State {
  Parked,
  Queued,
  Running,
  Between,
  Done,
}

/** What an attempt's abort is passed to, besides its signal (see {@link whenAborted}). @internal */
export interface AbortTarget {
  abort(reason: unknown): void;
}

/**
 * One attempt of a task: its context, whether it settled or timed out, and (as a `Due`) its place
 * in the limiter's list of timeouts.
 */
class Attempt extends Due implements TaskContext {
  readonly attempt: number;
  readonly task: Task;
  #controller: AbortController | undefined;
  #reason: unknown = undefined;
  #aborted = false;
  settled = false;
  timedOut = false;

  constructor(task: Task, attempt: number) {
    super();
    this.task = task;
    this.attempt = attempt;
  }

  /** Made on first use: a task that never reads it costs no AbortController. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
    const target = this.#target;
    const more = this.#more;
    this.#target = this.#more = undefined;
    target?.abort(reason);
    if (more !== undefined) for (const other of more) other.abort(reason);
  }

  /** The first target to abort with it, and any others (rare): no array for the usual one. */
  #target: AbortTarget | undefined;
  #more: AbortTarget[] | undefined;

  /** Calls `target.abort(reason)` when the attempt aborts (at once if it has): no AbortController. */
  whenAborted(target: AbortTarget): void {
    if (this.#aborted) target.abort(this.#reason);
    else if (this.#target === undefined) this.#target = target;
    else (this.#more ??= []).push(target);
  }
}

/**
 * Calls `target.abort(reason)` when the attempt behind `context` aborts (times out, its caller
 * aborts, the limiter gives up on it): what the signal does, for code that can be told without
 * one (an AbortController per request is a measurable cost on a fast path). @internal
 */
export function whenAborted(context: TaskContext, target: AbortTarget): void {
  if (context instanceof Attempt) context.whenAborted(target);
  else
    context.signal.addEventListener('abort', () => {
      target.abort(context.signal.reason);
    });
}

/**
 * A task driven by calls instead of a function and a promise: what the HTTP core schedules, one
 * request attempt each, without the closures and promises of `schedule()` around it. @internal
 */
export interface TaskRunner {
  /**
   * The async context its attempts start in: the caller's, kept by a resource the runner already
   * has (so that a task costs no AsyncResource of its own). Without it, the task keeps the context
   * it was scheduled in.
   */
  readonly scope?: AsyncResource | undefined;
  /**
   * Starts an attempt, as a task's `fn` would. The attempt holds its permits until
   * `endAttempt(context, …)` is called for it, once (a throw ends it at once, as a failure).
   */
  start(context: TaskContext): void;
  /**
   * The task's outcome, once, where `schedule()` would settle its promise. It is called from
   * inside the limiter (which may not have given the attempt's permits back yet): it must not
   * call into the limiter synchronously.
   */
  done(ok: boolean, outcome: unknown): void;
}

type TaskFn = (context: TaskContext) => unknown;

// Module-private access to the Limiter's private members, filled in by its static block.
let startTask: (limiter: Limiter, task: Task) => void;
let failTask: (limiter: Limiter, task: Task, reason: unknown) => void;
let abortTask: (limiter: Limiter, task: Task, reason: unknown) => void;
let settleAttempt: (limiter: Limiter, attempt: Attempt, ok: boolean, outcome: unknown) => void;

/**
 * Schedules a task run by `runner` (see {@link TaskRunner}): `schedule()` without a promise. A
 * task refused at once (closed, aborted, too heavy) gets `runner.done(false, reason)` before this
 * returns, and this returns false. @internal
 */
export let runTask: (
  limiter: Limiter,
  runner: TaskRunner,
  priority: number | undefined,
  signal: AbortSignal | undefined,
) => boolean;

/** Ends the attempt behind `context` of a runner's task (see {@link TaskRunner}). @internal */
export function endAttempt(context: TaskContext, ok: boolean, outcome: unknown): void {
  if (!(context instanceof Attempt)) throw new TypeError('Expected the context of a task attempt');
  if (!context.settled) settleAttempt(context.task.limiter, context, ok, outcome);
}

/**
 * Puts a limiter's pace behind another pacer made of it (a keyed limiter's share of a global
 * concurrency): from then on every start also asks `wrap(pace)`. @internal
 */
export let wrapPace: <P extends Pacer>(limiter: Limiter, wrap: (pace: Pace) => P) => P;

/** Serves a limiter's line (after something outside it changed, such as a global share). @internal */
export let serveLine: (limiter: Limiter) => void;

/** Fails the tasks waiting in a limiter's line that are heavier than `max` (`what` names it). @internal */
export let failHeavy: (limiter: Limiter, max: number, what: string) => void;

/** Whether a limiter has nothing running, waiting or backing off, and no rate history that matters at `now`. @internal */
export let isForgettable: (limiter: Limiter, now: number) => boolean;

/** A scheduled task. Its attempts run in the caller's async context, which `scope` keeps. */
class Task implements Waiter, AbortListener {
  /** The weight in line; 0 once withdrawn. */
  weight: number;
  readonly cost: number;
  readonly id: number;
  /** What it runs: a function (`schedule()`), or a runner (`runTask()`). */
  readonly fn: TaskFn | undefined;
  readonly runner: TaskRunner | undefined;
  readonly priority: number;
  readonly timeout: number;
  readonly signal: AbortSignal | undefined;
  readonly limiter: Limiter;
  /** The caller's async context: the runner's, or the task's own. */
  readonly scope: AsyncResource;
  resolve: (value: unknown) => void = noop;
  reject: (reason: unknown) => void = noop;
  state = State.Queued;
  attempt = 0;
  current: Attempt | undefined = undefined;
  timer: Timer | undefined = undefined;
  /** Its watch on the caller's signal. */
  watch: Watch | undefined = undefined;
  /** Its place in the limiter's list of running or of resting tasks. */
  list: TaskList | undefined = undefined;
  prev: Task | undefined = undefined;
  next: Task | undefined = undefined;

  constructor(
    limiter: Limiter,
    id: number,
    fn: TaskFn | undefined,
    runner: TaskRunner | undefined,
    weight: number,
    priority: number,
    timeout: number,
    signal: AbortSignal | undefined,
  ) {
    this.limiter = limiter;
    this.scope = runner?.scope ?? new AsyncResource('sluice.limiter');
    this.id = id;
    this.fn = fn;
    this.runner = runner;
    this.weight = weight;
    this.cost = weight;
    this.priority = priority;
    this.timeout = timeout;
    this.signal = signal;
  }

  grant(): void {
    this.scope.runInAsyncScope(startTask, undefined, this.limiter, this);
  }

  fail(reason: unknown): void {
    failTask(this.limiter, this, reason);
  }

  /** The caller's signal aborted. */
  aborted(): void {
    abortTask(this.limiter, this, (this.signal as AbortSignal).reason);
  }

  info(): TaskInfo {
    return { id: this.id, attempt: this.attempt, priority: this.priority, weight: this.cost };
  }
}

function noop(): void {
  // placeholder resolver
}

/**
 * Tasks linked through their own fields (a task is in one list at most): running, or resting
 * between attempts. Not a Set, for the reason `_signals.ts` gives: a Set with this much churn
 * is rehashed often, and V8's obsolete tables keep their successors (and the tasks in them, and
 * all those reach) alive once one of them has been promoted.
 */
class TaskList {
  #head: Task | undefined = undefined;
  size = 0;

  add(task: Task): void {
    if (task.list !== undefined) return;
    task.list = this;
    const head = this.#head;
    task.next = head;
    if (head !== undefined) head.prev = task;
    this.#head = task;
    this.size++;
  }

  delete(task: Task): void {
    if (task.list !== this) return;
    const { prev, next } = task;
    if (prev === undefined) this.#head = next;
    else prev.next = next;
    if (next !== undefined) next.prev = prev;
    task.prev = task.next = task.list = undefined;
    this.size--;
  }

  /** A copy, oldest first. */
  toArray(): Task[] {
    const tasks: Task[] = [];
    for (let task = this.#head; task !== undefined; task = task.next) tasks.push(task);
    return tasks.reverse();
  }
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
 * @example
 * ```ts
 * const api = new Limiter({ concurrency: 5, rate: ['10/s', '500/min'], retry: 3, timeout: 30_000 });
 * const user = await api.schedule(({ signal }) => getUser(id, { signal }), { priority: 1 });
 * ```
 */
export class Limiter extends EventEmitter<LimiterEvents> implements Gate {
  readonly #engine: Engine;
  readonly #pace: Pace;
  /** What the engine consults: the pace itself, or a pacer wrapped around it. */
  #pacer: Pacer | undefined;
  #parsedRate: ParsedRate;
  readonly #retry: RetryPolicy | undefined;
  readonly #timeout: number;
  readonly #maxQueue: number;
  readonly #overflow: Overflow;
  /** Tasks waiting for room in a full line; those aborted meanwhile stay until shifted out. */
  readonly #parked = new Deque<Task>();
  /** How many of `#parked` still wait. */
  #parkedLive = 0;
  #nextId = 1;
  #active = 0;
  #zombies = 0;
  /** The running attempts that have a timeout, by when it comes: one timer for all. */
  readonly #deadlines: Deadlines<Attempt>;
  #between = 0;
  #completed = 0;
  #failed = 0;
  #retries = 0;
  #timedOut = 0;
  #dropped = 0;
  /** `pause()` was called (and not `resume()`). */
  #paused = false;
  /** The end of the latest `pauseFor()`. */
  #pausedUntil = -Infinity;
  /** Whether `close()` lets waiting tasks (and retries) run. */
  #closeDrain = false;
  /** Set when a task arrives, cleared when the limiter goes idle: 'idle' fires on the transition. */
  #busy = false;
  #closing: ClosedError | undefined;
  #idleWaiters: (() => void)[] = [];
  #emptyWaiters: (() => void)[] = [];
  #roomWaiters: (() => void)[] = [];
  readonly #running = new TaskList();
  readonly #resting = new TaskList();

  static {
    startTask = (limiter, task) => {
      limiter.#start(task);
    };
    failTask = (limiter, task, reason) => {
      limiter.#fail(task, reason);
    };
    abortTask = (limiter, task, reason) => {
      limiter.#abort(task, reason);
    };
    settleAttempt = (limiter, attempt, ok, outcome) => {
      limiter.#settle(attempt.task, attempt, ok, outcome);
    };
    runTask = (limiter, runner, priority, signal) => {
      let task: Task;
      try {
        task = limiter.#newTask(
          undefined,
          runner,
          1,
          priority === undefined ? 0 : v.finite('priority', priority),
          limiter.#timeout,
          signal,
        );
      } catch (error) {
        runner.done(false, error);
        return false;
      }
      limiter.#enter(task);
      return true;
    };
    wrapPace = (limiter, wrap) => {
      const pacer = wrap(limiter.#pace);
      limiter.#pacer = pacer;
      limiter.#syncPacer();
      return pacer;
    };
    serveLine = (limiter) => {
      limiter.#engine.drain();
    };
    failHeavy = (limiter, max, what) => {
      limiter.#engine.failHeavierThan(max, what);
    };
    isForgettable = (limiter, now) =>
      limiter.#isIdle() &&
      limiter.#engine.held === 0 &&
      limiter.#engine.line.size === 0 &&
      limiter.#pace.settledBy(now);
  }

  constructor(options: LimiterOptions = {}) {
    super();
    v.options('options', options);
    const concurrency =
      options.concurrency === undefined
        ? Infinity
        : v.integer('concurrency', options.concurrency, 1, true);
    this.#parsedRate = parseRateOptions(options);
    this.#pace = new Pace(buildWindows(this.#parsedRate));
    const retry = options.retry;
    // `retry: 0` is no retry at all: failures reject as they are, not wrapped in a RetryError.
    const policy =
      retry === undefined
        ? undefined
        : typeof retry === 'number'
          ? retryPolicy({ retries: v.integer('retry', retry, 0, true) })
          : retryPolicy(retry, 'retry');
    this.#retry = policy?.retries === 0 ? undefined : policy;
    this.#timeout =
      options.timeout === undefined ? Infinity : v.number('timeout', options.timeout, 0, true);
    this.#maxQueue =
      options.maxQueue === undefined ? Infinity : v.integer('maxQueue', options.maxQueue, 0, true);
    this.#overflow =
      options.overflow === undefined
        ? 'wait'
        : v.oneOf('overflow', options.overflow, ['wait', 'reject', 'drop-oldest'] as const);
    this.#engine = new Engine(concurrency, options.clock ?? systemClock);
    this.#deadlines = new Deadlines(this.#engine.clock, (attempt) => {
      this.#onTimeout(attempt.task, attempt);
    });
    this.#engine.onLeave = () => {
      this.#lineLeft();
    };
    if (this.#pace.windows.length > 0) this.#engine.setPacer(this.#pace);
  }

  /** At most this many run at once. Settable: a raise starts waiting tasks at once. */
  get concurrency(): number {
    return this.#engine.capacity;
  }

  set concurrency(concurrency: number) {
    this.#engine.capacity = v.integer('concurrency', concurrency, 1, true);
  }

  /** The rates kept, as written: `['10/s', '500/min']`. Settable, with the same forms. */
  get rate(): string[] {
    return this.#parsedRate.rates.map(formatRate);
  }

  set rate(rate: RateSpec | readonly RateSpec[] | undefined) {
    this.#parsedRate = replaceRate(this.#pace, this.#engine, this.#parsedRate, rate);
    this.#syncPacer();
  }

  /** Attempts holding permits (those that timed out but have not settled included). */
  get activeCount(): number {
    return this.#active;
  }

  /** Permits out now, by weight: those of running tasks and those taken with `acquire()`. */
  get held(): number {
    return this.#engine.held;
  }

  /** Tasks waiting in line or for room in it. */
  get pendingCount(): number {
    return this.#engine.line.size + this.#parkedLive;
  }

  /** Whether nothing runs, waits or backs off. */
  get isIdle(): boolean {
    return this.#isIdle();
  }

  /** Whether `pause()` holds the line (or `pauseFor()` until a later instant). */
  get isPaused(): boolean {
    return this.#paused || this.#pausedUntil > this.#engine.clock.now();
  }

  /**
   * Runs `fn({ signal, attempt })` within the limits, and resolves or rejects with its outcome
   * (after retries). `fn` runs in the async context of this call.
   */
  schedule<T>(
    fn: (context: TaskContext) => T | PromiseLike<T>,
    options?: ScheduleOptions,
  ): Promise<Awaited<T>> {
    let task: Task;
    try {
      v.fn('fn', fn);
      const { weight, priority, signal } = parseRequest(options);
      const timeout =
        options?.timeout === undefined
          ? this.#timeout
          : v.number('timeout', options.timeout, 0, true);
      task = this.#newTask(fn, undefined, weight, priority, timeout, signal);
    } catch (error) {
      return Promise.reject(error);
    }
    const promise = new Promise<Awaited<T>>((resolve, reject) => {
      task.resolve = resolve as (value: unknown) => void;
      task.reject = reject;
    });
    this.#enter(task);
    return promise;
  }

  /** A new task, or a throw if it is refused at once (closed, aborted, too heavy). */
  #newTask(
    fn: TaskFn | undefined,
    runner: TaskRunner | undefined,
    weight: number,
    priority: number,
    timeout: number,
    signal: AbortSignal | undefined,
  ): Task {
    if (this.#closing !== undefined) throw this.#closing;
    if (signal?.aborted === true) throw signal.reason;
    const heavy = tooHeavy(this.#engine, weight);
    if (heavy !== undefined) throw heavy;
    return new Task(this, this.#nextId++, fn, runner, weight, priority, timeout, signal);
  }

  /** A new task starts watching its signal and is admitted. */
  #enter(task: Task): void {
    if (task.signal !== undefined) task.watch = watchAbort(task.signal, task);
    this.#admit(task);
  }

  /** Takes permits of the same concurrency and rate, as any gate does (see `Semaphore`). */
  acquire(options?: AcquireOptions): Promise<Permit> {
    if (this.#closing !== undefined) return Promise.reject(this.#closing);
    return request(this.#engine, options, makePermit);
  }

  /** Takes permits now if they are free, the rate allows it and nobody waits. */
  tryAcquire(weight = 1): Permit | undefined {
    v.integer('weight', weight, 1);
    if (this.#closing !== undefined) throw this.#closing;
    if (!this.#engine.tryTake(weight)) return undefined;
    this.#engine.restampLater(weight, this.#engine.grantedAt, 1);
    return makePermit(this.#engine, weight);
  }

  /** Stops starting tasks until `resume()`. Running tasks go on. */
  pause(): void {
    this.#paused = true;
    this.#pace.pausedUntil = Infinity;
    this.#syncPacer();
  }

  /** Ends `pause()`. A `pauseFor()` still running goes on to its end. */
  resume(): void {
    this.#paused = false;
    this.#pace.pausedUntil = this.#pausedUntil;
    this.#syncPacer();
  }

  /**
   * Starts no task for `ms` milliseconds (what a 429 with Retry-After calls for). A later
   * `pauseFor` that ends sooner does not shorten the pause; `resume()` does not end it.
   */
  pauseFor(ms: number): void {
    v.number('ms', ms, 0, true);
    this.#pausedUntil = Math.max(this.#pausedUntil, this.#engine.clock.now() + ms);
    if (!this.#paused) this.#pace.pausedUntil = this.#pausedUntil;
    this.#syncPacer();
  }

  /** Resolves when nothing runs, waits or backs off. */
  onIdle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Resolves when no task waits to start (some may still run). */
  onEmpty(): Promise<void> {
    if (this.pendingCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.#emptyWaiters.push(resolve));
  }

  /** Resolves when the line has room for one more task: backpressure for a producer. */
  onRoom(): Promise<void> {
    if (this.#hasRoom()) return Promise.resolve();
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  /**
   * Stops admitting tasks (`schedule()` rejects with a `ClosedError`). Without `drain`, the tasks
   * waiting are rejected at once with a `ClosedError`; with it, they run. At the `deadline`,
   * whatever is left is rejected and the running tasks' signals abort. Resolves when every task's
   * promise has settled.
   */
  async close(options?: CloseOptions): Promise<void> {
    v.options('options', options);
    const drain = options?.drain === undefined ? false : v.boolean('drain', options.drain);
    const deadline =
      options?.deadline === undefined ? Infinity : v.number('deadline', options.deadline, 0, true);
    this.#closing ??= new ClosedError('the limiter is closed');
    this.#closeDrain = drain;
    const reason = this.#closing;
    this.#notifyRoom(true);
    if (!drain) this.#rejectWaiting(reason);
    if (!this.#isIdle() && deadline > 0) {
      let timer: Timer | undefined;
      await Promise.race([
        this.onIdle(),
        deadline === Infinity
          ? new Promise<never>(noop)
          : new Promise<void>(
              (resolve) => (timer = new Timer(this.#engine.clock, deadline, resolve)),
            ),
      ]);
      timer?.cancel();
    }
    this.#rejectWaiting(reason);
    for (const task of this.#running.toArray()) {
      task.current?.abort(reason);
      this.#finish(task, false, reason);
    }
    this.#engine.close(reason);
  }

  /** A snapshot of the current state and the lifetime counters. */
  stats(): LimiterStats {
    return {
      concurrency: this.#engine.capacity,
      active: this.#active,
      held: this.#engine.held,
      timedOutActive: this.#zombies,
      pending: this.#engine.line.size,
      waitingForRoom: this.#parkedLive,
      retrying: this.#between,
      completed: this.#completed,
      failed: this.#failed,
      retries: this.#retries,
      timedOut: this.#timedOut,
      dropped: this.#dropped,
      paused: this.isPaused,
      rate: this.rate,
      closed: this.#closing !== undefined,
    };
  }

  /** Like `Limiter(3/5 active, 7 pending, 10/s)`. */
  override toString(): string {
    const rate = this.#parsedRate.rates.length > 0 ? `, ${this.rate.join(' and ')}` : '';
    const flags =
      (this.isPaused ? ', paused' : '') + (this.#closing !== undefined ? ', closed' : '');
    return `Limiter(${this.#active}/${this.#engine.capacity} active, ${this.pendingCount} pending${rate}${flags})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  /** Installs the pace as the engine's pacer only when it can hold anything back. */
  #syncPacer(): void {
    if (this.#pacer !== undefined) {
      this.#engine.setPacer(this.#pacer);
      return;
    }
    const needed = this.#pace.windows.length > 0 || this.#pace.pausedUntil !== -Infinity;
    if (needed) this.#engine.setPacer(this.#pace);
    else if (this.#engine.pacer !== undefined) this.#engine.setPacer(undefined);
  }

  #hasRoom(): boolean {
    return this.#engine.line.size < this.#maxQueue;
  }

  /** A new task: into the line, or the room queue, or refused, by the overflow policy. */
  #admit(task: Task): void {
    this.#busy = true;
    if (this.#parkedLive === 0) {
      if (this.#engine.tryTake(task.cost)) {
        this.#start(task); // nobody waits, it fits, the rate allows: it never queues
        return;
      }
      if (this.#hasRoom()) {
        this.#engine.enqueue(task, task.priority);
        return;
      }
    }
    const full = (): QueueFullError =>
      new QueueFullError(`the queue is full (maxQueue ${this.#maxQueue})`);
    switch (this.#overflow) {
      case 'reject':
        this.#finish(task, false, full());
        return;
      case 'drop-oldest': {
        const oldest = this.#engine.line.oldestOfLowest();
        // Never drop a task of a higher priority than the newcomer's: refuse the newcomer then.
        if (oldest === undefined || oldest.priority > task.priority) {
          this.#finish(task, false, full());
          return;
        }
        const victim = oldest.entry;
        const error = new QueueFullError(
          `dropped from a full queue (maxQueue ${this.#maxQueue}) to make room for a newer task`,
        );
        this.#engine.withdraw(victim, () => {
          if (victim instanceof Task) {
            this.#dropped++;
            if (this.listenerCount('dropped') > 0) this.emit('dropped', victim.info());
            this.#finish(victim, false, error);
          } else {
            victim.fail(error);
          }
        });
        this.#engine.enqueue(task, task.priority);
        return;
      }
      case 'wait':
        task.state = State.Parked;
        this.#parked.push(task);
        this.#parkedLive++;
    }
  }

  /**
   * Back into the line for another attempt, from a backoff timer: in the caller's async context
   * (kept by the task's scope), whatever clock fired the timer.
   */
  #requeue(task: Task): void {
    const heavy = tooHeavy(this.#engine, task.cost);
    if (heavy !== undefined) {
      this.#finish(task, false, heavy); // the concurrency was lowered below its weight meanwhile
      return;
    }
    task.state = State.Queued;
    task.weight = task.cost;
    if (this.#engine.tryTake(task.cost))
      task.scope.runInAsyncScope(startTask, undefined, this, task);
    else this.#engine.enqueue(task, task.priority);
  }

  /**
   * There may be room (entries left the line, or permits came back): tasks waiting for room move
   * into the line — or straight to a start, with `maxQueue: 0` — and those waiting on room or on
   * an empty line hear of it.
   */
  #lineLeft(): void {
    while (this.#parkedLive > 0) {
      const task = this.#parked.peek() as Task;
      if (task.state !== State.Parked) {
        this.#parked.shift(); // aborted while it waited
        continue;
      }
      if (this.#hasRoom()) {
        this.#parked.shift();
        this.#parkedLive--;
        this.#requeue(task); // checks its weight against limits changed while it waited
      } else if (this.#engine.line.size === 0 && this.#engine.tryTake(task.cost)) {
        this.#parked.shift();
        this.#parkedLive--;
        task.scope.runInAsyncScope(startTask, undefined, this, task);
      } else {
        break;
      }
    }
    if (this.#parkedLive === 0 && this.#parked.size > 0) this.#parked.clear();
    this.#notifyRoom(false);
    if (this.pendingCount === 0 && this.#emptyWaiters.length > 0) {
      for (const resolve of this.#emptyWaiters.splice(0)) resolve();
    }
  }

  /** Runs one attempt; the task's permits are held. */
  #start(task: Task): void {
    const bookedAt = this.#engine.grantedAt;
    task.state = State.Running;
    const attempt = new Attempt(task, ++task.attempt);
    task.current = attempt;
    this.#active++;
    this.#running.add(task);
    if (task.timeout !== Infinity) this.#deadlines.add(attempt, task.timeout);
    if (this.listenerCount('active') > 0) this.emit('active', task.info());
    let result: unknown;
    try {
      if (task.fn === undefined) (task.runner as TaskRunner).start(attempt);
      else result = task.fn(attempt);
    } catch (error) {
      if (!attempt.settled) this.#settle(task, attempt, false, error);
      return;
    } finally {
      // The task's synchronous part (where it sends its request) has run: the rate counts the
      // start from now, not from the booking a few microseconds (or a preemption) earlier. Only
      // rate windows count starts (a pause or a global share does not).
      if (this.#pace.windows.length > 0 && this.#engine.pacer !== undefined)
        this.#engine.restamp(task.cost, bookedAt);
    }
    if (task.fn === undefined) return; // the runner calls endAttempt()
    if (v.isThenable(result)) {
      (result instanceof Promise ? result : Promise.resolve(result)).then(
        (value: unknown) => {
          this.#settle(task, attempt, true, value);
        },
        (error: unknown) => {
          this.#settle(task, attempt, false, error);
        },
      );
    } else {
      this.#settle(task, attempt, true, result);
    }
  }

  /** An attempt's promise settled: it gives its permits back, and its outcome counts if still current. */
  #settle(task: Task, attempt: Attempt, ok: boolean, outcome: unknown): void {
    attempt.settled = true;
    this.#deadlines.remove(attempt);
    this.#active--;
    if (attempt.timedOut) this.#zombies--;
    if (task.current === attempt) {
      task.current = undefined;
      this.#running.delete(task);
      if (task.state === State.Running) {
        if (ok) this.#conclude(task, true, outcome);
        else this.#attemptFailed(task, outcome);
      }
    }
    // The release tells waiters of the room and of an empty line (`#lineLeft`): what is left to
    // tell is whether the limiter went idle, once its permits are back.
    this.#engine.release(task.cost);
    this.#checkIdle(false);
  }

  #onTimeout(task: Task, attempt: Attempt): void {
    if (attempt.settled) return;
    attempt.timedOut = true;
    this.#zombies++;
    this.#timedOut++;
    const error = new TimeoutError(`the task timed out after ${task.timeout}ms`, task.timeout);
    attempt.abort(error);
    if (task.current === attempt && task.state === State.Running) {
      // The attempt keeps its permits until it settles; the task moves on now.
      task.current = undefined;
      this.#running.delete(task);
      this.#attemptFailed(task, error);
    }
  }

  /** Retries after a backoff if the policy says so; otherwise the task fails. */
  #attemptFailed(task: Task, error: unknown): void {
    const policy = this.#retry;
    if (policy === undefined) {
      this.#finish(task, false, error);
      return;
    }
    task.state = State.Between;
    this.#between++;
    this.#resting.add(task);
    void nextDelay(policy, error, task.attempt, task.signal).then((next) => {
      if (task.state !== State.Between) return; // aborted or closed meanwhile
      if ('error' in next) {
        this.#leaveBetween(task);
        this.#finish(task, false, next.error);
        return;
      }
      this.#retries++;
      policy.onRetry?.({ error, attempt: task.attempt, delay: next.delay });
      if (this.listenerCount('retry') > 0)
        this.emit('retry', task.info(), { error, attempt: task.attempt, delay: next.delay });
      task.timer = new Timer(this.#engine.clock, next.delay, () => {
        task.timer = undefined;
        if (task.state !== State.Between) return;
        this.#leaveBetween(task);
        if (this.#closing !== undefined && !this.#closeDrain)
          this.#finish(task, false, this.#closing);
        else this.#requeue(task);
      });
    });
  }

  #leaveBetween(task: Task): void {
    this.#between--;
    this.#resting.delete(task);
    task.timer?.cancel();
    task.timer = undefined;
  }

  /** The caller's signal aborted: the task fails with its reason, wherever it is. */
  #abort(task: Task, reason: unknown): void {
    switch (task.state) {
      case State.Queued:
        this.#engine.aborted++;
        this.#engine.withdraw(task); // the line is served again, and room made for waiting tasks
        break;
      case State.Running:
        task.current?.abort(reason);
        task.current = undefined;
        this.#running.delete(task);
        break;
      case State.Between:
        this.#leaveBetween(task);
        break;
      case State.Parked:
        this.#parkedLive--; // its entry is skipped when it reaches the front
        break;
      case State.Done:
        break;
    }
    this.#finish(task, false, reason);
  }

  /** Called by the engine when it fails a queued task (close, a lowered capacity). */
  #fail(task: Task, reason: unknown): void {
    this.#finish(task, false, reason);
  }

  /** The task is done: its promise settles, once. */
  #finish(task: Task, ok: boolean, outcome: unknown): void {
    this.#conclude(task, ok, outcome);
    this.#checkIdle();
  }

  /** `#finish()` without the idle check, for a caller that makes it later. */
  #conclude(task: Task, ok: boolean, outcome: unknown): void {
    if (task.state === State.Done) return;
    task.state = State.Done;
    task.watch?.stop();
    task.watch = undefined;
    const runner = task.runner;
    if (ok) {
      this.#completed++;
      if (runner === undefined) task.resolve(outcome);
      else runner.done(true, outcome);
      if (this.listenerCount('completed') > 0) this.emit('completed', task.info(), outcome);
    } else {
      this.#failed++;
      if (runner === undefined) task.reject(outcome);
      else runner.done(false, outcome);
      if (this.listenerCount('failed') > 0) this.emit('failed', task.info(), outcome);
    }
  }

  /** Rejects everything that has not started: tasks queued, waiting for room or between attempts, and acquire() callers. */
  #rejectWaiting(reason: unknown): void {
    // Tasks waiting for room first, or the line's emptying would move them into it.
    const parked = this.#parked.drain().filter((task) => task.state === State.Parked);
    this.#parkedLive = 0;
    for (const task of parked) this.#finish(task, false, reason);
    this.#engine.failAll(reason);
    for (const task of this.#resting.toArray()) {
      this.#leaveBetween(task);
      this.#finish(task, false, reason);
    }
  }

  #isIdle(): boolean {
    return this.#active === 0 && this.pendingCount === 0 && this.#between === 0;
  }

  /**
   * Tells who waits for an empty line, for room, or for idleness; `waiters: false` when only the
   * last can have changed (the others were just told).
   */
  #checkIdle(waiters = true): void {
    if (waiters) {
      if (this.pendingCount === 0 && this.#emptyWaiters.length > 0) {
        for (const resolve of this.#emptyWaiters.splice(0)) resolve();
      }
      this.#notifyRoom(false);
    }
    if (!this.#isIdle()) return;
    if (this.#idleWaiters.length > 0) for (const resolve of this.#idleWaiters.splice(0)) resolve();
    if (this.#busy) {
      this.#busy = false;
      if (this.listenerCount('idle') > 0) this.emit('idle');
    }
  }

  #notifyRoom(closing: boolean): void {
    if (this.#roomWaiters.length > 0 && (closing || this.#hasRoom())) {
      for (const resolve of this.#roomWaiters.splice(0)) resolve();
    }
  }
}
