/**
 * A simulated resource with a hidden capacity, in virtual time (a ManualClock): it serves
 * `capacity` requests at a time, each for `latency` ms (read when its service starts: it may
 * change with time); up to `queue` more wait in line for a turn (so their latency grows with the
 * line); beyond that a request is refused (in a millisecond) with an error whose `status` is 429. With
 * `hang`, some requests are never answered (they end only when their signal aborts: a timeout).
 * What the adaptive limit is tested against: the limit should find `capacity`, whatever it is
 * and however it changes.
 *
 * `Client` keeps a limiter busy on it, with `backlog` tasks waiting at all times (or fewer: a
 * starved input), and `Recorder` samples the limit and the load at fixed instants.
 */
import type { Limiter } from '../../src/index.ts';
import type { ManualClock } from './clock.ts';

export interface ResourceOptions {
  capacity: number;
  /** Service time in ms, or a function of the instant the service starts. */
  latency: number | ((now: number) => number);
  /** How many may wait for a turn beyond `capacity`. @default 0 */
  queue?: number;
  /** Whether the n-th request (from 1) is never answered. @default none */
  hang?: (n: number) => boolean;
  /** Whether to refuse every request now, whatever the load (a burst of 429s). @default never */
  refuseAll?: (now: number) => boolean;
  /** How long a refusal takes, ms. @default 1 */
  refuseAfter?: number;
}

/** The refusal a full resource answers with. */
export class Refused extends Error {
  readonly status = 429;
}

export class Resource {
  capacity: number;
  readonly #clock: ManualClock;
  readonly #latency: number | ((now: number) => number);
  readonly #queue: number;
  readonly #hang: (n: number) => boolean;
  readonly #refuseAll: (now: number) => boolean;
  readonly #refuseAfter: number;
  readonly #line: (() => void)[] = [];
  /** Being served now; waiting for a turn now. */
  active = 0;
  /** The most ever in the resource at once (served and waiting). */
  peak = 0;
  served = 0;
  refused = 0;
  /** Requests made. */
  calls = 0;

  constructor(clock: ManualClock, options: ResourceOptions) {
    this.#clock = clock;
    this.capacity = options.capacity;
    this.#latency = options.latency;
    this.#queue = options.queue ?? 0;
    this.#hang = options.hang ?? (() => false);
    this.#refuseAll = options.refuseAll ?? (() => false);
    this.#refuseAfter = options.refuseAfter ?? 1;
  }

  get waiting(): number {
    return this.#line.length;
  }

  /**
   * One request: resolves when served, rejects with a 429 when refused, and with the signal's
   * reason when it aborts first (it then leaves the line, or frees its turn).
   */
  call(signal?: AbortSignal): Promise<void> {
    const n = ++this.calls;
    return new Promise<void>((resolve, reject) => {
      let left = false;
      const onAbort = (): void => {
        abort();
      };
      const leave = (): void => {
        left = true;
        signal?.removeEventListener('abort', onAbort);
      };
      let abort = (): void => {
        leave();
        reject(signal?.reason as Error);
      };
      signal?.addEventListener('abort', onAbort);
      if (this.#hang(n)) return;
      const serve = (): void => {
        if (left) return; // aborted while it waited for a turn
        this.active++;
        const ms =
          typeof this.#latency === 'number' ? this.#latency : this.#latency(this.#clock.now());
        const timer = this.#clock.setTimeout(() => {
          this.active--;
          this.served++;
          leave();
          resolve();
          this.#next();
        }, ms);
        abort = () => {
          this.#clock.clearTimeout(timer);
          this.active--;
          leave();
          reject(signal?.reason as Error);
          this.#next();
        };
      };
      if (this.#refuseAll(this.#clock.now())) this.#refuse(leave, reject);
      else if (this.active < this.capacity) serve();
      else if (this.#line.length < this.#queue) this.#line.push(serve);
      else this.#refuse(leave, reject);
      this.peak = Math.max(this.peak, this.active + this.#line.length);
    });
  }

  /** Refuses a request, `refuseAfter` ms from now. */
  #refuse(leave: () => void, reject: (error: Error) => void): void {
    this.refused++;
    this.#clock.setTimeout(() => {
      leave();
      reject(new Refused('429 Too Many Requests'));
    }, this.#refuseAfter);
  }

  /** Changes the capacity: a raise serves the line at once, a cut lets the served finish. */
  setCapacity(capacity: number): void {
    this.capacity = capacity;
    this.#next();
  }

  #next(): void {
    while (this.active < this.capacity && this.#line.length > 0) this.#line.shift()!();
  }
}

/** Keeps `backlog` tasks scheduled on a limiter, each one call of `work`. */
export class Client {
  readonly #limiter: Limiter;
  readonly #work: (signal: AbortSignal) => Promise<void>;
  #stopped = false;
  backlog: number;
  /** Tasks scheduled and not settled. */
  outstanding = 0;
  ok = 0;
  failed = 0;

  constructor(limiter: Limiter, work: (signal: AbortSignal) => Promise<void>, backlog: number) {
    this.#limiter = limiter;
    this.#work = work;
    this.backlog = backlog;
    this.#fill();
  }

  stop(): void {
    this.#stopped = true;
  }

  #fill(): void {
    while (!this.#stopped && this.outstanding < this.backlog) {
      this.outstanding++;
      this.#limiter
        .schedule(({ signal }) => this.#work(signal))
        .then(
          () => this.ok++,
          () => this.failed++,
        )
        .finally(() => {
          this.outstanding--;
          this.#fill();
        });
    }
  }
}

/** A sample of the limit and the load at one instant. */
export interface Sample {
  at: number;
  limit: number;
  /** Attempts running at the limiter. */
  inFlight: number;
}

/**
 * Moves `clock` on to `until`, sampling `read()` every `every` ms; returns the samples. The
 * timers due in each step fire in order (see ManualClock.advanceTo).
 */
export async function run<T>(
  clock: ManualClock,
  until: number,
  every: number,
  read: () => T,
): Promise<{ at: number; value: T }[]> {
  const samples: { at: number; value: T }[] = [];
  while (clock.now() < until) {
    await clock.advanceTo(Math.min(until, clock.now() + every));
    samples.push({ at: clock.now(), value: read() });
  }
  return samples;
}
