/**
 * A task and its attempts: the objects the task life cycle (`_lifecycle.ts`) moves between its
 * states. A task is what a caller scheduled (a function, or a runner driven by calls); an attempt
 * is one run of it, holding its permits from its start until its own promise settles.
 *
 * Invariants:
 * - a task is in exactly one state at a time (see `State`), and in at most one `TaskList`;
 * - a task's `current` attempt is the one whose outcome still counts; an attempt the task moved
 *   on from (it timed out, its caller aborted) keeps its permits until it settles;
 * - an attempt aborts at most once, and tells each of its targets once.
 */
import { AsyncResource } from 'node:async_hooks';
import type { Timer } from './_clock.ts';
import { Due } from './_deadlines.ts';
import type { Waiter } from './_engine.ts';
import type { AbortListener, Watch } from './_signals.ts';
import type { Permit } from './gate.ts';
import type { RetryDecision, RetryInfo, RetryPolicy } from './retry.ts';

/** Where a task is in its life. */
export const enum State {
  /** Waiting for room in a full line (`overflow: 'wait'`). */
  Parked,
  /** In the line of the limiter's own gate. */
  Queued,
  /** Through the limiter's own gate, taking the permits of the gates given to it, in order. */
  Admitting,
  /** Its current attempt runs. */
  Running,
  /** Between attempts: deciding whether to retry, or backing off. */
  Between,
  /** Its outcome was given; nothing more happens to it. */
  Done,
}

/**
 * Whether a status says the other side refused or shed the work (429 Too Many Requests, 503
 * Service Unavailable): the one rule for what a gate that learns counts as a drop, for an error's
 * `status` and for a response delivered as a result alike.
 */
