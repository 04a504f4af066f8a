/**
 * `adaptive()`: a concurrency limit that finds the capacity of what it guards, and keeps finding
 * it as it changes. It is a gate (a resizable semaphore: `_engine.ts`) whose capacity moves with
 * the outcome of each permit's work, which its holder reports on release (`release({ ok,
 * dropped, latencyMs })`: a limiter does so for every attempt, see `_lifecycle.ts`). It grows
 * while the latency holds and the limit is in use, and backs off on queueing (a rising latency)
 * and on drops (a 429, a 503, a timeout), as TCP's congestion control does with a window.
 *
 * How it learns. Samples are gathered in windows of about one round trip: a window closes at the
 * first sample released that began after the window opened, once it holds at least
 * `MIN_WINDOW` samples (or the limit's worth, if smaller). Then the algorithm (`_control.ts`)
 * moves the limit, at most once per window. A drop backs off at once, but only for work begun
 * since the last decrease: N requests refused by one burst cut the limit once, not N times (TCP's
 * one reduction per round trip), and the latencies of work begun under the old limit are left
 * out of the windows after a decrease (they measure a crowd that is gone). A cancelled task
 * (released without an outcome) teaches nothing; a failure that is not a drop (a 404, a bug)
 * tells nothing of load and is left out too.
 *
 * Where its state lives. The limit and the instants it last grew and shrank are kept by a
 * `LimitStore` (`_limit-store.ts`): the gate proposes each change and adopts what the store
 * answers. In memory the store takes every proposal. A shared store (`redis/adaptive.ts`) keeps
 * the total of every client in Redis, answers asynchronously with this client's share of the
 * total, which is what the gate admits and what the algorithm moves, as it would a limit of its
 * own: the store adds each change of a share to the total (and cuts the total for a drop once per
 * burst, whoever proposes it), so the total moves as the clients' own limits would in sum. The
 * windows, latency estimates, permits and the throttle stay with each gate.
 *
 * Invariants:
 * - min <= limit <= max at all times; the permits out never exceed the limit, except just after
 *   it shrank, while their holders finish (as with a Semaphore whose capacity was lowered);
 * - a request heavier than `min` is refused at once: the limit may fall to `min` at any time, and
 *   a waiter heavier than it would wait for ever;
 * - the limit grows only after a window in which it was reached and no drop came back;
 * - a `'limit'` event is emitted for each change of the whole limit, after the gate admits by it.
 *
 * Its size (about 480 lines): most of it is the public face (the events, statistics and their
 * documentation); the options are checked in `_adaptive-options.ts`, the control laws are in
 * `_control.ts`, the throttle in `_throttle.ts`, and what is left is the one learning loop.
 */
import { EventEmitter } from 'node:events';
import { NEVER_ABORTED, request } from './_acquire.ts';
import type { Clock } from './_clock.ts';
import { checkOptions, type AdaptiveOptions, type Settings } from './_adaptive-options.ts';
import { Baseline, controller, type Algorithm, type Controller } from './_control.ts';
import { Engine } from './_engine.ts';
import { MemoryStore, type LimitChange, type LimitState, type LimitStore } from './_limit-store.ts';
import { Throttle } from './_throttle.ts';
import * as v from './_validate.ts';
import { ThrottledError } from './errors.ts';
import type { AcquireOptions, Permit, ReleaseOutcome, SyncGate } from './gate.ts';

export type { Algorithm as AdaptiveAlgorithm } from './_control.ts';
export type { AdaptiveOptions } from './_adaptive-options.ts';

/** A change of the limit, as the `'limit'` event tells it. */
export interface LimitChangeEvent {
  /** The limit now, and before. */
  limit: number;
  previous: number;
  /**
   * Why: a drop, a rising latency, or a window in use with the latency holding; `'shared'`: a
   * shared limit moved (another client's change) or the clients sharing it came or went.
   */
  reason: 'drop' | 'latency' | 'growth' | 'shared';
  /** When, on the gate's clock. */
  at: number;
  /** The key of the copy that changed, for a gate forked per key (see `fork`). */
  key?: unknown;
}

/** The events of an {@link AdaptiveLimit}. */
export interface AdaptiveEvents {
  limit: [change: LimitChangeEvent];
}

