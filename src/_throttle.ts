/**
 * Client-side throttling, as in Google's SRE book ("Handling Overload"): a client that keeps
 * count, over a recent window, of the requests it made and of those the server accepted refuses
 * a new request itself with probability
 *
 *     max(0, (requests − K × accepts) / (requests + 1))
 *
 * so that once the server refuses most of what it is sent, the refusals cost the server nothing.
 * With K = 2 nothing is refused until the server accepts fewer than half the requests; a
 * larger K refuses later. A request refused here counts as a request not accepted, so the odds
 * keep rising while the server refuses, and fall back as accepts come in again.
 *
 * Invariants: the counts cover at most the last `window` ms (in `BUCKETS` slices, each dropped
 * whole once it is older); nothing is refused while the server accepts at least 1/K of requests.
 */
import type { Clock } from './_clock.ts';

const BUCKETS = 12;

export class Throttle {
  readonly k: number;
  readonly window: number;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #width: number;
  readonly #requests = new Float64Array(BUCKETS);
  readonly #accepts = new Float64Array(BUCKETS);
  /** The slice each bucket holds (its start over its width), or -1. */
  readonly #slice = new Float64Array(BUCKETS).fill(-1);
  /** Requests refused here. */
  refused = 0;

  constructor(k: number, window: number, clock: Clock, random: () => number) {
    this.k = k;
    this.window = window;
    this.#clock = clock;
    this.#random = random;
    this.#width = window / BUCKETS;
  }

  /** A request got an answer: accepted, or refused by the server (a drop). */
  record(accepted: boolean): void {
    const i = this.#bucket(this.#clock.now());
    this.#requests[i]!++;
    if (accepted) this.#accepts[i]!++;
  }

  /** The odds that the next request is refused here, now. */
  probability(): number {
    const now = this.#clock.now();
    const oldest = Math.floor(now / this.#width) - BUCKETS + 1;
    let requests = 0;
    let accepts = 0;
    for (let i = 0; i < BUCKETS; i++) {
      if (this.#slice[i]! < oldest) continue;
      requests += this.#requests[i]!;
      accepts += this.#accepts[i]!;
    }
    return Math.max(0, (requests - this.k * accepts) / (requests + 1));
  }

  /** Whether to refuse the next request here; a refusal counts as a request not accepted. */
  refuse(): boolean {
    const p = this.probability();
    if (p === 0 || this.#random() >= p) return false;
    this.refused++;
    this.record(false);
    return true;
  }

  /** The bucket of the slice holding `now`, emptied if it held an older slice. */
  #bucket(now: number): number {
    const slice = Math.floor(now / this.#width);
    const i = ((slice % BUCKETS) + BUCKETS) % BUCKETS;
    if (this.#slice[i] !== slice) {
      this.#slice[i] = slice;
      this.#requests[i] = 0;
      this.#accepts[i] = 0;
    }
    return i;
  }
}
