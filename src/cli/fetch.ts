/**
 * `sluice fetch`: one request per input line, through `createExchange()` (undici's `dispatch`
 * under per-origin gates, a global concurrency, retries and timeouts: the fastest way to a whole
 * response), one JSON record per line:
 * `{ index, id, url, status, ok, attempts, ms, bytes, error }` and, with `--body`, `body`.
 *
 * What a line means, and how credentials are kept out of records: `fetch-line.ts`.
 */
import { STATUS_CODES } from 'node:http';
import {
  createExchange,
  type ExchangeFunction,
  type HttpOptions,
  type RequestReport,
} from '../http/index.ts';
import { ClosedError } from '../errors.ts';
import { RateLimiter } from '../rate.ts';
import { maskValues, parseFetchLine, redact, SENSITIVE, type FetchTask } from './fetch-line.ts';
import type { Command, Outcome } from './run.ts';

/** What `sluice fetch` was asked, parsed and checked. */
export interface FetchSettings {
  concurrency: number;
  rates: string[];
  perHostConcurrency: number | undefined;
  perHostRates: string[];
  retries: number;
  timeoutMs: number | undefined;
  /** Headers for every request, names in lower case. */
  headers: Record<string, string>;
  method: string;
  body: boolean;
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

interface Read {
  bytes: number;
  body: unknown;
}

/** A response body to keep: its text, or its parsed JSON. */
function readBody(
  body: Buffer,
  contentType: string | string[] | undefined,
  secrets: readonly string[],
): unknown {
  // A server may echo the request's headers back: credentials stay out of the record anyway.
  const text = maskValues(body.toString('utf8'), secrets);
  const type = Array.isArray(contentType) ? contentType[0] : contentType;
  if (type !== undefined && /\bjson\b|\+json\b/i.test(type)) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      // Not the JSON it claimed to be: the text then.
    }
  }
  return text;
}

export class FetchCommand implements Command<FetchTask> {
  readonly #settings: FetchSettings;
  readonly #request: ExchangeFunction;
  readonly #rate: RateLimiter | undefined;
  readonly #controller = new AbortController();
  /** Values masked in every message: the sensitive `-H` headers. */
  readonly #secrets: string[];
  /** Origins with requests admitted and not finished: what `stop()` closes. */
  readonly #origins = new Map<string, number>();
  #stopped = false;