/** A snapshot of an adaptive limit: where it is, and how it got there. */
export interface AdaptiveStats {
  algorithm: Algorithm;
  /** The limit now: at most this many permits out (by weight). */
  limit: number;
  min: number;
  max: number;
  /** Permits out now. */
  inFlight: number;
  /** Requests waiting for a permit. */
  waiting: number;
  /** The mean latency of the last window, ms (undefined before one closed). */
  latencyMs: number | undefined;
  /** The no-load latency it compares against, ms (undefined before a window closed). */
  baselineMs: number | undefined;
  /** Outcomes learned from; of those, drops. */
  samples: number;
  drops: number;
  increases: number;
  decreases: number;
  /** Requests refused by the client-side throttle. */
  throttled: number;
  /** The latest changes of the limit, oldest first (at most `HISTORY`). */
  history: { at: number; limit: number }[];
  /** A shared limit (a `RedisAdaptiveStore`): the total of every client, and how many there are. */
  shared?: { limit: number; clients: number };
}

/** The fewest samples a window closes with (fewer when the limit is smaller). */
const MIN_WINDOW = 10;
/** How many changes `stats().history` keeps. */
const HISTORY = 256;

/** A permit of an adaptive limit: gives its weight back once, with what its work did. */
class AdaptivePermit implements Permit {
  readonly weight: number;
  /** When it was granted, on the gate's clock. */
  readonly grantedAt: number;
  /** The gate's grants before it: a permit begun in a window has a serial past its first. */
  readonly serial: number;
  /** The decreases before it: its work measured the limit set by the last of them. */
  readonly epoch: number;
  #returned: ((permit: AdaptivePermit, outcome: ReleaseOutcome | undefined) => void) | undefined;

  constructor(
    weight: number,
    grantedAt: number,
    serial: number,
    epoch: number,
    returned: (permit: AdaptivePermit, outcome: ReleaseOutcome | undefined) => void,
  ) {
    this.weight = weight;
    this.grantedAt = grantedAt;
    this.serial = serial;
    this.epoch = epoch;
    this.#returned = returned;
  }

  get signal(): AbortSignal {
    return NEVER_ABORTED;
  }

  release(outcome?: ReleaseOutcome): void {
    const returned = this.#returned;
    if (returned === undefined) return;
    this.#returned = undefined;
    returned(this, outcome);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.release();
    return Promise.resolve();
  }
}

/**
 * A concurrency limit that adapts: see {@link adaptive}.
 *
 * ## Fairness, cancellation, weights
 * As a `Semaphore`'s: FIFO within a priority, no barging, a cancelled request leaves it as it was.
 * A request heavier than `min` is refused at once with a `RangeError` (the limit may fall that low).
 *
 * ## Per key
 * A `KeyedLimiter` (and `createFetch`'s `perOrigin`) given one in its `perKey` options forks it
 * for each key (`fork(key)`): each key's limit adapts on its own, from `initial`, and this gate's
 * `'limit'` listeners hear every key's changes, with the key.
 */
export class AdaptiveLimit extends EventEmitter<AdaptiveEvents> implements SyncGate {
  readonly algorithm: Algorithm;
  readonly min: number;
  readonly max: number;
  readonly #settings: Settings;
  readonly #engine: Engine;
  readonly #clock: Clock;
  readonly #controller: Controller;
  readonly #baseline: Baseline;
  readonly #store: LimitStore;
  readonly #throttle: Throttle | undefined;
  readonly #parent: AdaptiveLimit | undefined;
  readonly #key: unknown;
  /** The store's latest answer. */
  #state: LimitState;
  /** Permits granted so far (the next one's serial). */
  #serial = 0;
  /** Decreases proposed so far. */
  #epoch = 0;
  // The window being gathered: the serial of the first permit granted in it, its samples.
  #windowFirst = 0;
  #count = 0;
  #sum = 0;
  #fastest = Infinity;
  #full = false;
  /** Whether a drop came back during the window (even one begun before the last decrease). */
  #dropped = false;
  // What stats() tells.
  #latency: number | undefined = undefined;
  #samples = 0;
  #drops = 0;
  #increases = 0;
  #decreases = 0;
  readonly #history: { at: number; limit: number }[] = [];

