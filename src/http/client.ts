/**
 * The HTTP core shared by `createFetch()` and `createRequest()`: a `KeyedLimiter` keyed by origin
 * (a gate and a rate per origin under a global concurrency), an undici `Agent` whose pool per
 * origin has exactly that origin's concurrency, retries with backoff for idempotent requests, and
 * the server's own word on when to come back.
 *
 * A request holds its origin's slot until its response body is consumed, cancelled or fails (not
 * merely until the headers arrive): the server is still sending, and the limit is about what the
 * server sees.
 *
 * A 429 or 503 carrying a wait (Retry-After, RateLimit, X-RateLimit) pauses its origin for every
 * caller until then, and its retry never comes sooner. A wait longer than `maxRetryAfter` is not
 * retried: the response is delivered as it is.
 */
import { Agent, Pool } from 'undici';
import type { Clock } from '../_clock.ts';
import { systemClock } from '../_clock.ts';
import type { RateSpec } from '../_parse.ts';
import * as v from '../_validate.ts';
import { setMaxListeners } from 'node:events';
import { ClosedError, RetryError, TimeoutError } from '../errors.ts';
import { KeyedLimiter } from '../keyed.ts';
import { whenAborted } from '../limiter.ts';
import type { WindowKind } from '../rate.ts';
import { backoff, retryPolicy, sleep, type RetryOptions, type RetryPolicy } from '../retry.ts';
import { serverWait, type HeaderGetter, type ServerWait } from './feedback.ts';

/** The limits of one origin. */
export interface OriginLimits {
  /** At most this many requests in flight to the origin. @default 6 */
  concurrency?: number;
  /** One rate or several (`'10/s'`, `['10/s', '500/min']`). @default none */
  rate?: RateSpec | readonly RateSpec[];
  burst?: number;
  window?: WindowKind;
}

/** How requests are retried. */
export interface HttpRetryOptions extends Omit<
  RetryOptions,
  'signal' | 'clock' | 'retryIf' | 'maxRetryAfter'
> {
  /** Methods retried. @default GET, HEAD, OPTIONS, PUT, DELETE, TRACE (the idempotent ones) */
  methods?: readonly string[];
  /** Statuses retried. @default 408, 429, 500, 502, 503, 504 */
  statuses?: readonly number[];
}

/** Options shared by `createFetch()` and `createRequest()`. */
export interface HttpOptions {
  /** At most this many requests in flight across all origins. @default Infinity */
  concurrency?: number;
  /** The limits of every origin. */
  perOrigin?: OriginLimits;
  /** Limits for particular origins (`'https://api.example.com'`), over `perOrigin`. */
  origins?: Readonly<Record<string, OriginLimits>>;
  /** Retries: a number of retries, or options. `0` turns them off. @default 2 */
  retry?: number | HttpRetryOptions;
  /** Milliseconds an attempt may take, response body included. @default Infinity */
  timeout?: number;
  /** The longest server-requested wait to honour by waiting; a longer one is not retried. @default 60_000 */
  maxRetryAfter?: number;
  /** Aborting it aborts every request made through this client. */
  signal?: AbortSignal | undefined;
  /** Called once per request with what happened. */
  onReport?: (report: RequestReport) => void;
  /** The clock for rates, timeouts and backoffs. @default the system clock */
  clock?: Clock;
}

/** What happened to one request. */
export interface RequestReport {
  url: string;
  method: string;
  origin: string;
  /** Attempts made (1 when there was no retry). */
  attempts: number;
  /** The final status, if a response was delivered. */
  status?: number;
  ok: boolean;
  /** Why it failed: a network error, a timeout, an abort, or a wait the server asked for that was too long. */
  error?: string;
  /** Milliseconds from the call until the response was delivered (headers) or the call failed. */
  ms: number;
  /** Of those, milliseconds spent waiting: for a slot, the rate, a pause, or a backoff. */
  waitMs: number;
  /** Statuses and errors of the attempts that were retried, with the delay before the next one. */
  retries: { status?: number; error?: string; delayMs: number }[];
  /** The wait the server asked for on the final response, if any. */
  serverWait?: ServerWait;
  /** Milliseconds from the call until each attempt started. */
  attemptStarts: number[];
}

