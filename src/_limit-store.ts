/**
 * Where an adaptive limit keeps the part of its state that several clients could share: the
 * limit and the instants it last grew and shrank. The gate (`adaptive.ts`) never writes these
 * itself: it proposes each change to its store and adopts the state the store answers with,
 * which may not be the one proposed (a shared store refuses an increase made too soon after
 * another client's, or a decrease within the cooldown of one). Everything else — the windows,
 * the latency estimates, the permits — stays with each gate.
 *
 * The in-memory store here takes every proposal. A store in Redis would answer with a promise
 * (the gate adopts the answer when it comes), take an increase at most once per window and a
 * decrease at most once per cooldown whoever proposes them, and tell each gate of the changes
 * made by others; that store is not written yet.
 */

/** The shareable state of an adaptive limit. */
export interface LimitState {
  /** The limit, unrounded (the gate admits its floor, within its min and max). */
  readonly limit: number;
  /** When the limit last grew, on the gate's clock (-Infinity: never). */
  readonly increasedAt: number;
  /** When it last shrank (-Infinity: never). */
  readonly decreasedAt: number;
}

/** A change a gate proposes. */
export interface LimitChange {
  readonly kind: 'increase' | 'decrease';
  /** The limit the proposal was computed from. */
  readonly from: number;
  readonly to: number;
  /** When, on the gate's clock. */
  readonly at: number;
}

/** Keeps an adaptive limit's shareable state; answers each proposal with the state after it. */
export interface LimitStore {
  change(change: LimitChange): LimitState | PromiseLike<LimitState>;
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
