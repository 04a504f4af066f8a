/**
 * `sluice fetch`: one request per input line, through `createExchange()` (per-origin gates, a
 * global concurrency, retries and timeouts: the fastest way to a whole response), one JSON record
 * per line:
 * `{ index, id, url, status, ok, attempts, ms, bytes, error }` and, with `--body`, `body` (and
 * `bodyEncoding` and `truncated` when they apply: `fetch-body.ts`).
 *
 * What a line means, and how credentials are kept out of records: `fetch-line.ts`.
 */
import { STATUS_CODES } from 'node:http';
import { exchangeWith, type Call, type CallSink } from '../http/_cli.ts';
import {
  createExchange,
  type ExchangeFunction,
  type Exchanged,
  type HttpOptions,
} from '../http/index.ts';
import { adaptive, type AdaptiveAlgorithm } from '../adaptive.ts';
import { ClosedError } from '../errors.ts';
import { bodyField, bodyRecord, keptLimit } from './fetch-body.ts';
import { parseFetchLine, redact, SENSITIVE, type FetchTask } from './fetch-line.ts';
import type { Command, Outcome } from './run.ts';
import type { SharedGates } from './shared.ts';

/** What `sluice fetch` was asked, parsed and checked. */
export interface FetchSettings {
  /** The global concurrency (with `adaptive`, its ceiling). */
  concurrency: number;
  /** `-c auto`: each origin's limit adapts, by `algorithm`, up to `max`. */
  adaptive: { algorithm: AdaptiveAlgorithm; max: number } | undefined;
  rates: string[];
  perHostConcurrency: number | undefined;
  perHostRates: string[];
  retries: number;
  timeoutMs: number | undefined;
  /** Headers for every request, names in lower case. */
  headers: Record<string, string>;
  method: string;
  /** Whether records include the response body. */
  body: boolean;
  /** The most bytes of a body to keep (decoded), with `body`. */
  maxBody: number;
  /** With `--redis`: the limits above as gates shared with other processes (`shared.ts`). */
  shared?: SharedGates | undefined;
}

const CANCELLED = 'cancelled';
const NOT_RUN = 'not run';

/** An error's message with its causes ("fetch failed: connect ECONNREFUSED …"). */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  let text = error.message;
  for (
    let e: unknown = error.cause, depth = 0;
    e instanceof Error && depth < 3;
    e = e.cause, depth++
  ) {
    if (!text.includes(e.message)) text += `: ${e.message}`;
  }
  return text;
}

function rounded(ms: number): number {
  return Math.round(ms * 10) / 10;
}

export class FetchCommand implements Command<FetchTask> {
  readonly #settings: FetchSettings;
  readonly #request: ExchangeFunction;
  readonly #controller = new AbortController();
  /** Values masked in every message: the sensitive `-H` headers. */
  readonly #secrets: string[];
  #stopped = false;
  /** With -c auto: each origin's limit now (an origin counts from its first request). */
  readonly #limits = new Map<unknown, number>();
  #initialLimit = 0;
  #onLimit: ((limit: number) => void) | undefined;

  constructor(settings: FetchSettings) {
    this.#settings = settings;
    let perHost: HttpOptions['concurrency'] = settings.perHostConcurrency ?? settings.concurrency;
    if (settings.adaptive !== undefined) {
      // One per origin: the client's limiter forks it for each.
      const template = adaptive({
        algorithm: settings.adaptive.algorithm,
        max: settings.adaptive.max,
        // With --redis, each origin's limit is the fleet's, kept in Redis.
        ...(settings.shared === undefined ? {} : { store: settings.shared.adaptiveStore() }),
      });
      this.#initialLimit = template.limit;
      template.on('limit', ({ key, limit }) => {
        this.#limits.set(key, limit);
        this.#tellLimit();
      });
      perHost = template;
    }
    const shared = settings.shared;
    const rate = shared === undefined ? settings.rates : shared.rate;
    const options: HttpOptions = {
      concurrency: shared?.concurrency ?? settings.concurrency,
      // Every attempt passes the global rate, retries included (the client's limiter keeps it).
      ...(rate === undefined || (Array.isArray(rate) && rate.length === 0) ? {} : { rate }),
      // Shared: each origin's semaphore and rate (what a 429 pauses for every process).
      ...(shared === undefined ? {} : { originGates: shared.originGates }),
      perOrigin: {
        concurrency: perHost,
        ...(settings.perHostRates.length > 0 && shared === undefined
          ? { rate: settings.perHostRates }
          : {}),
      },
      retry: settings.retries,
      signal: this.#controller.signal,
      ...(settings.timeoutMs === undefined ? {} : { timeout: settings.timeoutMs }),
    };
    this.#request = createExchange(options);
    this.#secrets = Object.entries(settings.headers)
      .filter(([name]) => SENSITIVE.has(name))
      .map(([, value]) => value);
  }

