/**
 * The task life cycle, written once: a task's admission, its attempts, their timeouts, the retry
 * schedule and the settlement. `Limiter` is a shell around one (and `KeyedLimiter` around one per
 * key, the HTTP client and `sluice exec` through those), so what a task goes through is the same
 * whoever scheduled it.
 *
 * A task's life: it waits in the line of the limiter's own gate (the engine: its concurrency, its
 * rate windows, its pause, a keyed limiter's global share), or for room before the line when it is
 * full (`overflow: 'wait'`). Once the engine grants it its permits, it takes a permit of each gate
 * given to the limiter, in order (`_gates.ts`), and its attempt starts. The attempt holds every
 * permit until its own promise settles. A failed attempt is retried as the retry policy decides
 * (`RetryPolicy.decide`), after a backoff during which it holds nothing: then it goes back into
 * the line, and through every gate, as its first attempt did.
 *
 * Invariants:
 * - a task is in exactly one state (see `State`); its promise settles exactly once, when it
 *   becomes done;
 * - every attempt, the first and every retry, passes every gate before it starts;
 * - an attempt holds its permits until its own promise settles, even after its task has moved on
 *   (timed out, aborted, closed): the limits count what really runs;
 * - no attempt starts after `close()` unless the close drains;
 * - no timer runs while nothing runs, waits or backs off.
 *
 * The overflow policies, the room queue and the waiters for idle, empty and room are in
 * `_room.ts`, which this extends.
 *
 * Its size (about 580 lines): the transitions of one state machine read and write the same
 * counters and lists, and keeping them in one class is what makes each rule (the close check, the
 * detach before an abort, the release after the outcome) live in one place. What is not a
 * transition is elsewhere: the task and attempt objects (`_task.ts`), admission (`_room.ts`),
 * the gates (`_gates.ts`), the retry decision (`retry.ts`).
 */
import { Deadlines } from './_deadlines.ts';
import { Timer, type Clock } from './_clock.ts';
import { NEVER_ABORTED, tooHeavy } from './_acquire.ts';
import { Engine } from './_engine.ts';
import { passGates, releaseAll } from './_gates.ts';
import { Pace, type Pacer } from './_pace.ts';
import { Room, type Overflow } from './_room.ts';
import {
  Attempt,
  isDropStatus,
  State,
  Task,
  TaskList,
  type Held,
  type TaskFn,
  type TaskHost,
  type TaskRunner,
} from './_task.ts';
import { onAbort, watchAbort } from './_signals.ts';
import * as v from './_validate.ts';
import { TimeoutError } from './errors.ts';
import type { Gate, Permit, ReleaseOutcome } from './gate.ts';
import type { LimiterEvents } from './limiter.ts';
import type { RetryDecision, RetryInfo, RetryPolicy } from './retry.ts';

/** What the life cycle tells of its tasks: the limiter's events. */
export interface TaskEvents {
  listenerCount(event: keyof LimiterEvents): number;
  emit<E extends keyof LimiterEvents>(event: E, ...args: LimiterEvents[E]): boolean;
}

/** How a life cycle is set up (already checked). */
export interface LifecycleSettings {
  /** The engine's capacity: the concurrency, or Infinity when a gate keeps it. */
  capacity: number;
  pace: Pace;
  /** The gates every attempt passes after the engine, in order. */
  gates: readonly Gate[];
  retry: RetryPolicy | undefined;
  timeout: number;
  maxQueue: number;
  overflow: Overflow;
  clock: Clock;
}

/** Queues microtasks. */
const SETTLED: Promise<void> = Promise.resolve();

/**
 * What an attempt's permits are given back with: how a gate that learns (an adaptive limit) sees
 * the attempt, decided here only. A drop is the other side refusing or shedding the work: a
 * timeout (even if the attempt ended well later), a failure whose `status` is 429 or 503, or a
 * refusal the runner delivered as its result (`Attempt.dropped`). A cancelled attempt (its caller
 * aborted, the limiter closed, a permit was lost) says nothing of the other side: no outcome, so
 * the gate learns nothing from it.
 */
