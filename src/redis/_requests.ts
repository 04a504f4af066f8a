/**
 * What one process keeps of a shared semaphore's requests and leases (`RedisSemaphore`, in
 * semaphore.ts): a request waiting for its grant, a granted lease as its holder sees it, an entry
 * of the outbox of calls to Redis, and the one-shot timer the renewals and deadlines use.
 *
 * Invariants: a lease's `deadline` is never later than its expiry in Redis (it is counted from
 * before the call that set that expiry was sent); a lease's signal aborts at most once, with a
 * `LeaseLostError`; `release()` gives a lease back once.
 */
import { later, type Cancel, type Timer } from '../_clock.ts';
import type { LeaseLostError } from '../errors.ts';
import type { Permit, ReleaseOutcome } from '../gate.ts';

/** A permit of a {@link RedisSemaphore}: a lease in Redis, renewed until released. */
export interface RedisPermit extends Permit {
  /**
   * The fencing token: larger with every grant of this semaphore (across processes, key expiry,
   * and Redis restarts or failovers, as long as Redis's clock does not go back). Hand it to storage that refuses writes with a smaller one than it has
   * seen, so that a holder that lost its lease cannot overwrite its successor's work.
   */
  readonly fence: number;
  /**
   * Gives the permit back: one call to Redis, which hands the permits to the head of the line.
   * Idempotent. `await using` (`Symbol.asyncDispose`) waits for Redis to confirm it.
   */
  release(outcome?: ReleaseOutcome): void;
}

export type Op = 'acquire' | 'try' | 'release' | 'renew';

/** How many requests or ids one call carries at most (the script's work per call stays small). */
export const BATCH = 1000;

/** A request of this process, from `acquire()` until it is granted or given up. */
export class Waiter {
  readonly id: string;
  readonly weight: number;
  readonly priority: number;
  /** Only take what is free now (`tryAcquireAsync`, or a timeout of 0). */
  readonly try: boolean;
  readonly resolve: (permit: Lease | undefined) => void;
  readonly reject: (reason: unknown) => void;
  /** What a refused `try` settles with: undefined (resolve) or an error (reject). */
  refusal: unknown = undefined;
  /** Whether a call carrying it was sent (else it is still in the outbox, unknown to Redis). */
  sent = false;
  /** Whether a call carrying it is out now. */
  inFlight = false;
  /** The call that last put it in line (0: not in line, as far as this process knows). */
  confirmed = 0;
  /** Whether it was ever in line: then a failed call leaves it waiting, to be sent again. */
  queued = false;
  stopWatching: (() => void) | undefined = undefined;
  timer: Timer | undefined = undefined;
  /** What waits for the call carrying it to be back (its withdrawal). */
  #afterCall: (() => void) | undefined = undefined;

  constructor(
    id: string,
    weight: number,
    priority: number,
    tryOnly: boolean,
    resolve: (permit: Lease | undefined) => void,
    reject: (reason: unknown) => void,
  ) {
    this.id = id;
    this.weight = weight;
    this.priority = priority;
    this.try = tryOnly;
    this.resolve = resolve;
    this.reject = reject;
  }

  /**
   * Runs `then` once no call carrying it is out: at once, or when that call is back. A call sent
   * sooner could overtake it (the request sent again after NOSCRIPT, or a call that timed out).
   */
  afterCall(then: () => void): void {
    if (this.inFlight) this.#afterCall = then;
    else then();
  }

  /** The call carrying it was answered or failed. Whether something waited for that. */
  back(): boolean {
    this.inFlight = false;
    const then = this.#afterCall;
    this.#afterCall = undefined;
    then?.();
    return then !== undefined;
  }

  /** Stops watching its signal and its timeout. */
  stop(): void {
    this.stopWatching?.();
    this.timer?.cancel();
    this.stopWatching = this.timer = undefined;
  }
}

/** A granted lease, as its holder sees it. */
export class Lease implements RedisPermit {
  readonly id: string;
  readonly weight: number;
  readonly fence: number;
  /** Local time after which the lease may have expired in Redis: it is lost then. */
  deadline: number;
  readonly #controller = new AbortController();
  readonly #give: (lease: Lease) => Promise<void>;
  #released: Promise<void> | undefined;

  constructor(
    id: string,
    weight: number,
    fence: number,
    deadline: number,
    give: (lease: Lease) => Promise<void>,
  ) {
    this.id = id;
    this.weight = weight;
    this.fence = fence;
    this.deadline = deadline;
    this.#give = give;
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  release(_outcome?: ReleaseOutcome): void {
    this.#released ??= this.#give(this);
  }

  lose(error: LeaseLostError): void {
    this.#controller.abort(error);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.release();
    return this.#released as Promise<void>;
  }
}

/** An entry of the outbox. */
export interface Item {
  op: Op;
  id: string;
  /** The request, for `acquire` and `try`. */
  waiter?: Waiter;
  /** Called once the call carrying it was answered or failed (a `release`). */
  done?: () => void;
}

export function now(): number {
  return performance.now();
}

/** One timer, armed for the earliest instant asked of it (local time, `now()`). */
export class Alarm {
  #at = Infinity;
  #cancel: Cancel | undefined;
  readonly #fire: () => void;

  constructor(fire: () => void) {
    this.#fire = fire;
  }

  /**
   * Fires at `at`, unless already armed for sooner. `unref`: the timer does not keep the
   * process alive.
   */
  arm(at: number, unref: boolean): void {
    if (at === Infinity) {
      this.clear();
      return;
    }
    if (this.#cancel !== undefined && this.#at <= at) return;
    this.#cancel?.();
    this.#at = at;
    this.#cancel = later(
      Math.max(0, Math.ceil(at - now())),
      () => {
        this.#cancel = undefined;
        this.#at = Infinity;
        this.#fire();
      },
      unref,
    );
  }

  clear(): void {
    this.#cancel?.();
    this.#cancel = undefined;
    this.#at = Infinity;
  }
}
