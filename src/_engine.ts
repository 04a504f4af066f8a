/**
 * The one gate engine under every in-memory gate: a capacity of permits, a line of waiters, and an
 * optional pacer (rate windows, a pause) consulted before each grant. `Semaphore`, `RateLimiter`,
 * `Limiter` and `KeyedLimiter` are shells around it that differ only in what their waiters do when
 * granted.
 *
 * Invariants:
 * - `held <= capacity`, except just after `capacity` was lowered, while the holders finish;
 * - the line is served strictly in order (higher priority first, FIFO within one): the front blocks
 *   everyone behind it until it fits, even a lighter request that would fit now (no barging);
 * - a waiter is in line, granted, or withdrawn, never two of these; `grant` or `fail` is called
 *   on it at most once;
 * - a grant happens at an instant the pacer allows, and is committed to the pacer at that instant,
 *   so a rate counts starts, not requests;
 * - no timer runs while nobody waits.
 */
import { Timer, type Clock } from './_clock.ts';
import { Deque } from './_deque.ts';
import type { Pacer } from './_pace.ts';
import { PriorityQueue, type Entry } from './_queue.ts';

/** Queues microtasks (see `restampLater`). */
const SETTLED: Promise<void> = Promise.resolve();

/** Something waiting in the engine's line. */
export interface Waiter extends Entry {
  /** Called once its permits are taken (and paced): start, or hand over a permit. */
  grant(engine: Engine): void;
  /** Called instead, if it leaves the line without being served (close, clear). */
  fail(reason: unknown): void;
}

/** Something granted that begins later, from a {@link StartLine}. */
export interface Deferred {
  begin(engine: Engine): void;
  /**
   * Whether it was granted a permit at once and begins in a microtask of its own, queued by the
   * call that asked (so in its caller's async context); otherwise it begins right after the one
   * ahead of it.
   */
  readonly own: boolean;
}

/**
 * Tasks granted and not begun yet, in grant order. A task granted a permit at once is pushed with
 * a microtask of its own (`beginNext`); a task granted from the line while any task here has not
 * begun is pushed behind it, so that no task begins before one granted earlier.
 *
 * Each `own` task's microtask begins the line from the front up to that task, and then what was
 * granted behind it, up to the next `own` task. Microtasks run in the order they were queued, so
 * every `own` task ahead was begun by its own microtask: the line starts with this one's task.
 */
export class StartLine extends Deque<Deferred> {
  /** The microtask queued with each `own` task. */
  readonly beginNext: () => void;

  constructor(engine: Engine) {
    super();
    this.beginNext = () => {
      let begunOwn = false;
      for (let head = this.peek(); head !== undefined; head = this.peek()) {
        if (head.own) {
          if (begunOwn) return; // its own microtask comes later
          begunOwn = true;
        }
        this.shift();
        head.begin(engine);
      }
    };
  }
}

export class Engine {
  /** The line. Read it; change it only through the engine's methods. */
  readonly line = new PriorityQueue<Waiter>();
  readonly clock: Clock;
  #capacity: number;
  #held = 0;
  #pacer: Pacer | undefined;
  #timer: Timer | undefined = undefined;
  #timerAt = Infinity;
  #draining = false;
  /** Set by `close()`: every later request fails with it. */
  closeReason: unknown = undefined;
  closed = false;
  /** The clock instant of the latest grant, when a pacer was consulted (for `restamp`). */
  grantedAt = 0;
  peakHeld = 0;
  granted = 0;
  aborted = 0;
  timedOut = 0;
  /**
   * Called when there may be room for more: waiters left the line (served, withdrawn or failed),
   * or permits were released.
   */
  onLeave: (() => void) | undefined = undefined;
  /**
   * Set for a gate whose tasks, granted a permit at once, begin a microtask later (`limit()`, as
   * p-limit does): what was granted and has not begun yet. See {@link StartLine}.
   */
  starts: StartLine | undefined = undefined;
  /** Releases one permit: the callback for a task's result, one closure per engine. */
  readonly releaseOne = (): void => {
    this.release(1);
  };

  constructor(capacity: number, clock: Clock) {
    this.#capacity = capacity;
    this.clock = clock;
  }

  get capacity(): number {
    return this.#capacity;
  }

  /**
   * Changes the capacity (already validated). A raise serves the line at once; waiters heavier
   * than a lowered capacity could never be served, so they fail with a RangeError.
   */
  set capacity(capacity: number) {
    this.#capacity = capacity;
    this.failHeavierThan(capacity, `the capacity ${capacity}`);
    this.drain();
  }

  /** Fails the waiters heavier than `max` (`what` names the bound) with a RangeError. */
  failHeavierThan(max: number, what: string): void {
    if (this.line.size === 0) return;
    const heavy = [...this.line].filter((waiter) => waiter.weight > max);
    for (const waiter of heavy) {
      const error = new RangeError(
        `Expected \`weight\` to be at most ${what}, got \`${waiter.weight}\` (number): it could never be granted`,
      );
      this.line.withdraw(waiter);
      waiter.fail(error);
    }
    if (heavy.length === 0) return;
    this.#left();
    this.drain(); // a lighter waiter that was behind one of them may fit now
  }

  get held(): number {
    return this.#held;
  }

  get pacer(): Pacer | undefined {
    return this.#pacer;
  }

  /** Installs or removes the pacer, and serves the line under the new rules. */
  setPacer(pacer: Pacer | undefined): void {
    this.#pacer = pacer;
    this.kick();
  }

  /** The pacer's rules changed (a new rate, a resume): re-arm the timer and serve the line. */
  kick(): void {
    this.#clearTimer();
    this.drain();
  }

