/**
 * `RedisRateLimiter`: one rate shared by every process that names it, kept in Redis, with the
 * semantics of the in-memory `RateLimiter` (GCRA 'spaced' windows with `burst`, exact 'sliding'
 * windows, several windows at once).
 *
 * A start is booked in Redis, on Redis's clock, by one script call that commits the slot and
 * says how long until it (`scripts/rate-reserve-3.lua`): the process sleeps that long and starts.
 * No polling, no herd waking at a window's edge. Locally, the engine of the in-memory gates keeps
 * the line (priorities, FIFO, no barging, timeouts, aborts, close), and the slots this process
 * booked are its pacer (`Slots`): the front of the line takes the earliest slot of its weight
 * once it is due. A slot is the process's, not the waiter's: when a waiter gives up, its slot
 * goes to the next waiter of the same weight, and only what nobody here wants is given back.
 *
 * A process books ahead of its line only so far (`HORIZON`): a pause set by another process, a
 * waiter of higher priority, or a cancellation changes what is booked next, not much that was
 * booked already.
 *
 * Invariants:
 * - a start is made only in a slot Redis booked for this process, at or after its instant (the
 *   reply's arrival plus the delay), and never later than a grace after it (2% of the shortest
 *   interval, at least 20 ms): a slot missed by more is dropped, still counted in Redis, and
 *   booked again;
 * - each slot is used once, given back once, or dropped once; one given back (the undo script
 *   said so) is never used;
 * - bookings in flight plus slots held cover the line from its front, in order; a leftover slot
 *   is given back if nothing was booked after it, else kept for the next waiter of its weight
 *   until it is due;
 * - every round trip settles into the state within `commandTimeoutMs` (a failed or unanswered
 *   booking fails the first waiter without a slot, with the error), so no waiter waits on a
 *   reply that will never be handled.
 */
import { randomBytes } from 'node:crypto';
import { parseRequest, request, tooHeavy } from '../_acquire.ts';
import { coarseClock, Timer } from '../_clock.ts';
import { Engine, type Waiter } from '../_engine.ts';
import { until, type Pacer } from '../_pace.ts';
import { formatRate, type RateSpec } from '../_parse.ts';
import * as v from '../_validate.ts';
import { ClosedError, SluiceError, TimeoutError } from '../errors.ts';
import type { AcquireOptions, Gate, Permit } from '../gate.ts';
import {
  parseLimiterRate,
  StartPermit,
  type ParsedRate,
  type RateOptions,
  type WaitOptions,
} from '../rate.ts';
import { checkName, redisClient, type RedisClient, type Reply, type Script } from './_client.ts';
import { RATE_PAUSE, RATE_RESERVE, RATE_UNDO } from './_scripts.ts';
import { answerWithin, silenceOf, type Silence } from './_timeout.ts';

/**
 * How far ahead of now a process books, in ms: it books for the next waiter of its line while
 * its latest slot is due within this, and when that slot comes this close otherwise. Long enough
 * to keep a few round trips in flight at any rate; short, so that a pause or a waiter of higher
 * priority changes what comes next soon.
 */
const HORIZON = 100;
/**
 * The most bookings in flight at once, per process. Fewer where the rate is slow: as many as the
 * rate's average spacing fits in `HORIZON`, so that bookings made before their replies show where
 * they land still land about within it.
 */
const MAX_IN_FLIGHT = 8;
/**
 * How late a slot may still be used: 2% of the shortest interval, starts that late keeping every
 * window of 98% of the interval within the limit; but at least `MIN_GRACE` ms, a timer's lateness
 * on a busy machine (a garbage collection, a neighbour's load), for which a slot is not worth
 * giving up and booking again.
 */
const GRACE = 0.02;
const MIN_GRACE = 20;
/** How long `close()` waits for round trips in flight, in ms. */
const CLOSE_WAIT = 1000;

/** Options for {@link RedisRateLimiter}: the rate part of the in-memory `RateLimiter`'s. */
export interface RedisRateLimiterOptions extends RateOptions {
  rate: RateSpec | readonly RateSpec[];
  /**
   * How long to wait for Redis to answer one call, in ms, before failing the waits it was for
   * with a `TimeoutError` (a silent Redis behind an open connection fails no call by itself).
   * @default 2_000
   */
  commandTimeoutMs?: number;
}