  parse(line: string): FetchTask {
    return parseFetchLine(line, this.#settings);
  }

  matches(record: Record<string, unknown>, task: FetchTask): boolean {
    return record.url === task.url && JSON.stringify(record.id ?? null) === JSON.stringify(task.id);
  }

  resumed(record: Record<string, unknown>, raw: string, index: number): Outcome {
    const number = (value: unknown): number | undefined =>
      typeof value === 'number' ? value : undefined;
    return {
      index,
      line: raw,
      ok: true,
      target: typeof record.url === 'string' ? record.url : '',
      status: number(record.status),
      attempts: number(record.attempts) ?? 1,
      attemptStarts: [],
      base: 0,
      end: performance.now(),
      ms: number(record.ms) ?? 0,
      bytes: number(record.bytes),
      retriedStatuses: [],
      tooMany: 0,
    };
  }

  notRun(task: FetchTask, index: number): Outcome {
    return this.#unsent(task, index, NOT_RUN, 0);
  }

  /** The outcome of a line that got no response, or whose response's body failed. */
  #unsent(
    task: FetchTask,
    index: number,
    error: string,
    attempts: number,
    call?: Call<Exchanged>,
    status?: number,
  ): Outcome {
    const skipped = error === NOT_RUN || error === CANCELLED ? error : undefined;
    const end = performance.now();
    const base = call?.started ?? end;
    const starts = call?.attemptStarts ?? NONE;
    const ms = starts.length > 0 ? end - base - starts[0]! : 0;
    const retried = retriedStatuses(call);
    return {
      index,
      line: recordLine(index, task, status ?? null, false, attempts, rounded(ms), null, error),
      ok: false,
      target: task.url ?? '',
      status,
      attempts,
      attemptStarts: starts,
      base,
      end,
      ms,
      error,
      retriedStatuses: retried,
      skipped,
      tooMany: count429(retried),
    };
  }

