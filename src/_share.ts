/**
 * The global share of a keyed limiter: its global concurrency and rate, and the ring of keys
 * waiting for them. Each key's limiter consults its `KeyPacer` before every start. A key whose
 * next task is otherwise ready, but finds the global concurrency taken, the global rate not yet
 * allowing a start, or another key ahead of it, joins the ring. When a global slot frees (or the
 * rate allows, on one timer for the ring), the key at the front gets one start, and if it still
 * has ready work it joins the ring again at the back: one start per key per turn, whatever each
 * key's backlog.
 *
 * Invariants: the global permits held equal the sum over keys of what their tasks hold; a key is
 * in the ring at most once; a start is committed to its key's rate, and to the global rate, at the
 * instant it happens.
 */
import { Timer, type Clock } from './_clock.ts';
import { Deque } from './_deque.ts';
import type { Pace, Pacer } from './_pace.ts';

/** The global concurrency and rate shared by the keys, and the ring of keys waiting for them. */
export class Global {
  capacity: number;
  held = 0;
  /** The global rate windows (none: no global rate). */
  readonly pace: Pace;
  readonly ring = new Deque<KeyPacer>();
  /** The key whose turn it is, while `pump()` serves it. */
  turn: KeyPacer | undefined;
  /** Set while `pump()` serves the ring. */
  pumping = false;
  readonly #clock: Clock;
  #timer: Timer | undefined;
  #timerAt = Infinity;

  constructor(capacity: number, pace: Pace, clock: Clock) {
    this.capacity = capacity;
    this.pace = pace;
    this.#clock = clock;
  }

  /** Serves the ring when the global rate allows a start `delay` ms from `now`. */
  wake(now: number, delay: number): void {
    const at = now + delay;
    if (this.#timer !== undefined) {
      if (this.#timerAt <= at) return;
      this.#timer.cancel();
    }
    this.#timerAt = at;
    this.#timer = new Timer(this.#clock, delay, this.#fire);
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.pump();
  };

  register(key: KeyPacer): void {
    if (key.inRing) return;
    key.inRing = true;
    this.ring.push(key);
  }

  /**
   * Gives free global slots to the keys in the ring, one start per key per turn. A key whose next
   * task is heavier than the room left keeps its place at the front until there is room (no
   * barging, as within a line).
   */
  pump(): void {
    if (this.pumping || this.ring.size === 0) return;
    this.pumping = true;
    try {
      while (this.held < this.capacity && this.ring.size > 0) {
        const key = this.ring.shift() as KeyPacer;
        key.inRing = false;
        key.starved = false;
        this.turn = key;
        key.serve(); // may take the turn (a start), or mark the key starved for room
        const unused = this.turn === key;
        this.turn = undefined;
        if (unused && (key.starved as boolean)) {
          key.inRing = true;
          this.ring.unshift(key);
          break;
        }
      }
    } finally {
      this.pumping = false;
    }
  }
}

/** A key's pace, plus its claim on the global concurrency. */
export class KeyPacer implements Pacer {
  readonly #pace: Pace;
  readonly #global: Global;
  inRing = false;
  /** Set when its turn came but its next task did not fit the global room left. */
  starved = false;
  /** Serves the key's line (set once its limiter exists). */
  serve: () => void = () => undefined;

  constructor(pace: Pace, global: Global) {
    this.#pace = pace;
    this.#global = global;
  }

  get maxWeight(): number {
    return Math.min(this.#pace.maxWeight, this.#global.capacity, this.#global.pace.maxWeight);
  }

  /** The global concurrency counts permits, not time: timeless when both paces are. */
  get timeless(): boolean {
    return this.#pace.timeless && this.#global.pace.timeless;
  }

  delay(weight: number, now: number): number {
    const own = this.#pace.delay(weight, now);
    if (own > 0) return own;
    const global = this.#global;
    // Ready but for the global share: take a slot if it is this key's turn, if nobody else is
    // waiting for one, or if this key is first in the ring (what held it back left: a cancelled
    // heavier task); otherwise wait in the ring.
    const mine =
      global.turn === this ||
      (global.turn === undefined &&
        !global.pumping &&
        (global.ring.size === 0 || global.ring.peek() === this));
    if (global.held + weight <= global.capacity) {
      if (mine) {
        const paced = global.pace.delay(weight, now);
        if (paced === 0) {
          if (global.turn !== this && this.inRing) {
            global.ring.shift();
            this.inRing = false;
          }
          return 0;
        }
        // The global rate holds it back: the ring is served when it allows a start.
        global.wake(now, paced);
      }
    }
    if (global.turn === this) {
      this.starved = true; // the pump keeps this key at the front of the ring
      return Infinity;
    }
    global.register(this);
    return Infinity;
  }

  commit(weight: number, at: number): void {
    this.#pace.commit(weight, at);
    this.#global.pace.commit(weight, at);
    this.#global.held += weight;
    if (this.#global.turn === this) this.#global.turn = undefined;
  }

  release(weight: number): void {
    this.#global.held -= weight;
    this.#global.pump();
  }

  restamp(weight: number, bookedAt: number, startedAt: number): void {
    this.#pace.restamp(weight, bookedAt, startedAt);
    this.#global.pace.restamp(weight, bookedAt, startedAt);
  }
}
