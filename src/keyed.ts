/**
 * `KeyedLimiter`: a `Limiter` per key (per host, per tenant) under one global concurrency, served
 * round-robin so that one hot key cannot starve the rest.
 *
 * The global concurrency and rate are kept by the keys' share of them (`_share.ts`): each key's
 * pace asks it before every start, and keys ready but for it are served round-robin. Global gates
 * given instead of numbers (a shared concurrency or rate) are passed by each key's attempts after
 * the key's own concurrency gate and rate gates respectively (see `OuterGates` in limiter.ts).
 *
 * Invariants: those of the share; every attempt of every key passes the global limits; a key's
 * limiter is forgotten only when nothing of it can matter any more.
 */
import type { Clock } from './_clock.ts';
import { checkGate, concurrencyOption } from './_gates.ts';
import { Pace } from './_pace.ts';
import { Global, KeyPacer } from './_share.ts';
import type { RateSpec } from './_parse.ts';
import type { TaskContext, TaskRunner } from './_task.ts';
import * as v from './_validate.ts';
import { ClosedError } from './errors.ts';
import type { Gate } from './gate.ts';
import {
  Limiter,
  OUTER_GATES,
  type CloseOptions,
  type KeyLimiterOptions,
  type LimiterOptions,
  type OuterGates,
  type ScheduleOptions,
} from './limiter.ts';
import { buildWindows, parseRatesAndGates, type RateOptions } from './rate.ts';
import { systemClock } from './_clock.ts';

/** The options of one key's limiter. */
export type PerKeyOptions = Omit<LimiterOptions, 'clock'>;

/** The gates of one key (see {@link KeyedLimiterOptions.keyGates}). */
export interface KeyGates {
  concurrency?: Gate | undefined;
  rate?: Gate | readonly Gate[] | undefined;
}

/** Options for {@link KeyedLimiter}. */
export interface KeyedLimiterOptions<K = string> extends Omit<RateOptions, 'rate'> {
  /**
   * At most this many tasks (by weight) run at once across all keys; or a gate that keeps the
   * global concurrency instead (a shared one), which every attempt of every key passes.
   * @default Infinity
   */
  concurrency?: number | Gate;
  /**
   * A rate (or several) kept across all keys, by every attempt of every key: `'50/s'`, or a gate
   * in its place (a `RateLimiter`, a shared one). @default none
   */
  rate?: RateSpec | Gate | readonly (RateSpec | Gate)[];
  /**
   * The limits of each key: any `Limiter` option (concurrency, rate, retry, timeout, …), or a
   * function of the key that returns them (for per-key overrides). An adaptive concurrency
   * (`adaptive()`) is forked for each key: every key's limit adapts on its own.
   */
  perKey?: PerKeyOptions | ((key: K) => PerKeyOptions);
  /**
   * Gates of a key, made once, when the key is first seen, and kept as long as this limiter (an
   * idle key's limiter is forgotten, its gates are not): `{ concurrency, rate }`, such as a
   * `RedisSemaphore` and a `RedisRateLimiter` per key, shared by every process. Its concurrency
   * gate keeps the key's concurrency in place of `perKey.concurrency`; its rate gates are kept
   * besides the key's rates. Pausing the key (`limiterFor(key).pauseFor(ms)`) pauses those that
   * can pause. Closing them is the caller's part.
   */
  keyGates?: (key: K) => KeyGates;
  /**
   * Milliseconds a key must have been idle (nothing running or waiting, and no rate history that
   * could still hold a start back) before its limiter is forgotten. @default 60_000
   */
  idleTtl?: number;
  clock?: LimiterOptions['clock'];
}

/**
 * A concurrency gate that keeps a state per key (an adaptive limit: it has a `fork(key)` method)
 * is forked for each key, so that each key's limit is its own, learned from its own outcomes;
 * any other value is shared by the keys as it is.
 */
function forKey(
  concurrency: PerKeyOptions['concurrency'],
  key: unknown,
): PerKeyOptions['concurrency'] {
  const fork = (concurrency as { fork?: unknown } | undefined)?.fork;
  return typeof fork === 'function' ? (fork.call(concurrency, key) as Gate) : concurrency;
}

/** One, several or none, as a list. */
function listOf<T>(value: T | readonly T[] | undefined): readonly T[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? (value as readonly T[]) : [value as T];
}

interface Entry {
  limiter: Limiter;
  pacer: KeyPacer;
  /** When the key last became idle, or Infinity while it is busy. */
  idleSince: number;
}

/**
 * Per-key limits under a global concurrency, with fair scheduling across keys: round-robin between
 * the keys that have work ready, so a hot key with a long backlog gets one start per turn like
 * any other. What per-host or per-tenant limits need.
 *
 * @example
 * ```ts
 * const hosts = new KeyedLimiter({ concurrency: 50, perKey: { concurrency: 4, rate: '10/s' } });
 * const page = await hosts.schedule(new URL(url).host, ({ signal }) => fetch(url, { signal }));
 * ```
 */
