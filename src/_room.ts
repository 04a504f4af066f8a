/**
 * Admission to a limiter's line, and who waits on it: the bounded queue and its overflow policies
 * (`wait`, `reject`, `drop-oldest`), the tasks waiting for room, and the callers of `onIdle()`,
 * `onEmpty()` and `onRoom()`. The base of the task life cycle (`_lifecycle.ts`), which supplies
 * what happens once a task is admitted.
 *
 * Invariants: the line holds at most `maxQueue` tasks, except that tasks waiting for room move in
 * as soon as there is some; a task waiting for room joins the line in the order it came; every
 * waiter of `onIdle()`, `onEmpty()` and `onRoom()` is told once its condition holds (or the limiter
 * closes, for room).
 */
import { Deque } from './_deque.ts';
import type { Engine } from './_engine.ts';
import { State, Task } from './_task.ts';
import { ClosedError, QueueFullError } from './errors.ts';
import type { TaskEvents } from './_lifecycle.ts';

/** What a full queue does with one more task. */
export type Overflow = 'wait' | 'reject' | 'drop-oldest';

export abstract class Room {
  readonly engine: Engine;
  readonly events: TaskEvents;
  readonly maxQueue: number;
  readonly overflow: Overflow;
  /** Tasks waiting for room in a full line; those aborted meanwhile stay until shifted out. */
  readonly #parked = new Deque<Task>();
  /** How many of the parked tasks still wait. */
  parkedLive = 0;
  dropped = 0;
  /** Set by `close()`: every later request fails with it. */
  closing: ClosedError | undefined = undefined;
  /** Whether `close()` lets waiting tasks (and retries) run. */
  closeDrain = false;
  /** Set when a task arrives, cleared when the limiter goes idle: 'idle' fires on the transition. */
  #busy = false;
  #idleWaiters: (() => void)[] = [];
  #emptyWaiters: (() => void)[] = [];
  #roomWaiters: (() => void)[] = [];

  constructor(
    engine: Engine,
    settings: { maxQueue: number; overflow: Overflow },
    events: TaskEvents,
  ) {
    this.engine = engine;
    this.events = events;
    this.maxQueue = settings.maxQueue;
    this.overflow = settings.overflow;
    engine.onLeave = () => {
      this.#lineLeft();
    };
  }

  /** The engine granted `task` its permits: it goes on (through the gates, to its start). */
  abstract readonly admitted: (task: Task) => void;
  /** A task that waited for room goes into the line (its weight checked again). */
  abstract requeue(task: Task): void;
  /** The task is done: its promise settles, once. */
  abstract readonly finish: (task: Task, ok: boolean, outcome: unknown) => void;
  abstract isIdle(): boolean;
  abstract readonly pendingCount: number;

  hasRoom(): boolean {
    return this.engine.line.size < this.maxQueue;
  }

  /** A new task: into the line, or the room queue, or refused, by the overflow policy. */
  admit(task: Task): void {
    this.#busy = true;
    const engine = this.engine;
    if (this.parkedLive === 0) {
      if (engine.tryTake(task.cost)) {
        this.admitted(task); // nobody waits, it fits, the rate allows: it never queues
        return;
      }
      if (this.hasRoom()) {
        engine.enqueue(task, task.priority);
        return;
      }
    }
    const full = (): QueueFullError =>
      new QueueFullError(`the queue is full (maxQueue ${this.maxQueue})`);
    switch (this.overflow) {
      case 'reject':
        this.finish(task, false, full());
        return;
      case 'drop-oldest': {
        const oldest = engine.line.oldestOfLowest();
        // Never drop a task of a higher priority than the newcomer's: refuse the newcomer then.
        if (oldest === undefined || oldest.priority > task.priority) {
          this.finish(task, false, full());
          return;
        }
        const victim = oldest.entry;
        const error = new QueueFullError(
          `dropped from a full queue (maxQueue ${this.maxQueue}) to make room for a newer task`,
        );
        engine.withdraw(victim, () => {
          if (victim instanceof Task) {
            this.dropped++;
            if (this.events.listenerCount('dropped') > 0)
              this.events.emit('dropped', victim.info());
            this.finish(victim, false, error);
          } else {
            victim.fail(error);
          }
        });
        engine.enqueue(task, task.priority);
        return;
      }
      case 'wait':
        task.state = State.Parked;
        this.#parked.push(task);
        this.parkedLive++;
    }
  }

  /**
   * There may be room (entries left the line, or permits came back): tasks waiting for room move
   * into the line — or straight to a start, with `maxQueue: 0` — and those waiting on room or on
   * an empty line hear of it.
   */
  #lineLeft(): void {
    const engine = this.engine;
    while (this.parkedLive > 0) {
      const task = this.#parked.peek() as Task;
      if (task.state !== State.Parked) {
        this.#parked.shift(); // aborted while it waited
        continue;
      }
      if (this.hasRoom()) {
        this.#parked.shift();
        this.parkedLive--;
        this.requeue(task); // checks its weight against limits changed while it waited
      } else if (engine.line.size === 0 && engine.tryTake(task.cost)) {
        this.#parked.shift();
        this.parkedLive--;
        task.scope.runInAsyncScope(this.admitted, this, task);
      } else {
        break;
      }
    }
    if (this.parkedLive === 0 && this.#parked.size > 0) this.#parked.clear();
    this.notifyRoom(false);
    if (this.pendingCount === 0 && this.#emptyWaiters.length > 0) {
      for (const resolve of this.#emptyWaiters.splice(0)) resolve();
    }
  }

  /** Rejects the tasks waiting for room or in line (and acquire() callers in line). */
  rejectWaiting(reason: unknown): void {
    // Tasks waiting for room first, or the line's emptying would move them into it.
    const parked = this.#parked.drain().filter((task) => task.state === State.Parked);
    this.parkedLive = 0;
    for (const task of parked) this.finish(task, false, reason);
    this.engine.failAll(reason);
  }

  /**
   * Tells who waits for an empty line, for room, or for idleness; `waiters: false` when only the
   * last can have changed (the others were just told).
   */
  checkIdle(waiters = true): void {
    if (waiters) {
      if (this.pendingCount === 0 && this.#emptyWaiters.length > 0) {
        for (const resolve of this.#emptyWaiters.splice(0)) resolve();
      }
      this.notifyRoom(false);
    }
    if (!this.isIdle()) return;
    if (this.#idleWaiters.length > 0) for (const resolve of this.#idleWaiters.splice(0)) resolve();
    if (this.#busy) {
      this.#busy = false;
      if (this.events.listenerCount('idle') > 0) this.events.emit('idle');
    }
  }

  notifyRoom(closing: boolean): void {
    if (this.#roomWaiters.length > 0 && (closing || this.hasRoom())) {
      for (const resolve of this.#roomWaiters.splice(0)) resolve();
    }
  }

  /** Resolves when nothing runs, waits or backs off. */
  onIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Resolves when no task waits to start (some may still run). */
  onEmpty(): Promise<void> {
    if (this.pendingCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.#emptyWaiters.push(resolve));
  }

  /** Resolves when the line has room for one more task. */
  onRoom(): Promise<void> {
    if (this.hasRoom()) return Promise.resolve();
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }
}