/** Per call: how to send, and what the caller said. */
export interface CallOptions {
  signal?: AbortSignal | null | undefined;
  priority?: number;
  onReport?: ((report: RequestReport) => void) | undefined;
  /** Whether the request body can be sent again (a stream cannot). @default true */
  replayable?: boolean;
}

/** One attempt's response, as the core needs to see it. */
export interface Sent<R> {
  status: number;
  header: HeaderGetter;
  /** Throws the response away (a retried one): cancels or drains its body. */
  discard(): Promise<void>;
  /** Settles when the response body is consumed, cancelled or fails. */
  done: Promise<void>;
  /** What the caller receives. */
  value: R;
}

/** What one attempt is sent with. */
export interface Attempt {
  dispatcher: Agent;
  /** 1, then 2 for the first retry, … */
  attempt: number;
  /**
   * The attempt's signal. When nothing can abort the attempt on its own (no timeout, no caller's
   * signal), the client's shared one, which aborts only when `close()` gives up: an
   * AbortController per request is a measurable share of a fast request's cost.
   */
  signal: () => AbortSignal;
  /** Calls `abort(reason)` if the attempt is aborted: the same as `signal()`, without a signal. */
  onAbort: (abort: (reason: Error) => void) => void;
}

/** Sends one attempt. */
export type Send<R> = (attempt: Attempt) => Promise<Sent<R>>;

const IDEMPOTENT = ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'];
const RETRY_STATUSES = [408, 429, 500, 502, 503, 504];

/** A failed status that is going to be retried, after `delay` ms. */
class RetryableStatus {
  constructor(
    readonly status: number,
    readonly delay: number,
  ) {}
}

const NOT_TRANSIENT = new Set([
  'UND_ERR_INVALID_ARG',
  'UND_ERR_NOT_SUPPORTED',
  'UND_ERR_ABORTED',
  'ERR_INVALID_URL',
]);

/**
 * Whether an error is worth another attempt: a timeout, or a failure of the network (a Node or
 * undici error code, possibly as the `cause` of fetch's "fetch failed"), not a bad argument.
 */
export function isTransient(error: unknown): boolean {
  if (error instanceof TimeoutError) return true;
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 3; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string')
      return !NOT_TRANSIENT.has(code) && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code);
  }
  return false;
}

/** An error's message, with its cause's when that adds something ("fetch failed: other side closed"). */
function message(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? error.cause.message : '';
  return cause === '' || error.message.includes(cause)
    ? error.message
    : `${error.message}: ${cause}`;
}

function checkLimits(name: string, limits: OriginLimits | undefined): OriginLimits {
  v.options(name, limits);
  const concurrency =
    limits?.concurrency === undefined
      ? 6
      : v.integer(`${name}.concurrency`, limits.concurrency, 1, true);
  return { ...limits, concurrency };
}

export class HttpClient {
  readonly limiter: KeyedLimiter;
  readonly agent: Agent;
  readonly #clock: Clock;
  readonly #policy: RetryPolicy;
  readonly #methods: ReadonlySet<string>;
  readonly #statuses: ReadonlySet<number>;
  readonly #maxRetryAfter: number;
  readonly #signal: AbortSignal | undefined;
  readonly #onReport: ((report: RequestReport) => void) | undefined;
  readonly #limitsOf: (origin: string) => OriginLimits;
  #closed: Promise<void> | undefined;
  /** Whether attempts have a timeout (so each needs its own signal). */
  readonly #timed: boolean;
  /** Aborts what is still in flight when `close()` gives up waiting. Shared: no listener limit. */
  readonly #closing = new AbortController();