/** A start booked in Redis for this process and not made yet. */
interface Slot {
  /** The booking's id, to give it back. */
  readonly id: string;
  readonly weight: number;
  /** When it is due on the local clock: the reply's arrival plus the delay Redis said. */
  readonly due: number;
  /** Set once Redis refused to take it back: kept for a waiter of its weight, never offered again. */
  spare: boolean;
}

/**
 * The slots this process booked, as the engine's pacer: the front of the line may start once the
 * earliest slot of its weight is due. Sorted by `due`.
 */
class Slots implements Pacer {
  readonly maxWeight: number;
  readonly list: Slot[] = [];
  /** How late a slot may still be used, in ms. */
  readonly #grace: number;
  readonly #onDrop: () => void;

  constructor(maxWeight: number, grace: number, onDrop: () => void) {
    this.maxWeight = maxWeight;
    this.#grace = grace;
    this.#onDrop = onDrop;
  }

  delay(weight: number, now: number): number {
    this.prune(now);
    const slot = this.list.find((s) => s.weight === weight);
    if (slot === undefined) return Infinity; // the reply that brings one serves the line
    return until(slot.due, now);
  }

  commit(weight: number): void {
    const i = this.list.findIndex((s) => s.weight === weight);
    if (i >= 0) this.list.splice(i, 1);
  }

  add(slot: Slot): void {
    let i = this.list.length;
    while (i > 0 && this.list[i - 1]!.due > slot.due) i--;
    this.list.splice(i, 0, slot);
  }

  /** Drops the slots missed by more than the grace, and those due before `before`: a prefix. */
  prune(now: number, before = -Infinity): void {
    const until = Math.max(now - this.#grace, before);
    let n = 0;
    while (n < this.list.length && this.list[n]!.due < until) n++;
    if (n === 0) return;
    this.list.splice(0, n);
    this.#onDrop();
  }

  /** The latest slot that stands for a waiter (not a spare), if any. */
  latest(): Slot | undefined {
    for (let i = this.list.length - 1; i >= 0; i--) if (!this.list[i]!.spare) return this.list[i];
    return undefined;
  }

  remove(slot: Slot): void {
    const i = this.list.indexOf(slot);
    if (i >= 0) this.list.splice(i, 1);
  }
}

/** A run-time error of the shared rate: what it could not do, and Redis's error as the cause. */
function redisError(name: string, what: string, cause: unknown): SluiceError {
  if (cause instanceof TimeoutError) return cause; // Redis said nothing: it names the call
  const message = cause instanceof Error ? cause.message : String(cause);
  return new SluiceError(
    `RedisRateLimiter "${name}" could not ${what}: ${message}`,
    'ERR_SLUICE_REDIS',
    { cause },
  );
}

/** The reserve script's reply, checked: whether it booked, and the delay in ms. */
function reservation(reply: Reply): { booked: boolean; delay: number } {
  if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') {
    throw new TypeError(`unexpected reply from the reserve script: ${JSON.stringify(reply)}`);
  }
  return { booked: reply[0] === 1, delay: Math.max(0, reply[1]) / 1000 };
}

/**
 * Admits at most `limit` starts per `interval` across every process that uses the same Redis and
 * `name`, as the in-memory `RateLimiter` does within one process. Each process waits in a line
 * of its own (priorities, FIFO, no barging); across processes, starts are booked in the order
 * the bookings reach Redis.
 *
 * ## Exactness
 * Windows are kept on Redis's clock: in any window of `interval` (by Redis's clock) no more than
 * `limit + burst - 1` start ('spaced', the default), or `limit` ('sliding'). A process starts at
 * its slot's instant plus the reply's way back, and a slot it misses by more than 2% of the
 * shortest interval or 20 ms (a stalled event loop) is booked again rather than used late.
 *
 * ## Cancellation
 * A wait that gives up (its signal, its timeout, `close()`) before its start hands its slot to the
 * next waiter of the same weight in this process; a slot nobody here wants is given back if
 * nothing was booked after it, and otherwise stays counted: the limit is never exceeded.
 *
 * @example
 * ```ts
 * const rate = new RedisRateLimiter(redis, 'partner-api', ['20/s', '1000/h']);
 * await rate.wait({ signal });
 * ```
 */
