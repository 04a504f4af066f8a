/**
 * The control laws of an adaptive limit (`adaptive.ts`): how each algorithm moves the limit after
 * a window of samples, and after a drop; and the no-load latency they compare against. Pure
 * arithmetic on numbers: the gate decides when a window closes and what it holds.
 *
 * Rules every algorithm keeps (the gate relies on them):
 * - a drop (a 429, a 503, a timeout) backs off multiplicatively, by `backoff`;
 * - the limit grows only after a window in which it was reached (`Window.full`): a limit that is
 *   not in use says nothing of whether more would be welcome, so the work starved of input never
 *   raises it (and the gate proposes no growth after a window that saw a drop);
 * - a latency-based decrease needs no such proof: queueing is queueing, whoever caused it.
 */

/** The algorithms, by name. */
export type Algorithm = 'aimd' | 'vegas' | 'gradient2';

export const ALGORITHMS: readonly Algorithm[] = ['aimd', 'vegas', 'gradient2'];

/** What one window (about one round trip) of samples showed. */
export interface Window {
  /** Samples counted: tasks that succeeded, begun since the last decrease. */
  count: number;
  /** Their mean latency, ms. */
  latency: number;
  /** Whether the limit was reached at some instant of the window (all permits out, or a waiter). */
  full: boolean;
}

/** An algorithm: the limit after a window with no drop, and after a drop. */
export interface Controller {
  /**
   * The limit after `window`, given the no-load latency `baseline` (ms). `limit` is the part of a
   * shared limit of `whole` that this client moves (`whole` is `limit` for a limit of its own).
   */
  next(limit: number, window: Window, baseline: number, whole?: number): number;
  /** The limit after a drop. */
  drop(limit: number): number;
}

/** The settings of each algorithm, checked (see `adaptive.ts` for their meaning and defaults). */
export interface ControlSettings {
  backoff: number;
  /** aimd: added after each full window. */
  increase: number;
  /** vegas: the queue (in requests) under which the limit grows; undefined: 2·log10(limit). */
  alpha: number | undefined;
  /** vegas: the queue above which it shrinks; undefined: twice alpha. */
  beta: number | undefined;
  /** gradient2, aimd: the latency, as a multiple of the no-load one, taken as no queueing. */
  tolerance: number;
  /** gradient2: how far each window moves the limit toward its target, in (0, 1]. */
  smoothing: number;
}

/** The controller of `algorithm`. */
export function controller(algorithm: Algorithm, s: ControlSettings): Controller {
  const drop = (limit: number): number => limit * s.backoff;
  switch (algorithm) {
    case 'aimd':
      // TCP Reno's congestion avoidance, as Vector's ARC does it: one step up per round trip in
      // use, a multiplicative step down on a drop or when the latency shows a queue past the
      // tolerance (Infinity: drops alone, filling whatever queue the server keeps).
      return {
        next: (limit, w, baseline) =>
          w.latency > s.tolerance * baseline ? drop(limit) : w.full ? limit + s.increase : limit,
        drop,
      };
    case 'vegas':
      return {
        next: (limit, w, baseline, whole = limit) => vegas(limit, w, baseline, s, whole),
        drop,
      };
    case 'gradient2':
      return { next: (limit, w, baseline) => gradient2(limit, w, baseline, s), drop };
  }
}

/**
 * TCP Vegas' rule: at the no-load latency `baseline`, `limit` requests in flight taking
 * `latency` each mean about `limit × (1 − baseline / latency)` of them are waiting in a queue.
 * Below `alpha` waiting the limit grows (by log10 of itself, at least 1); above `beta` it moves
 * to where about `(alpha + beta) / 2` would wait (at most halving); in between it holds. Every
 * client with a limit of its own keeps its own `alpha` to `beta` waiting, so clients that share
 * a server keep N times that: `alpha` is 2·log10(limit) (Netflix's is 3·log10), which with four
 * clients on one server kept refusals about seven times fewer (measured,
 * test/adaptive-scenarios.test.ts's resource).
 *
 * A client's part `limit` of a shared limit of `whole` keeps its part of what the whole keeps:
 * `alpha` and `beta` are the whole's, times `limit / whole`. Every client reads the same share of
 * its requests waiting (they wait in one queue), so the fleet keeps `alpha` to `beta` waiting in
 * all, as one limit would. (Each keeping its own, four clients sharing a limit kept four times
 * that: the total sat at the server's capacity plus its whole line, and when the capacity halved
 * they were refused for 4.5–6.7 s before the cuts caught up, bench (h).)
 */
