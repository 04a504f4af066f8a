/**
 * `RedisAdaptiveStore`: an adaptive limit (`adaptive()`) shared by every process that names it.
 *
 * What "the limit" means across clients. The value kept in Redis is the fleet's total
 * concurrency: how many requests all the clients together may have at the server. Each client
 * admits its share of it, the total split evenly among the clients present (each is present while
 * it uses its limit, and for `presenceMs` after). So N clients together never admit more than the
 * total (give or take `min` each when the total is below N × `min`).
 *
 * How it moves: as N limits of their own would in sum, around one total. Each client learns on
 * its own (its windows, its no-load latency) and its algorithm moves its share as it would a
 * limit of its own; it proposes the change, and one Lua script (`scripts/adaptive-2.lua`), on
 * Redis's clock, adds it to the total:
 * - an increase, from each client that proposes one (each does at most once per window of its
 *   own), except within a window (a round trip) of the last decrease for a drop: N clients that
 *   see room raise the total N times as fast as one would, as N limits of their own would;
 * - a decrease for a rising latency, by what the proposer takes off its share: one client's
 *   judgement moves its part of the total, not all of it (each judges the one queue from its own
 *   few samples: were any one's judgement enough, the noisiest would set the limit for all);
 * - a decrease for a drop, of the whole total by the proposer's factor, only from a client that
 *   had heard of the last one (and, with `cooldownMs`, not within that long of it): N clients that
 *   see one burst of 429s cut the total once, and a client cuts again only for work it began
 *   after it heard of the last cut, as one client's limit does.
 * Every client reads in its latencies the queue that all of them make, so together they converge
 * on the server's capacity, not N times it; each keeps the queue one limit of its own would keep
 * there (gradient2's headroom of 1, vegas's `alpha`), N of them N times that.
 *
 * Why (bench (h): four clients, a server whose capacity C goes 40, 20, 40). Moved as one limit
 * (the algorithm run on the total, an increase taken once per round trip whoever proposed it, a
 * latency decrease counted for 1/N, a cut for a drop at most once per round trip plus `syncMs`),
 * the total climbed from `initial` as one client's limit would (1.2–3.3 s to converge), and the
 * increase taken was the most hopeful of N proposals while each decrease counted 1/N, so
 * gradient2 settled near C plus the server's line; and cuts 260 ms apart, when C halved and the
 * server refused the fleet's excess at once, many times a round trip, let it be refused hundreds
 * of times: 1.3–6.3% refused, almost all in the half second after C halved. Each share moved as
 * its own limit, with a cut at each refusal of work begun since the last: 0.3–0.9% refused.
 * (Had each kept a limit of its own, the fleet would have no bound and no even shares, and a
 * client joining would start from `initial`, not from what the others have learned; and a total
 * enforced by a shared semaphore whose permits move would cost a round trip to Redis per
 * request, where this costs one per round trip of the server, or per `syncMs`.)
 *
 * The gate (`../adaptive.ts`) proposes through `change()` and adopts each answer; it calls
 * `touch()` whenever it is used, and while it is, the store asks Redis for news every `syncMs`
 * (another client's change, a client come or gone) and tells the gate through `update`. A client
 * that is not used makes no calls, and its share goes to the others once its presence lapses.
 *
 * Invariants: a store serves one gate (a fork gets a store of its own, under the key's name);
 * `change()` never rejects (a call that fails is answered with the last state known, and the
 * error kept in `lastError`): the gate goes on admitting its last share; calls are made one at a
 * time for news, and proposals are sent as they come (one connection answers in order).
 */
import { randomBytes } from 'node:crypto';
import { systemClock } from '../_clock.ts';
import type { LimitChange, LimitState, LimitStore, StoreUser } from '../_limit-store.ts';
import * as v from '../_validate.ts';
import { checkName, redisClient, type RedisClient, type Reply } from './_client.ts';
import { ADAPTIVE_SCRIPT } from './_scripts.ts';