export class KeyedLimiter<K = string> {
  readonly #global: Global;
  /** The global gates given instead of numbers, for every key's limiter to pass. */
  readonly #outer: OuterGates;
  readonly #perKey: PerKeyOptions | ((key: K) => PerKeyOptions);
  readonly #keyGates: ((key: K) => KeyGates) | undefined;
  /** Each key's gates from `keyGates`, made once. */
  readonly #gates = new Map<K, KeyGates>();
  readonly #idleTtl: number;
  readonly #clock: Clock;
  readonly #keys = new Map<K, Entry>();
  /** Keys idle now (`idleSince` finite): while there are none, nothing to sweep, no clock read. */
  #idle = 0;
  #lastSweep = -Infinity;
  #closed: ClosedError | undefined;

  constructor(options: KeyedLimiterOptions<K> = {}) {
    v.options('options', options);
    const { capacity: concurrency, gate } = concurrencyOption('concurrency', options.concurrency);
    const outerConcurrency: Gate[] = gate === undefined ? [] : [gate];
    const { parsed: parsedRate, gates: rateGates } = parseRatesAndGates(options);
    this.#outer = { concurrency: outerConcurrency, rate: rateGates };
    const perKey = options.perKey;
    if (typeof perKey === 'function') {
      this.#perKey = perKey;
    } else {
      v.options('perKey', perKey);
      this.#perKey = { ...perKey };
    }
    if (options.keyGates !== undefined) v.fn('keyGates', options.keyGates);
    this.#keyGates = options.keyGates;
    this.#idleTtl =
      options.idleTtl === undefined ? 60_000 : v.number('idleTtl', options.idleTtl, 0, true);
    this.#clock = options.clock ?? systemClock;
    this.#global = new Global(concurrency, new Pace(buildWindows(parsedRate)), this.#clock);
    // Check fixed per-key options once, now, rather than at the first key.
    if (typeof this.#perKey !== 'function') new Limiter({ ...this.#perKey, clock: this.#clock });
  }

  /**
   * Schedules a task run by `runner` within `key`'s limits (see `TaskRunner`): `schedule()`
   * without a promise, for the HTTP client. A task refused at once gets
   * `runner.done(false, reason)` before this returns. @internal
   */
  runTask(
    key: K,
    runner: TaskRunner,
    priority: number | undefined,
    signal: AbortSignal | undefined,
  ): void {
    if (this.#closed !== undefined) {
      runner.done(false, this.#closed);
      return;
    }
    this.#sweep();
    let entry: Entry;
    try {
      entry = this.#entry(key);
    } catch (error) {
      runner.done(false, error); // options for this key that a Limiter refuses
      return;
    }
    this.#busy(entry);
    // Refused at once: the key never got busy (a task taken tells when it idles).
    if (!entry.limiter.lifecycle.runTask(runner, priority, signal)) this.#idled(entry);
  }

  /**
   * Pauses `key` for `ms` (see `Limiter.pauseFor()`); nothing once closed, since nothing more
   * will start: what a response that arrives while it closes asks for. @internal
   */
  pauseKey(key: K, ms: number): void {
    if (this.#closed === undefined) this.#entry(key).limiter.pauseFor(ms);
  }

  /** The global concurrency. Settable: a raise starts waiting tasks at once. */
  get concurrency(): number {
    return this.#global.capacity;
  }

  set concurrency(concurrency: number) {
    if (this.#outer.concurrency.length > 0) {
      throw new TypeError('Cannot set `concurrency`: it is kept by a gate; resize the gate itself');
    }
    this.#global.capacity = v.integer('concurrency', concurrency, 1, true);
    // Tasks heavier than the new global concurrency could never start: they fail, as a Limiter's do.
    for (const { limiter } of this.#keys.values())
      limiter.lifecycle.engine.failHeavierThan(
        concurrency,
        `the global concurrency ${concurrency}`,
      );
    this.#global.pump();
  }

  /** Tasks running across all keys (by weight). */
  get activeCount(): number {
    return this.#global.held;
  }

  /** Tasks waiting across all keys. */
  get pendingCount(): number {
    let pending = 0;
    for (const { limiter } of this.#keys.values()) pending += limiter.pendingCount;
    return pending;
  }

  /** How many keys have a limiter now. */
  get size(): number {
    return this.#keys.size;
  }

  /** Runs `fn` within `key`'s limits and the global concurrency. See `Limiter.schedule()`. */
  schedule<T>(
    key: K,
    fn: (context: TaskContext) => T | PromiseLike<T>,
    options?: ScheduleOptions,
  ): Promise<Awaited<T>> {
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    this.#sweep();
    let entry: Entry;
    try {
      entry = this.#entry(key);
    } catch (error) {
      return Promise.reject(error); // options for this key that a Limiter refuses
    }
    this.#busy(entry);
    const result = entry.limiter.schedule(fn, options);
    // Refused at once (an aborted signal, a bad option): the key never got busy.
    if (entry.limiter.isIdle) this.#idled(entry);
    return result;
  }

  #busy(entry: Entry): void {
    if (entry.idleSince === Infinity) return;
    entry.idleSince = Infinity;
    this.#idle--;
  }

  #idled(entry: Entry): void {
    if (entry.idleSince === Infinity) this.#idle++;
    entry.idleSince = this.#clock.now();
  }

  /** The limiter of `key`, made on first use: to pause a key, read its stats, or listen to its events. */
  limiterFor(key: K): Limiter {
    if (this.#closed !== undefined) throw this.#closed;
    return this.#entry(key).limiter;
  }

  #entry(key: K): Entry {
    let entry = this.#keys.get(key);
    if (entry === undefined) {
      const perKey = typeof this.#perKey === 'function' ? this.#perKey(key) : this.#perKey;
      const options: KeyLimiterOptions = { ...perKey, clock: this.#clock };
      options.concurrency = forKey(perKey.concurrency, key);
      const gates = this.#gatesOf(key);
      if (gates?.concurrency !== undefined) options.concurrency = gates.concurrency;
      if (gates?.rate !== undefined) options.rate = [...listOf(perKey.rate), ...listOf(gates.rate)];
      if (this.#outer.concurrency.length > 0 || this.#outer.rate.length > 0)
        options[OUTER_GATES] = this.#outer;
      const limiter = new Limiter(options);
      const lifecycle = limiter.lifecycle;
      const pacer = lifecycle.wrapPace((pace) => new KeyPacer(pace, this.#global));
      pacer.serve = () => {
        lifecycle.engine.drain();
      };
      const created: Entry = { limiter, pacer, idleSince: Infinity };
      this.#idled(created);
      limiter.on('idle', () => {
        this.#idled(created);
      });
      entry = created;
      this.#keys.set(key, entry);
    }
    return entry;
  }

  /** `key`'s gates from `keyGates`, made and checked on first use; undefined without it. */
  #gatesOf(key: K): KeyGates | undefined {
    if (this.#keyGates === undefined) return undefined;
    let gates = this.#gates.get(key);
    if (gates === undefined) {
      const made: unknown = this.#keyGates(key);
      if (made === null || typeof made !== 'object') {
        throw new TypeError(
          `Expected \`keyGates\` to return an object ({ concurrency?, rate? }), got ${v.describe(made)}`,
        );
      }
      const { concurrency, rate } = made as KeyGates;
      gates = {
        concurrency:
          concurrency === undefined ? undefined : checkGate('keyGates().concurrency', concurrency),
        rate:
          rate === undefined
            ? undefined
            : listOf(rate).map((gate, i) =>
                checkGate(Array.isArray(rate) ? `keyGates().rate[${i}]` : 'keyGates().rate', gate),
              ),
      };
      this.#gates.set(key, gates);
    }
    return gates;
  }

  /** Resolves when no key has anything running, waiting or backing off. */
  async onIdle(): Promise<void> {
    for (;;) {
      const busy = [...this.#keys.values()].filter(({ limiter }) => !limiter.isIdle);
      if (busy.length === 0) return;
      await Promise.all(busy.map(({ limiter }) => limiter.onIdle()));
    }
  }

  /** Closes every key's limiter (see `Limiter.close()`); later `schedule()` calls reject. */
  async close(options?: CloseOptions): Promise<void> {
    this.#closed ??= new ClosedError('the keyed limiter is closed');
    await Promise.all([...this.#keys.values()].map(({ limiter }) => limiter.close(options)));
  }

  /** Like `KeyedLimiter(12/50 active, 30 pending, 7 keys)`. */
  toString(): string {
    return `KeyedLimiter(${this.activeCount}/${this.concurrency} active, ${this.pendingCount} pending, ${this.size} keys)`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  /** Forgets keys idle for `idleTtl`, at most twice per `idleTtl`: no timer, so an idle process can exit. */
  #sweep(): void {
    if (this.#idle === 0) return;
    const now = this.#clock.now();
    if (now - this.#lastSweep < this.#idleTtl / 2) return;
    this.#lastSweep = now;
    for (const [key, entry] of this.#keys) {
      if (
        now - entry.idleSince >= this.#idleTtl &&
        entry.limiter.lifecycle.isForgettable(now) &&
        !entry.pacer.inRing
      ) {
        this.#keys.delete(key);
        this.#idle--;
      }
    }
  }
}