  /** Use {@link adaptive}. @internal `store`, `parent` and `key` are for forks and shared stores. */
  constructor(
    options?: AdaptiveOptions,
    internal: {
      store?: LimitStore;
      parent?: AdaptiveLimit;
      key?: unknown;
      settings?: Settings;
    } = {},
  ) {
    super();
    const settings = internal.settings ?? checkOptions(options);
    this.#settings = settings;
    this.algorithm = settings.algorithm;
    this.min = settings.min;
    this.max = settings.max;
    this.#clock = settings.clock;
    this.#controller = controller(settings.algorithm, settings);
    this.#baseline = new Baseline(settings.baselineWindows);
    const store: LimitStore = internal.store ?? settings.store ?? new MemoryStore(settings.initial);
    this.#store = store;
    this.#state = { limit: settings.initial, increasedAt: -Infinity, decreasedAt: -Infinity };
    // A shared limit admits `min` until it has heard its share from the store.
    this.#engine = new Engine(
      store.attach === undefined ? settings.initial : settings.min,
      settings.clock,
    );
    store.attach?.({
      min: settings.min,
      max: settings.max,
      initial: settings.initial,
      update: (state) => {
        this.#adopt(state, 'shared');
      },
    });
    this.#parent = internal.parent;
    this.#key = internal.key;
    this.#throttle =
      settings.throttle === undefined
        ? undefined
        : new Throttle(settings.throttle.k, settings.throttle.window, this.#clock, settings.random);
  }

  /** The limit now: at most this many permits out at once (by weight). */
  get limit(): number {
    return this.#engine.capacity;
  }

  /** The same as `limit`: what a limiter reads as its concurrency. */
  get capacity(): number {
    return this.#engine.capacity;
  }

  /** Permits out now. */
  get held(): number {
    return this.#engine.held;
  }

  /** Requests waiting for a permit. */
  get waiting(): number {
    return this.#engine.line.size;
  }