/** Options for {@link RedisAdaptiveStore}. */
export interface RedisAdaptiveStoreOptions {
  /**
   * The least time after a decrease for a drop before an increase is taken, in ms. @default the
   * proposing client's latest round trip (the mean latency of its last window), at least
   * `MIN_WINDOW`: long enough to see what the decrease did
   */
  windowMs?: number;
  /**
   * The least time between two decreases for a drop, in ms. @default 0: a client cuts only for
   * work it began after it heard of the last cut, and only a client that heard of it can
   * propose one, which is enough to cut once per burst
   */
  cooldownMs?: number;
  /** While the limit is used, how often to ask Redis for the others' changes, in ms. @default 200 */
  syncMs?: number;
  /** How long a client counts as present after its last call, in ms. @default 3_000 */
  presenceMs?: number;
}

/** The least window when the round trip is not known or very short, ms. */
const MIN_WINDOW = 20;
/** How long the state outlives the last call, ms: clients back within it resume the limit. */
const KEEP_MS = 10 * 60_000;

function optional(name: string, value: number | undefined, min: number): number | undefined {
  return value === undefined ? undefined : v.number(name, value, min);
}

/** The script's reply, checked. */
function parseReply(reply: Reply): {
  limit: number;
  share: number;
  clients: number;
  epoch: number;
} {
  if (!Array.isArray(reply) || reply.length !== 5) {
    throw new TypeError(`unexpected reply from the adaptive script: ${JSON.stringify(reply)}`);
  }
  const [limit, share, clients, epoch] = reply.map(Number) as [number, number, number, number];
  return { limit, share, clients, epoch };
}

/**
 * The store of an adaptive limit shared through Redis by every process that uses the same
 * `name`: `adaptive({ algorithm, min, max, initial, store: new RedisAdaptiveStore(redis, name) })`.
 * `min`, `max` and `initial` are the bounds of the fleet's total (every process should give the
 * same); each process admits its share of the total.
 *
 * @example
 * ```ts
 * const limit = adaptive({ max: 200, store: new RedisAdaptiveStore(redis, 'partner-api') });
 * const limiter = new Limiter({ concurrency: limit });
 * ```
 */
export class RedisAdaptiveStore implements LimitStore {
  readonly name: string;
  readonly #redis: RedisClient;
  readonly #options: RedisAdaptiveStoreOptions;
  readonly #keys: readonly [string, string];
  readonly #id = randomBytes(9).toString('base64url');
  readonly windowMs: number | undefined;
  readonly cooldownMs: number | undefined;
  readonly syncMs: number;
  readonly presenceMs: number;
  #user: StoreUser | undefined;
  #state: LimitState = { limit: NaN, increasedAt: -Infinity, decreasedAt: -Infinity };
  #epoch = 0;
  #syncing = false;
  #syncedAt = -Infinity;
  #closed = false;
  /** The stores of the keys' copies (`fork`): closed with this one. */
  readonly #forks: RedisAdaptiveStore[] = [];
  /** The error of the latest call that failed, until one succeeds. */
  lastError: unknown = undefined;

  /**
   * @param redis a connected node-redis or ioredis client, or a `RedisClient`; it stays yours.
   * @param name the name every process sharing the limit gives it.
   */
  constructor(redis: unknown, name: string, options: RedisAdaptiveStoreOptions = {}, part = '') {
    this.#redis = redisClient('redis', redis);
    this.name = checkName(name);
    v.options('options', options);
    this.windowMs = optional('windowMs', options.windowMs, 0);
    this.cooldownMs = optional('cooldownMs', options.cooldownMs, 0);
    this.syncMs = v.number('syncMs', options.syncMs ?? 200, 1);
    this.presenceMs = v.number('presenceMs', options.presenceMs ?? 3000, 1);
    this.#options = options;
    this.#keys = [`sluice:{${name}}:adaptive${part}`, `sluice:{${name}}:adaptive-clients${part}`];
  }

