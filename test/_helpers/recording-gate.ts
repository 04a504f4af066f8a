/**
 * A gate built for tests: a semaphore that records every acquire and every release with the
 * outcome it was given (what a gate that learns is told), and can lose the permits it granted.
 */
import {
  Semaphore,
  type AcquireOptions,
  type Gate,
  type Permit,
  type ReleaseOutcome,
} from '../../src/index.ts';

import type { Clock } from '../../src/_clock.ts';

export class RecordingGate implements Gate {
  readonly sem: Semaphore;
  readonly acquired: AcquireOptions[] = [];
  readonly released: (ReleaseOutcome | undefined)[] = [];
  /** Aborts the signal of the permits it grants (a lease that was lost). */
  readonly lose = new AbortController();

  constructor(capacity: number, clock?: Clock) {
    this.sem = new Semaphore(capacity, clock === undefined ? undefined : { clock });
  }

  get capacity(): number {
    return this.sem.capacity;
  }

  async acquire(options: AcquireOptions = {}): Promise<Permit> {
    this.acquired.push(options);
    const permit = await this.sem.acquire(options);
    const released = this.released;
    const signal = this.lose.signal;
    return {
      weight: permit.weight,
      signal,
      release(outcome) {
        released.push(outcome);
        permit.release();
      },
      [Symbol.dispose]() {
        permit.release();
      },
      [Symbol.asyncDispose]() {
        permit.release();
        return Promise.resolve();
      },
    };
  }
}