  /**
   * A new gate with the same options and a state of its own (from `initial`), whose changes are
   * also told to this one's `'limit'` listeners, with `key`: one per key of a keyed limiter.
   */
  fork(key?: unknown): AdaptiveLimit {
    const store = this.#store.fork?.(key) ?? new MemoryStore(this.#settings.initial);
    return new AdaptiveLimit(undefined, { settings: this.#settings, parent: this, key, store });
  }

  /** Waits for a permit (see `Semaphore.acquire`). */
  acquire(options?: AcquireOptions): Promise<Permit> {
    const heavy = this.#tooHeavy(options?.weight);
    if (heavy !== undefined) return Promise.reject(heavy);
    this.#store.touch?.();
    const engine = this.#engine;
    // A refusal (a rejected promise from #grant) is adopted by the request's own promise.
    const granted = request(engine, options, this.#grant) as Promise<Permit>;
    if (engine.line.size > 0) this.#full = true; // someone waits: the limit is in use
    return granted;
  }

  /** Takes a permit if one is free now and nobody waits; never barges. */
  tryAcquire(weight = 1): Permit | undefined {
    v.integer('weight', weight, 1);
    const heavy = this.#tooHeavy(weight);
    if (heavy !== undefined) throw heavy;
    this.#store.touch?.();
    const engine = this.#engine;
    if (!engine.tryTake(weight)) {
      this.#full = true;
      return undefined;
    }
    const admitted = this.#admit(engine, weight);
    if (admitted instanceof ThrottledError) throw admitted;
    return admitted;
  }

  /** A snapshot of the limit, its estimates and its counters. */
  stats(): AdaptiveStats {
    const baseline = this.#baseline.value;
    const stats: AdaptiveStats = {
      algorithm: this.algorithm,
      limit: this.limit,
      min: this.min,
      max: this.max,
      inFlight: this.#engine.held,
      waiting: this.#engine.line.size,
      latencyMs: this.#latency,
      baselineMs: baseline === Infinity ? undefined : baseline,
      samples: this.#samples,
      drops: this.#drops,
      increases: this.#increases,
      decreases: this.#decreases,
      throttled: this.#throttle?.refused ?? 0,
      history: this.#history.map((change) => ({ ...change })),
    };
    const { clients } = this.#state;
    if (clients !== undefined) stats.shared = { limit: this.#state.limit, clients };
    return stats;
  }

  /** Like `AdaptiveLimit(gradient2, 12/20 held, 3 waiting)`. */
  override toString(): string {
    return `AdaptiveLimit(${this.algorithm}, ${this.#engine.describe()})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  #tooHeavy(weight: unknown): RangeError | undefined {
    if (typeof weight !== 'number' || !(weight > this.min)) return undefined;
    return new RangeError(
      `Expected \`weight\` to be at most \`min\` (${this.min}), the least the adaptive limit can be, got ${v.describe(weight)}: it could wait for ever`,
    );
  }

  /**
   * Permits were taken (at once, or from the line): the permit, or the throttle's refusal (the
   * permits go back at once). The one place a request is let through.
   */
  #admit(engine: Engine, weight: number): Permit | ThrottledError {
    if (engine.held >= engine.capacity) this.#full = true;
    const throttle = this.#throttle;
    if (throttle?.refuse() === true) {
      engine.release(weight);
      return new ThrottledError(
        `refused here: the server accepted too few of the recent requests (k = ${throttle.k}, over ${throttle.window}ms)`,
        throttle.probability(),
      );
    }
    return new AdaptivePermit(
      weight,
      this.#clock.now(),
      this.#serial++,
      this.#epoch,
      this.#returned,
    );
  }

  /** `#admit` for the line: a refusal rejects the request. */
  readonly #grant = (engine: Engine, weight: number): Permit | Promise<never> => {
    const admitted = this.#admit(engine, weight);
    return admitted instanceof ThrottledError ? Promise.reject(admitted) : admitted;
  };

  /** A permit came back: learn from its outcome (if it has one), then free its weight. */
  readonly #returned = (permit: AdaptivePermit, outcome: ReleaseOutcome | undefined): void => {
    try {
      if (outcome !== undefined) this.#learn(permit, outcome);
    } finally {
      this.#engine.release(permit.weight);
    }
    this.#store.touch?.();
  };

