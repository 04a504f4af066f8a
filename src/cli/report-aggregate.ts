/**
 * The report's memory: aggregates that take one entry at a time and never keep the entry.
 *
 * Invariants: every structure here is bounded whatever the number of entries — a timeline holds at
 * most `MAX_BUCKETS` buckets per series, the latency histogram is HDR (fixed size) plus a fixed array
 * of log bins, counters hold at most a fixed number of distinct keys, and at most `SLOWEST` +
 * `FAILURES` requests are kept (their strings redacted and clipped). Entries may arrive in any order
 * (`--ordered` writes them in input order, not as they end).
 */
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import type { RunEntry } from './report-data.ts';
import { sanitize } from './report-safe.ts';

/** The most buckets a timeline holds; even, so that doubling pairs every bucket. */
export const MAX_BUCKETS = 600;
/** How many of the slowest requests are kept. */
export const SLOWEST = 20;
/** How many failed requests are kept (the first ones); the rest are counted. */
export const FAILURES = 200;
/** Latency bar chart resolution: bins per factor of ten. */
export const BINS_PER_DECADE = 10;
/** Longest target (URL or command) and error message kept, in characters. */
const MAX_TARGET = 1000;
const MAX_ERROR = 600;
/** 1 µs to ~31 years: more than any latency, and bins beyond are clamped. */
const LATENCY_BINS = 15 * BINS_PER_DECADE;

/**
 * Time buckets of one width over [0, width × MAX_BUCKETS), for one or more series. When a time falls
 * past the end, the width doubles and neighbouring buckets merge, as often as needed: a long run
 * never holds more than MAX_BUCKETS buckets, and a short one keeps a fine resolution. Buckets hold
 * sums (counts, or milliseconds of overlap), which stay exact through merging.
 */
export class Timeline {
  #width: number;
  #used = 0;
  readonly #series: Float64Array[];

  constructor(baseWidth: number, seriesCount: number) {
    this.#width = baseWidth;
    this.#series = Array.from({ length: seriesCount }, () => new Float64Array(MAX_BUCKETS));
  }

  /** The width of one bucket, ms. */
  get width(): number {
    return this.#width;
  }

  /** Buckets from the first up to the last one that was touched. */
  get length(): number {
    return this.#used;
  }

  /** Series `series`'s sums, `length` of them. */
  values(series: number): Float64Array {
    return this.#series[series]!.subarray(0, this.#used);
  }

  /** Adds `amount` to the bucket holding time `t` (ms). */
  addPoint(series: number, t: number, amount = 1): void {
    if (!Number.isFinite(t)) return;
    const time = Math.max(0, t);
    this.#fit(time);
    const bucket = Math.floor(time / this.#width);
    this.#series[series]![bucket]! += amount;
    this.#used = Math.max(this.#used, bucket + 1);
  }

  /** Adds to each bucket how many milliseconds of [from, to] fall in it, times `weight`. */
  addSpan(series: number, from: number, to: number, weight = 1): void {
    if (!Number.isFinite(from) || !Number.isFinite(to)) return;
    const start = Math.max(0, from);
    const end = Math.max(start, to);
    this.#fit(end);
    const buckets = this.#series[series]!;
    const width = this.#width;
    const first = Math.floor(start / width);
    const last = Math.min(MAX_BUCKETS - 1, Math.floor(end / width));
    for (let bucket = first; bucket <= last; bucket++) {
      const overlap = Math.min(end, (bucket + 1) * width) - Math.max(start, bucket * width);
      if (overlap > 0) buckets[bucket]! += overlap * weight;
    }
    if (end > start) this.#used = Math.max(this.#used, Math.ceil(end / width));
  }

  #fit(t: number): void {
    while (t >= this.#width * MAX_BUCKETS) {
      for (const buckets of this.#series) {
        for (let i = 0; i < MAX_BUCKETS / 2; i++)
          buckets[i] = buckets[2 * i]! + buckets[2 * i + 1]!;
        buckets.fill(0, MAX_BUCKETS / 2);
      }
      this.#width *= 2;
      this.#used = Math.ceil(this.#used / 2);
    }
  }
}

/** Counts per key, for at most `maxKeys` distinct keys; the rest are counted together. */
export class Counter<K> {
  readonly counts = new Map<K, number>();
  other = 0;

  constructor(readonly maxKeys: number) {}

  add(key: K, amount = 1): void {
    const count = this.counts.get(key);
    if (count !== undefined) this.counts.set(key, count + amount);
    else if (this.counts.size < this.maxKeys) this.counts.set(key, amount);
    else this.other += amount;
  }
}

/** A request kept for a table: its strings are already redacted and clipped. */
export interface KeptRequest {
  index: number;
  target: string;
  status: number | undefined;
  ok: boolean;
  ms: number;
  attempts: number;
  error: string | undefined;
}

function keep(entry: RunEntry): KeptRequest {
  return {
    index: entry.index,
    target: sanitize(entry.target, MAX_TARGET),
    status: entry.status,
    ok: entry.ok,
    ms: entry.ms,
    attempts: entry.attempts,
    error: entry.error === undefined ? undefined : sanitize(entry.error, MAX_ERROR),
  };
}

/**
 * The `capacity` slowest requests: a min-heap on `ms`, so a new request is compared with the
 * fastest of those kept and only built (redacted, clipped) when it displaces it.
 */
export class Slowest {
  readonly #heap: KeptRequest[] = [];

  constructor(readonly capacity: number) {}