export function isDropStatus(status: unknown): boolean {
  return status === 429 || status === 503;
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

/** What an attempt's abort is passed to, besides its signal (see {@link whenAborted}). */
export interface AbortTarget {
  abort(reason: unknown): void;
}

/**
 * A task driven by calls instead of a function and a promise: what the HTTP core schedules, one
 * call each, without the closures and promises of `schedule()` around it.
 */
export interface TaskRunner {
  /**
   * The async context its attempts start in: the caller's, kept by a resource the runner already
   * has (so that a task costs no AsyncResource of its own). Without it, the task keeps the context
   * it was scheduled in.
   */
  readonly scope?: AsyncResource | undefined;
  /** Its retry rules, instead of the limiter's. */
  readonly retry?: RetryPolicy | undefined;
  /** Whether an attempt's failure is worth a retry (instead of the policy's `retryIf`). */
  retryIf?(error: unknown, attempt: number): boolean;
  /**
   * Starts an attempt, as a task's `fn` would. The attempt holds its permits until
   * `endAttempt(context, …)` is called for it, once (a throw ends it at once, as a failure).
   */
  start(context: TaskContext): void;
  /** A failed attempt will be retried after `info.delay` ms. */
  retrying?(info: RetryInfo): void;
  /**
   * The task's outcome, once, where `schedule()` would settle its promise. It is called from
   * inside the life cycle (which may not have given the attempt's permits back yet): it must not
   * call into the limiter synchronously.
   */
  done(ok: boolean, outcome: unknown): void;
}

export type TaskFn = (context: TaskContext) => unknown;

/** What a task and its attempts call back into: the life cycle that owns them. */
export interface TaskHost {
  /** The limiter's own gate granted the task its permits (the engine's `Waiter.grant`). */
  readonly admitted: (task: Task) => void;
  /** The task left the line unserved (the engine's `Waiter.fail`). */
  finish(task: Task, ok: boolean, outcome: unknown): void;
  /** The caller's signal aborted. */
  abort(task: Task, reason: unknown): void;
  /** The limiter's retry rules (none: no retry). */
  readonly retry: RetryPolicy | undefined;
  /** The attempt's promise (or runner) settled. */
  settle(task: Task, attempt: Attempt, ok: boolean, outcome: unknown): void;
}

function noop(): void {
  // placeholder resolver
}

/** The permits an attempt holds of the gates given to its limiter. */
export interface Held {
  /** One per gate, in the order they were taken. */
  readonly permits: Permit[];
  /** When the attempt started, on the limiter's clock (for the latency its release reports). */
  startedAt: number;
  /** Stops watching the permits' signals. */
  unwatch: (() => void)[] | undefined;
}

/**
 * One attempt of a task: its context, whether it settled or timed out, the permits of the gates
 * given to the limiter that it holds, and (as a `Due`) its place in the list of timeouts.
 */
export class Attempt extends Due implements TaskContext {
  readonly attempt: number;
  readonly task: Task;
  #controller: AbortController | undefined;
  #reason: unknown = undefined;
  #aborted = false;
  settled = false;
  timedOut = false;
  /**
   * The other side refused or shed the work, though the attempt delivers what came back as its
   * result (an HTTP 429 or 503 not retried): a gate that learns counts it as a drop.
   */
  dropped = false;
  /** What it holds of the gates given to the limiter (none: one object less per attempt). */
  held: Held | undefined = undefined;
  /** A retry decided before the attempt ended (see `decide()`): it stands, whatever comes. */
  decision: RetryDecision | undefined = undefined;

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

  get aborted(): boolean {
    return this.#aborted;
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

  /**
   * Decides now whether this attempt, failing with `error`, would be retried, and holds the
   * decision for when it ends: what a runner asks before it throws a response away. A retry
   * decided here takes its budget token here, once.
   */
  decide(error: unknown): RetryDecision {
    const task = this.task;
    if (task.policy === undefined) return { error };
    const decision = task.policy.decide(
      error,
      this.attempt,
      task.signal,
      task.runner?.retryIf?.bind(task.runner),
    );
    if (decision instanceof Promise) {
      throw new TypeError('Expected a synchronous retryIf for a decision made before the end');
    }
    this.decision = decision;
    return decision;
  }
}

/**
 * Calls `target.abort(reason)` when the attempt behind `context` aborts (times out, its caller
 * aborts, the limiter gives up on it): what the signal does, for code that can be told without
 * one (an AbortController per request is a measurable cost on a fast path).
 */
export function whenAborted(context: TaskContext, target: AbortTarget): void {
  if (context instanceof Attempt) context.whenAborted(target);
  else
    context.signal.addEventListener('abort', () => {
      target.abort(context.signal.reason);
    });
}

/** Ends the attempt behind `context` of a runner's task (see {@link TaskRunner}). */
export function endAttempt(context: TaskContext, ok: boolean, outcome: unknown): void {
  if (!(context instanceof Attempt)) throw new TypeError('Expected the context of a task attempt');
  if (!context.settled) context.task.host.settle(context.task, context, ok, outcome);
}

/** A scheduled task. Its attempts run in the caller's async context, which `scope` keeps. */
export class Task implements Waiter, AbortListener {
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
  readonly host: TaskHost;
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
  /** Its place in the life cycle's list of running, admitting or resting tasks. */
  list: TaskList | undefined = undefined;
  prev: Task | undefined = undefined;
  next: Task | undefined = undefined;

  constructor(
    host: TaskHost,
    id: number,
    fn: TaskFn | undefined,
    runner: TaskRunner | undefined,
    weight: number,
    priority: number,
    timeout: number,
    signal: AbortSignal | undefined,
  ) {
    this.host = host;
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

  /** Its retry rules: the runner's, or the limiter's (none: no retry). Not a field: one less per task. */
  get policy(): RetryPolicy | undefined {
    return this.runner?.retry ?? this.host.retry;
  }

  grant(): void {
    this.scope.runInAsyncScope(this.host.admitted, this.host, this);
  }

  fail(reason: unknown): void {
    this.host.finish(this, false, reason);
  }

  /** The caller's signal aborted. */
  aborted(): void {
    this.host.abort(this, (this.signal as AbortSignal).reason);
  }

  info(): TaskInfo {
    return { id: this.id, attempt: this.attempt, priority: this.priority, weight: this.cost };
  }
}

/**
 * Tasks linked through their own fields (a task is in one list at most): running, admitting, or
 * resting between attempts. Not a Set, for the reason `_signals.ts` gives: a Set with this much
 * churn is rehashed often, and V8's obsolete tables keep their successors (and the tasks in them,
 * and all those reach) alive once one of them has been promoted.
 */
export class TaskList {
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