export class RedisRateLimiter implements Gate {
  /** The name every process sharing this rate gives it. */
  readonly name: string;
  /** How long a call to Redis may go unanswered before it fails, in ms. */
  readonly commandTimeoutMs: number;
  readonly #client: RedisClient;
  /** The calls unanswered on that client, shared with every gate made on it. */
  readonly #silence: Silence;
  /** `state`, `log`, `paused`: see `scripts/rate-reserve-3.lua`. */
  readonly #keys: readonly [string, string, string];
  readonly #parsed: ParsedRate;
  /** The reserve and undo scripts' arguments after the booking's own: kind, burst, windows. */
  readonly #windows: readonly (string | number)[];
  readonly #engine: Engine;
  readonly #slots: Slots;
  readonly #idPrefix = randomBytes(6).toString('base64url');
  #nextId = 0;
  /** Bookings in flight, by weight. */
  readonly #inFlight = new Map<number, number>();
  #inFlightCount = 0;
  /** How many bookings may be in flight at once (see `MAX_IN_FLIGHT`). */
  readonly #maxInFlight: number;
  /** `pauseFor()` calls in flight: nothing is booked until Redis has the pause. */
  #pausing = 0;
  #scheduled = false;
  #horizon: Timer | undefined;
  #horizonAt = Infinity;
  /** Round trips in flight, for `close()`. */
  readonly #pending = new Set<Promise<unknown>>();