  run(task: FetchTask, index: number): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      this.start(task, index, resolve);
    });
  }

  start(task: FetchTask, index: number, done: (outcome: Outcome) => void): void {
    const target = task.target;
    if (target === undefined) {
      done(this.#unsent(task, index, task.error ?? 'invalid line', 0));
      return;
    }
    this.#send(task, index, target, done);
  }

  #send(task: FetchTask, index: number, target: URL, done: (outcome: Outcome) => void): void {
    if (this.#stopped) {
      done(this.notRun(task, index));
      return;
    }
    if (this.#settings.adaptive !== undefined && !this.#limits.has(target.origin)) {
      this.#limits.set(target.origin, this.#initialLimit); // its limit starts there
      this.#tellLimit();
    }
    const sink = new LineSink(this, task, index, done);
    try {
      exchangeWith(
        this.#request.client,
        target,
        target.origin,
        {
          method: task.method,
          headers: task.headers,
          body: task.body,
          keepBody: this.#settings.body ? keptLimit(this.#settings.maxBody) : false,
        },
        sink,
      );
    } catch (error) {
      // Not expected (a request's own faults fail its attempt), but a line must get its record.
      if (!sink.called) done(this.#failed(task, index, error, undefined, undefined));
    }
  }

  /** The outcome of a line whose call failed (what its sink calls). */
  lineFailed(task: FetchTask, index: number, error: unknown, call: Call<Exchanged>): Outcome {
    return this.#failed(task, index, error, call, call.heardStatus);
  }

  /** The outcome of a line whose request failed (`call` is undefined if it never got one). */
  #failed(
    task: FetchTask,
    index: number,
    error: unknown,
    call: Call<Exchanged> | undefined,
    status: number | undefined,
  ): Outcome {
    const attempts = call?.attempts ?? 0;
    if (this.#controller.signal.aborted || (this.#stopped && isClosed(error))) {
      const why = attempts > 0 ? CANCELLED : NOT_RUN;
      return this.#unsent(task, index, why, attempts, call, status);
    }
    const message = redact(describeError(error), this.#secretsOf(task));
    return this.#unsent(task, index, message, attempts, call, status);
  }

  /** The outcome of a line that got a response: later when its body must be decoded first. */
  /** The outcome of a line whose response was delivered (what its sink calls). */
  answered(
    task: FetchTask,
    index: number,
    received: Exchanged,
    call: Call<Exchanged>,
  ): Outcome | Promise<Outcome> {
    const end = call.deliveredAt; // on the client's clock, the system's: performance.now()
    const status = received.status;
    const callError = call.error;
    const ok = status >= 200 && status < 300 && callError === undefined;
    let error: string | null = null;
    if (!ok) {
      error =
        callError === undefined
          ? `HTTP ${status}${STATUS_CODES[status] === undefined ? '' : ` ${STATUS_CODES[status]}`}`
          : redact(callError, this.#secretsOf(task));
    }
    const attempts = call.attempts;
    const starts = call.attemptStarts;
    const ms = end - call.started - (starts[0] ?? 0);
    const bytes = received.bytes;
    const line = recordLine(index, task, status, ok, attempts, rounded(ms), bytes, error);
    const retried = retriedStatuses(call);
    const outcome: Outcome = {
      index,
      line,
      ok,
      target: task.url ?? '',
      status,
      attempts,
      attemptStarts: starts,
      base: call.started,
      end,
      ms,
      bytes,
      error: error ?? undefined,
      retriedStatuses: retried,
      tooMany: count429(retried) + (status === 429 ? 1 : 0),
    };
    if (!this.#settings.body) return outcome;
    // The record without its closing brace, then the body.
    const prefix = line.slice(0, -1);
    const field = bodyField(
      received.body ?? EMPTY,
      bytes,
      received.headers,
      this.#secretsOf(task),
      this.#settings.maxBody,
    );
    if (!(field instanceof Promise)) {
      outcome.line = bodyRecord(prefix, field);
      return outcome;
    }
    return field.then((decoded) => {
      outcome.line = bodyRecord(prefix, decoded);
      return outcome;
    });
  }

  #secretsOf(task: FetchTask): string[] {
    return task.secrets === undefined ? this.#secrets : [...this.#secrets, ...task.secrets];
  }

  inFlight(): number {
    return this.#request.client.limiter.activeCount;
  }

  /** With -c auto, `listener` hears the limit of all origins together whenever it changes. */
  watchLimit(listener: (limit: number) => void): void {
    if (this.#settings.adaptive === undefined) return;
    this.#onLimit = listener;
    this.#tellLimit();
  }

  /** The sum of the origins' limits (within the ceiling), to whoever watches it. */
  #tellLimit(): void {
    if (this.#onLimit === undefined || this.#limits.size === 0) return;
    let sum = 0;
    for (const limit of this.#limits.values()) sum += limit;
    this.#onLimit(Math.min(sum, this.#settings.concurrency));
  }

  stop(): void {
    this.#stopped = true;
    // Closing the client's keyed limiter closes every origin's: what waits in their lines is
    // rejected (those lines become "not run"), what runs goes on, and any attempt after this,
    // whatever its origin, is refused (a retry's line is "cancelled"). Nothing is sent after.
    void this.#request.client.limiter.close();
  }

  cancel(): void {
    this.#stopped = true;
    this.#controller.abort(new Error(CANCELLED));
  }

  kill(): void {
    this.cancel();
    void this.#request.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.#request.close();
  }
}

/** A ClosedError, or a RetryError whose last attempt met one. */
function isClosed(error: unknown): boolean {
  return (
    error instanceof ClosedError || (error instanceof Error && error.cause instanceof ClosedError)
  );
}

const NONE: readonly number[] = [];
const EMPTY = Buffer.alloc(0);

/** The statuses of the attempts that were retried (the same empty array when none were). */
function retriedStatuses(call: Call<Exchanged> | undefined): readonly number[] {
  if (call === undefined || call.retries.length === 0) return NONE;
  const statuses: number[] = [];
  for (const retry of call.retries) if (retry.status !== undefined) statuses.push(retry.status);
  return statuses;
}

/**
 * A record without a body, as `JSON.stringify()` of `{ index, id, url, status, ok, attempts, ms,
 * bytes, error }` would write it: numbers and booleans print the same in JSON as in a template,
 * and the strings and the id go through `JSON.stringify()` (escapes, nested ids).
 */
function recordLine(
  index: number,
  task: FetchTask,
  status: number | null,
  ok: boolean,
  attempts: number,
  ms: number,
  bytes: number | null,
  error: string | null,
): string {
  return (
    `{"index":${index},"id":${task.id === null ? 'null' : JSON.stringify(task.id)}` +
    `,"url":${task.url === null ? 'null' : JSON.stringify(task.url)},"status":${status}` +
    `,"ok":${ok},"attempts":${attempts},"ms":${ms},"bytes":${bytes}` +
    `,"error":${error === null ? 'null' : JSON.stringify(error)}}`
  );
}

/** Where a line's request ends: its outcome, for the run. */
class LineSink implements CallSink<Exchanged> {
  readonly #command: FetchCommand;
  readonly #task: FetchTask;
  readonly #index: number;
  readonly #done: (outcome: Outcome) => void;
  /** Whether it has been told how the line ended. */
  called = false;

  constructor(
    command: FetchCommand,
    task: FetchTask,
    index: number,
    done: (outcome: Outcome) => void,
  ) {
    this.#command = command;
    this.#task = task;
    this.#index = index;
    this.#done = done;
  }

  delivered(received: Exchanged, call: Call<Exchanged>): void {
    this.called = true;
    let outcome: Outcome | Promise<Outcome>;
    try {
      outcome = this.#command.answered(this.#task, this.#index, received, call);
    } catch (error) {
      // The record could not be made (not expected): the line still gets one, with why.
      outcome = this.#command.lineFailed(this.#task, this.#index, error, call);
    }
    if (!(outcome instanceof Promise)) {
      this.#done(outcome);
      return;
    }
    outcome.then(this.#done, (error: unknown) => {
      this.#done(this.#command.lineFailed(this.#task, this.#index, error, call));
    });
  }

  failed(error: unknown, call: Call<Exchanged>): void {
    this.called = true;
    this.#done(this.#command.lineFailed(this.#task, this.#index, error, call));
  }
}

function count429(statuses: readonly number[]): number {
  let n = 0;
  for (const status of statuses) if (status === 429) n++;
  return n;
}
