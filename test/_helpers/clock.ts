/**
 * A clock that only moves when told to: tests name instants and step between them, so what
 * depends on time is checked as a table, never with sleeps.
 */
import type { Clock, TimerHandle } from '../../src/_clock.ts';

interface Timer {
  id: number;
  at: number;
  callback: () => void;
}

/** Lets every pending promise reaction run (a macrotask turn flushes the microtask queue). */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export interface ManualClockOptions {
  /**
   * Fire every timer this many ms before it is due, as real timers sometimes do (Node's fire up
   * to ~1.5 ms early against performance.now()): code must re-read the clock, not trust the timer.
   */
  early?: number;
  /**
   * Treat a delay longer than 2^31 - 1 ms as Node's timers do: as 1 ms. Code that arms such a
   * delay then spins, which `armed` shows.
   */
  nodeOverflow?: boolean;
}

export class ManualClock implements Clock {
  #now: number;
  #nextId = 1;
  #timers: Timer[] = [];
  readonly #early: number;
  readonly #nodeOverflow: boolean;
  /** Timers armed so far (every `setTimeout` call). */
  armed = 0;

  constructor(start = 0, options: ManualClockOptions = {}) {
    this.#now = start;
    this.#early = options.early ?? 0;
    this.#nodeOverflow = options.nodeOverflow ?? false;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, ms: number): TimerHandle {
    this.armed++;
    if (this.#nodeOverflow && ms > 2 ** 31 - 1) ms = 1;
    // Early by `early` when the delay is at least twice that; a shorter one (the re-check after an
    // early fire) is on time, so time always moves on by a sizeable step.
    const delay = Math.max(0, ms >= 2 * this.#early ? ms - this.#early : ms);
    const timer = { id: this.#nextId++, at: this.#now + delay, callback };
    this.#timers.push(timer);
    return timer.id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.#timers = this.#timers.filter((timer) => timer.id !== handle);
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.#timers.length;
  }

  /** When the next timer is due, or undefined. */
  get nextAt(): number | undefined {
    return this.#timers.reduce<number | undefined>(
      (min, t) => (min === undefined || t.at < min ? t.at : min),
      undefined,
    );
  }

  /**
   * Moves time forward by `ms`, firing each due timer at its own instant, in order, and letting the
   * promise reactions it causes run before the next one fires.
   */
  async advance(ms: number): Promise<void> {
    await this.advanceTo(this.#now + ms);
  }

  /**
   * Moves time forward without firing timers: what a long synchronous stretch of code (a loop, a
   * preemption) looks like to the code around it.
   */
  jumpTo(target: number): void {
    this.#now = Math.max(this.#now, target);
  }

  async advanceTo(target: number): Promise<void> {
    // What is already due in this instant (pending promise reactions) happens before time moves,
    // as it would on a real clock.
    await flush();
    for (;;) {
      let due: Timer | undefined;
      for (const timer of this.#timers) {
        if (
          timer.at <= target &&
          (due === undefined || timer.at < due.at || (timer.at === due.at && timer.id < due.id))
        ) {
          due = timer;
        }
      }
      if (due === undefined) break;
      this.#timers = this.#timers.filter((t) => t !== due);
      this.#now = Math.max(this.#now, due.at);
      due.callback();
      await flush();
    }
    this.#now = Math.max(this.#now, target);
    await flush();
  }
}

/** A promise's state, read without waiting for it. */
export async function state(
  promise: Promise<unknown>,
): Promise<'pending' | 'fulfilled' | 'rejected'> {
  const pending = Symbol('pending');
  try {
    const value = await Promise.race([promise, Promise.resolve(pending)]);
    return value === pending ? 'pending' : 'fulfilled';
  } catch {
    return 'rejected';
  }
}

/** A promise with its resolvers, for tasks the test finishes by hand. */
export function deferred<T = void>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (reason: unknown) => void;
} {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