  /** Like `RedisAdaptiveStore(partner-api: 42 for 4 clients, 11 here)`. */
  toString(): string {
    const { limit, share, clients } = this.#state;
    const known = Number.isNaN(limit)
      ? 'not synced yet'
      : `${Math.floor(limit + 1e-9)} for ${clients} clients, ${share} here`;
    return `RedisAdaptiveStore(${this.name}: ${known})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  attach(user: StoreUser): void {
    if (this.#user !== undefined) {
      throw new Error(
        `RedisAdaptiveStore "${this.name}" already serves an adaptive limit: give each its own`,
      );
    }
    this.#user = user;
    this.#state = { ...this.#state, limit: user.initial };
  }

  /** Each key's limit is shared under a name of its own: `<name>` and the key. */
  fork(key: unknown): RedisAdaptiveStore {
    const part = `:${encodeURIComponent(String(key))}`;
    const store = new RedisAdaptiveStore(this.#redis, this.name, this.#options, part);
    this.#forks.push(store);
    return store;
  }

  /** Asks for news if the last call is `syncMs` old, unless one is in flight. */
  touch(): void {
    if (this.#syncing || this.#closed || this.#user === undefined) return;
    if (systemClock.now() - this.#syncedAt < this.syncMs) return;
    void this.sync();
  }

  /**
   * Asks Redis for the limit and the clients present now (this one counts as present for
   * `presenceMs` more), tells the gate, and resolves to the state.
   */
  async sync(): Promise<LimitState> {
    this.#syncing = true;
    try {
      const state = await this.#call('sync');
      this.#user?.update(state);
      return state;
    } finally {
      this.#syncing = false;
    }
  }

  change(change: LimitChange): Promise<LimitState> {
    const roundTrip = Math.max(MIN_WINDOW, change.roundTrip ?? 0);
    // A decrease for a rising latency takes off the proposer's part only (see the script).
    const op = change.kind === 'decrease' && change.reason === 'latency' ? 'shrink' : change.kind;
    return this.#call(op, change.from, change.to, roundTrip);
  }

  /**
   * Leaves: this client's share goes to the others at once, and the store makes no more calls
   * (its gate admits the share it had); so do the stores of its keys. The Redis client stays
   * open: it is the caller's.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#forks.map((store) => store.close()));
    if (this.#user === undefined || this.#syncedAt === -Infinity) return;
    await this.#call('leave', undefined, undefined, MIN_WINDOW, true);
  }

  /** One call of the script; answers with the state after it, or the last known if it failed. */
  async #call(
    op: 'sync' | 'increase' | 'decrease' | 'shrink' | 'leave',
    from = 0,
    to = 0,
    roundTrip = MIN_WINDOW,
    leaving = false,
  ): Promise<LimitState> {
    const user = this.#user;
    if (user === undefined || (this.#closed && !leaving)) return this.#state;
    const window = this.windowMs ?? roundTrip;
    const cooldown = this.cooldownMs ?? 0;
    const args = [
      op,
      this.#id,
      from,
      to,
      this.#epoch,
      window,
      cooldown,
      user.min,
      user.max,
      user.initial,
      this.presenceMs,
      Math.max(KEEP_MS, this.presenceMs),
    ];
    const sentAt = systemClock.now();
    try {
      const reply = parseReply(await this.#redis.run(ADAPTIVE_SCRIPT, this.#keys, args));
      this.lastError = undefined;
      this.#syncedAt = Math.max(this.#syncedAt, sentAt);
      // The epoch counts decreases: a new one stands for a decrease, whoever made it.
      const decreasedAt = reply.epoch === this.#epoch ? this.#state.decreasedAt : systemClock.now();
      this.#epoch = reply.epoch;
      this.#state = {
        limit: reply.limit,
        increasedAt: reply.limit > this.#state.limit ? systemClock.now() : this.#state.increasedAt,
        decreasedAt,
        share: reply.share,
        clients: reply.clients,
      };
    } catch (error) {
      this.lastError = error;
    }
    return this.#state;
  }
}