function outcomeOf(
  attempt: Attempt,
  ok: boolean,
  outcome: unknown,
  latencyMs: number,
): ReleaseOutcome | undefined {
  if (attempt.timedOut) return { ok: false, dropped: true, latencyMs };
  if (attempt.aborted) return undefined;
  const result: ReleaseOutcome = { ok, latencyMs };
  if (attempt.dropped || (!ok && isDropError(outcome))) result.dropped = true;
  return result;
}

/** Whether an attempt's error says the other side refused or shed the work. */
function isDropError(error: unknown): boolean {
  if (error instanceof TimeoutError) return true;
  return isDropStatus((error as { status?: unknown } | null)?.status);
}

export class Lifecycle extends Room implements TaskHost {
  readonly pace: Pace;
  /** What the engine consults: the pace itself, or a pacer wrapped around it (a key's share). */
  pacer: Pacer | undefined;
  readonly gates: readonly Gate[];
  readonly retry: RetryPolicy | undefined;
  readonly timeout: number;
  #nextId = 1;
  active = 0;
  /** Attempts that timed out but have not settled yet. */
  zombies = 0;
  /** Tasks between attempts. */
  between = 0;
  completed = 0;
  failed = 0;
  retries = 0;
  timedOut = 0;
  /** The running attempts that have a timeout, by when it comes: one timer for all. */
  readonly #deadlines: Deadlines<Attempt>;
  readonly #running = new TaskList();
  readonly #admitting = new TaskList();
  readonly #resting = new TaskList();