  offer(entry: RunEntry): void {
    const heap = this.#heap;
    if (heap.length < this.capacity) {
      heap.push(keep(entry));
      this.#up(heap.length - 1);
    } else if (heap.length > 0 && entry.ms > heap[0]!.ms) {
      heap[0] = keep(entry);
      this.#down(0);
    }
  }

  /** Slowest first; ties in input order. */
  sorted(): KeptRequest[] {
    return [...this.#heap].sort((a, b) => b.ms - a.ms || a.index - b.index);
  }

  #up(i: number): void {
    const heap = this.#heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.ms <= heap[i]!.ms) return;
      [heap[parent], heap[i]] = [heap[i]!, heap[parent]!];
      i = parent;
    }
  }

  #down(i: number): void {
    const heap = this.#heap;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < heap.length && heap[left]!.ms < heap[least]!.ms) least = left;
      if (right < heap.length && heap[right]!.ms < heap[least]!.ms) least = right;
      if (least === i) return;
      [heap[least], heap[i]] = [heap[i]!, heap[least]!];
      i = least;
    }
  }
}

/** The log bin of a latency in microseconds (>= 1). */
export function latencyBin(us: number): number {
  // The epsilon puts exact powers of ten (1000 µs) at the start of their bin despite rounding.
  const bin = Math.floor(Math.log10(us) * BINS_PER_DECADE + 1e-9);
  return Math.min(LATENCY_BINS - 1, Math.max(0, bin));
}

/** Everything the report shows, built one entry at a time. */
export class RunAggregate {
  total = 0;
  ok = 0;
  failed = 0;
  cancelled = 0;
  notRun = 0;
  /** Entries that started in this run (a resumed entry, carried over from an earlier run, did not). */
  started = 0;
  attempts = 0;
  /** Attempts after the first, over all entries. */
  retries = 0;
  /** Entries that needed more than one attempt. */
  retried = 0;
  bytes = 0;
  /** The latest time any entry mentions, ms since the start. */
  lastTime = 0;
  /**
   * Per bucket, series 0: milliseconds in flight (divide by the width for the mean number in
   * flight); series 1: the concurrency limit times the milliseconds it held, for a limit that
   * adapts (divide likewise for its mean). One timeline, so both have the same buckets.
   */
  readonly inFlight = new Timeline(1, 2);
  /** The adaptive limit now, and since when; undefined for a fixed one. */
  #limit: number | undefined = undefined;
  #limitSince = 0;
  /** Attempt starts per bucket: series 0 first attempts, series 1 retries. */
  readonly starts = new Timeline(1000, 2);
  /** Latency of the entries that ran to an end, µs. */
  readonly latency: RecordableHistogram = createHistogram();
  /** Counts per latency bin: series 0 ok, 1 failed. */
  readonly latencyBins = [new Float64Array(LATENCY_BINS), new Float64Array(LATENCY_BINS)] as const;
  /** Final statuses (or exit codes) of the entries that ran to an end; -1 for none. */
  readonly statuses = new Counter<number>(48);
  /** Statuses of attempts that were retried. */
  readonly retriedStatuses = new Counter<number>(48);
  /** Retried attempts that had no status (a network error, a timeout). */
  retriedWithoutStatus = 0;
  readonly slowest = new Slowest(SLOWEST);
  readonly failures: KeptRequest[] = [];
  /** Failures beyond the ones kept. */
  failuresNotKept = 0;

  /** Whether an adaptive limit was told. */
  get hasLimit(): boolean {
    return this.#limit !== undefined;
  }

  /** The adaptive limit is `limit` from `at` on. */
  setLimit(at: number, limit: number): void {
    this.closeLimit(at);
    this.#limit = limit;
  }

  /** Counts the limit up to `at` (the limit holds on after it). */
  closeLimit(at: number): void {
    if (this.#limit !== undefined && at > this.#limitSince)
      this.inFlight.addSpan(1, this.#limitSince, at, this.#limit);
    this.#limitSince = Math.max(this.#limitSince, at);
  }

  add(entry: RunEntry): void {
    this.total++;
    if (Number.isFinite(entry.end)) this.lastTime = Math.max(this.lastTime, entry.end);
    if (entry.skipped === 'not run') {
      this.notRun++;
      return;
    }
    const attempts = Math.max(0, Math.floor(entry.attempts) || 0);
    this.attempts += attempts;
    if (attempts > 1) {
      this.retries += attempts - 1;
      this.retried++;
    }
    for (const status of entry.retriedStatuses) this.retriedStatuses.add(status);
    this.retriedWithoutStatus += Math.max(0, attempts - 1 - entry.retriedStatuses.length);
    entry.attemptStarts.forEach((t, i) => {
      this.starts.addPoint(i === 0 ? 0 : 1, t);
    });
    if (entry.start !== undefined) {
      this.started++;
      this.inFlight.addSpan(0, entry.start, entry.end);
    }
    if (entry.bytes !== undefined && Number.isFinite(entry.bytes)) this.bytes += entry.bytes;

    if (entry.skipped === 'cancelled') {
      this.cancelled++;
      return;
    }
    if (entry.ok) this.ok++;
    else this.failed++;
    this.statuses.add(entry.status ?? -1);
    if (Number.isFinite(entry.ms) && entry.ms >= 0) {
      const us = Math.min(Number.MAX_SAFE_INTEGER, Math.max(1, Math.round(entry.ms * 1000)));
      this.latency.record(us);
      this.latencyBins[entry.ok ? 0 : 1][latencyBin(us)]!++;
      this.slowest.offer(entry);
    }
    if (!entry.ok) {
      if (this.failures.length < FAILURES) this.failures.push(keep(entry));
      else this.failuresNotKept++;
    }
  }
}