  constructor(
    redis: unknown,
    name: string,
    rates: RateSpec | readonly RateSpec[] | RedisRateLimiterOptions,
  ) {
    this.#client = redisClient('redis', redis);
    this.#silence = silenceOf(redis as object);
    this.name = checkName(name);
    const { options, parsed } = parseLimiterRate(rates);
    if ((options as { clock?: unknown }).clock !== undefined) {
      throw new TypeError("`clock` does not apply to a shared rate: it runs on Redis's clock");
    }
    const { commandTimeoutMs } = options;
    this.commandTimeoutMs =
      commandTimeoutMs === undefined ? 2_000 : v.integer('commandTimeoutMs', commandTimeoutMs, 1);
    this.#parsed = parsed;
    this.#keys = [`sluice:{${name}}:rate`, `sluice:{${name}}:rate-log`, `sluice:{${name}}:paused`];
    this.#windows = [
      parsed.window,
      parsed.burst,
      ...parsed.rates.flatMap((rate) => [rate.limit, rate.interval]),
    ];
    const sliding = parsed.window === 'sliding';
    const maxWeight = Math.min(
      ...parsed.rates.map((rate) => (sliding ? rate.limit : parsed.burst)),
    );
    const shortest = Math.min(...parsed.rates.map((rate) => rate.interval));
    const spacing = Math.max(...parsed.rates.map((rate) => rate.interval / rate.limit));
    this.#maxInFlight = Math.max(1, Math.min(MAX_IN_FLIGHT, Math.floor(HORIZON / spacing)));
    this.#slots = new Slots(maxWeight, Math.max(shortest * GRACE, MIN_GRACE), this.#schedule);
    // Node's own timers: a start a millisecond late is still counted at its slot, and the system
    // clock's polling costs more than that buys (4 processes sharing 1000/s on 2 busy cores,
    // measured: 670-690 starts/s with it, 830-990 without, the same bunching either way).
    this.#engine = new Engine(Infinity, coarseClock);
    this.#engine.setPacer(this.#slots);
    this.#engine.onLeave = this.#schedule;
    this.#engine.describe = () =>
      `${name}: ${this.rate.join(' and ')}, ${this.#engine.line.size} waiting${this.#engine.closed ? ', closed' : ''}`;
  }

  /** The rates kept, as written: `['20/s', '1000/h']`. */
  get rate(): string[] {
    return this.#parsed.rates.map(formatRate);
  }

  /** Requests of this process waiting in line. */
  get waiting(): number {
    return this.#engine.line.size;
  }

  /**
   * The gate contract's way in: waits as `wait()` does, and resolves to a permit whose release
   * gives nothing back (a rate counts starts). There is no synchronous `tryAcquire`: a shared rate
   * cannot answer without a round trip (see `tryAcquireAsync`). A `timeout` of 0 makes one
   * round trip and takes a start only if one is free now.
   */
  acquire(options?: AcquireOptions): Promise<Permit> {
    return this.#request(options, (weight) => new StartPermit(weight));
  }

  /**
   * Waits in line until a start of `weight` is admitted. Rejects with `signal.reason` if aborted,
   * a `TimeoutError` if `timeout` elapses first, a `RangeError` at once for a weight the rate
   * can never admit at once, and a `SluiceError` (`ERR_SLUICE_REDIS`, Redis's error as `cause`)
   * if its booking fails.
   */
  wait(options?: WaitOptions): Promise<void> {
    return this.#request(options, () => undefined);
  }

  /**
   * Takes a start of `weight` only if the rate allows one now and nobody in this process waits:
   * one round trip. Resolves to a permit, or undefined.
   */
  async tryAcquireAsync(weight = 1): Promise<Permit | undefined> {
    v.integer('weight', weight, 1);
    this.#admissible(weight);
    return (await this.#try(weight, undefined)) ? new StartPermit(weight) : undefined;
  }

  /**
   * Books no start for `ms` milliseconds, in every process that shares this rate (what a 429
   * with `Retry-After` calls for). A shorter pause never cuts a longer one short. This process
   * drops the slots it booked inside the pause at once; the others learn of the pause at their
   * next booking, so what they booked before it (at most about 100 ms ahead) still starts.
   * Resolves once Redis has it.
   */
  async pauseFor(ms: number): Promise<void> {
    v.number('ms', ms, 0);
    if (this.#engine.closed) return;
    this.#pausing++;
    // Sent before any booking made after this call: one connection answers in order.
    const paused = this.#run('pause', RATE_PAUSE, [this.#keys[2]], [ms]);
    this.#slots.prune(this.#engine.clock.now(), this.#engine.clock.now() + ms);
    this.#engine.kick();
    try {
      await paused;
    } catch (error) {
      throw redisError(this.name, 'pause', error);
    } finally {
      this.#pausing--;
      this.#schedule();
    }
  }

  /**
   * Rejects every waiter of this process, and every later request, with `reason` (a
   * `ClosedError` by default), gives back what it booked and will not use, and resolves once its
   * round trips are answered (waiting at most a second for a Redis that does not answer). The
   * Redis client stays open: it is the caller's.
   */
  async close(
    reason: unknown = new ClosedError(`the rate limiter "${this.name}" is closed`),
  ): Promise<void> {
    this.#engine.close(reason);
    this.#balance();
    const clock = this.#engine.clock;
    const deadline = clock.now() + CLOSE_WAIT;
    while (this.#pending.size > 0 && clock.now() < deadline) {
      let timer: Timer | undefined;
      await Promise.race([
        Promise.allSettled([...this.#pending]),
        new Promise<void>((resolve) => {
          timer = new Timer(clock, deadline - clock.now(), () => {
            resolve();
          });
        }),
      ]);
      timer?.cancel();
    }
  }

  /** Like `RedisRateLimiter(partner-api: 20/s and 1000/h, 3 waiting)`. */
  toString(): string {
    return `RedisRateLimiter(${this.#engine.describe()})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  /** Throws what a request of `weight` meets before it may wait: a close, a weight too heavy. */
  #admissible(weight: number): void {
    if (this.#engine.closed) throw this.#engine.closeReason;
    const heavy = tooHeavy(this.#engine, weight);
    if (heavy !== undefined) throw heavy;
  }

  #request<T>(options: AcquireOptions | undefined, make: (weight: number) => T): Promise<T> {
    if (options?.timeout === 0) return this.#tryNow(options, make);
    const waited = request(
      this.#engine,
      options,
      (engine, weight) => {
        engine.release(weight); // a rate holds nothing: the start is all it counts
        return make(weight);
      },
      'wait',
    );
    this.#schedule();
    return waited;
  }

  /** A request with a timeout of 0: one round trip, then a start or a `TimeoutError`. */
  async #tryNow<T>(options: AcquireOptions, make: (weight: number) => T): Promise<T> {
    const { weight, signal } = parseRequest(options);
    this.#admissible(weight);
    if (signal?.aborted === true) throw signal.reason;
    const found = this.#engine.describe();
    if (await this.#try(weight, signal)) return make(weight);
    throw new TimeoutError(`wait timed out after 0ms (${found})`, 0);
  }

  /** Takes a start now if nobody here waits and the rate allows it; whether it did. */
  async #try(weight: number, signal: AbortSignal | undefined): Promise<boolean> {
    const engine = this.#engine;
    if (engine.line.size > 0) return false; // never past a waiter
    if (engine.tryTake(weight)) {
      engine.release(weight); // a spare slot of this weight, due now
      return true;
    }
    const id = this.#id();
    let booked: boolean;
    try {
      const reply = await this.#run('try', RATE_RESERVE, this.#keys, [
        id,
        weight,
        0,
        ...this.#windows,
      ]);
      booked = reservation(reply).booked;
    } catch (error) {
      throw redisError(this.name, 'book a start', error);
    }
    if (booked && (engine.closed || signal?.aborted === true)) {
      this.#giveBack({ id, weight, due: engine.clock.now(), spare: false });
      throw engine.closed ? engine.closeReason : signal?.reason;
    }
    return booked;
  }

  #id(): string {
    return `${this.#idPrefix}.${(this.#nextId++).toString(36)}`;
  }

  /**
   * One script call, kept for `close()`, failed with a `TimeoutError` if Redis does not answer
   * within `commandTimeoutMs`: a booking that answers later is counted in Redis and never used
   * (safe: the limit only loses a start), and the line goes on.
   */
  #run(
    op: string,
    script: Script,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<Reply> {
    const what = `${op} of RedisRateLimiter "${this.name}"`;
    const send = (): Promise<Reply> => this.#client.run(script, keys, args);
    return this.#track(answerWithin(this.#silence, send, this.commandTimeoutMs, what));
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#pending.add(promise);
    const untrack = (): void => {
      this.#pending.delete(promise);
    };
    promise.then(untrack, untrack);
    return promise;
  }

  /** Balances the line against the slots once pending reactions have run: one walk per turn. */
  readonly #schedule = (): void => {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      this.#balance();
    });
  };

  /**
   * Matches the line, from its front, with the slots held and the bookings in flight, by weight.
   * Returns the first waiter left without one, and the slots left over (not counting those of a
   * weight with a booking still in flight: its reply settles that).
   */
  #match(): { wanting: Waiter | undefined; leftover: Slot[] } {
    const supply = new Map<number, number>();
    let left = 0;
    for (const slot of this.#slots.list) {
      supply.set(slot.weight, (supply.get(slot.weight) ?? 0) + 1);
      left++;
    }
    for (const [weight, n] of this.#inFlight) {
      supply.set(weight, (supply.get(weight) ?? 0) + n);
      left += n;
    }
    let wanting: Waiter | undefined;
    for (const waiter of this.#engine.line) {
      if (left === 0 && wanting !== undefined) break;
      const n = supply.get(waiter.weight) ?? 0;
      if (n > 0) {
        supply.set(waiter.weight, n - 1);
        left--;
      } else wanting ??= waiter;
    }
    const leftover: Slot[] = [];
    if (left === 0) return { wanting, leftover };
    const extra = new Map<number, number>();
    for (const [weight, n] of supply) {
      const slots = n - (this.#inFlight.get(weight) ?? 0);
      if (slots > 0) extra.set(weight, slots);
    }
    // The latest of each weight: the earliest go to the line first.
    const list = this.#slots.list;
    for (let i = list.length - 1; i >= 0 && extra.size > 0; i--) {
      const slot = list[i]!;
      const n = extra.get(slot.weight);
      if (n === undefined) continue;
      leftover.push(slot);
      if (n === 1) extra.delete(slot.weight);
      else extra.set(slot.weight, n - 1);
    }
    return { wanting, leftover };
  }

  /**
   * Books for the line from its front while it may, and gives back what nobody here wants: the
   * latest leftover slot, if it may still be given back; the others are kept as spares.
   */
  #balance(): void {
    const engine = this.#engine;
    const now = engine.clock.now();
    this.#slots.prune(now);
    for (;;) {
      const { wanting, leftover } = this.#match();
      const latest = this.#slots.latest();
      for (const slot of leftover) {
        if (slot.spare) continue;
        this.#slots.remove(slot);
        if (slot === latest) this.#giveBack(slot);
        else this.#slots.add({ ...slot, spare: true });
      }
      if (wanting === undefined || engine.closed) {
        this.#clearHorizon();
        return;
      }
      if (!this.#mayBook(now)) return;
      this.#book(wanting.weight);
    }
  }

  /** Whether another booking may go now; arms the horizon timer when only the horizon stops it. */
  #mayBook(now: number): boolean {
    if (this.#pausing > 0) return false;
    if (this.#inFlightCount >= this.#maxInFlight) return false;
    const ahead = this.#slots.latest()?.due ?? -Infinity;
    if (ahead <= now + HORIZON) return true;
    const at = ahead - HORIZON;
    if (this.#horizon === undefined || this.#horizonAt > at) {
      this.#horizon?.cancel();
      this.#horizonAt = at;
      this.#horizon = new Timer(this.#engine.clock, at - now, () => {
        this.#horizon = undefined;
        this.#horizonAt = Infinity;
        this.#balance();
      });
    }
    return false;
  }

  #clearHorizon(): void {
    this.#horizon?.cancel();
    this.#horizon = undefined;
    this.#horizonAt = Infinity;
  }

  #countInFlight(weight: number, change: 1 | -1): void {
    const n = (this.#inFlight.get(weight) ?? 0) + change;
    if (n === 0) this.#inFlight.delete(weight);
    else this.#inFlight.set(weight, n);
    this.#inFlightCount += change;
  }

  /** Books the next start of `weight` this process may make: one round trip. */
  #book(weight: number): void {
    const id = this.#id();
    this.#countInFlight(weight, 1);
    const reply = this.#run('book', RATE_RESERVE, this.#keys, [id, weight, -1, ...this.#windows]);
    void reply.then(
      (answer) => {
        this.#countInFlight(weight, -1);
        let booked: { booked: boolean; delay: number };
        try {
          booked = reservation(answer);
        } catch (error) {
          this.#failWanting(redisError(this.name, 'book a start', error));
          return;
        }
        const due = this.#engine.clock.now() + booked.delay;
        if (booked.booked) this.#slots.add({ id, weight, due, spare: false });
        this.#engine.kick();
        this.#schedule();
      },
      (error: unknown) => {
        this.#countInFlight(weight, -1);
        this.#failWanting(redisError(this.name, 'book a start', error));
      },
    );
  }

  /** A booking failed: the first waiter without a slot fails with `error`. */
  #failWanting(error: SluiceError): void {
    const { wanting } = this.#match();
    if (wanting !== undefined) {
      this.#engine.withdraw(wanting, () => {
        wanting.fail(error);
      });
    }
    this.#schedule();
  }

  /**
   * Gives a slot back (one round trip); if Redis cannot take it back (something was booked
   * after it), it returns as a spare. If the round trip fails, the slot is dropped: it may have
   * been given back.
   */
  #giveBack(slot: Slot): void {
    const [state, log] = this.#keys;
    const args = [slot.id, slot.weight, ...this.#windows.filter((_, i) => i !== 1)];
    void this.#run('undo', RATE_UNDO, [state, log], args).then(
      (undone) => {
        if (undone !== 1) {
          this.#slots.add({ ...slot, spare: true });
          this.#engine.kick();
        }
      },
      () => undefined,
    );
  }
}
