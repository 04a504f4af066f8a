/**
 * What a `sluice fetch` or `sluice exec` run hands to its HTML report: the configuration, then one
 * entry per input line as it ends. The report (report.ts) aggregates entries as they come (a run of
 * a million lines must not keep a million entries) and draws everything from the aggregates.
 */

/** The limits a run was given, as the user wrote them. */
export interface RunConfig {
  command: 'fetch' | 'exec';
  /** The concurrency; with `adaptive`, its ceiling. */
  concurrency: number;
  /** `-c auto`: the concurrency adapted, by `algorithm`, up to `max`. */
  adaptive?: { algorithm: string; max: number };
  /** Global rates, e.g. ['10/s']. */
  rates: string[];
  perHostConcurrency?: number;
  perHostRates?: string[];
  retries: number;
  timeoutMs?: number;
}

/** One input line's outcome. Times are milliseconds since the run started. */
export interface RunEntry {
  index: number;
  /** The URL (fetch) or the command (exec), as given: the report escapes it. */
  target: string;
  /** The HTTP status (fetch), or the exit code (exec), when there was one. */
  status?: number;
  ok: boolean;
  attempts: number;
  /** When each attempt started. */
  attemptStarts: number[];
  /** When the first attempt started (undefined if it never ran) and when the entry ended. */
  start?: number;
  end: number;
  /** Duration of the request (or command) itself, ms. */
  ms: number;
  bytes?: number;
  error?: string;
  /** The statuses of the attempts that were retried (429s among them). */
  retriedStatuses: number[];
  /** 'cancelled' (interrupted while running) or 'not run' (never started). */
  skipped?: 'cancelled' | 'not run';
}

/** The report's side of the contract (implemented in report.ts). */
export interface ReportSink {
  /** Takes one entry; keeps aggregates, not the entry (bounded memory whatever the run's length). */
  add(entry: RunEntry): void;
  /** The concurrency limit (one that adapts) is `limit` from `at` ms after the run started. */
  limit?(at: number, limit: number): void;
  /** The run is over: how long it took, and whether it was interrupted. */
  finish(durationMs: number, interrupted: boolean): void;
  /** The self-contained HTML page. */
  render(): string;
}