function vegas(
  limit: number,
  w: Window,
  baseline: number,
  s: ControlSettings,
  whole: number,
): number {
  const queue = limit * (1 - baseline / w.latency);
  const part = whole > limit ? limit / whole : 1;
  const alpha = (s.alpha ?? Math.max(1, 2 * Math.log10(whole))) * part;
  const beta = s.beta === undefined ? 2 * alpha : s.beta * part;
  if (queue > beta) return Math.max(limit / 2, limit - queue + (alpha + beta) / 2);
  if (queue < alpha && w.full) return limit + Math.max(1, Math.log10(limit));
  return limit;
}

/**
 * Netflix's Gradient2, with the faults its issues record fixed. The gradient is
 * `tolerance × baseline / latency`, kept within [0.5, 1]: 1 while the latency is within the
 * tolerance, less as a queue builds. The target is `limit × gradient` plus a headroom while the
 * limit is in use, and the limit moves toward it by `smoothing` each window. The headroom is
 * 3·log10(limit) (at least 1) while the gradient is 1 — growth while there is no queue — and 1
 * once a queue shows, so the limit settles where `limit × (1 − gradient)` is 1: at a latency of
 * `tolerance / (1 − 1 / limit)` times the no-load one.
 *
 * Under modest overload (a gradient of 0.8, say) the original grew without bound (Netflix
 * concurrency-limits PR #134): its baseline, a long average of the latency, followed the
 * standing queue up until the gradient read 1 again, and its headroom of √limit was added on
 * top, round after round. Here the baseline cannot follow a queue up (`Baseline`), so the limit
 * settles. The headroom differs from both the original's and the fix proposed there (√limit
 * only at a gradient of 1): clients sharing a server that grow by √limit drift apart, the larger
 * growing faster (measured: two of four clients ended with twice the others' share), and a
 * headroom that grows with the limit once a queue shows makes each client keep more waiting,
 * N clients N times more. A step of 1 under a queue, the same for every client, pulls them
 * toward equal shares as AIMD's does. Drops back off (the original ignored them, #176).
 */
function gradient2(limit: number, w: Window, baseline: number, s: ControlSettings): number {
  const gradient = Math.min(1, Math.max(0.5, (s.tolerance * baseline) / w.latency));
  const headroom = !w.full ? 0 : gradient >= 1 ? Math.max(1, 3 * Math.log10(limit)) : 1;
  const target = limit * gradient + headroom;
  return limit + (target - limit) * s.smoothing;
}

/**
 * The no-load latency: the lowest of the latencies seen in the last `windows` windows (each
 * window's fastest sample). No probing: no window drops the limit to measure it (Envoy's minRTT
 * windows do, at a cost in refused requests: envoyproxy/envoy#8337). It cannot drift up with a
 * queue the limit itself builds: a latency above the baseline makes vegas and gradient2 shrink
 * the limit, so such a queue drains, and a fast window lands, well before the horizon passes. A
 * rise that shrinking does not undo (the server got slower) outlasts the horizon and is adopted:
 * the estimate follows the server, never a queue (envoyproxy/envoy#11579, where samples from a
 * crowded period lifted the minimum window after window).
 */
export class Baseline {
  readonly #ring: Float64Array;
  #next = 0;
  #size = 0;

  constructor(windows: number) {
    this.#ring = new Float64Array(windows);
  }

  /** Adds a window's fastest latency; returns the baseline now. */
  add(latency: number): number {
    this.#ring[this.#next] = latency;
    this.#next = (this.#next + 1) % this.#ring.length;
    this.#size = Math.min(this.#size + 1, this.#ring.length);
    return this.value;
  }

  /** The baseline (Infinity before any window). */
  get value(): number {
    let min = Infinity;
    for (let i = 0; i < this.#size; i++) min = Math.min(min, this.#ring[i]!);
    return min;
  }
}
