/**
 * Where an adaptive limit keeps the part of its state that several clients could share: the
 * limit and the instants it last grew and shrank. The gate (`adaptive.ts`) never writes these
 * itself: it proposes each change to its store and adopts the state the store answers with,
 * which may not be the one proposed (a shared store refuses an increase made too soon after
 * another client's, or a decrease within the cooldown of one). Everything else — the windows,
 * the latency estimates, the permits — stays with each gate.
 *
 * The in-memory store here takes every proposal. A shared store (`RedisAdaptiveStore` in
 * `redis/adaptive.ts`) answers with a promise (the gate adopts the answer when it comes), and
 * tells its gate of the changes made by others (`attach`). Its `limit` is then the total of every
 * client sharing it, and `share` this client's part of it: what the gate admits, and what the
 * gate's algorithm moves (a proposal's `from` and `to` are shares); the store adds the change to
 * the total, or for a drop cuts the total by the proposal's factor, once per burst whoever
 * proposes it.
 */

/** The shareable state of an adaptive limit. */
export interface LimitState {
  /** The limit, unrounded (the gate admits its floor, within its min and max). */
  readonly limit: number;
  /** When the limit last grew, on the gate's clock (-Infinity: never). */
  readonly increasedAt: number;
  /** When it last shrank (-Infinity: never). */
  readonly decreasedAt: number;
  /**
   * A shared store: this client's part of `limit` (the total of every client), which the gate
   * admits; and how many clients share it. Absent: the gate admits `limit`.
   */
  readonly share?: number;
  readonly clients?: number;
}

/** A change a gate proposes. */
export interface LimitChange {
  readonly kind: 'increase' | 'decrease';
  /** Why: a drop, a rising latency, or a window in use with the latency holding. */
  readonly reason: 'drop' | 'latency' | 'growth';
  /** The limit the proposal was computed from (a shared store's: this client's share). */
  readonly from: number;
  readonly to: number;
  /** When, on the gate's clock. */
  readonly at: number;
  /** The gate's latest round trip (the mean latency of its last window), ms, if it had one. */
  readonly roundTrip?: number;
}

/** What a shared store is told of the gate that uses it (`LimitStore.attach`). */
export interface StoreUser {
  readonly min: number;
  readonly max: number;
  readonly initial: number;
  /** Adopts a state the store learned of without a proposal (another client's change). */
  update(state: LimitState): void;
}

/** Keeps an adaptive limit's shareable state; answers each proposal with the state after it. */
export interface LimitStore {
  /** Never rejects: a store that cannot answer answers with the last state it knew. */
  change(change: LimitChange): LimitState | PromiseLike<LimitState>;
  /**
   * A shared store: called once, by the gate that uses it, before anything else. The gate
   * admits `min` until the store has told it its share (through `update`).
   */
  attach?(user: StoreUser): void;
  /** The gate is in use (a request, a release): a shared store may ask for news. */
  touch?(): void;
  /** The store of the gate's copy for `key` (`AdaptiveLimit.fork`). Absent: one in memory. */
  fork?(key: unknown): LimitStore;
}

/** The state of one gate, in its own memory: every proposal is taken. */
export class MemoryStore implements LimitStore {
  #state: LimitState;

  constructor(limit: number) {
    this.#state = { limit, increasedAt: -Infinity, decreasedAt: -Infinity };
  }

  change(change: LimitChange): LimitState {
    const { increasedAt, decreasedAt } = this.#state;
    this.#state =
      change.kind === 'increase'
        ? { limit: change.to, increasedAt: change.at, decreasedAt }
        : { limit: change.to, increasedAt, decreasedAt: change.at };
    return this.#state;
  }
}