  #learn(permit: AdaptivePermit, outcome: ReleaseOutcome): void {
    const now = this.#clock.now();
    const dropped = outcome.dropped === true;
    this.#samples++;
    this.#throttle?.record(!dropped);
    // Work begun before the last decrease measured the crowd that decrease answered.
    const current = permit.epoch === this.#epoch;
    if (dropped) {
      this.#drops++;
      this.#dropped = true;
      if (current) this.#propose(this.#controller.drop(this.#part), 'drop', now);
      return;
    }
    if (!outcome.ok) return; // a failure that is not a drop says nothing of load
    const latency = outcome.latencyMs ?? now - permit.grantedAt;
    this.#fastest = Math.min(this.#fastest, latency);
    if (!current) return;
    this.#count++;
    this.#sum += latency;
    // A round trip has passed since the window opened, and it holds enough to go by: as many as
    // the limit, up to MIN_WINDOW. A shared limit's client counts its share, as a limit of its
    // own would: in windows of the total (10 samples where its share is 2 or 3), each grew its
    // share once per several round trips, and 4 clients on vegas or aimd starting from a total
    // of 10 took 1.0–1.7 s to converge (once not within 8 s), against 0.3–0.5 s (bench (h)).
    // (Windows of the total were chosen when one client's noisy window moved the whole total,
    // and the bench's clients were starved of CPU.)
    if (
      permit.serial >= this.#windowFirst &&
      this.#count >= Math.min(MIN_WINDOW, Math.floor(this.#part + 1e-9))
    ) {
      this.#closeWindow(now);
    }
  }

  /**
   * The limit the algorithm moves: this client's share of a shared limit, else the limit. Each
   * client of a fleet moves its own part, as it would a limit of its own, and the store adds the
   * change to the total: the fleet's total moves as N limits of their own would in sum (moved
   * as the total, it grew as one client's: 30 round trips from 10 to 40 where a client alone
   * takes a few; measured, bench (h)).
   */
  get #part(): number {
    return this.#state.share ?? this.#state.limit;
  }

  #closeWindow(now: number): void {
    const latency = this.#sum / this.#count;
    const baseline = this.#baseline.add(this.#fastest);
    const window = { count: this.#count, latency, full: this.#full };
    const dropped = this.#dropped;
    this.#latency = latency;
    this.#openWindow();
    const limit = this.#part;
    const next = this.#controller.next(limit, window, baseline, this.#state.limit);
    // No growth in a round trip that saw a drop: while drops keep coming (steady timeouts), the
    // limit only falls, one step per round trip.
    if (next < limit) this.#propose(next, 'latency', now);
    else if (next > limit && !dropped) this.#propose(next, 'growth', now);
  }

  #openWindow(): void {
    this.#windowFirst = this.#serial;
    this.#count = 0;
    this.#sum = 0;
    this.#fastest = Infinity;
    this.#dropped = false;
    const engine = this.#engine;
    this.#full = engine.held >= engine.capacity || engine.line.size > 0;
  }

  /** Proposes the limit `to` (kept within min and max) to the store, and adopts its answer. */
  #propose(to: number, reason: LimitChange['reason'], now: number): void {
    const from = this.#part;
    const limit = Math.min(this.max, Math.max(this.min, to));
    if (limit === from) return;
    const kind = limit > from ? 'increase' : 'decrease';
    if (kind === 'decrease') {
      this.#epoch++; // see #learn
      this.#openWindow();
    }
    const answer = this.#store.change({
      kind,
      reason,
      from,
      to: limit,
      at: now,
      ...(this.#latency === undefined ? {} : { roundTrip: this.#latency }),
    });
    if (v.isThenable(answer)) {
      answer.then((state) => {
        this.#adopt(state, reason);
      }, v.rethrowLater);
    } else {
      this.#adopt(answer, reason);
    }
  }

  /** Takes the store's state as its own: admits by the new limit, and tells of the change. */
  #adopt(state: LimitState, reason: LimitChangeEvent['reason']): void {
    const before = this.#state;
    this.#state = state;
    if (state.limit > before.limit) this.#increases++;
    else if (state.limit < before.limit) this.#decreases++;
    if (state.decreasedAt !== before.decreasedAt) {
      // A decrease, maybe another client's: the work begun before it measured the old crowd.
      this.#epoch++;
      this.#openWindow();
    }
    const previous = this.#engine.capacity;
    const limit =
      state.share === undefined
        ? Math.min(this.max, Math.max(this.min, Math.floor(state.limit + 1e-9)))
        : Math.max(this.min, state.share);
    if (limit === previous) return;
    this.#engine.capacity = limit;
    const at = this.#clock.now();
    if (this.#history.length === HISTORY) this.#history.shift();
    this.#history.push({ at, limit });
    const change: LimitChangeEvent = { limit, previous, reason, at };
    if (this.#parent !== undefined) change.key = this.#key;
    this.#tell(change);
  }

  #tell(change: LimitChangeEvent): void {
    try {
      this.emit('limit', change);
    } catch (error) {
      v.rethrowLater(error); // a listener's fault is not the gate's
    }
    const parent = this.#parent;
    if (parent !== undefined) parent.#tell(change);
  }
}

/**
 * A concurrency limit that finds the capacity of what it guards, and follows it as it changes:
 * give it to a limiter as its `concurrency` (or to `createFetch` as `perOrigin.concurrency`), and
 * every attempt's outcome — its latency, and whether it was dropped (an error whose `status` is
 * 429 or 503, a timeout) — moves it. It grows only while it is in use and the latency holds,
 * backs off on queueing, and multiplies by `backoff` on a drop. `limiter.stats().concurrency`
 * reads it; its `'limit'` event and `stats()` tell how it moves.
 *
 * @example
 * ```ts
 * const limiter = new Limiter({
 *   concurrency: adaptive({ algorithm: 'gradient2', min: 1, max: 200, initial: 10 }),
 * });
 * await limiter.schedule(() => callPartner());
 * limiter.stats().concurrency; // the limit right now
 * ```
 */
export function adaptive(options?: AdaptiveOptions): AdaptiveLimit {
  return new AdaptiveLimit(options);
}