  /**
   * The fast path: takes `weight` permits now if nobody waits, they fit, and the pacer allows it.
   * Does not check `closed`.
   */
  tryTake(weight: number): boolean {
    if (this.line.size > 0 || this.#held + weight > this.#capacity) return false;
    const pacer = this.#pacer;
    if (pacer !== undefined) {
      const now = pacer.timeless === true ? this.grantedAt : this.clock.now();
      if (pacer.delay(weight, now) > 0) return false;
      pacer.commit(weight, now);
      this.grantedAt = now;
    }
    this.#take(weight);
    return true;
  }

  /**
   * The start granted at `bookedAt` has just really begun: the pacer counts it from now. Called by
   * a waiter once the code it let through has run (see `Pacer.restamp`).
   */
  restamp(weight: number, bookedAt: number): void {
    this.#pacer?.restamp?.(weight, bookedAt, this.clock.now());
  }

  /**
   * Restamps a start once the code it let through has had its turn: `hops` microtasks on, after
   * the reactions of a promise resolved at the grant (1: code running on after a synchronous
   * grant; 2: a `then` or `await` on a promise resolved by it).
   */
  restampLater(weight: number, bookedAt: number, hops: 1 | 2): void {
    if (this.#pacer?.restamp === undefined) return;
    // A reaction on a settled promise is queued as queueMicrotask() would queue it, without the
    // AsyncResource Node makes for each of those.
    const restamp = (): void => {
      this.restamp(weight, bookedAt);
    };
    void SETTLED.then(
      hops === 1
        ? restamp
        : () => {
            void SETTLED.then(restamp);
          },
    );
  }

  /** Puts `waiter` in line and serves the line (it may be granted before this returns). */
  enqueue(waiter: Waiter, priority: number): void {
    const line = this.line;
    const behind = line.size > 0;
    line.push(waiter, priority);
    // Behind a front that is held back, it is held back too: whatever frees the front (a release,
    // the pacer's timer) serves the line then. Only a new front can be served now.
    if (!behind || line.peek() === waiter) this.drain();
  }

  /**
   * Takes a waiting `waiter` out of line (it is not failed), calls `then` (to settle it before
   * anyone behind it is served), then serves the line: it may have been the front, holding back
   * waiters that fit now.
   */
  withdraw(waiter: Waiter, then?: () => void): void {
    this.line.withdraw(waiter);
    then?.();
    this.#left();
    if (this.line.size === 0) this.#clearTimer();
    else this.drain();
  }

  /** Gives back `weight` permits; throws a RangeError if that is more than is held. */
  release(weight: number): void {
    if (weight > this.#held) {
      throw new RangeError(
        `Cannot release ${weight} permit${weight === 1 ? '' : 's'}: only ${this.#held} held (${this.describe()})`,
      );
    }
    this.#held -= weight;
    this.#pacer?.release?.(weight);
    if (this.line.size > 0) this.drain();
    this.onLeave?.();
  }

  /** Fails every waiter with `reason` (those `keep` accepts stay in line); returns how many failed. */
  failAll(reason: unknown, keep?: (waiter: Waiter) => boolean): number {
    const failing =
      keep === undefined ? this.line.drain() : [...this.line].filter((waiter) => !keep(waiter));
    if (keep !== undefined) for (const waiter of failing) this.line.withdraw(waiter);
    for (const waiter of failing) waiter.fail(reason);
    if (this.line.size === 0) this.#clearTimer();
    if (failing.length > 0) this.#left();
    return failing.length;
  }

  /** Stops the engine: every waiter and every later request fails with `reason`. */
  close(reason: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.failAll(reason);
  }

  /** Like `2/8 held, 5 waiting`. */
  describe(): string {
    return `${this.#held}/${this.#capacity} held, ${this.line.size} waiting${this.closed ? ', closed' : ''}`;
  }

  #left(): void {
    this.onLeave?.();
  }

  #take(weight: number): void {
    this.#held += weight;
    this.granted++;
    if (this.#held > this.peakHeld) this.peakHeld = this.#held;
  }

  /**
   * Serves the line from the front while the front fits and the pacer allows it. A grant may run
   * user code that releases or requests synchronously: a nested call only updates the state and
   * leaves the serving to this loop, so a long line of synchronously failing tasks does not
   * recurse.
   */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    try {
      const line = this.line;
      while (line.size > 0) {
        const waiter = line.peek() as Waiter;
        const weight = waiter.weight;
        if (weight > this.#capacity - this.#held) break;
        const pacer = this.#pacer;
        if (pacer !== undefined) {
          const now = this.clock.now();
          const delay = pacer.delay(weight, now);
          if (delay > 0) {
            this.#armTimer(now, delay);
            break;
          }
          pacer.commit(weight, now);
          this.grantedAt = now;
        }
        line.shift();
        this.#take(weight);
        waiter.grant(this);
        this.onLeave?.();
      }
    } finally {
      this.#draining = false;
    }
  }

  /** One timer for the front's pacer wait; serving the line when it fires re-checks the pacer. */
  #armTimer(now: number, delay: number): void {
    if (delay === Infinity) return; // paused until kicked
    const at = now + delay;
    if (this.#timer !== undefined) {
      if (this.#timerAt <= at) return;
      this.#timer.cancel();
    }
    this.#timerAt = at;
    this.#timer = new Timer(this.clock, delay, this.#fire);
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.drain();
  };

  #clearTimer(): void {
    if (this.#timer === undefined) return;
    this.#timer.cancel();
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }
}