  constructor(settings: LifecycleSettings, events: TaskEvents) {
    super(new Engine(settings.capacity, settings.clock), settings, events);
    this.pace = settings.pace;
    this.gates = settings.gates;
    this.retry = settings.retry;
    this.timeout = settings.timeout;
    this.#deadlines = new Deadlines(this.engine.clock, (attempt) => {
      this.#onTimeout(attempt.task, attempt);
    });
    if (this.pace.windows.length > 0) this.engine.setPacer(this.pace);
  }

  /** Tasks taking the permits of the gates given to the limiter. */
  get admitting(): number {
    return this.#admitting.size;
  }

  /** Installs the pace as the engine's pacer only when it can hold anything back. */
  syncPacer(): void {
    const engine = this.engine;
    if (this.pacer !== undefined) {
      engine.setPacer(this.pacer);
      return;
    }
    const needed = this.pace.windows.length > 0 || this.pace.pausedUntil !== -Infinity;
    if (needed) engine.setPacer(this.pace);
    else if (engine.pacer !== undefined) engine.setPacer(undefined);
  }

  /**
   * Puts the pace behind another pacer made of it (a keyed limiter's share of a global
   * concurrency): from then on every start also asks `wrap(pace)`.
   */
  wrapPace<P extends Pacer>(wrap: (pace: Pace) => P): P {
    const pacer = wrap(this.pace);
    this.pacer = pacer;
    this.syncPacer();
    return pacer;
  }

  /** Whether nothing runs, waits or backs off, and no rate history matters at `now`. */
  isForgettable(now: number): boolean {
    return (
      this.isIdle() &&
      this.engine.held === 0 &&
      this.engine.line.size === 0 &&
      this.pace.settledBy(now)
    );
  }

  override isIdle(): boolean {
    return this.active === 0 && this.pendingCount === 0 && this.between === 0;
  }

  /** Tasks waiting: in line, for room, or for the gates given to the limiter. */
  get pendingCount(): number {
    return this.engine.line.size + this.parkedLive + this.#admitting.size;
  }

  /** A new task, or a throw if it is refused at once (closed, aborted, too heavy). */
  newTask(
    fn: TaskFn | undefined,
    runner: TaskRunner | undefined,
    weight: number,
    priority: number,
    timeout: number,
    signal: AbortSignal | undefined,
  ): Task {
    if (this.closing !== undefined) throw this.closing;
    if (signal?.aborted === true) throw signal.reason;
    const heavy = tooHeavy(this.engine, weight);
    if (heavy !== undefined) throw heavy;
    return new Task(this, this.#nextId++, fn, runner, weight, priority, timeout, signal);
  }

  /** A new task starts watching its signal and is admitted. */
  enter(task: Task): void {
    if (task.signal !== undefined) task.watch = watchAbort(task.signal, task);
    this.admit(task);
  }

  /**
   * Schedules a task run by `runner` (see `TaskRunner`): `schedule()` without a promise. A task
   * refused at once (closed, aborted, too heavy) gets `runner.done(false, reason)` before this
   * returns, and this returns false.
   */
  runTask(
    runner: TaskRunner,
    priority: number | undefined,
    signal: AbortSignal | undefined,
  ): boolean {
    let task: Task;
    try {
      task = this.newTask(
        undefined,
        runner,
        1,
        priority === undefined ? 0 : v.finite('priority', priority),
        this.timeout,
        signal,
      );
    } catch (error) {
      runner.done(false, error);
      return false;
    }
    this.enter(task);
    return true;
  }

  // The engine's side (TaskHost): its permits were granted, in the task's async context.

  readonly admitted = (task: Task): void => {
    if (this.closing !== undefined && !this.closeDrain) {
      // The one rule for what was granted after close() (a retry's line, a first attempt's):
      // no attempt starts then.
      this.engine.release(task.cost);
      this.finish(task, false, this.closing);
    } else if (this.gates.length === 0) {
      this.#start(task, new Attempt(task, task.attempt + 1));
    } else {
      this.#passGates(task);
    }
  };

  /** Takes a permit of each gate given to the limiter, in order; then the attempt starts. */
  #passGates(task: Task): void {
    const attempt = new Attempt(task, task.attempt + 1);
    task.state = State.Admitting;
    task.current = attempt;
    this.#admitting.add(task);
    const options = {
      weight: task.cost,
      priority: task.priority,
      signal: attempt.signal,
    };
    let permits: Permit[] | Promise<Permit[]>;
    try {
      permits = passGates(this.gates, options);
    } catch (error) {
      this.#notAdmitted(task, attempt, error);
      return;
    }
    if (Array.isArray(permits)) {
      this.#through(task, attempt, permits);
      return;
    }
    permits.then(
      (held) => {
        task.scope.runInAsyncScope(this.#through, this, task, attempt, held);
      },
      (error: unknown) => {
        this.#notAdmitted(task, attempt, error);
      },
    );
  }

  #through(task: Task, attempt: Attempt, permits: Permit[]): void {
    this.#admitting.delete(task);
    if (task.current !== attempt || task.state !== State.Admitting) {
      // Its caller gave up meanwhile (a gate that granted anyway): nothing starts.
      releaseAll(permits);
      this.engine.release(task.cost);
      this.checkIdle();
      return;
    }
    attempt.held = { permits, startedAt: 0, unwatch: undefined };
    this.#start(task, attempt);
  }

  /** A gate refused the attempt (or its caller gave up): it gives back what it holds. */
  #notAdmitted(task: Task, attempt: Attempt, error: unknown): void {
    this.#admitting.delete(task);
    if (task.current === attempt) task.current = undefined;
    this.engine.release(task.cost);
    if (task.state === State.Admitting) this.finish(task, false, error);
    else this.checkIdle();
  }

  /** Runs one attempt; the task's permits are held. */
  #start(task: Task, attempt: Attempt): void {
    const engine = this.engine;
    const bookedAt = engine.grantedAt;
    task.state = State.Running;
    task.attempt = attempt.attempt;
    task.current = attempt;
    this.active++;
    this.#running.add(task);
    if (task.timeout !== Infinity) this.#deadlines.add(attempt, task.timeout);
    if (attempt.held !== undefined) this.#watchPermits(attempt, attempt.held);
    task.policy?.budget?.recordCall();
    if (this.events.listenerCount('active') > 0) this.events.emit('active', task.info());
    let result: unknown;
    try {
      if (task.fn === undefined) (task.runner as TaskRunner).start(attempt);
      else result = task.fn(attempt);
    } catch (error) {
      if (!attempt.settled) this.settle(task, attempt, false, error);
      return;
    } finally {
      // The task's synchronous part (where it sends its request) has run: the rate counts the
      // start from now, not from the booking a few microseconds (or a preemption) earlier. Only
      // rate windows count starts (a pause or a global share does not).
      if (this.pace.windows.length > 0 && engine.pacer !== undefined)
        engine.restamp(task.cost, bookedAt);
    }
    if (task.fn === undefined) return; // the runner calls endAttempt()
    if (v.isThenable(result)) {
      (result instanceof Promise ? result : Promise.resolve(result)).then(
        (value: unknown) => {
          this.settle(task, attempt, true, value);
        },
        (error: unknown) => {
          this.settle(task, attempt, false, error);
        },
      );
    } else {
      this.settle(task, attempt, true, result);
    }
  }

  /** A permit lost while the attempt runs (a lease not renewed in time) aborts the attempt. */
  #watchPermits(attempt: Attempt, held: Held): void {
    held.startedAt = this.engine.clock.now();
    for (const permit of held.permits) {
      const signal = permit.signal;
      if (signal === NEVER_ABORTED) continue;
      if (signal.aborted) {
        attempt.abort(signal.reason);
        continue;
      }
      (held.unwatch ??= []).push(
        onAbort(signal, () => {
          attempt.abort(signal.reason);
        }),
      );
    }
  }

  /** An attempt's promise settled: it gives its permits back, and its outcome counts if still current. */
  readonly settle = (task: Task, attempt: Attempt, ok: boolean, outcome: unknown): void => {
    attempt.settled = true;
    this.#deadlines.remove(attempt);
    this.active--;
    if (attempt.timedOut) this.zombies--;
    if (task.current === attempt) {
      task.current = undefined;
      this.#running.delete(task);
      if (task.state === State.Running) {
        if (ok) this.conclude(task, true, outcome);
        else this.#attemptFailed(task, attempt, outcome, true);
      }
    }
    const held = attempt.held;
    if (held !== undefined) {
      if (held.unwatch !== undefined) for (const stop of held.unwatch) stop();
      const latencyMs = this.engine.clock.now() - held.startedAt;
      releaseAll(held.permits, outcomeOf(attempt, ok, outcome, latencyMs));
    }
    // The release tells waiters of the room and of an empty line: what is left to tell is
    // whether the limiter went idle, once its permits are back.
    this.engine.release(task.cost);
    this.checkIdle(false);
  };

  #onTimeout(task: Task, attempt: Attempt): void {
    if (attempt.settled) return;
    attempt.timedOut = true;
    this.zombies++;
    this.timedOut++;
    const error = new TimeoutError(`the task timed out after ${task.timeout}ms`, task.timeout);
    if (task.current === attempt && task.state === State.Running) {
      // The attempt keeps its permits until it settles; the task moves on now, before the abort
      // (which may settle the attempt at once) can tell of an idle limiter in between.
      task.current = undefined;
      this.#running.delete(task);
      this.#attemptFailed(task, attempt, error, false);
    }
    attempt.abort(error);
  }

  /**
   * Retries after a backoff if the policy says so; otherwise the task fails. `settling`: called
   * while the attempt gives its permits back, which tells of idleness after.
   */
  #attemptFailed(task: Task, attempt: Attempt, error: unknown, settling: boolean): void {
    const policy = task.policy;
    if (policy === undefined) {
      if (settling) this.conclude(task, false, error);
      else this.finish(task, false, error);
      return;
    }
    task.state = State.Between;
    this.between++;
    this.#resting.add(task);
    if (attempt.decision !== undefined) {
      this.#decided(task, attempt, error, policy, attempt.decision);
      return;
    }
    // Decided once the attempt's permits are back and whoever they let in has started: a retry
    // is told after what its failure made room for. A decision that throws (a `retryIf` or a
    // `random` of the caller's) fails the task with that error.
    void SETTLED.then(() =>
      policy.decide(error, attempt.attempt, task.signal, task.runner?.retryIf?.bind(task.runner)),
    ).then(
      (decided) => {
        this.#decided(task, attempt, error, policy, decided);
      },
      (thrown: unknown) => {
        this.#decided(task, attempt, error, policy, { error: thrown });
      },
    );
  }

  #decided(
    task: Task,
    attempt: Attempt,
    error: unknown,
    policy: RetryPolicy,
    decision: RetryDecision,
  ): void {
    if (task.state !== State.Between) return; // aborted or closed meanwhile
    if (!('delay' in decision)) {
      this.#leaveBetween(task);
      this.finish(task, false, decision.error);
      return;
    }
    const info: RetryInfo = { error, attempt: attempt.attempt, delay: decision.delay };
    this.retries++;
    policy.onRetry?.(info);
    task.runner?.retrying?.(info);
    if (this.events.listenerCount('retry') > 0) this.events.emit('retry', task.info(), info);
    task.timer = new Timer(this.engine.clock, decision.delay, () => {
      task.timer = undefined;
      if (task.state !== State.Between) return;
      this.#leaveBetween(task);
      this.#requeue(task);
    });
  }

  #leaveBetween(task: Task): void {
    this.between--;
    this.#resting.delete(task);
    task.timer?.cancel();
    task.timer = undefined;
  }

  /**
   * Back into the line for another attempt, from a backoff timer, or from waiting for room: in
   * the caller's async context (kept by the task's scope), whatever clock fired the timer.
   */
  requeue(task: Task): void {
    this.#requeue(task);
  }

  #requeue(task: Task): void {
    const heavy = tooHeavy(this.engine, task.cost);
    if (heavy !== undefined) {
      this.finish(task, false, heavy); // the concurrency was lowered below its weight meanwhile
      return;
    }
    task.state = State.Queued;
    task.weight = task.cost;
    if (this.engine.tryTake(task.cost)) task.scope.runInAsyncScope(this.admitted, this, task);
    else this.engine.enqueue(task, task.priority);
  }

  /** The caller's signal aborted: the task fails with its reason, wherever it is. */
  readonly abort = (task: Task, reason: unknown): void => {
    switch (task.state) {
      case State.Queued:
        this.engine.aborted++;
        this.engine.withdraw(task); // the line is served again, and room made for waiting tasks
        break;
      case State.Admitting:
      case State.Running: {
        // The task is done before its attempt is aborted: an abort may settle the attempt at
        // once, and it then only gives its permits back.
        const current = task.current;
        task.current = undefined;
        this.#running.delete(task);
        this.finish(task, false, reason);
        current?.abort(reason);
        return;
      }
      case State.Between:
        this.#leaveBetween(task);
        break;
      case State.Parked:
        this.parkedLive--; // its entry is skipped when it reaches the front
        break;
      case State.Done:
        break;
    }
    this.finish(task, false, reason);
  };

  /** The task is done: its promise settles, once. */
  readonly finish = (task: Task, ok: boolean, outcome: unknown): void => {
    this.conclude(task, ok, outcome);
    this.checkIdle();
  };

  /** `finish()` without the idle check, for a caller that makes it later. */
  conclude(task: Task, ok: boolean, outcome: unknown): void {
    if (task.state === State.Done) return;
    task.state = State.Done;
    task.watch?.stop();
    task.watch = undefined;
    const runner = task.runner;
    const events = this.events;
    if (ok) {
      this.completed++;
      if (runner === undefined) task.resolve(outcome);
      else runner.done(true, outcome);
      if (events.listenerCount('completed') > 0) events.emit('completed', task.info(), outcome);
    } else {
      this.failed++;
      if (runner === undefined) task.reject(outcome);
      else runner.done(false, outcome);
      if (events.listenerCount('failed') > 0) events.emit('failed', task.info(), outcome);
    }
  }

  /**
   * Rejects everything that has not started: tasks queued, waiting for room, taking the gates'
   * permits or between attempts, and acquire() callers.
   */
  override rejectWaiting(reason: unknown): void {
    super.rejectWaiting(reason);
    for (const task of this.#admitting.toArray()) {
      const current = task.current;
      this.finish(task, false, reason);
      current?.abort(reason);
    }
    for (const task of this.#resting.toArray()) {
      this.#leaveBetween(task);
      this.finish(task, false, reason);
    }
  }

  /** Gives up on the running tasks: their signals abort, their promises reject with `reason`. */
  abandonRunning(reason: unknown): void {
    for (const task of this.#running.toArray()) {
      const current = task.current;
      task.current = undefined;
      this.#running.delete(task);
      this.finish(task, false, reason);
      current?.abort(reason);
    }
  }

  /** Waits `ms` on the limiter's clock (Infinity: for ever); resolves early if `until` does. */
  waitUntil(until: Promise<void>, ms: number): Promise<void> {
    if (ms === Infinity) return until;
    let timer: Timer | undefined;
    return Promise.race([
      until,
      new Promise<void>((resolve) => (timer = new Timer(this.engine.clock, ms, resolve))),
    ]).finally(() => timer?.cancel());
  }
}