  constructor(settings: FetchSettings) {
    this.#settings = settings;
    const options: HttpOptions = {
      concurrency: settings.concurrency,
      perOrigin: {
        concurrency: settings.perHostConcurrency ?? settings.concurrency,
        ...(settings.perHostRates.length > 0 ? { rate: settings.perHostRates } : {}),
      },
      retry: settings.retries,
      signal: this.#controller.signal,
      ...(settings.timeoutMs === undefined ? {} : { timeout: settings.timeoutMs }),
    };
    this.#request = createExchange(options);
    this.#rate = settings.rates.length > 0 ? new RateLimiter(settings.rates) : undefined;
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
    report?: RequestReport,
    started?: number,
    status?: number,
  ): Outcome {
    const skipped = error === NOT_RUN || error === CANCELLED ? error : undefined;
    const end = performance.now();
    const base = started ?? end;
    const starts = report?.attemptStarts ?? [];
    const ms = starts.length > 0 ? end - base - starts[0]! : 0;
    const record = {
      index,
      id: task.id,
      url: task.url,
      status: status ?? null,
      ok: false,
      attempts,
      ms: rounded(ms),
      bytes: null,
      error,
    };
    const retried = retriedStatuses(report);
    return {
      index,
      line: JSON.stringify(record),
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

  async run(task: FetchTask, index: number): Promise<Outcome> {
    const target = task.target;
    if (target === undefined) return this.#unsent(task, index, task.error ?? 'invalid line', 0);
    const origin = target.origin;
    const origins = this.#origins;
    origins.set(origin, (origins.get(origin) ?? 0) + 1);
    let report: RequestReport | undefined;
    let status: number | undefined; // once a response came, even if its body then failed
    const started = performance.now();
    try {
      if (this.#rate !== undefined) await this.#rate.wait({ signal: this.#controller.signal });
      if (this.#stopped) return this.notRun(task, index);
      const response = await this.#request(target, {
        method: task.method,
        headers: task.headers,
        body: task.body,
        keepBody: this.#settings.body,
        onReport: (r) => {
          report = r;
        },
        onStatus: (s) => {
          status = s; // kept even if the body then fails
        },
      });
      status = response.status;
      const read: Read = {
        bytes: response.bytes,
        body:
          response.body === undefined
            ? undefined
            : readBody(response.body, response.headers['content-type'], this.#secretsOf(task)),
      };
      return this.#answered(task, index, status, read, report, started);
    } catch (error) {
      const attempts = report?.attempts ?? 0;
      if (this.#controller.signal.aborted || (this.#stopped && isClosed(error))) {
        const why = attempts > 0 ? CANCELLED : NOT_RUN;
        return this.#unsent(task, index, why, attempts, report, started, status);
      }
      const message = redact(describeError(error), this.#secretsOf(task));
      return this.#unsent(task, index, message, attempts, report, started, status);
    } finally {
      const left = (origins.get(origin) ?? 1) - 1;
      if (left === 0) origins.delete(origin);
      else origins.set(origin, left);
    }
  }

  #answered(
    task: FetchTask,
    index: number,
    status: number,
    read: Read,
    report: RequestReport | undefined,
    started: number,
  ): Outcome {
    const end = performance.now();
    const ok = status >= 200 && status < 300 && report?.error === undefined;
    let error: string | null = null;
    if (!ok) {
      error =
        report?.error === undefined
          ? `HTTP ${status}${STATUS_CODES[status] === undefined ? '' : ` ${STATUS_CODES[status]}`}`
          : redact(report.error, this.#secretsOf(task));
    }
    const attempts = report?.attempts ?? 1;
    const starts = report?.attemptStarts ?? [0];
    const ms = end - started - (starts[0] ?? 0);
    const record: Record<string, unknown> = {
      index,
      id: task.id,
      url: task.url,
      status,
      ok,
      attempts,
      ms: rounded(ms),
      bytes: read.bytes,
      error,
    };
    if (this.#settings.body) record.body = read.body;
    const retried = retriedStatuses(report);
    return {
      index,
      line: JSON.stringify(record),
      ok,
      target: task.url ?? '',
      status,
      attempts,
      attemptStarts: starts,
      base: started,
      end,
      ms,
      bytes: read.bytes,
      error: error ?? undefined,
      retriedStatuses: retried,
      tooMany: count429(retried) + (status === 429 ? 1 : 0),
    };
  }

  #secretsOf(task: FetchTask): string[] {
    return task.secrets === undefined ? this.#secrets : [...this.#secrets, ...task.secrets];
  }

  inFlight(): number {
    return this.#request.client.limiter.activeCount;
  }

  stop(): void {
    this.#stopped = true;
    // Closing an origin's limiter rejects what waits in its line (those lines become "not run")
    // and lets what runs go on; a retry after this is refused (that line is "cancelled").
    const limiter = this.#request.client.limiter;
    for (const origin of this.#origins.keys()) void limiter.limiterFor(origin).close();
    this.#rate?.close();
  }

  cancel(): void {
    this.#stopped = true;
    this.#controller.abort(new Error(CANCELLED));
    this.#rate?.close();
  }

  kill(): void {
    this.cancel();
    void this.#request.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.#rate?.close();
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

/** The statuses of the attempts that were retried (the same empty array when none were). */
function retriedStatuses(report: RequestReport | undefined): readonly number[] {
  if (report === undefined || report.retries.length === 0) return NONE;
  const statuses: number[] = [];
  for (const retry of report.retries) if (retry.status !== undefined) statuses.push(retry.status);
  return statuses;
}

function count429(statuses: readonly number[]): number {
  let n = 0;
  for (const status of statuses) if (status === 429) n++;
  return n;
}