  constructor(options: HttpOptions = {}) {
    v.options('options', options);
    const perOrigin = checkLimits('perOrigin', options.perOrigin);
    v.options('origins', options.origins);
    const overrides = new Map<string, OriginLimits>();
    for (const [origin, limits] of Object.entries(options.origins ?? {})) {
      let normal: string;
      try {
        normal = new URL(origin).origin;
      } catch {
        throw new TypeError(
          `Expected the keys of \`origins\` to be origins like "https://api.example.com", got ${v.describe(origin)}`,
        );
      }
      overrides.set(normal, {
        ...perOrigin,
        ...checkLimits(`origins[${JSON.stringify(origin)}]`, { ...perOrigin, ...limits }),
      });
    }
    this.#limitsOf = (origin) => overrides.get(origin) ?? perOrigin;
    const retry = options.retry === undefined ? 2 : options.retry;
    const retryOptions: HttpRetryOptions =
      typeof retry === 'number' ? { retries: v.integer('retry', retry, 0, true) } : retry;
    v.options('retry', retryOptions);
    const { methods, statuses, ...rest } = retryOptions;
    this.#policy = retryPolicy(rest, 'retry');
    this.#methods = new Set((methods ?? IDEMPOTENT).map((m) => m.toUpperCase()));
    this.#statuses = new Set(statuses ?? RETRY_STATUSES);
    this.#maxRetryAfter =
      options.maxRetryAfter === undefined
        ? 60_000
        : v.number('maxRetryAfter', options.maxRetryAfter, 0, true);
    this.#signal = v.signal('signal', options.signal);
    if (options.onReport !== undefined) v.fn('onReport', options.onReport);
    this.#onReport = options.onReport;
    this.#clock = options.clock ?? systemClock;
    const timeout =
      options.timeout === undefined ? Infinity : v.number('timeout', options.timeout, 0, true);
    this.#timed = timeout !== Infinity;
    // Not 0 ("unlimited"): Node 20's getMaxListeners() throws on a signal set to 0, and undici asks.
    setMaxListeners(1_000_000, this.#closing.signal);
    this.limiter = new KeyedLimiter<string>({
      concurrency:
        options.concurrency === undefined
          ? Infinity
          : v.integer('concurrency', options.concurrency, 1, true),
      perKey: (origin) => {
        const { concurrency, rate, burst, window } = this.#limitsOf(origin);
        return { concurrency, rate, burst, window, timeout };
      },
      clock: this.#clock,
    });
    // One pool per origin, as wide as the origin's concurrency, so that no request queues inside
    // undici where the limits cannot see it. Never the global dispatcher.
    this.agent = new Agent({
      factory: (origin, opts) => {
        const concurrency = this.#limitsOf(new URL(String(origin)).origin).concurrency ?? 6;
        const connections = concurrency === Infinity ? null : concurrency;
        return new Pool(origin, Object.assign({}, opts, { connections }));
      },
    });
  }

  /** Sends a request to `url` within the limits, retrying as configured. */
  async run<R>(url: URL, method: string, send: Send<R>, call: CallOptions = {}): Promise<R> {
    const origin = url.origin;
    const signal = anySignal(this.#signal, call.signal ?? undefined);
    const started = this.#clock.now();
    const report: RequestReport = {
      url: url.href,
      method,
      origin,
      attempts: 0,
      ok: false,
      ms: 0,
      waitMs: 0,
      retries: [],
      attemptStarts: [],
    };
    const retriable = this.#methods.has(method) && call.replayable !== false;
    let busyMs = 0;
    const finish = (fields: Partial<RequestReport>): void => {
      Object.assign(report, fields);
      report.ms = this.#clock.now() - started;
      report.waitMs = Math.max(0, report.ms - busyMs);
      this.#onReport?.(report);
      call.onReport?.(report);
    };
    for (let attempt = 1; ; attempt++) {
      let outcome: Sent<R> | RetryableStatus;
      let attemptStart = started;
      try {
        outcome = await this.#attempt(
          origin,
          send,
          signal,
          call.priority,
          attempt,
          retriable,
          (at) => {
            attemptStart = at;
            report.attempts = attempt;
            report.attemptStarts.push(at - started);
          },
        );
      } catch (error) {
        busyMs += this.#clock.now() - attemptStart;
        const delay =
          retriable && signal?.aborted !== true && isTransient(error)
            ? this.#retryDelay(attempt, undefined)
            : undefined;
        if (delay === undefined) {
          const final =
            attempt > 1 && signal?.aborted !== true
              ? new RetryError(`failed after ${attempt} attempts: ${message(error)}`, attempt, {
                  cause: error,
                })
              : error;
          finish({ error: message(final) });
          throw final;
        }
        report.retries.push({ error: message(error), delayMs: delay });
        await this.#backoff(delay, signal, finish);
        continue;
      }
      busyMs += this.#clock.now() - attemptStart;
      if (!(outcome instanceof RetryableStatus)) {
        const wait = serverWait(outcome.header, Date.now());
        const tooLong =
          retriable &&
          wait !== undefined &&
          wait.ms > this.#maxRetryAfter &&
          this.#statuses.has(outcome.status);
        finish({
          status: outcome.status,
          ok: outcome.status >= 200 && outcome.status < 300,
          ...(wait === undefined ? {} : { serverWait: wait }),
          ...(tooLong
            ? {
                error: `the server asked to wait ${Math.ceil(wait.ms / 1000)}s, more than maxRetryAfter (${this.#maxRetryAfter}ms)`,
              }
            : {}),
        });
        return outcome.value;
      }
      report.retries.push({ status: outcome.status, delayMs: outcome.delay });
      await this.#backoff(outcome.delay, signal, finish);
    }
  }

  /**
   * Closes the client: requests waiting for a slot reject with a ClosedError at once; requests in
   * flight go on, bodies included, until `deadline` ms have passed, when they are aborted (a body
   * being read then errors); then the connection pools close. A body never read holds `close()`
   * until its response is garbage-collected, or until the deadline. Calling it again returns the
   * same promise.
   */
  close(options: { deadline?: number } = {}): Promise<void> {
    v.options('options', options);
    const deadline =
      options.deadline === undefined ? Infinity : v.number('deadline', options.deadline, 0, true);
    this.#closed ??= (async () => {
      await this.limiter.close({ deadline });
      this.#closing.abort(new ClosedError('the HTTP client is closed'));
      await (deadline === Infinity ? this.agent.close() : this.agent.destroy());
    })();
    return this.#closed;
  }

  /** How long to back off before retrying attempt `attempt`, or undefined to stop. */
  #retryDelay(attempt: number, wait: ServerWait | undefined): number | undefined {
    if (attempt > this.#policy.retries) return undefined;
    if (wait !== undefined && wait.ms > this.#maxRetryAfter) return undefined;
    if (this.#policy.budget !== undefined && !this.#policy.budget.tryRetry()) return undefined;
    return Math.max(backoff(this.#policy, attempt), wait?.ms ?? 0);
  }

  async #backoff(
    delay: number,
    signal: AbortSignal | undefined,
    finish: (fields: Partial<RequestReport>) => void,
  ): Promise<void> {
    try {
      await sleep(this.#clock, delay, signal);
    } catch (error) {
      finish({ error: message(error) });
      throw error;
    }
  }

  /**
   * One attempt in the origin's line. Resolves with the response (the slot stays held until its
   * body is done) or with a retryable status (already discarded); rejects with a failure to send.
   */
  #attempt<R>(
    origin: string,
    send: Send<R>,
    signal: AbortSignal | undefined,
    priority: number | undefined,
    attempt: number,
    retriable: boolean,
    onStart: (at: number) => void,
  ): Promise<Sent<R> | RetryableStatus> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const task = this.limiter.schedule(
        origin,
        async (context) => {
          onStart(this.#clock.now());
          this.#policy.budget?.recordCall();
          const sent = await send({
            dispatcher: this.agent,
            attempt,
            signal: () =>
              this.#timed || signal !== undefined ? context.signal : this.#closing.signal,
            onAbort: (abort) => {
              whenAborted(context, (reason) => {
                abort(reason instanceof Error ? reason : new Error(String(reason)));
              });
            },
          });
          const wait = serverWait(sent.header, Date.now());
          // The server's word holds for every caller of this origin, not just this one: a 429 or
          // 503 that says when to come back, or a rate-limit header that says nothing is left.
          if (
            wait !== undefined &&
            wait.ms > 0 &&
            (sent.status === 429 || sent.status === 503 || wait.source !== 'retry-after')
          ) {
            this.limiter.limiterFor(origin).pauseFor(wait.ms);
          }
          const delay =
            retriable && this.#statuses.has(sent.status)
              ? this.#retryDelay(attempt, wait)
              : undefined;
          if (delay !== undefined) {
            await sent.discard();
            settled = true;
            resolve(new RetryableStatus(sent.status, delay));
            return;
          }
          settled = true;
          resolve(sent);
          await sent.done;
        },
        { signal, ...(priority === undefined ? {} : { priority }) },
      );
      task.then(undefined, (error: unknown) => {
        if (!settled) reject(error);
      });
    });
  }
}

/** A signal that aborts when either does. */
function anySignal(
  a: AbortSignal | undefined,
  b: AbortSignal | undefined,
): AbortSignal | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return AbortSignal.any([a, b]);
}
